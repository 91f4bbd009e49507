//! The read path: offsets → index entries → section bytes (recent cache or ranged GET) →
//! whole record batches.

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
) -> Result<ReadOutcome, LogError> {
    let (entries, high_watermark, log_start_offset) = {
        let view = partition.view.lock().expect("view mutex poisoned");
        let (start, end) = (view.state.log_start_offset, view.state.next_offset);
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: start,
                high_watermark: end,
            });
        }
        let mut entries = Vec::new();
        let mut planned_bytes = 0u64;
        let first = view
            .index
            .range(..=offset)
            .next_back()
            .map_or(offset, |(base, _)| *base);
        for entry in view.index.range(first..).map(|(_, e)| e) {
            if entry.last_offset < offset {
                continue;
            }
            if !entries.is_empty() && planned_bytes >= max_bytes as u64 {
                break;
            }
            planned_bytes += entry.length;
            entries.push(entry.clone());
        }
        (entries, end, start)
    };
    let mut outcome = ReadOutcome {
        batches: Vec::new(),
        high_watermark,
        log_start_offset,
    };
    let mut taken = 0usize;
    'entries: for entry in entries {
        let section = section_bytes(inner, &entry).await?;
        for (position, header) in batch::headers(&section) {
            if header.last_offset() < offset {
                continue;
            }
            if taken > 0 && taken + header.size_bytes > max_bytes {
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

pub(crate) async fn batch_at_timestamp(
    inner: &LogInner,
    partition: &PartitionLog,
    timestamp_ms: i64,
) -> Result<Option<Bytes>, LogError> {
    let candidate: Option<IndexEntry> = {
        let view = partition.view.lock().expect("view mutex poisoned");
        let start = view.state.log_start_offset;
        view.index
            .values()
            .find(|e| e.last_offset >= start && e.max_timestamp >= timestamp_ms)
            .cloned()
    };
    let Some(entry) = candidate else {
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
    let best: Option<IndexEntry> = {
        let view = partition.view.lock().expect("view mutex poisoned");
        let start = view.state.log_start_offset;
        view.index
            .values()
            .filter(|e| e.last_offset >= start)
            .fold(None, |best: Option<&IndexEntry>, e| match best {
                Some(b) if b.max_timestamp >= e.max_timestamp => Some(b),
                _ => Some(e),
            })
            .cloned()
    };
    let Some(entry) = best else { return Ok(None) };
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
