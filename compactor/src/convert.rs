//! Reading flush-object sections and writing them as one Parquet file.
//!
//! Sections are fetched grouped by object, so a pass that converts many partitions reads each
//! flush object with one coalesced set of ranged GETs (`ObjectStore::get_ranges` merges nearby
//! ranges), not one GET per partition. Every section is checked against its CRC32C, and every
//! batch in it against the section's offsets, before anything is written: bad data stops the
//! job, never becomes Parquet.

use bytes::Bytes;
use object_store::path::Path;
use object_store::ObjectStore;
use skiff_tiering::batch;
use skiff_tiering::columnar::json::JsonInference;
use skiff_tiering::columnar::{ColumnarError, FileSummary, FileWriter};
use skiff_tiering::keys::IndexEntry;
use skiff_tiering::object;
use skiff_tiering::records;
use skiff_tiering::tree::ReadError;
use std::collections::{BTreeMap, HashMap};

/// Sections' bytes by (object, position).
pub type Sections = HashMap<(String, u64), Bytes>;

/// Fetches the sections of `leaves`, one request set per object, each checked against its CRC.
pub async fn fetch_sections(
    objects: &dyn ObjectStore,
    leaves: &[&IndexEntry],
) -> Result<Sections, ReadError> {
    let mut by_object: BTreeMap<&str, Vec<&IndexEntry>> = BTreeMap::new();
    for leaf in leaves.iter().copied() {
        by_object
            .entry(leaf.object.as_str())
            .or_default()
            .push(leaf);
    }
    let mut out = Sections::new();
    for (object, entries) in by_object {
        let ranges: Vec<std::ops::Range<u64>> = entries
            .iter()
            .map(|e| e.position..e.position + e.length)
            .collect();
        let what = format!("object={object}");
        let fetched = skiff_tiering::ranged::get_ranges(objects, &Path::from(object), &ranges)
            .await
            .map_err(|e| ReadError::from_store(&what, e))?;
        for (entry, bytes) in entries.into_iter().zip(fetched) {
            object::verify_section(&bytes, entry.crc32c).map_err(|e| {
                ReadError::Corrupt(format!("{what} section at {}: {e}", entry.position))
            })?;
            out.insert((entry.object.clone(), entry.position), bytes);
        }
    }
    Ok(out)
}

/// Why a conversion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("section of object={object} at {position}: {reason}")]
    BadSection {
        object: String,
        position: u64,
        reason: String,
    },
    #[error("section of object={0} was not fetched")]
    NotFetched(String),
    #[error(transparent)]
    Parquet(#[from] ColumnarError),
}

/// Writes the records of `leaves` at or above `log_start` as one Parquet file (CPU work: run it
/// on a blocking thread), with typed columns for the fields of JSON values when `json_values`
/// (found by decoding the records once more first, so memory stays at one batch). None when
/// no record is left.
pub fn write_file(
    topic: &str,
    partition: i32,
    leaves: &[IndexEntry],
    sections: &Sections,
    log_start: i64,
    json_values: bool,
) -> Result<Option<(Bytes, FileSummary)>, ConvertError> {
    let mut writer = if json_values {
        let mut inference = JsonInference::default();
        each_batch(leaves, sections, log_start, |_, kept| {
            for record in kept {
                inference.observe(record.value.as_deref());
            }
            Ok(())
        })?;
        FileWriter::with_json(topic, partition, &inference.finish())?
    } else {
        FileWriter::new(topic, partition)?
    };
    each_batch(leaves, sections, log_start, |header, kept| {
        Ok(writer.push(header, kept)?)
    })?;
    let (bytes, summary) = writer.finish()?;
    Ok((summary.rows > 0).then_some((bytes, summary)))
}

/// Calls `each` with every batch of `leaves` and its records at or above `log_start` (when
/// there are any), after checking that the batches continue each other within each section.
fn each_batch(
    leaves: &[IndexEntry],
    sections: &Sections,
    log_start: i64,
    mut each: impl FnMut(&batch::BatchHeader, &[records::Record]) -> Result<(), ConvertError>,
) -> Result<(), ConvertError> {
    for leaf in leaves.iter().filter(|l| l.last_offset >= log_start) {
        let section = sections
            .get(&(leaf.object.clone(), leaf.position))
            .ok_or_else(|| ConvertError::NotFetched(leaf.object.clone()))?;
        let bad = |reason: String| ConvertError::BadSection {
            object: leaf.object.clone(),
            position: leaf.position,
            reason,
        };
        let mut covered = 0usize;
        let mut next_offset = leaf.base_offset;
        for (position, header) in batch::headers(section) {
            if header.base_offset != next_offset || header.last_offset() > leaf.last_offset {
                return Err(bad(format!(
                    "batch {}..={} does not continue the section's {}..={}",
                    header.base_offset,
                    header.last_offset(),
                    leaf.base_offset,
                    leaf.last_offset
                )));
            }
            let bytes = section.slice(position..position + header.size_bytes);
            let records = records::decode(&header, &bytes).map_err(|e| bad(e.to_string()))?;
            if records
                .iter()
                .any(|r| r.offset < header.base_offset || r.offset > header.last_offset())
            {
                return Err(bad(format!(
                    "a record outside its batch {}..={}",
                    header.base_offset,
                    header.last_offset()
                )));
            }
            let kept: Vec<records::Record> = records
                .into_iter()
                .filter(|r| r.offset >= log_start)
                .collect();
            if !kept.is_empty() {
                each(&header, &kept)?;
            }
            covered += header.size_bytes;
            next_offset = header.last_offset() + 1;
        }
        if covered != section.len() || next_offset != leaf.last_offset + 1 {
            return Err(bad(format!(
                "batches cover {covered} of {} bytes, up to offset {}",
                section.len(),
                next_offset - 1
            )));
        }
    }
    Ok(())
}
