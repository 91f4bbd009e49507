//! Rebuilding Kafka record batches from a row group's column chunks.
//!
//! Parquet's own column readers decode the pages; byte values come back as slices of the
//! decompressed pages (no Arrow arrays in between), so each record byte is copied once after
//! decompression: into the batch that Fetch sends. The file's schema is checked leaf by leaf
//! (name and physical type) before any column is read, so a foreign or damaged file is an error,
//! never a wrongly typed read.

use crate::records::{self, BatchFields, HeaderRef, RecordRef};
use bytes::{Bytes, BytesMut};
use parquet::basic::Type as Physical;
use parquet::column::reader::{get_typed_column_reader, ColumnReaderImpl};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DataType, Int32Type, Int64Type};
use parquet::file::metadata::{ParquetMetaData, RowGroupMetaData};
use parquet::file::properties::ReaderProperties;
use parquet::file::reader::{ChunkReader, RowGroupReader};
use parquet::file::serialized_reader::SerializedRowGroupReader;
use std::ops::Range;
use std::sync::Arc;

/// Where each column Fetch needs is among a file's leaf columns.
#[derive(Debug, Clone, Copy)]
pub(super) struct Leaves {
    offset: usize,
    /// Read for row-group statistics too (the reader's footer).
    pub(super) timestamp: usize,
    timestamp_type: usize,
    key: usize,
    value: usize,
    header_key: usize,
    header_value: usize,
    producer_id: usize,
    producer_epoch: usize,
    sequence: usize,
    transactional: usize,
    control: usize,
    leader_epoch: usize,
    base_offset: usize,
    pub(super) last_offset: usize,
}

impl Leaves {
    /// Finds the base schema's leaves by path, checking each one's physical type and levels.
    pub(super) fn find(metadata: &ParquetMetaData) -> Result<Self, String> {
        let columns = metadata.file_metadata().schema_descr().columns();
        let leaf = |path: &str, physical: Physical, max_def: i16, max_rep: i16| {
            let at = columns
                .iter()
                .position(|c| c.path().string() == path)
                .ok_or_else(|| format!("column {path} missing"))?;
            let column = &columns[at];
            if column.physical_type() != physical
                || column.max_def_level() != max_def
                || column.max_rep_level() != max_rep
            {
                return Err(format!(
                    "column {path} is {} (levels {}/{}), expected {physical}",
                    column.physical_type(),
                    column.max_def_level(),
                    column.max_rep_level()
                ));
            }
            Ok(at)
        };
        use Physical::{BOOLEAN, BYTE_ARRAY, INT32, INT64};
        Ok(Self {
            offset: leaf("offset", INT64, 0, 0)?,
            timestamp: leaf("timestamp", INT64, 0, 0)?,
            timestamp_type: leaf("timestamp_type", INT32, 0, 0)?,
            key: leaf("key", BYTE_ARRAY, 1, 0)?,
            value: leaf("value", BYTE_ARRAY, 1, 0)?,
            header_key: leaf("headers.list.item.key", BYTE_ARRAY, 1, 1)?,
            header_value: leaf("headers.list.item.value", BYTE_ARRAY, 2, 1)?,
            producer_id: leaf("producer_id", INT64, 0, 0)?,
            producer_epoch: leaf("producer_epoch", INT32, 0, 0)?,
            sequence: leaf("sequence", INT32, 0, 0)?,
            transactional: leaf("is_transactional", BOOLEAN, 0, 0)?,
            control: leaf("is_control", BOOLEAN, 0, 0)?,
            leader_epoch: leaf("leader_epoch", INT32, 0, 0)?,
            base_offset: leaf("batch_base_offset", INT64, 0, 0)?,
            last_offset: leaf("batch_last_offset", INT64, 0, 0)?,
        })
    }

    /// Whether Fetch reads leaf column `leaf` (the typed JSON columns it does not).
    pub(super) fn includes(&self, leaf: usize) -> bool {
        [
            self.offset,
            self.timestamp,
            self.timestamp_type,
            self.key,
            self.value,
            self.header_key,
            self.header_value,
            self.producer_id,
            self.producer_epoch,
            self.sequence,
            self.transactional,
            self.control,
            self.leader_epoch,
            self.base_offset,
            self.last_offset,
        ]
        .contains(&leaf)
    }
}

/// One column of a row group: its values (non-null ones only) and its levels.
struct Column<T> {
    values: Vec<T>,
    defs: Vec<i16>,
    reps: Vec<i16>,
}

fn read<T: DataType>(
    group: &dyn RowGroupReader,
    leaf: usize,
    rows: usize,
) -> Result<Column<T::T>, String> {
    let reader = group.get_column_reader(leaf).map_err(|e| e.to_string())?;
    // The physical type was checked in `Leaves::find`, so the conversion matches.
    let mut reader: ColumnReaderImpl<T> = get_typed_column_reader(reader);
    let mut column = Column {
        values: Vec::with_capacity(rows),
        defs: Vec::new(),
        reps: Vec::new(),
    };
    let (records, _, _) = reader
        .read_records(
            rows,
            Some(&mut column.defs),
            Some(&mut column.reps),
            &mut column.values,
        )
        .map_err(|e| e.to_string())?;
    if records != rows {
        return Err(format!(
            "column {leaf} holds {records} rows, the row group {rows}"
        ));
    }
    Ok(column)
}

/// A required column's values, one per row.
fn required<T: DataType>(
    group: &dyn RowGroupReader,
    leaf: usize,
    rows: usize,
) -> Result<Vec<T::T>, String> {
    let column = read::<T>(group, leaf, rows)?;
    if column.values.len() != rows {
        return Err(format!(
            "column {leaf} holds {} values for {rows} rows",
            column.values.len()
        ));
    }
    Ok(column.values)
}

/// A nullable binary column as one entry per row.
fn nullable(column: &Column<ByteArray>, rows: usize) -> Result<Vec<Option<&[u8]>>, String> {
    if column.defs.len() != rows {
        return Err(format!("{} levels for {rows} rows", column.defs.len()));
    }
    let mut values = column.values.iter();
    column
        .defs
        .iter()
        .map(|&def| match def {
            0 => Ok(None),
            _ => values
                .next()
                .map(|v| Some(v.data()))
                .ok_or_else(|| "fewer values than levels say".to_string()),
        })
        .collect()
}

/// The headers of every row: all of them in order, and where each row's end.
fn headers<'a>(
    keys: &'a Column<ByteArray>,
    values: &'a Column<ByteArray>,
    rows: usize,
) -> Result<(Vec<HeaderRef<'a>>, Vec<usize>), String> {
    let levels = keys.defs.len();
    if keys.reps.len() != levels || values.defs.len() != levels || values.reps != keys.reps {
        return Err("header key and value columns disagree".to_string());
    }
    let mut all = Vec::with_capacity(keys.values.len());
    let mut ends = Vec::with_capacity(rows);
    let (mut key_values, mut value_values) = (keys.values.iter(), values.values.iter());
    for j in 0..levels {
        if keys.reps[j] == 0 && j > 0 {
            ends.push(all.len());
        }
        if keys.defs[j] == 0 {
            continue; // a row without headers
        }
        let key = key_values
            .next()
            .ok_or("fewer header keys than levels say")?;
        let value = match values.defs[j] {
            2 => Some(
                value_values
                    .next()
                    .ok_or("fewer header values than levels say")?
                    .data(),
            ),
            _ => None,
        };
        all.push((key.data(), value));
    }
    if levels > 0 {
        ends.push(all.len());
    }
    if ends.len() != rows {
        return Err(format!(
            "headers for {} rows, the row group {rows}",
            ends.len()
        ));
    }
    Ok((all, ends))
}

/// The record batches of row group `index`, in offset order, read from `file` (anything holding
/// at least the column chunks of `leaves`).
pub(super) fn row_group<R: ChunkReader + 'static>(
    file: Arc<R>,
    metadata: &ParquetMetaData,
    leaves: &Leaves,
    index: usize,
) -> Result<RowGroupBatches, String> {
    let group_metadata: &RowGroupMetaData = metadata
        .row_groups()
        .get(index)
        .ok_or_else(|| format!("no row group {index}"))?;
    let rows =
        usize::try_from(group_metadata.num_rows()).map_err(|_| "negative row count".to_string())?;
    let group = SerializedRowGroupReader::new(
        file,
        group_metadata,
        metadata.page_index_for_row_group(index),
        Arc::new(ReaderProperties::builder().build()),
    )
    .map_err(|e| e.to_string())?;
    let group: &dyn RowGroupReader = &group;
    let offset = required::<Int64Type>(group, leaves.offset, rows)?;
    let timestamp = required::<Int64Type>(group, leaves.timestamp, rows)?;
    let timestamp_type = required::<Int32Type>(group, leaves.timestamp_type, rows)?;
    let producer_id = required::<Int64Type>(group, leaves.producer_id, rows)?;
    let producer_epoch = required::<Int32Type>(group, leaves.producer_epoch, rows)?;
    let sequence = required::<Int32Type>(group, leaves.sequence, rows)?;
    let transactional = required::<BoolType>(group, leaves.transactional, rows)?;
    let control = required::<BoolType>(group, leaves.control, rows)?;
    let leader_epoch = required::<Int32Type>(group, leaves.leader_epoch, rows)?;
    let base_offset = required::<Int64Type>(group, leaves.base_offset, rows)?;
    let last_offset = required::<Int64Type>(group, leaves.last_offset, rows)?;
    let key_column = read::<ByteArrayType>(group, leaves.key, rows)?;
    let value_column = read::<ByteArrayType>(group, leaves.value, rows)?;
    let header_keys = read::<ByteArrayType>(group, leaves.header_key, rows)?;
    let header_values = read::<ByteArrayType>(group, leaves.header_value, rows)?;
    let key = nullable(&key_column, rows)?;
    let value = nullable(&value_column, rows)?;
    let (headers, header_ends) = headers(&header_keys, &header_values, rows)?;

    let byte_count: usize = key_column
        .values
        .iter()
        .chain(&value_column.values)
        .chain(&header_keys.values)
        .chain(&header_values.values)
        .map(|v| v.len() + 4)
        .sum();
    let mut out = BytesMut::with_capacity(byte_count + 24 * rows + 1024);
    let mut ends = Vec::new();
    let mut batch: Vec<RecordRef<'_>> = Vec::new();
    let mut fields: Option<BatchFields> = None;
    let mut header_start = 0;
    for i in 0..rows {
        let row_offset = offset[i];
        let batch_base = base_offset[i];
        if let Some(open) = fields.filter(|f| f.base_offset != batch_base) {
            records::encode_refs_into(&mut out, &open, &batch);
            ends.push(out.len());
            batch.clear();
            fields = None;
        }
        let open = match fields {
            Some(open) => open,
            None => {
                let base_sequence = if sequence[i] < 0 {
                    -1
                } else {
                    let delta = row_offset
                        .checked_sub(batch_base)
                        .and_then(|d| i32::try_from(d).ok())
                        .ok_or_else(|| format!("offset {row_offset} too far from its batch"))?;
                    sequence[i].wrapping_sub(delta)
                };
                let epoch = i16::try_from(producer_epoch[i])
                    .map_err(|_| format!("producer epoch {} out of range", producer_epoch[i]))?;
                let open = BatchFields {
                    base_offset: batch_base,
                    last_offset: last_offset[i],
                    partition_leader_epoch: leader_epoch[i],
                    log_append_time: timestamp_type[i] == 1,
                    transactional: transactional[i],
                    control: control[i],
                    producer_id: producer_id[i],
                    producer_epoch: epoch,
                    base_sequence,
                };
                fields = Some(open);
                open
            }
        };
        if !(open.base_offset..=open.last_offset).contains(&row_offset) {
            return Err(format!(
                "offset {row_offset} outside its batch {}..={}",
                open.base_offset, open.last_offset
            ));
        }
        if batch.last().is_some_and(|r| r.offset >= row_offset) {
            return Err(format!("offset {row_offset} out of order"));
        }
        let header_end = header_ends[i];
        batch.push(RecordRef {
            offset: row_offset,
            timestamp: timestamp[i],
            key: key[i],
            value: value[i],
            headers: &headers[header_start..header_end],
        });
        header_start = header_end;
    }
    if let Some(open) = fields {
        records::encode_refs_into(&mut out, &open, &batch);
        ends.push(out.len());
    }
    let mut start = 0;
    let ranges = ends
        .into_iter()
        .map(|end| {
            let range = start..end;
            start = end;
            range
        })
        .collect();
    Ok(RowGroupBatches {
        buffer: out.freeze(),
        ranges,
    })
}

/// The record batches rebuilt from one row group: one buffer, the batches consecutive ranges
/// of it (so a read of several is one slice of the buffer, sent without a copy).
#[derive(Debug)]
pub struct RowGroupBatches {
    pub buffer: Bytes,
    /// Each batch's bytes in `buffer`, in offset order, end to end.
    pub ranges: Vec<Range<usize>>,
}

impl RowGroupBatches {
    /// The batches, in offset order.
    pub fn batches(&self) -> impl Iterator<Item = Bytes> + '_ {
        self.ranges.iter().map(|r| self.buffer.slice(r.clone()))
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.buffer.len()
    }
}
