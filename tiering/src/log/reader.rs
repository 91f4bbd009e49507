//! The read path: offsets → index entries → section bytes (recent cache or ranged GET) →
//! whole record batches.

use super::index::{self, Slot};
use super::{LogError, LogInner, PartitionLog};
use crate::batch;
use crate::keys::IndexEntry;
use crate::object;
use bytes::Bytes;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use std::sync::atomic::Ordering;

#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    /// Whole record batches, in offset order, starting with the one containing the offset.
    pub batches: Vec<Bytes>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

impl ReadOutcome {
    pub fn bytes(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }
}

pub(crate) async fn read(
    inner: &LogInner,
    partition: &PartitionLog,
    offset: i64,
    max_bytes: usize,
    first_batch_whole: bool,
) -> Result<ReadOutcome, LogError> {
    let (top, high_watermark, log_start_offset) = {
        let view = partition.view.lock().expect("view mutex poisoned");
        let (start, end) = (view.state.log_start_offset, view.state.next_offset);
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: start,
                high_watermark: end,
            });
        }
        (index::top_slots(&view), end, start)
    };
    let mut outcome = ReadOutcome {
        batches: Vec::new(),
        high_watermark,
        log_start_offset,
    };
    if offset == high_watermark {
        return Ok(outcome);
    }
    let entries = index::sections_from(inner, top, offset, max_bytes).await?;
    let mut taken = 0usize;
    'entries: for entry in entries {
        let section = section_bytes(inner, &entry).await?;
        for (position, header) in batch::headers(&section) {
            if header.last_offset() < offset {
                continue;
            }
            let whole_first = taken == 0 && first_batch_whole;
            if !whole_first && taken + header.size_bytes > max_bytes {
                break 'entries;
            }
            taken += header.size_bytes;
            outcome
                .batches
                .push(section.slice(position..position + header.size_bytes));
        }
    }
    Ok(outcome)
}

/// The live slots of a partition's top level (those not before the log start).
fn live_top(partition: &PartitionLog) -> Vec<Slot> {
    let view = partition.view.lock().expect("view mutex poisoned");
    let start = view.state.log_start_offset;
    index::top_slots(&view)
        .into_iter()
        .filter(|slot| slot.last_offset() >= start)
        .collect()
}

pub(crate) async fn batch_at_timestamp(
    inner: &LogInner,
    partition: &PartitionLog,
    timestamp_ms: i64,
) -> Result<Option<Bytes>, LogError> {
    let found = index::find_section(inner, live_top(partition), |slots| {
        slots.iter().position(|s| s.max_timestamp() >= timestamp_ms)
    })
    .await?;
    let Some(entry) = found else {
        return Ok(None);
    };
    let section = section_bytes(inner, &entry).await?;
    let found = batch::headers(&section)
        .find(|(_, header)| header.max_timestamp >= timestamp_ms)
        .map(|(position, header)| section.slice(position..position + header.size_bytes));
    Ok(found)
}

pub(crate) async fn batch_with_max_timestamp(
    inner: &LogInner,
    partition: &PartitionLog,
) -> Result<Option<Bytes>, LogError> {
    // The first slot holding the largest timestamp, at every level.
    let first_max = |slots: &[Slot]| {
        let max = slots.iter().map(Slot::max_timestamp).max()?;
        slots.iter().position(|s| s.max_timestamp() == max)
    };
    let Some(entry) = index::find_section(inner, live_top(partition), first_max).await? else {
        return Ok(None);
    };
    let section = section_bytes(inner, &entry).await?;
    let found = batch::headers(&section)
        .find(|(_, h)| h.max_timestamp == entry.max_timestamp)
        .map(|(position, h)| section.slice(position..position + h.size_bytes));
    Ok(found)
}

/// A section's bytes, checked against the CRC recorded at write time.
async fn section_bytes(inner: &LogInner, entry: &IndexEntry) -> Result<Bytes, LogError> {
    let start = usize::try_from(entry.position).map_err(|e| LogError::Corrupt(e.to_string()))?;
    let end =
        start + usize::try_from(entry.length).map_err(|e| LogError::Corrupt(e.to_string()))?;
    let cached = inner
        .recent
        .lock()
        .expect("recent mutex poisoned")
        .get(&entry.object, start..end);
    if let Some(bytes) = cached {
        inner
            .stats
            .recent_cache_hits
            .fetch_add(1, Ordering::Relaxed);
        return Ok(bytes);
    }
    inner.stats.range_reads.fetch_add(1, Ordering::Relaxed);
    let bytes = inner
        .objects
        .get_range(
            &Path::from(entry.object.as_str()),
            entry.position..entry.position + entry.length,
        )
        .await
        .map_err(|e| LogError::Unavailable(format!("read object={}: {e}", entry.object)))?;
    object::verify_section(&bytes, entry.crc32c)
        .map_err(|e| LogError::Corrupt(format!("object={}: {e}", entry.object)))?;
    Ok(bytes)
}
