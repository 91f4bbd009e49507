//! Reading Parquet files back as Kafka record batches, one row group at a time.
//!
//! Files are immutable, so their footers (bounded by count) and rebuilt row groups (a `foyer`
//! memory cache bounded by bytes, least recently used out, concurrent reads of one row group
//! sharing one fetch and rebuild) are cached by object key without invalidation. A row group is
//! fetched with one coalesced ranged read of the column chunks Fetch needs.

use super::rebuild::{self, Leaves, RowGroupBatches};
use super::ColumnarError;
use bytes::Bytes;
use foyer::{Cache, CacheBuilder};
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path;
use object_store::ObjectStore;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// Footers kept in memory.
const FOOTERS_MAX: usize = 1024;

/// What Fetch needs to know of a row group without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowGroupInfo {
    /// Highest `batch_last_offset`: the row group holds nothing a read from above needs.
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// Record batches rebuilt from one row group, in offset order.
pub type ReadBatches = Arc<RowGroupBatches>;

#[derive(Debug)]
struct Footer {
    metadata: Arc<ParquetMetaData>,
    leaves: Leaves,
    row_groups: Vec<RowGroupInfo>,
}

/// Footers, oldest first for eviction.
#[derive(Debug, Default)]
struct Footers {
    by_object: HashMap<String, Arc<Footer>>,
    order: VecDeque<String>,
}

/// A rebuilt row group in the cache: its file and index.
type GroupKey = (String, usize);

/// Reads Parquet files of the bucket as record batches.
pub struct ColumnarReader {
    objects: Arc<dyn ObjectStore>,
    footers: Mutex<Footers>,
    /// Rebuilt row groups (`None`: not cached). Least recently used first out, so the row
    /// group a consumer is part way through (read again at its next fetch) stays while ones
    /// read to the end go; one shard, as the entries are few and large (several MiB each).
    groups: Option<Cache<GroupKey, ReadBatches>>,
}

impl std::fmt::Debug for ColumnarReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnarReader")
            .field(
                "row_group_cache_bytes",
                &self.groups.as_ref().map(Cache::usage),
            )
            .finish()
    }
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
        let groups = (cache_max_bytes > 0).then(|| {
            CacheBuilder::new(cache_max_bytes)
                .with_name("skiff_parquet_row_groups")
                .with_shards(1)
                .with_weighter(|key: &GroupKey, batches: &ReadBatches| {
                    key.0.len() + batches.bytes()
                })
                .build()
        });
        Self {
            objects,
            footers: Mutex::new(Footers::default()),
            groups,
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
            .footers
            .lock()
            .expect("footer cache poisoned")
            .by_object
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
        // Statistics are per leaf column (a list of structs is two): the leaves found by name.
        let leaves = Leaves::find(metadata.metadata())
            .map_err(|e| ColumnarError::Corrupt(format!("object={object}: {e}")))?;
        let mut row_groups = Vec::new();
        for group in metadata.metadata().row_groups() {
            let max_i64 = |column: usize| match group.column(column).statistics() {
                Some(Statistics::Int64(s)) => s.max_opt().copied(),
                _ => None,
            };
            let (Some(last_offset), Some(max_timestamp)) =
                (max_i64(leaves.last_offset), max_i64(leaves.timestamp))
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
            metadata: metadata.metadata().clone(),
            leaves,
            row_groups,
        });
        let mut footers = self.footers.lock().expect("footer cache poisoned");
        if footers
            .by_object
            .insert(object.to_string(), footer.clone())
            .is_none()
        {
            footers.order.push_back(object.to_string());
        }
        while footers.order.len() > FOOTERS_MAX {
            if let Some(oldest) = footers.order.pop_front() {
                footers.by_object.remove(&oldest);
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

    /// The record batches of one row group: from the cache, or read and rebuilt once however
    /// many fetches want it at the same time.
    pub async fn row_group(
        &self,
        object: &str,
        size: u64,
        index: usize,
    ) -> Result<ReadBatches, ColumnarError> {
        let Some(groups) = &self.groups else {
            let footer = self.footer(object, size).await?;
            return read_row_group(
                self.objects.clone(),
                footer,
                object.to_string(),
                size,
                index,
            )
            .await;
        };
        let key = (object.to_string(), index);
        if let Some(found) = groups.get(&key) {
            return Ok(found.value().clone());
        }
        let footer = self.footer(object, size).await?;
        let objects = self.objects.clone();
        let name = object.to_string();
        groups
            .get_or_fetch(&key, move || {
                read_row_group(objects, footer, name, size, index)
            })
            .await
            .map(|found| found.value().clone())
            .map_err(|error| {
                error
                    .downcast_ref::<ColumnarError>()
                    .cloned()
                    .unwrap_or_else(|| {
                        ColumnarError::Unavailable(format!("object={object}: {error}"))
                    })
            })
    }
}

/// Fetches the column chunks Fetch needs of one row group (one coalesced ranged read) and
/// rebuilds its record batches.
async fn read_row_group(
    objects: Arc<dyn ObjectStore>,
    footer: Arc<Footer>,
    object: String,
    size: u64,
    index: usize,
) -> Result<ReadBatches, ColumnarError> {
    let group =
        footer.metadata.row_groups().get(index).ok_or_else(|| {
            ColumnarError::Corrupt(format!("object={object}: no row group {index}"))
        })?;
    let ranges: Vec<Range<u64>> = group
        .columns()
        .iter()
        .enumerate()
        .filter(|(leaf, _)| footer.leaves.includes(*leaf))
        .map(|(_, column)| {
            let (start, length) = column.byte_range();
            start..start + length
        })
        .collect();
    let chunks = crate::ranged::get_ranges(&*objects, &Path::from(object.as_str()), &ranges)
        .await
        .map_err(|e| unreadable(&object, external(e)))?;
    let source = Chunks {
        size,
        chunks: ranges.iter().map(|r| r.start).zip(chunks).collect(),
    };
    // Decoding and re-encoding are CPU work: off the async workers.
    let batches = tokio::task::spawn_blocking(move || {
        rebuild::row_group(Arc::new(source), &footer.metadata, &footer.leaves, index)
    })
    .await
    .map_err(|e| ColumnarError::Unavailable(format!("object={object}: {e}")))?
    .map_err(|e| corrupt(&object, e))?;
    Ok(Arc::new(batches))
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
            crate::ranged::get_range(&*self.objects, &self.path, range)
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
            crate::ranged::get_ranges(&*self.objects, &self.path, &ranges)
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
    let metadata = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::new())
        .map_err(|e| corrupt(object, e))?;
    if !super::starts_with_base(metadata.schema()) {
        return Err(corrupt(object, "not a skiff topic file (schema differs)"));
    }
    let metadata = metadata.metadata();
    let leaves = Leaves::find(metadata).map_err(|e| corrupt(object, e))?;
    let file = Arc::new(bytes);
    let mut batches = Vec::new();
    for index in 0..metadata.num_row_groups() {
        batches.extend(
            rebuild::row_group(file.clone(), metadata, &leaves, index)
                .map_err(|e| corrupt(object, e))?
                .batches(),
        );
    }
    Ok(batches)
}

fn corrupt(object: &str, error: impl std::fmt::Display) -> ColumnarError {
    ColumnarError::Corrupt(format!("object={object}: {error}"))
}
