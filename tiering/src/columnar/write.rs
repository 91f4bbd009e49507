//! Writing one partition's record batches into one Parquet file, in memory.

use super::json::{JsonBuilders, JsonFields};
use super::{schema, ColumnarError, FORMAT_VERSION, ROW_GROUP_TARGET_BYTES};
use crate::batch::BatchHeader;
use crate::records::Record;
use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Int16Builder, Int32Builder, Int64Builder, Int8Builder,
};
use arrow_array::{ArrayRef, ListArray, RecordBatch, StructArray, TimestampMillisecondArray};
use arrow_buffer::OffsetBuffer;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;
use std::sync::Arc;

/// Target size of a data page.
const DATA_PAGE_BYTES: usize = 64 * 1024;

/// Settings for the fixed-width columns: stored without compression, in encodings that make
/// them small anyway (offsets and timestamps as deltas, the rest as dictionaries of runs), so a
/// reader decompresses only the byte columns. Every column chunk that is compressed costs a
/// reader a fresh zstd context (parquet creates one per chunk): with all fifteen compressed,
/// creating them was a tenth of a row group's rebuild (bench/RESULTS.md).
fn fixed_width_columns(mut builder: WriterPropertiesBuilder) -> WriterPropertiesBuilder {
    for name in [
        "partition",
        "timestamp_type",
        "producer_id",
        "producer_epoch",
        "is_transactional",
        "is_control",
        "leader_epoch",
        "batch_base_offset",
        "batch_last_offset",
    ] {
        builder = builder.set_column_compression(ColumnPath::from(name), Compression::UNCOMPRESSED);
    }
    for name in ["offset", "timestamp", "sequence"] {
        let path = ColumnPath::from(name);
        builder = builder
            .set_column_compression(path.clone(), Compression::UNCOMPRESSED)
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
    }
    builder
}

/// What a finished file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSummary {
    pub rows: u64,
    /// First and last record offsets (None for a file without rows).
    pub first_offset: Option<i64>,
    pub last_offset: Option<i64>,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub bytes: u64,
    pub crc32c: u32,
}

/// Column values of the rows not yet written as a row group.
#[derive(Default)]
struct Columns {
    offset: Int64Builder,
    timestamp: Vec<i64>,
    timestamp_type: Int8Builder,
    key: BinaryBuilder,
    value: BinaryBuilder,
    header_offsets: Vec<i32>,
    header_key: BinaryBuilder,
    header_value: BinaryBuilder,
    producer_id: Int64Builder,
    producer_epoch: Int16Builder,
    sequence: Int32Builder,
    is_transactional: BooleanBuilder,
    is_control: BooleanBuilder,
    leader_epoch: Int32Builder,
    batch_base_offset: Int64Builder,
    batch_last_offset: Int64Builder,
    rows: usize,
    bytes: usize,
}

/// Builds one Parquet file of one partition from record batches pushed in offset order.
pub struct FileWriter {
    partition: i32,
    writer: ArrowWriter<Vec<u8>>,
    schema: Arc<arrow_schema::Schema>,
    columns: Columns,
    /// Typed columns of JSON values' fields (none for other topics).
    json: JsonBuilders,
    summary: FileSummary,
}

impl std::fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWriter")
            .field("partition", &self.partition)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

fn failed(e: impl std::fmt::Display) -> ColumnarError {
    ColumnarError::Corrupt(format!("parquet write: {e}"))
}

impl FileWriter {
    pub fn new(topic: &str, partition: i32) -> Result<Self, ColumnarError> {
        Self::with_json(topic, partition, &JsonFields::default())
    }

    /// A file that also has typed columns for these JSON fields of the values (see `json`).
    pub fn with_json(
        topic: &str,
        partition: i32,
        json: &JsonFields,
    ) -> Result<Self, ColumnarError> {
        let schema = json.schema(&schema());
        let properties = fixed_width_columns(WriterProperties::builder())
            // Level 1, not 3: on payloads with random ids (hex, UUIDs) level 3 finds short
            // matches that make decoding slower and files no smaller; level 1 wrote 5 % smaller
            // files, 45 % faster, read back 20 % cheaper (bench/RESULTS.md).
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).map_err(failed)?))
            .set_statistics_enabled(EnabledStatistics::Page)
            // Small pages: finer page statistics for readers that prune by offset or time, and
            // small decompression buffers (no Fetch CPU change measured, bench/RESULTS.md).
            .set_data_page_size_limit(DATA_PAGE_BYTES)
            // Row groups are closed by bytes, at batch boundaries (see `push`).
            .set_max_row_group_row_count(None)
            .set_max_row_group_bytes(None)
            .set_key_value_metadata(Some(vec![
                KeyValue::new("skiff.format.version".into(), FORMAT_VERSION.to_string()),
                KeyValue::new("skiff.topic".into(), topic.to_string()),
                KeyValue::new("skiff.partition".into(), partition.to_string()),
            ]))
            .build();
        let writer =
            ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties)).map_err(failed)?;
        Ok(Self {
            partition,
            writer,
            schema,
            columns: Columns::default(),
            json: json.builders(),
            summary: FileSummary {
                rows: 0,
                first_offset: None,
                last_offset: None,
                min_timestamp: i64::MAX,
                max_timestamp: i64::MIN,
                bytes: 0,
                crc32c: 0,
            },
        })
    }

    /// Adds one batch's records (those a compaction kept; offsets ascending, after every
    /// record pushed before).
    pub fn push(&mut self, header: &BatchHeader, records: &[Record]) -> Result<(), ColumnarError> {
        let c = &mut self.columns;
        for record in records {
            if let Some(last) = self.summary.last_offset {
                if record.offset <= last {
                    return Err(ColumnarError::Corrupt(format!(
                        "offset {} after {last}: records out of order",
                        record.offset
                    )));
                }
            }
            self.summary.first_offset.get_or_insert(record.offset);
            self.summary.last_offset = Some(record.offset);
            self.summary.rows += 1;
            self.summary.min_timestamp = self.summary.min_timestamp.min(record.timestamp);
            self.summary.max_timestamp = self.summary.max_timestamp.max(record.timestamp);
            c.offset.append_value(record.offset);
            c.timestamp.push(record.timestamp);
            c.timestamp_type
                .append_value(i8::from(header.is_log_append_time()));
            c.key.append_option(record.key.as_deref());
            c.value.append_option(record.value.as_deref());
            self.json.append(record.value.as_deref());
            if c.header_offsets.is_empty() {
                c.header_offsets.push(0);
            }
            let mut headers_total = c.header_offsets.last().copied().unwrap_or(0);
            for h in &record.headers {
                headers_total += 1;
                c.header_key.append_value(&h.key);
                c.header_value.append_option(h.value.as_deref());
                c.bytes += h.key.len() + h.value.as_ref().map_or(0, Bytes::len);
            }
            c.header_offsets.push(headers_total);
            c.producer_id.append_value(header.producer_id);
            c.producer_epoch.append_value(header.producer_epoch);
            let sequence = if header.base_sequence < 0 {
                -1
            } else {
                let delta = i32::try_from(record.offset - header.base_offset).map_err(failed)?;
                header.base_sequence.wrapping_add(delta)
            };
            c.sequence.append_value(sequence);
            c.is_transactional.append_value(header.is_transactional());
            c.is_control.append_value(header.is_control());
            c.leader_epoch.append_value(header.partition_leader_epoch);
            c.batch_base_offset.append_value(header.base_offset);
            c.batch_last_offset.append_value(header.last_offset());
            c.rows += 1;
            c.bytes += 64
                + record.key.as_ref().map_or(0, Bytes::len)
                + record.value.as_ref().map_or(0, Bytes::len);
        }
        if self.columns.bytes >= ROW_GROUP_TARGET_BYTES {
            self.write_row_group()?;
        }
        Ok(())
    }

    fn write_row_group(&mut self) -> Result<(), ColumnarError> {
        if self.columns.rows == 0 {
            return Ok(());
        }
        let mut c = std::mem::take(&mut self.columns);
        let rows = c.rows;
        let headers = StructArray::try_new(
            super::header_fields(),
            vec![
                Arc::new(c.header_key.finish()) as ArrayRef,
                Arc::new(c.header_value.finish()),
            ],
            None,
        )
        .map_err(failed)?;
        let headers = ListArray::try_new(
            super::header_item(),
            OffsetBuffer::new(c.header_offsets.into()),
            Arc::new(headers),
            None,
        )
        .map_err(failed)?;
        let mut columns: Vec<ArrayRef> = vec![Arc::new(arrow_array::Int32Array::from(vec![
            self.partition;
            rows
        ]))];
        columns.push(Arc::new(c.offset.finish()));
        columns.push(Arc::new(
            TimestampMillisecondArray::from(c.timestamp).with_timezone("UTC"),
        ));
        columns.push(Arc::new(c.timestamp_type.finish()));
        columns.push(Arc::new(c.key.finish()));
        columns.push(Arc::new(c.value.finish()));
        columns.push(Arc::new(headers));
        columns.push(Arc::new(c.producer_id.finish()));
        columns.push(Arc::new(c.producer_epoch.finish()));
        columns.push(Arc::new(c.sequence.finish()));
        columns.push(Arc::new(c.is_transactional.finish()));
        columns.push(Arc::new(c.is_control.finish()));
        columns.push(Arc::new(c.leader_epoch.finish()));
        columns.push(Arc::new(c.batch_base_offset.finish()));
        columns.push(Arc::new(c.batch_last_offset.finish()));
        debug_assert_eq!(columns.len(), schema().fields().len());
        columns.extend(self.json.finish());
        let batch = RecordBatch::try_new(self.schema.clone(), columns).map_err(failed)?;
        self.writer.write(&batch).map_err(failed)?;
        self.writer.flush().map_err(failed)
    }

    /// Closes the file: its bytes and what it holds.
    pub fn finish(mut self) -> Result<(Bytes, FileSummary), ColumnarError> {
        self.write_row_group()?;
        let bytes = Bytes::from(self.writer.into_inner().map_err(failed)?);
        let mut summary = self.summary;
        if summary.rows == 0 {
            summary.min_timestamp = -1;
            summary.max_timestamp = -1;
        }
        summary.bytes = bytes.len() as u64;
        summary.crc32c = crc32c::crc32c(&bytes);
        Ok((bytes, summary))
    }
}
