//! The flusher: turns buffered appends into one object per flush, commits it, acknowledges.
//!
//! Order of a flush (the invariant "acknowledged ⇒ durable" rests on it):
//! 1. take buffered appends (whole partitions, up to `flush_max_bytes`);
//! 2. assign offsets from each partition's committed next offset and assemble the object;
//! 3. PUT the object under a fresh key (never overwritten);
//! 4. commit, per chunk of partitions, one metadata transaction that compares each partition's
//!    state `mod_revision` and its topic's `create_revision`, and writes the new state, one
//!    index entry and (when idempotent producers wrote) the producer state per partition;
//! 5. only then update the in-memory view, wake long polls and acknowledge the appends.
//!
//! Idempotent producers' sequence numbers are checked in step 2, against the committed producer
//! state: flushes run one at a time, so that state is exact, and a retry of a batch committed
//! earlier (here or by a previous leader) is answered with its first offset instead of stored.
//!
//! Flushes run one at a time, so a partition's commits happen in offset order. A failed PUT or
//! commit fails its appends with a retriable error; nothing they wrote becomes visible (the object
//! is left for garbage collection), and the partitions are reloaded from the store.

use super::pending::{assemble, PendingAppend, PlannedSection};
use super::{load_partition, AppendOutcome, LogError, LogInner, PartitionLog, TopicPartition};
use crate::keys::{self, IndexEntry, PartitionState};
use crate::metadata::{Compare, CompareOp, CompareTarget, Txn, TxnOp};
use crate::paths;
use crate::producers::{AbortedTxn, ProducerStates};
use object_store::ObjectStoreExt;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Metadata operations one partition adds to a commit besides its markers' request deletions:
/// its state, one index entry and its producer state.
const OPS_PER_PARTITION: usize = 3;
/// Producer-state bytes one commit carries at most (etcd refuses requests over 1.5 MiB).
const TXN_PRODUCER_BYTES_MAX: usize = 1024 * 1024;

pub(crate) async fn run_flusher(inner: Arc<LogInner>) {
    let linger = Duration::from_millis(inner.config.flush_linger_ms);
    loop {
        let (first_at, full) = {
            let pending = inner.pending.lock().expect("pending mutex poisoned");
            (
                pending.first_at(),
                pending.bytes() >= inner.config.flush_max_bytes,
            )
        };
        let stopping = inner.shutting_down.load(Ordering::Acquire);
        let urgent = inner.flush_urgent.swap(false, Ordering::AcqRel);
        match first_at {
            None if stopping => return,
            None => {
                inner.flush_wakeup.notified().await;
                continue;
            }
            Some(first_at) if !full && !stopping && !urgent => {
                tokio::select! {
                    _ = tokio::time::sleep_until(first_at + linger) => {}
                    _ = inner.flush_wakeup.notified() => continue,
                }
            }
            Some(_) => {}
        }
        let taken = inner
            .pending
            .lock()
            .expect("pending mutex poisoned")
            .take(inner.config.flush_max_bytes, Instant::now());
        if !taken.is_empty() {
            let times = &inner.stats.flush_times;
            if let Some(first_at) = first_at {
                times.buffered.record(first_at.elapsed());
            }
            flush(&inner, taken).await;
            let rollup_started = Instant::now();
            let rollups =
                std::mem::take(&mut *inner.needs_rollup.lock().expect("rollup list poisoned"));
            for (tp, partition) in rollups {
                match super::index::roll_up(&inner, &tp, &partition).await {
                    Ok(()) => {}
                    // A compactor's swap changed the index: read it again, roll up next time.
                    Err(LogError::Fenced(reason)) => {
                        tracing::debug!(%reason, partition = %tp, "index roll-up fenced; reloading the index");
                        if let Err(error) = super::refresh_index(&inner, &tp, &partition).await {
                            tracing::warn!(%error, partition = %tp, "index reload failed; the partition is reloaded on its next use");
                            inner
                                .partitions
                                .write()
                                .expect("partitions poisoned")
                                .remove(&tp);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, partition = %tp, "index roll-up failed; retried after the next commit");
                    }
                }
            }
            times.rollup.record(rollup_started.elapsed());
            // Wake `flush_now` waiters even when the flush committed nothing.
            inner.commits.send_modify(|n| *n += 1);
        }
    }
}

struct Prepared {
    tp: TopicPartition,
    partition: Arc<PartitionLog>,
    appends: Vec<PendingAppend>,
    /// Retries of `appends`, answered with their offsets.
    echoes: Vec<(PendingAppend, i64)>,
    /// The new producer state and its encoding, when idempotent producers wrote.
    producers: Option<(ProducerStates, Vec<u8>)>,
    /// Transactions its abort markers end, recorded in the section's index entry.
    aborted: Vec<AbortedTxn>,
    /// Marker request keys the commit deletes.
    marker_requests: Vec<String>,
}

impl Prepared {
    /// Operations its commit takes: state, index entry, producer state, one per marker.
    fn ops(&self) -> usize {
        OPS_PER_PARTITION + self.marker_requests.len()
    }
}

/// A partition's appends that passed the leadership and sequence checks.
struct Admitted {
    appends: Vec<PendingAppend>,
    next_offset: i64,
    /// Retries of `appends`, answered with their offsets.
    echoes: Vec<(PendingAppend, i64)>,
    producers: Option<ProducerStates>,
    aborted: Vec<AbortedTxn>,
    marker_requests: Vec<String>,
}

#[tracing::instrument(level = "debug", skip_all, fields(partitions = taken.len()))]
async fn flush(inner: &LogInner, taken: Vec<(TopicPartition, Vec<PendingAppend>)>) {
    inner.stats.flushes.fetch_add(1, Ordering::Relaxed);
    let times = &inner.stats.flush_times;
    let started = Instant::now();
    let mut inputs = Vec::with_capacity(taken.len());
    let mut handles = Vec::with_capacity(taken.len());
    let now_ms = inner.clock.now_ms();
    for (tp, appends) in taken {
        let partition = match load_partition(inner, &tp).await {
            Ok(partition) => partition,
            Err(error) => {
                fail(appends, &error);
                continue;
            }
        };
        if let Some(admitted) = admit(inner, &tp, &partition, appends, now_ms) {
            inputs.push((tp, admitted.appends, admitted.next_offset));
            handles.push((
                partition,
                admitted.echoes,
                admitted.producers,
                admitted.aborted,
                admitted.marker_requests,
            ));
        }
    }
    if inputs.is_empty() {
        return;
    }
    let (object, planned) = assemble(&inputs, now_ms);
    let expiration_ms = inner.config.producer_id_expiration_ms;
    let prepared: Vec<Prepared> = inputs
        .into_iter()
        .zip(handles)
        .map(
            |((tp, appends, _), (partition, echoes, producers, aborted, marker_requests))| {
                Prepared {
                    tp,
                    partition,
                    appends,
                    echoes,
                    producers: producers.map(|mut states| {
                        let encoded = states.encode_pruned(now_ms, expiration_ms);
                        (states, encoded)
                    }),
                    aborted,
                    marker_requests,
                }
            },
        )
        .collect();

    let path = paths::new_wal_object(now_ms);
    let size = object.len();
    times.prepare.record(started.elapsed());
    let upload_started = Instant::now();
    let uploaded = inner.objects.put(&path, object.clone().into()).await;
    times.upload.record(upload_started.elapsed());
    if let Err(error) = uploaded {
        tracing::warn!(%error, object = %path, "flush object upload failed");
        inner.stats.upload_failures.fetch_add(1, Ordering::Relaxed);
        let error = LogError::Unavailable(format!("object upload failed: {error}"));
        for p in prepared {
            fail_prepared(inner, p, &error);
        }
        return;
    }
    if let Err(error) = check_commit_deadline(inner, path.as_ref()) {
        for p in prepared {
            fail_prepared(inner, p, &error);
        }
        return;
    }
    inner.stats.objects_written.fetch_add(1, Ordering::Relaxed);
    inner
        .stats
        .object_bytes_written
        .fetch_add(size as u64, Ordering::Relaxed);
    inner
        .recent
        .lock()
        .expect("recent mutex poisoned")
        .insert(path.to_string(), object);

    // Chunks bounded by the store's operations per transaction (a partition takes at most
    // OPS_PER_PARTITION plus its markers, within it: see `admit`) and by request size.
    let commit_started = Instant::now();
    let ops_max = inner.store.max_txn_ops();
    let mut chunk: Vec<(Prepared, PlannedSection)> = Vec::new();
    let mut chunk_bytes = 0;
    let mut chunk_ops = 0;
    for item in prepared.into_iter().zip(planned) {
        let bytes = item.0.producers.as_ref().map_or(0, |(_, e)| e.len());
        let ops = item.0.ops();
        if !chunk.is_empty()
            && (chunk_ops + ops > ops_max || chunk_bytes + bytes > TXN_PRODUCER_BYTES_MAX)
        {
            commit_chunk(inner, path.as_ref(), std::mem::take(&mut chunk)).await;
            chunk_bytes = 0;
            chunk_ops = 0;
        }
        chunk_bytes += bytes;
        chunk_ops += ops;
        chunk.push(item);
    }
    if !chunk.is_empty() {
        commit_chunk(inner, path.as_ref(), chunk).await;
    }
    times.commit.record(commit_started.elapsed());
}

/// Answers what a partition's appends need no commit for, and returns the rest: appends for an
/// earlier incarnation of the topic, or accepted under another leadership, fail (only the leader
/// that accepted them, still in the same epoch, may commit them); idempotent producers'
/// duplicates of committed batches are answered with their offsets, and sequence errors fail.
fn admit(
    inner: &LogInner,
    tp: &TopicPartition,
    partition: &PartitionLog,
    appends: Vec<PendingAppend>,
    now_ms: i64,
) -> Option<Admitted> {
    let (leader, epoch) = {
        let view = partition.view.lock().expect("view mutex poisoned");
        (view.state.leader, view.state.leader_epoch)
    };
    let (current, stale): (Vec<_>, Vec<_>) = appends
        .into_iter()
        .partition(|a| a.topic_create_revision == partition.topic_create_revision);
    fail(
        stale,
        &LogError::UnknownTopicOrPartition(format!("{tp} was deleted")),
    );
    let (current, deposed): (Vec<_>, Vec<_>) = current
        .into_iter()
        .partition(|a| leader == inner.config.node_id && a.leader_epoch == epoch);
    inner
        .stats
        .fenced_appends
        .fetch_add(deposed.len() as u64, Ordering::Relaxed);
    // This broker leads again under a new epoch (a re-claim): batches after these must not
    // overtake them. (Led elsewhere, the new leader decides.)
    if leader == inner.config.node_id {
        note_failed_sequences(inner, tp, partition, &deposed);
    }
    fail(
        deposed,
        &LogError::NotLeader(format!("{tp} changed leadership before the flush")),
    );
    if current.is_empty() {
        return None;
    }
    let (sequencing, next_offset, log_start_offset) = {
        let view = partition.view.lock().expect("view mutex poisoned");
        let awaited = inner
            .awaited_sequences
            .lock()
            .expect("awaited mutex poisoned");
        // A partition's commit must fit one metadata transaction with its markers' deletions.
        let markers_max = inner
            .store
            .max_txn_ops()
            .saturating_sub(OPS_PER_PARTITION)
            .clamp(1, super::pending::MARKERS_PER_FLUSH_MAX);
        let sequencing = super::pending::sequence(
            &view.producers,
            awaited.get(tp),
            (current, markers_max),
            view.state.next_offset,
            now_ms,
        );
        (
            sequencing,
            view.state.next_offset,
            view.state.log_start_offset,
        )
    };
    for (append, error) in sequencing.rejected {
        let _ = append.reply.send(Err(error));
    }
    for (append, base_offset) in sequencing.committed_duplicates {
        let _ = append.reply.send(Ok(AppendOutcome {
            base_offset,
            log_append_time_ms: None,
            log_start_offset,
        }));
    }
    if sequencing.appends.is_empty() {
        debug_assert!(sequencing.echoes.is_empty());
        return None;
    }
    Some(Admitted {
        appends: sequencing.appends,
        next_offset,
        echoes: sequencing.echoes,
        producers: sequencing.producers,
        aborted: sequencing.aborted,
        marker_requests: sequencing.marker_requests,
    })
}

/// Commits one chunk. When a compare fails, the partitions whose state or topic changed are
/// failed (fenced) and the others are committed in a new attempt: one deleted topic or one lost
/// partition must not fail every partition that shared its flush.
async fn commit_chunk(inner: &LogInner, object: &str, mut chunk: Vec<(Prepared, PlannedSection)>) {
    let _state_commits = inner.state_commits.lock().await;
    while !chunk.is_empty() {
        if let Err(error) = check_commit_deadline(inner, object) {
            fail_chunk(inner, chunk, &error);
            return;
        }
        let (txn, updates) = build_commit(object, &chunk);
        let error = match inner.store.txn(txn).await {
            Ok(outcome) if outcome.succeeded => {
                apply_commit(inner, chunk, updates, outcome.revision);
                return;
            }
            Ok(_) => {
                let fenced = find_fenced(inner, &chunk).await;
                if !fenced.is_empty() && fenced.len() < chunk.len() {
                    let (stale, rest): (Vec<_>, Vec<_>) = chunk
                        .into_iter()
                        .enumerate()
                        .partition(|(i, _)| fenced.contains(i));
                    let error = LogError::Fenced(format!(
                        "partition state changed before commit object={object}"
                    ));
                    fail_chunk(inner, stale.into_iter().map(|(_, c)| c).collect(), &error);
                    chunk = rest.into_iter().map(|(_, c)| c).collect();
                    continue;
                }
                LogError::Fenced(format!(
                    "partition state changed before commit object={object}"
                ))
            }
            // Ambiguous: the commit may or may not have applied. Reloading from the store
            // tells the next flush which.
            Err(error) => LogError::Unavailable(format!("commit failed: {error}")),
        };
        fail_chunk(inner, chunk, &error);
        return;
    }
}

/// The commit transaction for a chunk, and each partition's new state and index entry.
fn build_commit(
    object: &str,
    chunk: &[(Prepared, PlannedSection)],
) -> (Txn, Vec<(PartitionState, IndexEntry)>) {
    let mut compares = Vec::new();
    let mut ops = Vec::new();
    let mut topics_checked = BTreeSet::new();
    let mut updates = Vec::with_capacity(chunk.len());
    for (prepared, planned) in chunk {
        let tp = &prepared.tp;
        let (mut state, revision) = {
            let view = prepared.partition.view.lock().expect("view mutex poisoned");
            (view.state.clone(), view.state_revision)
        };
        if topics_checked.insert(tp.topic.clone()) {
            compares.push(topic_incarnation(&prepared.tp, &prepared.partition));
        }
        let state_key = keys::partition(&tp.topic, tp.partition);
        compares.push(Compare::mod_revision(&state_key, revision));
        debug_assert_eq!(planned.tp, *tp);
        debug_assert_eq!(planned.section.base_offset, state.next_offset);
        state.next_offset = planned.section.last_offset + 1;
        let entry = IndexEntry {
            base_offset: planned.section.base_offset,
            last_offset: planned.section.last_offset,
            max_timestamp: planned.section.max_timestamp,
            object: object.to_owned(),
            position: planned.section.position,
            length: planned.section.length,
            crc32c: planned.section.crc32c,
            aborted: prepared.aborted.clone(),
        };
        ops.push(TxnOp::put(state_key, keys::encode(&state)));
        ops.push(TxnOp::put(
            keys::index_entry(&tp.topic, tp.partition, entry.base_offset),
            keys::encode(&entry),
        ));
        if let Some((_, encoded)) = &prepared.producers {
            ops.push(TxnOp::put(
                keys::producers(&tp.topic, tp.partition),
                encoded.clone(),
            ));
        }
        // The markers are durable with this commit, and their requests answered by it.
        ops.extend(prepared.marker_requests.iter().map(TxnOp::delete));
        updates.push((state, entry));
    }
    (Txn::when(compares).and_then(ops), updates)
}

/// Refuses to commit an object named more than the commit timeout ago: garbage collection may
/// already count it as an orphan (see `LogConfig::object_commit_timeout_ms`, `paths::name_age_ms`).
/// Checked once more before each commit chunk, so a broker paused mid-flush cannot commit late.
pub(crate) fn check_commit_deadline(inner: &LogInner, object: &str) -> Result<(), LogError> {
    let elapsed_ms = paths::name_age_ms(object, inner.clock.now_ms());
    if elapsed_ms > inner.config.object_commit_timeout_ms {
        tracing::warn!(
            object,
            elapsed_ms,
            "object not committed within the commit timeout; dropped"
        );
        return Err(LogError::Unavailable(format!(
            "object={object} not committed within {} ms of its upload",
            inner.config.object_commit_timeout_ms
        )));
    }
    Ok(())
}

pub(crate) fn topic_incarnation(tp: &TopicPartition, partition: &PartitionLog) -> Compare {
    Compare {
        key: keys::topic(&tp.topic),
        op: CompareOp::Equal,
        target: CompareTarget::CreateRevision(partition.topic_create_revision),
    }
}

/// Positions in the chunk whose partition state or topic no longer match what this broker
/// committed against (a store error counts as "changed": the partition is failed, not retried).
async fn find_fenced(inner: &LogInner, chunk: &[(Prepared, PlannedSection)]) -> Vec<usize> {
    let mut fenced = Vec::new();
    for (i, (prepared, _)) in chunk.iter().enumerate() {
        let tp = &prepared.tp;
        let expected = prepared
            .partition
            .view
            .lock()
            .expect("view mutex poisoned")
            .state_revision;
        let state = inner
            .store
            .get(&keys::partition(&tp.topic, tp.partition))
            .await;
        let topic = inner.store.get(&keys::topic(&tp.topic)).await;
        let unchanged = matches!(&state, Ok(kv) if kv.as_ref().map_or(0, |kv| kv.mod_revision) == expected)
            && matches!(&topic, Ok(Some(kv)) if kv.create_revision == prepared.partition.topic_create_revision);
        if !unchanged {
            fenced.push(i);
        }
    }
    fenced
}

/// After a successful commit: update the views, then acknowledge.
fn apply_commit(
    inner: &LogInner,
    chunk: Vec<(Prepared, PlannedSection)>,
    updates: Vec<(PartitionState, IndexEntry)>,
    revision: crate::metadata::Revision,
) {
    for ((prepared, planned), (state, entry)) in chunk.into_iter().zip(updates) {
        let log_start_offset = state.log_start_offset;
        {
            let mut view = prepared.partition.view.lock().expect("view mutex poisoned");
            view.state = state;
            view.state_revision = revision;
            view.index.insert(entry.base_offset, entry);
            if let Some((producers, _)) = prepared.producers {
                let mut awaited = inner
                    .awaited_sequences
                    .lock()
                    .expect("awaited mutex poisoned");
                if let Some(waiting) = awaited.get_mut(&prepared.tp) {
                    waiting.retain(|id, _| !producers.producers.contains_key(id));
                    if waiting.is_empty() {
                        awaited.remove(&prepared.tp);
                    }
                }
                view.producers = producers;
            }
            if super::index::plan(&view, inner.config.index_rollup_fanout).is_some() {
                inner
                    .needs_rollup
                    .lock()
                    .expect("rollup list poisoned")
                    .push((prepared.tp.clone(), prepared.partition.clone()));
            }
        }
        let echoes = prepared.echoes.into_iter();
        for (append, base_offset) in prepared
            .appends
            .into_iter()
            .zip(planned.base_offsets)
            .chain(echoes)
        {
            // A requester that went away is fine: the data is committed regardless.
            let _ = append.reply.send(Ok(AppendOutcome {
                base_offset,
                log_append_time_ms: planned.log_append_time_ms,
                log_start_offset,
            }));
        }
    }
}

fn fail_chunk(inner: &LogInner, chunk: Vec<(Prepared, PlannedSection)>, error: &LogError) {
    tracing::warn!(%error, partitions = chunk.len(), "flush commit failed");
    inner.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
    if matches!(error, LogError::Fenced(_)) {
        let appends: usize = chunk.iter().map(|(p, _)| p.appends.len()).sum();
        inner
            .stats
            .fenced_appends
            .fetch_add(appends as u64, Ordering::Relaxed);
    }
    let mut partitions = inner.partitions.write().expect("partitions poisoned");
    for (prepared, _) in chunk {
        // Whatever happened, reload the partition from the store before its next use.
        partitions.remove(&prepared.tp);
        fail_prepared(inner, prepared, error);
    }
}

/// Fails a partition's appends. An idempotent producer the partition does not know yet must
/// resend its failed batch before anything after it (a known one is held to its sequence anyway).
fn fail_prepared(inner: &LogInner, prepared: Prepared, error: &LogError) {
    note_failed_sequences(inner, &prepared.tp, &prepared.partition, &prepared.appends);
    fail(prepared.appends, error);
    fail(prepared.echoes.into_iter().map(|(a, _)| a).collect(), error);
}

/// Remembers the first failed sequence of each idempotent producer the partition does not know
/// yet: it must resend that batch before anything after it (a known one is held to its sequence
/// anyway). Entries go when the producer's batch commits, or with the topic or the session.
fn note_failed_sequences(
    inner: &LogInner,
    tp: &TopicPartition,
    partition: &PartitionLog,
    appends: &[PendingAppend],
) {
    /// Bounds the memory of failed producers; beyond it, order after a failure is the client's.
    const AWAITED_MAX: usize = 100_000;
    let view = partition.view.lock().expect("view mutex poisoned");
    let mut awaited = inner
        .awaited_sequences
        .lock()
        .expect("awaited mutex poisoned");
    let total: usize = awaited.values().map(HashMap::len).sum();
    for batch in appends.iter().filter_map(PendingAppend::sequenced) {
        if total < AWAITED_MAX && !view.producers.producers.contains_key(&batch.producer_id) {
            awaited
                .entry(tp.clone())
                .or_default()
                .entry(batch.producer_id)
                .or_insert((batch.epoch, batch.first_sequence));
        }
    }
}

fn fail(appends: Vec<PendingAppend>, error: &LogError) {
    for append in appends {
        let _ = append.reply.send(Err(error.clone()));
    }
}
