//! A fetch's sections read together before its reads: one flush object holds a section of
//! every partition flushed with it, so a consumer reading several of them — a broker serving
//! the partitions another broker leads (fetch from follower), or a consumer catching up on
//! many partitions — would otherwise pay one ranged GET per partition, one after the other.
//! Here the sections a fetch is about to read are looked up first (the index alone, no data),
//! those not cached are grouped by object, and each object's are read with one GET per run of
//! nearby sections, all objects at once; the reads then find them in the read cache.
//!
//! Planning is pure ([`plan`]); the reads only fill the cache, so a prefetch that fails leaves
//! nothing to undo: the read that follows meets the error itself.

use super::{index, Isolation, LogInner, PartitionLog};
use crate::keys::IndexEntry;
use crate::object;
use crate::tree::{Leaf, LeafCursor, ReadError};
use bytes::Bytes;
use object_store::path::Path;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Sections of one object closer than this are read with one GET, the bytes between included
/// (what object_store's own range coalescing uses).
pub(crate) const GAP_MAX_BYTES: u64 = 1024 * 1024;

/// GETs of one prefetch in flight at once.
pub(crate) const GETS_AT_ONCE: usize = 8;

/// A run's sections are copied out of its buffer when the buffer is over this many times their
/// bytes (the gaps were large): a cached slice keeps its whole buffer alive, and the read
/// cache weighs only the slice.
const SHARED_BUFFER_MAX_RATIO: u64 = 2;

/// One GET: a byte range of an object and the sections inside it, in position order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) object: String,
    pub(crate) range: Range<u64>,
    pub(crate) sections: Vec<IndexEntry>,
}

impl Run {
    fn wanted_bytes(&self) -> u64 {
        self.sections.iter().map(|s| s.length).sum()
    }
}

/// The GETs that read `sections`: duplicates dropped, grouped by object, and within an object
/// sections closer than `gap_max_bytes` joined into one run. Runs come ordered by object and
/// position.
pub(crate) fn plan(mut sections: Vec<IndexEntry>, gap_max_bytes: u64) -> Vec<Run> {
    sections.sort_by(|a, b| (&a.object, a.position).cmp(&(&b.object, b.position)));
    sections.dedup_by(|b, a| a.object == b.object && a.position == b.position);
    let mut runs: Vec<Run> = Vec::new();
    for section in sections {
        let Some(end) = section_end(&section) else {
            // A corrupt entry: its read says so.
            continue;
        };
        match runs.last_mut() {
            Some(run)
                if run.object == section.object
                    && section.position <= run.range.end.saturating_add(gap_max_bytes) =>
            {
                run.range.end = run.range.end.max(end);
                run.sections.push(section);
            }
            _ => runs.push(Run {
                object: section.object.clone(),
                range: section.position..end,
                sections: vec![section],
            }),
        }
    }
    runs
}

/// Where a section ends in its object; None if its entry cannot be right (the end is past
/// any address).
fn section_end(entry: &IndexEntry) -> Option<u64> {
    entry
        .position
        .checked_add(entry.length)
        .filter(|end| usize::try_from(*end).is_ok())
}

/// What one partition's read is about to cover: the partition, the offset and the bytes it may
/// take.
pub(crate) struct Wanted {
    pub(crate) partition: Arc<PartitionLog>,
    pub(crate) offset: i64,
    pub(crate) max_bytes: usize,
}

/// The sections the reads of `wanted` will read first, as the reader will meet them: from each
/// partition's fetch offset up to what `isolation` shows, until the read's bytes (or the
/// fetch's, `max_bytes` in all) are covered, stopping at a Parquet file (its row groups have
/// their own cache). Index objects met on the way are read (and cached, for the reads).
pub(crate) async fn sections_wanted(
    inner: &LogInner,
    wanted: &[Wanted],
    isolation: Isolation,
    max_bytes: usize,
) -> Result<Vec<IndexEntry>, ReadError> {
    let mut sections = Vec::new();
    let mut left = max_bytes;
    for read in wanted {
        if left == 0 {
            break;
        }
        let (top, end) = {
            let view = read.partition.view.lock().expect("view mutex poisoned");
            let (start, stable, high_watermark) = view.stable_offsets();
            if read.offset < start {
                continue;
            }
            let end = match isolation {
                Isolation::ReadUncommitted => high_watermark,
                Isolation::ReadCommitted => stable,
            };
            if read.offset >= end {
                continue;
            }
            (index::top_slots(&view), end)
        };
        let budget = read.max_bytes.min(left);
        let mut taken = 0usize;
        let mut cursor = LeafCursor::new(top, read.offset);
        while taken < budget {
            let Some(Leaf::Section(entry)) = cursor.next(&inner.index_objects).await? else {
                break;
            };
            if entry.base_offset >= end {
                break;
            }
            taken = taken.saturating_add(usize::try_from(entry.length).unwrap_or(usize::MAX));
            sections.push(entry);
        }
        left = left.saturating_sub(taken);
    }
    Ok(sections)
}

/// Reads into the read cache those of `sections` it and the recent-objects cache lack: one GET
/// per run of nearby sections of an object, [`GETS_AT_ONCE`] at a time (a section alone in its
/// run through the read cache's own single GET, shared with concurrent readers of it). Errors
/// are only logged: the reads meet them.
pub(crate) async fn fill(inner: &LogInner, sections: Vec<IndexEntry>) {
    use futures::StreamExt;
    if !inner.sections.enabled() {
        return;
    }
    let missing: Vec<IndexEntry> = {
        let recent = inner.recent.lock().expect("recent mutex poisoned");
        sections
            .into_iter()
            .filter(|entry| match section_end(entry) {
                // Bounded by `section_end`.
                Some(end) => recent
                    .get(&entry.object, entry.position as usize..end as usize)
                    .is_none(),
                None => false,
            })
            .filter(|entry| !inner.sections.contains(entry))
            .collect()
    };
    futures::stream::iter(plan(missing, GAP_MAX_BYTES))
        .for_each_concurrent(GETS_AT_ONCE, |run| async move {
            let read = match run.sections.as_slice() {
                [alone] => read_alone(inner, alone).await,
                _ => read_run(inner, run).await,
            };
            if let Err(error) = read {
                tracing::debug!(%error, "prefetch failed; the reads will retry");
            }
        })
        .await;
}

/// A section with no other wanted near it in its object: read as its read would (into the
/// read cache, with one GET shared with concurrent readers of it).
async fn read_alone(inner: &LogInner, entry: &IndexEntry) -> Result<(), ReadError> {
    super::reader::section_bytes(inner, entry).await.map(drop)
}

/// One run: a GET of its range, each section checked against its CRC and put in the read
/// cache. Concurrent prefetches of one object take turns, and each reads only the sections
/// the one before it did not (the range from the first to the last of them).
async fn read_run(inner: &LogInner, run: Run) -> Result<(), ReadError> {
    let turn = inner.prefetching.turn(&run.object);
    let _turn = turn.lock().await;
    let sections: Vec<IndexEntry> = run
        .sections
        .into_iter()
        .filter(|entry| !inner.sections.contains(entry))
        .collect();
    // In position order, each with an end (`plan`).
    let (Some(first), Some(end)) = (
        sections.first(),
        sections.iter().filter_map(section_end).max(),
    ) else {
        return Ok(());
    };
    let run = Run {
        range: first.position..end,
        object: run.object,
        sections,
    };
    let what = format!("object={}", run.object);
    let buffer = crate::ranged::get_range(
        &*inner.objects,
        &Path::from(run.object.as_str()),
        run.range.clone(),
    )
    .await
    .map_err(|e| ReadError::from_store(&what, e))?;
    if buffer.len() as u64 != run.range.end - run.range.start {
        return Err(ReadError::Corrupt(format!(
            "{what}: read {} bytes of range {:?}",
            buffer.len(),
            run.range
        )));
    }
    inner.stats.prefetch_reads.fetch_add(1, Ordering::Relaxed);
    let copy = buffer.len() as u64 > run.wanted_bytes() * SHARED_BUFFER_MAX_RATIO;
    for entry in &run.sections {
        let start = (entry.position - run.range.start) as usize;
        let section = buffer.slice(start..start + entry.length as usize);
        object::verify_section(&section, entry.crc32c)
            .map_err(|e| ReadError::Corrupt(format!("{what}: {e}")))?;
        let section = if copy {
            Bytes::copy_from_slice(&section)
        } else {
            section
        };
        inner.sections.insert(entry, section);
        inner
            .stats
            .sections_prefetched
            .fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Per object, the lock its prefetches take turns on; an object's entry goes with its last
/// holder.
#[derive(Debug, Default)]
pub(crate) struct Turns {
    objects: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// An object's turn lock, dropped from [`Turns`] with its last holder.
pub(crate) struct Turn<'a> {
    turns: &'a Turns,
    object: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Turns {
    fn turn(&self, object: &str) -> Turn<'_> {
        let lock = self
            .objects
            .lock()
            .expect("prefetch turns poisoned")
            .entry(object.to_string())
            .or_default()
            .clone();
        Turn {
            turns: self,
            object: object.to_string(),
            lock,
        }
    }
}

impl Turn<'_> {
    async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut objects = self.turns.objects.lock().expect("prefetch turns poisoned");
        // Held by the map and by this turn only: nobody else waits on it.
        if Arc::strong_count(&self.lock) == 2 {
            objects.remove(&self.object);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(object: &str, position: u64, length: u64) -> IndexEntry {
        IndexEntry {
            base_offset: 0,
            last_offset: 0,
            max_timestamp: 0,
            object: object.into(),
            position,
            length,
            crc32c: 0,
            aborted: Vec::new(),
        }
    }

    #[test]
    fn nearby_sections_of_an_object_are_one_run() {
        let runs = plan(
            vec![
                section("b", 0, 10),
                section("a", 100, 50),
                section("a", 0, 40),
                section("a", 40, 10),
                section("a", 0, 40),
                section("a", 5_000, 10),
            ],
            1_000,
        );
        let shape: Vec<_> = runs
            .iter()
            .map(|r| (r.object.as_str(), r.range.clone(), r.sections.len()))
            .collect();
        assert_eq!(
            shape,
            vec![("a", 0..150, 3), ("a", 5_000..5_010, 1), ("b", 0..10, 1)]
        );
        assert_eq!(runs[0].wanted_bytes(), 100);
        assert_eq!(
            runs[0]
                .sections
                .iter()
                .map(|s| s.position)
                .collect::<Vec<_>>(),
            vec![0, 40, 100]
        );
    }

    #[test]
    fn a_run_never_joins_sections_past_the_gap() {
        let runs = plan(vec![section("a", 0, 10), section("a", 1_011, 10)], 1_000);
        assert_eq!(runs.len(), 2);
        let runs = plan(vec![section("a", 0, 10), section("a", 1_010, 10)], 1_000);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].range, 0..1_020);
    }

    #[test]
    fn a_section_whose_end_is_past_any_address_is_left_to_its_read() {
        let runs = plan(
            vec![section("a", u64::MAX - 1, 10), section("a", 0, 10)],
            1_000,
        );
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].range, 0..10);
    }

    #[test]
    fn turns_are_dropped_with_their_last_holder() {
        let turns = Turns::default();
        let first = turns.turn("o");
        let second = turns.turn("o");
        drop(first);
        assert_eq!(turns.objects.lock().expect("lock").len(), 1);
        drop(second);
        assert!(turns.objects.lock().expect("lock").is_empty());
    }
}
