//! The read path: offsets → index leaves → record batches, from flush-object sections (recent
//! cache or ranged GET) or from Parquet files (rebuilt per row group).
//!
//! A leader's view of the index can lag behind a compactor's swap; it still reads the flush
//! objects the swap replaced until garbage collection deletes them. A read that finds an object
//! gone reloads the view once and reads again.

use super::index;
use super::section_cache::Served;
use super::{LogError, LogInner, PartitionLog, TopicPartition};
use crate::batch;
use crate::keys::{IndexEntry, ParquetFile};
use crate::producers::AbortedTxn;
use crate::records;
use crate::tree::{Leaf, LeafCursor, ReadError, Slot};
use bytes::Bytes;
use std::ops::Range;
use std::sync::atomic::Ordering;

/// Kafka's Fetch isolation levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Everything up to the high watermark.
    ReadUncommitted,
    /// Up to the last stable offset, with the aborted transactions the client must drop.
    ReadCommitted,
}

#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    /// Whole record batches, in offset order, starting with the one containing the offset.
    pub batches: Vec<Bytes>,
    pub high_watermark: i64,
    /// The first offset of the earliest open transaction (the high watermark when none is).
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// For `read_committed`: aborted transactions overlapping the batches returned.
    pub aborted: Vec<AbortedTxn>,
    /// `batches` end to end as slices of the buffers they were read into (sections, rebuilt
    /// row groups): one per run of consecutive bytes of one buffer.
    runs: Vec<Bytes>,
}

impl ReadOutcome {
    pub fn bytes(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }

    /// The batches end to end, as a Fetch response carries them, without copying: one slice
    /// of each buffer they were read into (a section, a rebuilt row group) per run of
    /// consecutive bytes, in order.
    pub fn records(&self) -> &[Bytes] {
        &self.runs
    }
}

/// Runs `read` against the view; if an object it needed is gone, reloads the view (a
/// compaction moved the data) and runs it once more.
macro_rules! with_reload {
    ($inner:expr, $tp:expr, $partition:expr, $read:expr) => {
        match $read {
            Err(ReadError::Missing(missing)) => {
                reload_after_missing($inner, $tp, $partition, &missing).await?;
                $read.map_err(LogError::from)
            }
            other => other.map_err(LogError::from),
        }
    };
}

/// An object the view pointed to is gone: a leader reloads its index (a compactor's swap it
/// has not seen yet); a replica view reloads whole, since its log start may have moved too
/// (retention, DeleteRecords) and the read must then answer OFFSET_OUT_OF_RANGE rather than
/// skip to the next batch that still exists.
async fn reload_after_missing(
    inner: &LogInner,
    tp: &TopicPartition,
    partition: &PartitionLog,
    missing: &str,
) -> Result<(), LogError> {
    tracing::debug!(partition = %tp, %missing, "object gone; reloading the view");
    if partition.replica {
        super::replicas::reload_in_place(inner, tp, partition).await
    } else {
        super::refresh_index(inner, tp, partition).await
    }
}

/// Why one attempt at a read failed.
enum Failed {
    /// An object the view pointed to is gone.
    Missing(String),
    Log(LogError),
}

impl From<LogError> for Failed {
    fn from(error: LogError) -> Self {
        Failed::Log(error)
    }
}

impl From<ReadError> for Failed {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Missing(missing) => Failed::Missing(missing),
            other => Failed::Log(other.into()),
        }
    }
}

pub(crate) async fn read(
    inner: &LogInner,
    tp: &TopicPartition,
    partition: &PartitionLog,
    offset: i64,
    limits: (usize, bool),
    isolation: Isolation,
) -> Result<ReadOutcome, LogError> {
    match read_attempt(inner, tp, partition, offset, limits, isolation).await {
        Ok(outcome) => Ok(outcome),
        Err(Failed::Log(error)) => Err(error),
        Err(Failed::Missing(missing)) => {
            reload_after_missing(inner, tp, partition, &missing).await?;
            // From the bounds again: the reload may have moved them.
            match read_attempt(inner, tp, partition, offset, limits, isolation).await {
                Ok(outcome) => Ok(outcome),
                Err(Failed::Log(error)) => Err(error),
                Err(Failed::Missing(missing)) => Err(ReadError::Missing(missing).into()),
            }
        }
    }
}

async fn read_attempt(
    inner: &LogInner,
    tp: &TopicPartition,
    partition: &PartitionLog,
    offset: i64,
    (max_bytes, first_batch_whole): (usize, bool),
    isolation: Isolation,
) -> Result<ReadOutcome, Failed> {
    let ((log_start_offset, last_stable_offset, high_watermark), log_end_offset) = {
        let view = partition.view.lock().expect("view mutex poisoned");
        // Offsets flushes in flight were given: as Kafka's log end offset past its high
        // watermark, not out of range (a replica view that saw their commit first may have
        // shown them to the consumer already).
        let in_flight = view.projected.as_ref().map_or(0, |p| p.next_offset);
        let offsets = view.stable_offsets();
        (offsets, in_flight.max(offsets.2))
    };
    if offset < log_start_offset || offset > log_end_offset {
        return Err(Failed::Log(LogError::OffsetOutOfRange {
            offset,
            log_start_offset,
            high_watermark,
        }));
    }
    let mut outcome = ReadOutcome {
        batches: Vec::new(),
        high_watermark,
        last_stable_offset,
        log_start_offset,
        aborted: Vec::new(),
        runs: Vec::new(),
    };
    // read_committed stops at the LSO, which is always a batch's first offset.
    let end = match isolation {
        Isolation::ReadUncommitted => high_watermark,
        Isolation::ReadCommitted => last_stable_offset,
    };
    if offset >= end {
        return Ok(outcome);
    }
    (outcome.batches, outcome.runs) = read_batches(
        inner,
        partition,
        offset,
        (max_bytes, first_batch_whole),
        end,
    )
    .await?;
    if isolation == Isolation::ReadCommitted {
        if let Some(last) = outcome.batches.last() {
            let upper = batch::parse_header(last)
                .map_err(|e| LogError::Corrupt(format!("{tp}: {e}")))?
                .last_offset()
                + 1;
            outcome.aborted = inner
                .index_objects
                .aborted(live_top(partition), offset, upper)
                .await?;
        }
    }
    Ok(outcome)
}

/// A run shorter than its buffer divided by this is copied rather than shared.
const SHARED_RUN_MIN_SHARE: usize = 16;

/// Collects whole batches in offset order within the byte limits of a read.
struct Taker {
    offset: i64,
    /// Batches from here on are not read (the high watermark, or the LSO).
    end: i64,
    max_bytes: usize,
    first_batch_whole: bool,
    taken: usize,
    batches: Vec<Bytes>,
    /// The batches taken, as runs of consecutive bytes of one buffer (a section, a rebuilt
    /// row group).
    runs: Vec<Run>,
    full: bool,
}

enum Took {
    Skipped,
    Taken,
    Full,
}

/// Consecutive bytes of one buffer: the buffer and the range.
struct Run {
    buffer: Bytes,
    range: Range<usize>,
}

impl Taker {
    /// Takes batch `range` of `buffer` if it fits; false once the read is full.
    fn offer_from(&mut self, buffer: &Bytes, range: Range<usize>, last_offset: i64) -> bool {
        match self.take(buffer.slice(range.clone()), last_offset) {
            Took::Full => return false,
            Took::Skipped => return true,
            Took::Taken => {}
        }
        match self.runs.last_mut() {
            Some(run)
                if run.buffer.as_ptr() == buffer.as_ptr()
                    && run.buffer.len() == buffer.len()
                    && run.range.end == range.start =>
            {
                run.range.end = range.end;
            }
            _ => self.runs.push(Run {
                buffer: buffer.clone(),
                range,
            }),
        }
        true
    }

    /// Takes a batch if it fits; false once the read is full.
    fn offer(&mut self, batch: Bytes, last_offset: i64) -> bool {
        let len = batch.len();
        self.offer_from(&batch, 0..len, last_offset)
    }

    /// Takes a batch unless it is below the read or ends it (at the end, or over the limit).
    fn take(&mut self, batch: Bytes, last_offset: i64) -> Took {
        if last_offset < self.offset {
            return Took::Skipped;
        }
        if last_offset >= self.end {
            self.full = true;
            return Took::Full;
        }
        let whole_first = self.batches.is_empty() && self.first_batch_whole;
        if !whole_first && self.taken + batch.len() > self.max_bytes {
            self.full = true;
            return Took::Full;
        }
        self.taken += batch.len();
        self.batches.push(batch);
        Took::Taken
    }

    /// The batches taken end to end, one slice per run; a run under a sixteenth of its buffer
    /// is copied out, so that what a response holds stays near the bytes it carries (a slice
    /// keeps all of its buffer alive until the response is written).
    fn runs(&self) -> Vec<Bytes> {
        self.runs
            .iter()
            .map(|run| {
                if run.range.len() * SHARED_RUN_MIN_SHARE < run.buffer.len() {
                    Bytes::copy_from_slice(&run.buffer[run.range.clone()])
                } else {
                    run.buffer.slice(run.range.clone())
                }
            })
            .collect()
    }

    /// Whether the next leaf or row group is worth reading.
    fn wants_more(&self) -> bool {
        !self.full && (self.batches.is_empty() || self.taken < self.max_bytes)
    }
}

async fn read_batches(
    inner: &LogInner,
    partition: &PartitionLog,
    offset: i64,
    (max_bytes, first_batch_whole): (usize, bool),
    end: i64,
) -> Result<(Vec<Bytes>, Vec<Bytes>), ReadError> {
    let top = {
        let view = partition.view.lock().expect("view mutex poisoned");
        index::top_slots(&view)
    };
    let mut cursor = LeafCursor::new(top, offset);
    let mut taker = Taker {
        offset,
        end,
        max_bytes,
        first_batch_whole,
        taken: 0,
        batches: Vec::new(),
        runs: Vec::new(),
        full: false,
    };
    while taker.wants_more() {
        let Some(leaf) = cursor.next(&inner.index_objects).await? else {
            // Nothing from `offset` to the end holds a record any more (log compaction removed
            // the end of the log): say so with an empty batch.
            if taker.batches.is_empty() && offset < end {
                taker.offer(empty_batch(offset, end - 1), end - 1);
            }
            break;
        };
        match leaf {
            Leaf::Section(entry) => {
                let section = section_bytes(inner, &entry).await?;
                for (position, header) in batch::headers(&section) {
                    let range = position..position + header.size_bytes;
                    if !taker.offer_from(&section, range, header.last_offset()) {
                        break;
                    }
                }
            }
            Leaf::File(file) => {
                let groups = inner.columnar.row_groups(&file.object, file.bytes).await?;
                // The last offset the file's batches reach (log compaction may have emptied
                // the rest of its range).
                let mut reached = file.base_offset - 1;
                for (i, group) in groups.iter().enumerate() {
                    reached = reached.max(group.last_offset);
                    if group.last_offset < offset {
                        continue;
                    }
                    if !taker.wants_more() {
                        break;
                    }
                    let rebuilt = inner
                        .columnar
                        .row_group(&file.object, file.bytes, i)
                        .await?;
                    inner
                        .stats
                        .parquet_row_groups_read
                        .fetch_add(1, Ordering::Relaxed);
                    for range in &rebuilt.ranges {
                        let last = batch::parse_header(&rebuilt.buffer[range.clone()])
                            .map_err(|e| {
                                ReadError::Corrupt(format!("object={}: {e}", file.object))
                            })?
                            .last_offset();
                        if !taker.offer_from(&rebuilt.buffer, range.clone(), last) {
                            break;
                        }
                    }
                }
                // Offsets the file covers but holds no record of any more: an empty batch says
                // so, and consumers move past it (as after Kafka's cleaner, KAFKA-5443) rather
                // than wait at an offset that will never come.
                if reached < file.last_offset && taker.wants_more() {
                    taker.offer(
                        empty_batch((reached + 1).max(offset), file.last_offset),
                        file.last_offset,
                    );
                }
            }
        }
    }
    let runs = taker.runs();
    Ok((taker.batches, runs))
}

/// A batch of no records covering `base_offset..=last_offset`.
fn empty_batch(base_offset: i64, last_offset: i64) -> Bytes {
    records::encode(&records::BatchFields::plain(base_offset, last_offset), &[])
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
    tp: &TopicPartition,
    partition: &PartitionLog,
    timestamp_ms: i64,
) -> Result<Option<Bytes>, LogError> {
    with_reload!(
        inner,
        tp,
        partition,
        find_batch(inner, live_top(partition), |max| max >= timestamp_ms).await
    )
}

pub(crate) async fn batch_with_max_timestamp(
    inner: &LogInner,
    tp: &TopicPartition,
    partition: &PartitionLog,
) -> Result<Option<Bytes>, LogError> {
    let top = live_top(partition);
    let Some(max) = top.iter().map(Slot::max_timestamp).max() else {
        return Ok(None);
    };
    with_reload!(
        inner,
        tp,
        partition,
        find_batch(inner, live_top(partition), |t| t == max).await
    )
}

/// The first batch whose max timestamp matches `wanted`, found through the first slot at each
/// level whose max timestamp matches (a slot's max is its batches' max).
async fn find_batch(
    inner: &LogInner,
    top: Vec<Slot>,
    wanted: impl Fn(i64) -> bool,
) -> Result<Option<Bytes>, ReadError> {
    let leaf = inner
        .index_objects
        .find_leaf(top, |slots| {
            slots.iter().position(|s| wanted(s.max_timestamp()))
        })
        .await?;
    match leaf {
        None => Ok(None),
        Some(Leaf::Section(entry)) => {
            let section = section_bytes(inner, &entry).await?;
            let found = batch::headers(&section)
                .find(|(_, h)| wanted(h.max_timestamp))
                .map(|(position, h)| section.slice(position..position + h.size_bytes));
            Ok(found)
        }
        Some(Leaf::File(file)) => file_batch(inner, &file, wanted).await,
    }
}

async fn file_batch(
    inner: &LogInner,
    file: &ParquetFile,
    wanted: impl Fn(i64) -> bool,
) -> Result<Option<Bytes>, ReadError> {
    let groups = inner.columnar.row_groups(&file.object, file.bytes).await?;
    for (i, group) in groups.iter().enumerate() {
        if !wanted(group.max_timestamp) {
            continue;
        }
        for batch in inner
            .columnar
            .row_group(&file.object, file.bytes, i)
            .await?
            .batches()
        {
            let header = batch::parse_header(&batch)
                .map_err(|e| ReadError::Corrupt(format!("object={}: {e}", file.object)))?;
            if wanted(header.max_timestamp) {
                return Ok(Some(batch));
            }
        }
    }
    Ok(None)
}

/// A section's bytes, from the recent-objects cache, the read cache or a ranged GET, checked
/// against the CRC recorded at write time.
pub(super) async fn section_bytes(
    inner: &LogInner,
    entry: &IndexEntry,
) -> Result<Bytes, ReadError> {
    let range = usize::try_from(entry.position)
        .ok()
        .zip(usize::try_from(entry.position + entry.length).ok())
        .ok_or_else(|| {
            ReadError::Corrupt(format!("section of object={} out of range", entry.object))
        })?;
    let cached = inner
        .recent
        .lock()
        .expect("recent mutex poisoned")
        .get(&entry.object, range.0..range.1);
    if let Some(bytes) = cached {
        inner
            .stats
            .recent_cache_hits
            .fetch_add(1, Ordering::Relaxed);
        return Ok(bytes);
    }
    let (bytes, served) = inner.sections.read(&inner.objects, entry).await?;
    match served {
        Served::Memory => &inner.stats.read_cache_hits,
        Served::Disk => {
            inner.stats.read_cache_hits.fetch_add(1, Ordering::Relaxed);
            &inner.stats.read_cache_disk_hits
        }
        Served::Bucket => &inner.stats.range_reads,
    }
    .fetch_add(1, Ordering::Relaxed);
    Ok(bytes)
}
