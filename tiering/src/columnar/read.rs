//! Reading Parquet files back as Kafka record batches, one row group at a time.
//!
//! Files are immutable, so their footers and rebuilt row groups are cached by object key without
//! invalidation (bounded by count and bytes; the hybrid cache of the performance work replaces
//! this). A row group is fetched with ranged GETs of its column chunks only.

use super::{col, ColumnarError};
use crate::records::{self, BatchFields};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type, Int8Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// Footers kept in memory.
const FOOTERS_MAX: usize = 1024;

/// Rows decoded per Arrow batch.
const DECODE_BATCH_ROWS: usize = 8192;

/// What Fetch needs to know of a row group without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowGroupInfo {
    /// Highest `batch_last_offset`: the row group holds nothing a read from above needs.
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// Record batches rebuilt from one row group, in offset order.
pub type ReadBatches = Arc<Vec<Bytes>>;

#[derive(Debug)]
struct Footer {
    metadata: ArrowReaderMetadata,
    row_groups: Vec<RowGroupInfo>,
}

#[derive(Debug, Default)]
struct Caches {
    footers: HashMap<String, Arc<Footer>>,
    footer_order: VecDeque<String>,
    groups: HashMap<(String, usize), ReadBatches>,
    group_order: VecDeque<(String, usize)>,
    group_bytes: usize,
}

/// Reads Parquet files of the bucket as record batches.
#[derive(Debug)]
pub struct ColumnarReader {
    objects: Arc<dyn ObjectStore>,
    cache_max_bytes: usize,
    caches: Mutex<Caches>,
}

fn unreadable(object: &str, error: parquet::errors::ParquetError) -> ColumnarError {
    let message = format!("object={object}: {error}");
    let missing = matches!(
        &error,
        parquet::errors::ParquetError::External(inner)
            if matches!(inner.downcast_ref::<object_store::Error>(), Some(object_store::Error::NotFound { .. }))
    );
    if missing {
        ColumnarError::Missing(message)
    } else if matches!(error, parquet::errors::ParquetError::External(_)) {
        ColumnarError::Unavailable(message)
    } else {
        ColumnarError::Corrupt(message)
    }
}

impl ColumnarReader {
    pub fn new(objects: Arc<dyn ObjectStore>, cache_max_bytes: usize) -> Self {
        Self {
            objects,
            cache_max_bytes,
            caches: Mutex::new(Caches::default()),
        }
    }

    fn source(&self, object: &str, size: u64) -> BucketFile {
        BucketFile {
            objects: self.objects.clone(),
            path: Path::from(object),
            size,
        }
    }

    async fn footer(&self, object: &str, size: u64) -> Result<Arc<Footer>, ColumnarError> {
        if let Some(found) = self
            .caches
            .lock()
            .expect("cache poisoned")
            .footers
            .get(object)
        {
            return Ok(found.clone());
        }
        let mut source = self.source(object, size);
        let metadata = ArrowReaderMetadata::load_async(&mut source, ArrowReaderOptions::new())
            .await
            .map_err(|e| unreadable(object, e))?;
        if !super::starts_with_base(metadata.schema()) {
            return Err(ColumnarError::Corrupt(format!(
                "object={object}: not a skiff topic file (schema differs)"
            )));
        }
        // Statistics are per leaf column (a list of structs is two), so columns go by name.
        let leaf = |name: &str| {
            metadata
                .metadata()
                .file_metadata()
                .schema_descr()
                .columns()
                .iter()
                .position(|c| c.path().string() == name)
        };
        let (Some(last_column), Some(timestamp_column)) =
            (leaf("batch_last_offset"), leaf("timestamp"))
        else {
            return Err(ColumnarError::Corrupt(format!(
                "object={object}: columns missing"
            )));
        };
        let mut row_groups = Vec::new();
        for group in metadata.metadata().row_groups() {
            let max_i64 = |column: usize| match group.column(column).statistics() {
                Some(Statistics::Int64(s)) => s.max_opt().copied(),
                _ => None,
            };
            let (Some(last_offset), Some(max_timestamp)) =
                (max_i64(last_column), max_i64(timestamp_column))
            else {
                return Err(ColumnarError::Corrupt(format!(
                    "object={object}: row group without offset or timestamp statistics"
                )));
            };
            row_groups.push(RowGroupInfo {
                last_offset,
                max_timestamp,
            });
        }
        let footer = Arc::new(Footer {
            metadata,
            row_groups,
        });
        let mut caches = self.caches.lock().expect("cache poisoned");
        if caches
            .footers
            .insert(object.to_string(), footer.clone())
            .is_none()
        {
            caches.footer_order.push_back(object.to_string());
        }
        while caches.footer_order.len() > FOOTERS_MAX {
            if let Some(oldest) = caches.footer_order.pop_front() {
                caches.footers.remove(&oldest);
            }
        }
        Ok(footer)
    }

    /// The row groups of a file, in offset order.
    pub async fn row_groups(
        &self,
        object: &str,
        size: u64,
    ) -> Result<Vec<RowGroupInfo>, ColumnarError> {
        Ok(self.footer(object, size).await?.row_groups.clone())
    }

    /// The record batches of one row group.
    pub async fn row_group(
        &self,
        object: &str,
        size: u64,
        index: usize,
    ) -> Result<ReadBatches, ColumnarError> {
        let key = (object.to_string(), index);
        if let Some(found) = self.caches.lock().expect("cache poisoned").groups.get(&key) {
            return Ok(found.clone());
        }
        let footer = self.footer(object, size).await?;
        let metadata = footer.metadata.clone();
        let projection = base_columns(metadata.metadata());
        let group = metadata.metadata().row_groups().get(index).ok_or_else(|| {
            ColumnarError::Corrupt(format!("object={object}: no row group {index}"))
        })?;
        // The projected column chunks of this row group, in one coalesced ranged read.
        let ranges: Vec<Range<u64>> = group
            .columns()
            .iter()
            .enumerate()
            .filter(|(leaf, _)| projection.leaf_included(*leaf))
            .map(|(_, column)| {
                let (start, length) = column.byte_range();
                start..start + length
            })
            .collect();
        let chunks = self
            .objects
            .get_ranges(&Path::from(object), &ranges)
            .await
            .map_err(|e| unreadable(object, external(e)))?;
        let source = Chunks {
            size,
            chunks: ranges.iter().map(|r| r.start).zip(chunks).collect(),
        };
        // Decoding and re-encoding are CPU work: off the async workers.
        let name = object.to_string();
        let batches = tokio::task::spawn_blocking(move || {
            let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(source, metadata)
                .with_row_groups(vec![index]);
            decode(&name, builder)
        })
        .await
        .map_err(|e| ColumnarError::Unavailable(format!("object={object}: {e}")))??;
        let batches = Arc::new(batches);
        let bytes: usize = batches.iter().map(Bytes::len).sum();
        let mut caches = self.caches.lock().expect("cache poisoned");
        if bytes <= self.cache_max_bytes
            && caches.groups.insert(key.clone(), batches.clone()).is_none()
        {
            caches.group_order.push_back(key);
            caches.group_bytes += bytes;
        }
        while caches.group_bytes > self.cache_max_bytes {
            let Some(oldest) = caches.group_order.pop_front() else {
                break;
            };
            if let Some(evicted) = caches.groups.remove(&oldest) {
                caches.group_bytes -= evicted.iter().map(Bytes::len).sum::<usize>();
            }
        }
        Ok(batches)
    }
}

/// One file in the bucket, read with ranged GETs (its size comes from the index, so the footer
/// is one GET).
struct BucketFile {
    objects: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

fn external(error: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(error))
}

impl AsyncFileReader for BucketFile {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.objects
                .get_range(&self.path, range)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.objects
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// Column chunks of one row group fetched ahead, read by the synchronous decoder as if they
/// were the file (reads outside them are errors: the decoder reads only what was projected).
struct Chunks {
    size: u64,
    /// (file position, bytes), sorted by position.
    chunks: Vec<(u64, Bytes)>,
}

impl Chunks {
    fn slice(&self, start: u64, length: Option<usize>) -> parquet::errors::Result<Bytes> {
        let outside = || {
            parquet::errors::ParquetError::General(format!(
                "read at {start} outside the fetched column chunks"
            ))
        };
        let (at, chunk) = self
            .chunks
            .iter()
            .rev()
            .find(|(at, _)| *at <= start)
            .ok_or_else(outside)?;
        let from = usize::try_from(start - at).map_err(|_| outside())?;
        let to = match length {
            Some(length) => from.checked_add(length).ok_or_else(outside)?,
            None => chunk.len(),
        };
        if from > chunk.len() || to > chunk.len() {
            return Err(outside());
        }
        Ok(chunk.slice(from..to))
    }
}

impl parquet::file::reader::Length for Chunks {
    fn len(&self) -> u64 {
        self.size
    }
}

impl parquet::file::reader::ChunkReader for Chunks {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        Ok(self.slice(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, Some(length))
    }
}

/// Every record batch of a whole file held in memory (the compactor, which reads a file whole to
/// check its CRC32C before rewriting it), in offset order.
pub fn decode_file(object: &str, bytes: Bytes) -> Result<Vec<Bytes>, ColumnarError> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| corrupt(object, e))?;
    if !super::starts_with_base(builder.schema()) {
        return Err(corrupt(object, "not a skiff topic file (schema differs)"));
    }
    decode(object, builder)
}

fn corrupt(object: &str, error: impl std::fmt::Display) -> ColumnarError {
    ColumnarError::Corrupt(format!("object={object}: {error}"))
}

/// Decodes the base columns of the rows `builder` selects and rebuilds their record batches.
fn decode<T: parquet::file::reader::ChunkReader + 'static>(
    object: &str,
    builder: ParquetRecordBatchReaderBuilder<T>,
) -> Result<Vec<Bytes>, ColumnarError> {
    let projection = base_columns(builder.metadata());
    let reader = builder
        .with_projection(projection)
        .with_batch_size(DECODE_BATCH_ROWS)
        .build()
        .map_err(|e| corrupt(object, e))?;
    let arrow: Vec<RecordBatch> = reader
        .collect::<Result<_, _>>()
        .map_err(|e| corrupt(object, e))?;
    rebuild(&arrow).map_err(|e| corrupt(object, e))
}

/// The columns Fetch needs: the base schema's (a file's typed JSON columns are not read).
fn base_columns(metadata: &ParquetMetaData) -> parquet::arrow::ProjectionMask {
    parquet::arrow::ProjectionMask::roots(
        metadata.file_metadata().schema_descr(),
        0..super::schema().fields().len(),
    )
}

/// The value at `i`, None when null.
fn bytes_at(array: &arrow_array::BinaryArray, i: usize) -> Option<&[u8]> {
    (!array.is_null(i)).then(|| array.value(i))
}

/// One row of an open batch, borrowing its bytes from the decoded columns.
struct Row<'a> {
    offset: i64,
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    /// Its headers in the open batch's header list.
    headers: Range<usize>,
}

/// The rows of the batch being rebuilt.
#[derive(Default)]
struct OpenBatch<'a> {
    fields: Option<BatchFields>,
    rows: Vec<Row<'a>>,
    headers: Vec<records::HeaderRef<'a>>,
}

impl OpenBatch<'_> {
    /// Encodes the open batch (if any) at the end of `out`, notes where, and empties it.
    fn close(&mut self, out: &mut BytesMut, ends: &mut Vec<usize>) {
        let Some(fields) = self.fields.take() else {
            return;
        };
        let refs: Vec<records::RecordRef<'_>> = self
            .rows
            .iter()
            .map(|row| records::RecordRef {
                offset: row.offset,
                timestamp: row.timestamp,
                key: row.key,
                value: row.value,
                headers: &self.headers[row.headers.clone()],
            })
            .collect();
        records::encode_refs_into(out, &fields, &refs);
        ends.push(out.len());
        self.rows.clear();
        self.headers.clear();
    }
}

/// Turns decoded rows back into record batches: consecutive rows sharing `batch_base_offset`
/// are one batch, encoded uncompressed with a fresh CRC, each byte copied once from the columns,
/// all batches into one allocation.
fn rebuild(arrow: &[RecordBatch]) -> Result<Vec<Bytes>, String> {
    let mut out = BytesMut::with_capacity(arrow.iter().map(encoded_bytes_estimate).sum());
    let mut ends = Vec::new();
    let mut open = OpenBatch::default();
    for rows in arrow {
        let column = |i: usize| rows.column(i);
        let offset = column(col::OFFSET).as_primitive::<Int64Type>();
        let timestamp = column(col::TIMESTAMP).as_primitive::<TimestampMillisecondType>();
        let timestamp_type = column(col::TIMESTAMP_TYPE).as_primitive::<Int8Type>();
        let key = column(col::KEY).as_binary::<i32>();
        let value = column(col::VALUE).as_binary::<i32>();
        let headers = column(col::HEADERS).as_list::<i32>();
        let header_offsets = headers.value_offsets();
        let header_rows = headers.values().as_struct();
        let header_keys = header_rows.column(0).as_binary::<i32>();
        let header_values = header_rows.column(1).as_binary::<i32>();
        let producer_id = column(col::PRODUCER_ID).as_primitive::<Int64Type>();
        let producer_epoch = column(col::PRODUCER_EPOCH).as_primitive::<Int16Type>();
        let sequence = column(col::SEQUENCE).as_primitive::<Int32Type>();
        let transactional = column(col::IS_TRANSACTIONAL).as_boolean();
        let control = column(col::IS_CONTROL).as_boolean();
        let leader_epoch = column(col::LEADER_EPOCH).as_primitive::<Int32Type>();
        let base_offset = column(col::BATCH_BASE_OFFSET).as_primitive::<Int64Type>();
        let last_offset = column(col::BATCH_LAST_OFFSET).as_primitive::<Int64Type>();
        for i in 0..rows.num_rows() {
            let row_offset = offset.value(i);
            let batch_base = base_offset.value(i);
            if open.fields.is_some_and(|f| f.base_offset != batch_base) {
                open.close(&mut out, &mut ends);
            }
            if open.fields.is_none() {
                let fields = BatchFields {
                    base_offset: batch_base,
                    last_offset: last_offset.value(i),
                    partition_leader_epoch: leader_epoch.value(i),
                    log_append_time: timestamp_type.value(i) == 1,
                    transactional: transactional.value(i),
                    control: control.value(i),
                    producer_id: producer_id.value(i),
                    producer_epoch: producer_epoch.value(i),
                    base_sequence: if sequence.value(i) < 0 {
                        -1
                    } else {
                        let delta = i32::try_from(row_offset - batch_base)
                            .map_err(|_| format!("offset {row_offset} too far from its batch"))?;
                        sequence.value(i).wrapping_sub(delta)
                    },
                };
                open.fields = Some(fields);
            }
            let fields = open.fields.expect("opened above");
            if !(fields.base_offset..=fields.last_offset).contains(&row_offset) {
                return Err(format!(
                    "offset {row_offset} outside its batch {}..={}",
                    fields.base_offset, fields.last_offset
                ));
            }
            if open.rows.last().is_some_and(|r| r.offset >= row_offset) {
                return Err(format!("offset {row_offset} out of order"));
            }
            let first_header = open.headers.len();
            let (start, end) = (header_offsets[i] as usize, header_offsets[i + 1] as usize);
            for h in start..end {
                open.headers
                    .push((header_keys.value(h), bytes_at(header_values, h)));
            }
            open.rows.push(Row {
                offset: row_offset,
                timestamp: timestamp.value(i),
                key: bytes_at(key, i),
                value: bytes_at(value, i),
                headers: first_header..open.headers.len(),
            });
        }
    }
    open.close(&mut out, &mut ends);
    let out = out.freeze();
    let mut start = 0;
    Ok(ends
        .into_iter()
        .map(|end| {
            let batch = out.slice(start..end);
            start = end;
            batch
        })
        .collect())
}

/// About the bytes the rows of `rows` take as record batches: their byte columns plus a
/// record's framing (batch headers are few and covered by the slack).
fn encoded_bytes_estimate(rows: &RecordBatch) -> usize {
    let binary = |i: usize| rows.column(i).as_binary::<i32>().values().len();
    let headers = rows
        .column(col::HEADERS)
        .as_list::<i32>()
        .values()
        .as_struct();
    let header_bytes = headers.column(0).as_binary::<i32>().values().len()
        + headers.column(1).as_binary::<i32>().values().len()
        + 4 * headers.len();
    binary(col::KEY) + binary(col::VALUE) + header_bytes + 24 * rows.num_rows() + 1024
}
