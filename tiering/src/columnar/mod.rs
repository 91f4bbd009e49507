//! Topic data as Parquet: the compactor's output, which analytics engines read straight from the
//! bucket and Fetch turns back into record batches.
//!
//! One file holds a contiguous offset range of one partition (see `paths::parquet_file` for the
//! Hive-style key). One row per record, in offset order, with these columns (format version 1):
//!
//! ```text
//! partition          int32
//! offset             int64
//! timestamp          timestamp[ms, UTC]  what a consumer sees (the batch's for LogAppendTime)
//! timestamp_type     int8                0 CreateTime, 1 LogAppendTime
//! key                binary, nullable    exactly the produced bytes
//! value              binary, nullable    exactly the produced bytes
//! headers            list<struct<key: binary, value: binary nullable>>, in order, repeats kept
//! producer_id        int64               -1 without an idempotent producer
//! producer_epoch     int16
//! sequence           int32               the record's sequence number (-1 without a producer id)
//! is_transactional   bool
//! is_control         bool
//! leader_epoch       int32               the batch's partition leader epoch
//! batch_base_offset  int64               the batch the record came in: rows sharing it are one
//! batch_last_offset  int64               batch again when Fetch reads the file
//! ```
//! Rows of one batch never span row groups, so a Fetch decodes only the row groups whose
//! `batch_last_offset` statistics reach its offset. The binary columns are zstd-compressed; the
//! fixed-width ones are stored uncompressed (offsets, timestamps and sequences as deltas, the
//! rest as dictionaries), so a reader decompresses only what is large. Statistics per page.
//! Topics with `parquet.value.format=json` have more columns after these (see [`json`]);
//! readers of the columns above project them and ignore what follows.

pub mod json;
mod read;
mod rebuild;
mod write;

pub use read::{decode_file, ColumnarReader, ReadBatches, RowGroupInfo};
pub use rebuild::RowGroupBatches;
pub use write::{FileSummary, FileWriter};

use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};
use std::sync::{Arc, OnceLock};

/// Written into every file's key-value metadata as `skiff.format.version`.
pub const FORMAT_VERSION: &str = "1";

/// Key and value bytes after which the writer closes a row group (at a batch boundary).
pub const ROW_GROUP_TARGET_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnarError {
    /// The file is not in the bucket (garbage-collected after the index moved on, or lost).
    #[error("parquet file missing: {0}")]
    Missing(String),
    #[error("parquet file unreadable: {0}")]
    Unavailable(String),
    #[error("parquet file corrupt: {0}")]
    Corrupt(String),
}

pub(crate) fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Binary, false),
        Field::new("value", DataType::Binary, true),
    ])
}

pub(crate) fn header_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(header_fields()), false))
}

/// The Arrow schema of every file (see the module docs).
pub fn schema() -> Arc<Schema> {
    static SCHEMA: OnceLock<Arc<Schema>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("partition", DataType::Int32, false),
                Field::new("offset", DataType::Int64, false),
                Field::new(
                    "timestamp",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    false,
                ),
                Field::new("timestamp_type", DataType::Int8, false),
                Field::new("key", DataType::Binary, true),
                Field::new("value", DataType::Binary, true),
                Field::new("headers", DataType::List(header_item()), false),
                Field::new("producer_id", DataType::Int64, false),
                Field::new("producer_epoch", DataType::Int16, false),
                Field::new("sequence", DataType::Int32, false),
                Field::new("is_transactional", DataType::Boolean, false),
                Field::new("is_control", DataType::Boolean, false),
                Field::new("leader_epoch", DataType::Int32, false),
                Field::new("batch_base_offset", DataType::Int64, false),
                Field::new("batch_last_offset", DataType::Int64, false),
            ]))
        })
        .clone()
}

/// Whether a file's schema starts with [`schema`] (columns after it are allowed: typed JSON
/// fields, or a later format's additions).
pub(crate) fn starts_with_base(found: &Schema) -> bool {
    let base = schema();
    found.fields().len() >= base.fields().len()
        && found
            .fields()
            .iter()
            .zip(base.fields().iter())
            .all(|(a, b)| a == b)
}

#[cfg(test)]
mod tests;
