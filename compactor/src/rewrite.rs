//! Rewriting the front of a partition's Parquet part: dropping records below the log start from
//! a file that straddles it (DeleteRecords at any offset), and Kafka's log compaction
//! (`cleanup.policy=compact`): the latest record per key survives, tombstones go after
//! `delete.retention.ms`, offsets never change.
//!
//! [`plan`] is pure. Log compaction cleans the leading Parquet slots whose records are all older
//! than `min.compaction.lag.ms` (never the flush-object head, which is not in Parquet yet), once
//! the bytes written since the last cleaning are at least `min.cleanable.dirty.ratio` of them,
//! as Kafka's cleaner does. The rewrite reads each file whole (checked against its CRC32C), first
//! to map every key to its latest offset, then to write the records kept into new files, and
//! swaps them in for the slots it read: one transaction comparing the layout's `mod_revision`,
//! like every swap.

use crate::job::{Ctx, JobError, Outcome};
use bytes::Bytes;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use skiff_tiering::batch;
use skiff_tiering::catalog::CleanupPolicy;
use skiff_tiering::columnar::json::JsonInference;
use skiff_tiering::columnar::{self, FileWriter};
use skiff_tiering::keys::{Layout, ParquetFile, RollupBody};
use skiff_tiering::layout::{self, parquet_slots, IndexSnapshot, Swap};
use skiff_tiering::log::TopicPartition;
use skiff_tiering::metadata::Revision;
use skiff_tiering::producers::AbortedTxn;
use skiff_tiering::records::{self, Record};
use skiff_tiering::tree::{Leaf, ReadError};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use transactions::{Classifier, MarkerKeeper};

/// How a topic keeps its records (from its configs, with Kafka's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub compact: bool,
    pub min_compaction_lag_ms: i64,
    pub delete_retention_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    /// `parquet.value.format=json`: files get typed columns for the values' fields.
    pub json_values: bool,
}

impl Policy {
    pub fn from_configs(configs: &BTreeMap<String, String>) -> Self {
        let long = |name: &str, default: i64| {
            configs
                .get(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Self {
            compact: CleanupPolicy::of(configs).compact,
            min_compaction_lag_ms: long("min.compaction.lag.ms", 0),
            delete_retention_ms: long("delete.retention.ms", 86_400_000),
            min_cleanable_dirty_ratio: configs
                .get("min.cleanable.dirty.ratio")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.5),
            json_values: configs
                .get("parquet.value.format")
                .is_some_and(|f| f == "json"),
        }
    }
}

/// A rewrite of the Parquet part's first `slots` top-level slots (ending before `end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub slots: usize,
    pub end: i64,
    /// Keep only the latest record per key (else only drop what is below the log start).
    pub compact: bool,
}

/// What to rewrite now, if anything (pure). Cleaning stops before `stable_end`, the partition's
/// last stable offset: a transaction still open there cannot be told committed or aborted yet
/// (`i64::MAX` where that is not known yet: the rewrite plans again with it).
pub fn plan(
    layout: &Layout,
    (log_start, stable_end): (i64, i64),
    policy: &Policy,
    now_ms: i64,
) -> Option<Plan> {
    let slots = parquet_slots(layout);
    if policy.compact {
        let horizon = now_ms.saturating_sub(policy.min_compaction_lag_ms);
        let cleanable = slots
            .iter()
            .take_while(|s| s.max_timestamp() <= horizon && s.last_offset() < stable_end)
            .count();
        if cleanable > 0 {
            let range = &slots[..cleanable];
            let live: u64 = range
                .iter()
                .filter(|s| s.last_offset() >= log_start)
                .map(|s| s.bytes())
                .sum();
            let dirty: u64 = range
                .iter()
                .filter(|s| s.base_offset() >= layout.cleaned_end && s.last_offset() >= log_start)
                .map(|s| s.bytes())
                .sum();
            let tombstones_due =
                layout.tombstones_expire_ms > 0 && now_ms >= layout.tombstones_expire_ms;
            if tombstones_due
                || (dirty > 0 && dirty as f64 >= policy.min_cleanable_dirty_ratio * live as f64)
            {
                return Some(Plan {
                    slots: cleanable,
                    end: range[cleanable - 1].last_offset() + 1,
                    compact: true,
                });
            }
        }
    }
    let straddling = slots
        .iter()
        .position(|s| s.base_offset() < log_start && log_start <= s.last_offset())?;
    Some(Plan {
        slots: straddling + 1,
        end: slots[straddling].last_offset() + 1,
        compact: false,
    })
}

/// Whether record `r` stays (pure): at or above the log start and, when compacting, the latest
/// for its key, and not a tombstone past `delete.retention.ms`.
pub fn keep(
    r: &Record,
    log_start: i64,
    latest: Option<&HashMap<Bytes, i64>>,
    tombstone_horizon_ms: i64,
) -> bool {
    if r.offset < log_start {
        return false;
    }
    let (Some(latest), Some(key)) = (latest, &r.key) else {
        return true;
    };
    if latest.get(key).is_some_and(|&offset| offset != r.offset) {
        return false;
    }
    !(r.value.is_none() && r.timestamp < tombstone_horizon_ms)
}

/// A file read whole and checked against its CRC32C, as its batches' records (decoded on the
/// blocking pool).
async fn read_file(ctx: &Ctx, file: &ParquetFile) -> Result<Vec<KeptBatch>, JobError> {
    let what = format!("object={}", file.object);
    let bytes = ctx
        .objects
        .get(&Path::from(file.object.as_str()))
        .await
        .map_err(|e| ReadError::from_store(&what, e))?
        .bytes()
        .await
        .map_err(|e| ReadError::from_store(&what, e))?;
    if bytes.len() as u64 != file.bytes || crc32c::crc32c(&bytes) != file.crc32c {
        return Err(
            ReadError::Corrupt(format!("{what}: size or checksum differs from the index")).into(),
        );
    }
    let object = file.object.clone();
    tokio::task::spawn_blocking(move || records_of(&columnar::decode_file(&object, bytes)?))
        .await
        .map_err(|e| JobError::Task(e.to_string()))?
}

fn records_of(batches: &[Bytes]) -> Result<Vec<KeptBatch>, JobError> {
    batches
        .iter()
        .map(|bytes| {
            let header = batch::parse_header(bytes)
                .map_err(|e| ReadError::Corrupt(format!("rebuilt batch: {e}")))?;
            let records = records::decode(&header, bytes)
                .map_err(|e| ReadError::Corrupt(format!("rebuilt batch: {e}")))?;
            Ok((header, records))
        })
        .collect()
}

/// A batch's header and its records (all of them, or those a rewrite keeps).
type KeptBatch = (batch::BatchHeader, Vec<Record>);

/// Builds the new files of a rewrite, starting a new one past `max_bytes` of record bytes.
struct Output {
    topic: String,
    partition: i32,
    max_bytes: u64,
    /// Where the next file's covered range starts: right after the previous file, so the
    /// new files cover the rewritten range without gaps.
    next_base: i64,
    /// The open file: its first covered offset, its record bytes, and what it holds (kept until
    /// it closes, so the typed columns of JSON values can be chosen from all of it).
    current: Option<(i64, u64, Vec<KeptBatch>)>,
    json_values: bool,
    /// Written files and the offsets each covers, uploaded (and named) together at the end.
    done: Vec<(Bytes, (i64, i64), columnar::FileSummary)>,
}

impl Output {
    fn push(&mut self, header: &batch::BatchHeader, kept: Vec<Record>) {
        if kept.is_empty() {
            return;
        }
        let (_, bytes, batches) = self
            .current
            .get_or_insert_with(|| (self.next_base, 0, Vec::new()));
        *bytes += kept
            .iter()
            .map(|r| {
                32 + r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len)
            })
            .sum::<usize>() as u64;
        batches.push((*header, kept));
    }

    /// Writes the current file, covering offsets up to `last_offset`, if it is full (or
    /// `always`).
    async fn close(&mut self, last_offset: i64, always: bool) -> Result<(), JobError> {
        let full = self
            .current
            .as_ref()
            .is_some_and(|(_, b, _)| *b >= self.max_bytes);
        if !(always || full) {
            return Ok(());
        }
        let Some((base_offset, _, batches)) = self.current.take() else {
            return Ok(());
        };
        self.next_base = last_offset + 1;
        let (topic, partition, json_values) =
            (self.topic.clone(), self.partition, self.json_values);
        let (bytes, summary) = tokio::task::spawn_blocking(move || {
            write_batches(&topic, partition, json_values, &batches)
        })
        .await
        .map_err(|e| JobError::Task(e.to_string()))??;
        self.done.push((bytes, (base_offset, last_offset), summary));
        Ok(())
    }
}

/// One Parquet file of `batches` (CPU work: on the blocking pool).
fn write_batches(
    topic: &str,
    partition: i32,
    json_values: bool,
    batches: &[KeptBatch],
) -> Result<(Bytes, columnar::FileSummary), JobError> {
    let mut writer = if json_values {
        let mut inference = JsonInference::default();
        for record in batches.iter().flat_map(|(_, records)| records) {
            inference.observe(record.value.as_deref());
        }
        FileWriter::with_json(topic, partition, &inference.finish())?
    } else {
        FileWriter::new(topic, partition)?
    };
    for (header, records) in batches {
        writer.push(header, records)?;
    }
    Ok(writer.finish()?)
}

/// Runs a rewrite planned on `snapshot`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    ctx: &Ctx,
    tp: &TopicPartition,
    topic_create_revision: Revision,
    snapshot: &IndexSnapshot,
    log_start: i64,
    policy: &Policy,
    rewrite: Plan,
) -> Result<Outcome, JobError> {
    let now_ms = ctx.clock.now_ms();
    let slots = parquet_slots(&snapshot.layout);
    let mut files = Vec::new();
    for leaf in ctx
        .index_objects
        .leaves(slots[..rewrite.slots].to_vec())
        .await?
    {
        match leaf {
            Leaf::File(file) => files.push(file),
            Leaf::Section(s) => {
                return Err(ReadError::Corrupt(format!(
                    "section of object={} in the Parquet part",
                    s.object
                ))
                .into())
            }
        }
    }
    let live: Vec<&ParquetFile> = files
        .iter()
        .filter(|f| f.last_offset >= log_start)
        .collect();
    // Pass 1 (compaction): the latest offset of every key, counting committed transactional
    // records once their commit marker is seen (the range ends below the last stable offset;
    // see `transactions`).
    let mut classifier = Classifier::default();
    let latest = if rewrite.compact {
        let mut latest: HashMap<Bytes, i64> = HashMap::new();
        let mut map_bytes = 0u64;
        // Copied: decoded keys slice their whole file's rebuilt batches, which the map must not
        // keep alive (the dedupe buffer bounds keys only). Latest by offset: a transaction's
        // keys arrive with its marker, after later plain records.
        fn note(latest: &mut HashMap<Bytes, i64>, map_bytes: &mut u64, key: Bytes, offset: i64) {
            match latest.entry(key) {
                Entry::Occupied(mut at) => *at.get_mut() = (*at.get()).max(offset),
                Entry::Vacant(slot) => {
                    *map_bytes += slot.key().len() as u64 + 48;
                    slot.insert(offset);
                }
            }
        }
        for file in &live {
            for (header, records) in read_file(ctx, file).await? {
                if header.is_transactional() {
                    for (key, offset) in classifier.feed(&header, &records) {
                        note(&mut latest, &mut map_bytes, key, offset);
                    }
                    continue;
                }
                for r in records {
                    if let Some(key) = r.key {
                        note(
                            &mut latest,
                            &mut map_bytes,
                            Bytes::copy_from_slice(&key),
                            r.offset,
                        );
                    }
                }
            }
            if map_bytes + classifier.pending_key_bytes() > ctx.settings.dedupe_buffer_max_bytes {
                return Err(JobError::Deadline(format!(
                    "{tp}: the keys of the cleanable range need more than {} bytes; raise --compactor-dedupe-buffer-max-bytes",
                    ctx.settings.dedupe_buffer_max_bytes
                )));
            }
        }
        Some(latest)
    } else {
        None
    };
    // Pass 2: the records kept, into new files covering the same offsets.
    let tombstone_horizon_ms = now_ms.saturating_sub(policy.delete_retention_ms);
    let mut tombstones_expire_ms = i64::MAX;
    let mut output = Output {
        topic: tp.topic.to_string(),
        partition: tp.partition,
        max_bytes: ctx.settings.job_max_bytes,
        next_base: live
            .first()
            .map_or(log_start, |f| f.base_offset.max(log_start)),
        current: None,
        json_values: policy.json_values,
        done: Vec::new(),
    };
    let mut markers = MarkerKeeper::default();
    let mut removed_markers = HashSet::new();
    for file in &live {
        for (header, records) in read_file(ctx, file).await? {
            if header.is_control() {
                // A marker goes once its transaction kept nothing here and it is older than
                // delete.retention.ms (compaction only); until then, it makes a cleaning due.
                let emptied = markers.transaction_emptied(header.producer_id);
                let timestamp = records
                    .first()
                    .map_or(header.max_timestamp, |r| r.timestamp);
                if latest.is_some() && emptied && records.iter().all(|r| r.offset >= log_start) {
                    if timestamp < tombstone_horizon_ms {
                        removed_markers.insert(header.base_offset);
                        continue;
                    }
                    tombstones_expire_ms = tombstones_expire_ms
                        .min(timestamp.saturating_add(policy.delete_retention_ms));
                }
                let kept = records.into_iter().filter(|r| r.offset >= log_start);
                output.push(&header, kept.map(Record::detached).collect());
                continue;
            }
            // Transactional records are cleaned once their transaction is known committed;
            // aborted ones go; undecided ones stay whole.
            let (dedupe, aborted) = match (header.is_transactional(), latest.as_ref()) {
                (false, latest) => (latest, false),
                (true, None) => (None, false),
                (true, Some(latest)) => match classifier.outcome(header.base_offset) {
                    Some(true) => (Some(latest), false),
                    Some(false) => (None, true),
                    None => (None, false),
                },
            };
            // Copied out of the file's rebuilt batches, which the open output would otherwise
            // keep alive until it closes (it may span many input files).
            let kept: Vec<Record> = records
                .into_iter()
                .filter(|r| !aborted && keep(r, log_start, dedupe, tombstone_horizon_ms))
                .map(Record::detached)
                .collect();
            if header.is_transactional() {
                markers.kept(header.producer_id, kept.len());
            }
            // Tombstones the next cleaning may drop (keep() leaves undecided transactional and
            // keyless ones alone: counting them would make a cleaning due every pass once they
            // expire).
            let removable = |r: &&Record| dedupe.is_some() && r.key.is_some() && r.value.is_none();
            for tombstone in kept.iter().filter(removable) {
                tombstones_expire_ms = tombstones_expire_ms.min(
                    tombstone
                        .timestamp
                        .saturating_add(policy.delete_retention_ms),
                );
            }
            output.push(&header, kept);
        }
        output.close(file.last_offset, false).await?;
    }
    output.close(rewrite.end - 1, true).await?;
    // An aborted transaction whose marker went has no record left to hide.
    let aborted: Vec<AbortedTxn> = live
        .iter()
        .flat_map(|f| f.aborted.clone())
        .filter(|a| !removed_markers.contains(&a.last_offset))
        .collect();
    let mut new_files = Vec::with_capacity(output.done.len());
    for (bytes, range, summary) in output.done {
        new_files.push(crate::job::upload_file(ctx, tp, range, (bytes, &summary), &aborted).await?);
    }
    let now_ms = ctx.clock.now_ms();
    let (mut layout, manifest) =
        replace_front(&snapshot.layout, rewrite.slots, new_files.clone(), now_ms);
    if rewrite.compact {
        layout.cleaned_end = rewrite.end;
        layout.tombstones_expire_ms = if tombstones_expire_ms == i64::MAX {
            0
        } else {
            // Never in the past: a tombstone from a skewed clock is kept one more lag.
            tombstones_expire_ms.max(now_ms + 1)
        };
    }
    let mut new_objects: Vec<(Path, RollupBody)> = manifest.into_iter().collect();
    new_objects.extend(layout::bound(&mut layout, now_ms));
    let swap = Swap {
        topic: tp.topic.to_string(),
        partition: tp.partition,
        topic_create_revision,
        layout_revision: snapshot.layout_revision,
        layout: layout.clone(),
        consumed: Vec::new(),
        remainder: None,
    };
    let uploaded: Vec<&str> = new_files.iter().map(|f| f.object.as_str()).collect();
    crate::job::commit(ctx, tp, swap, new_objects, &uploaded).await?;
    let rows: u64 = new_files.iter().map(|f| f.rows).sum();
    tracing::info!(
        partition = %tp,
        compacted = rewrite.compact,
        files_in = live.len(),
        files_out = new_files.len(),
        rows,
        end = rewrite.end,
        "rewrote parquet files"
    );
    Ok(Outcome {
        parquet_end: layout.parquet_end,
        file: new_files.into_iter().last(),
        whole: true,
    })
}

/// The layout with its first `consumed` top-level slots replaced by `new_files`, and the index
/// object to write for it, if any. New files go inline when every rollup was consumed;
/// otherwise they must stay before the remaining rollups, so they are rolled into one.
pub fn replace_front(
    layout: &Layout,
    consumed: usize,
    new_files: Vec<ParquetFile>,
    now_ms: i64,
) -> (Layout, Option<(Path, RollupBody)>) {
    let mut out = layout.clone();
    out.compacted_ms = now_ms;
    let rollups = layout.rollups.len();
    if consumed >= rollups {
        out.rollups.clear();
        let mut files = new_files;
        files.extend(layout.files[consumed - rollups..].iter().cloned());
        out.files = files;
        return (out, None);
    }
    out.rollups = layout.rollups[consumed..].to_vec();
    if new_files.is_empty() {
        return (out, None);
    }
    let (entry, object) = layout::roll(RollupBody::Files(new_files), now_ms);
    out.rollups.insert(0, entry);
    (out, Some(object))
}

#[cfg(test)]
mod tests;
pub mod transactions;
