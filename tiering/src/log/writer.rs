//! The flusher: turns buffered appends into one object per flush, commits it, acknowledges.
//!
//! Order of a flush (the invariant "acknowledged ⇒ durable" rests on it):
//! 1. take buffered appends (whole partitions, up to `flush_max_bytes`);
//! 2. assign offsets from each partition's next offset — committed, or past the flushes still
//!    in flight ([`super::Projection`]) — and assemble the object;
//! 3. PUT the object under a fresh key (never overwritten);
//! 4. wait until the flush planned before it is over, check that each partition's planned base
//!    offset is its committed next offset (else an earlier flush failed: fail, retriable), then
//!    commit, per chunk of partitions, one metadata transaction that compares each partition's
//!    state `mod_revision` and its topic's `create_revision`, and writes the new state, one
//!    index entry and (when idempotent producers wrote) the producer state per partition;
//! 5. only then update the in-memory view, wake long polls and acknowledge the appends.
//!
//! Up to `flush_max_in_flight` flushes upload at once; their commits run one at a time in the
//! order they were planned, so a partition's commits happen in offset order. Idempotent
//! producers' sequence numbers are checked in step 2 against the producer state the flushes in
//! flight will leave; a retry of a batch committed earlier (here or by a previous leader) is
//! answered with its first offset instead of stored, and a retry of one still in flight is
//! refused (retriable). A failed PUT or commit fails its appends, and those of the flushes
//! planned past it, with a retriable error; nothing they wrote becomes visible (the object is
//! left for garbage collection).

use super::pending::{assemble, PendingAppend, PlannedSection};
use super::{load_partition, AppendOutcome, LogError, LogInner, PartitionLog, TopicPartition};
use crate::keys::{self, IndexEntry, PartitionState};
use crate::metadata::{Compare, CompareOp, CompareTarget, Txn, TxnOp};
use crate::paths;
use crate::producers::{AbortedTxn, ProducerStates};
use object_store::ObjectStoreExt;
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Metadata operations one partition adds to a commit besides its markers' request deletions:
/// its state, one index entry and its producer state.
const OPS_PER_PARTITION: usize = 3;
/// Producer-state bytes one commit carries at most (etcd refuses requests over 1.5 MiB).
const TXN_PRODUCER_BYTES_MAX: usize = 1024 * 1024;

pub(crate) async fn run_flusher(inner: Arc<LogInner>) {
    let linger = Duration::from_millis(inner.config.flush_linger_ms);
    let depth = inner.config.flush_max_in_flight.max(1);
    // Flushes uploading or committing, oldest first, and the signal the newest gives when it
    // is over (the next one commits only after it).
    let mut in_flight: VecDeque<JoinHandle<()>> = VecDeque::new();
    let mut newest_done: Option<oneshot::Receiver<()>> = None;
    loop {
        while in_flight.front().is_some_and(JoinHandle::is_finished) {
            oldest_over(&mut in_flight).await;
        }
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
            None if stopping => {
                while !in_flight.is_empty() {
                    oldest_over(&mut in_flight).await;
                }
                return;
            }
            None => {
                tokio::select! {
                    _ = inner.flush_wakeup.notified() => {}
                    _ = oldest_over(&mut in_flight) => {}
                }
                continue;
            }
            Some(first_at) if !full && !stopping && !urgent => {
                tokio::select! {
                    _ = tokio::time::sleep_until(first_at + linger) => {}
                    _ = inner.flush_wakeup.notified() => continue,
                    _ = oldest_over(&mut in_flight) => continue,
                }
            }
            Some(_) => {}
        }
        // At most `depth` flushes in flight: meanwhile appends gather for a bigger next one.
        while in_flight.len() >= depth {
            oldest_over(&mut in_flight).await;
        }
        let taken = inner
            .pending
            .lock()
            .expect("pending mutex poisoned")
            .take(inner.config.flush_max_bytes, Instant::now());
        if taken.is_empty() {
            continue;
        }
        if let Some(first_at) = first_at {
            inner.stats.flush_times.buffered.record(first_at.elapsed());
        }
        let Some(flush) = plan(&inner, taken).await else {
            // Wake `flush_now` waiters even when the flush had nothing to commit.
            inner.commits.send_modify(|n| *n += 1);
            continue;
        };
        let (done, done_signal) = oneshot::channel();
        let previous = newest_done.replace(done_signal);
        let task_inner = inner.clone();
        in_flight.push_back(tokio::spawn(async move {
            write(&task_inner, flush, previous).await;
            roll_up_indexes(&task_inner).await;
            task_inner.commits.send_modify(|n| *n += 1);
            let _ = done.send(());
        }));
    }
}

/// Waits for the oldest flush in flight to end (forever when there is none) and removes it. A
/// flush that panicked takes the flusher down with it: the broker is supervised and exits
/// rather than keep accepting data it cannot write.
async fn oldest_over(in_flight: &mut VecDeque<JoinHandle<()>>) {
    let Some(oldest) = in_flight.front_mut() else {
        return std::future::pending().await;
    };
    let ended = oldest.await;
    in_flight.pop_front();
    if let Err(error) = ended {
        if error.is_panic() {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

/// Rolls up the index of partitions whose tail grew past the fan-out (after a commit, before
/// the next flush commits).
async fn roll_up_indexes(inner: &LogInner) {
    let rollup_started = Instant::now();
    let rollups = std::mem::take(&mut *inner.needs_rollup.lock().expect("rollup list poisoned"));
    for (tp, partition) in rollups {
        match super::index::roll_up(inner, &tp, &partition).await {
            Ok(()) => {}
            // A compactor's swap changed the index: read it again, roll up next time.
            Err(LogError::Fenced(reason)) => {
                tracing::debug!(%reason, partition = %tp, "index roll-up fenced; reloading the index");
                if let Err(error) = super::refresh_index(inner, &tp, &partition).await {
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
    inner
        .stats
        .flush_times
        .rollup
        .record(rollup_started.elapsed());
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
    /// The partition's `plan_generation` it was planned in.
    plan_generation: u64,
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
    plan_generation: u64,
}

/// A flush planned: offsets assigned, its object assembled, not yet uploaded.
struct PlannedFlush {
    path: object_store::path::Path,
    object: bytes::Bytes,
    sections: Vec<(Prepared, PlannedSection)>,
}

/// Plans a flush of `taken`: admits each partition's appends (past the flushes still in flight,
/// whose offsets and producer state they take as given) and assembles the object. `None` when
/// nothing is left to write.
#[tracing::instrument(level = "debug", skip_all, fields(partitions = taken.len()))]
async fn plan(
    inner: &LogInner,
    taken: Vec<(TopicPartition, Vec<PendingAppend>)>,
) -> Option<PlannedFlush> {
    inner.stats.flushes.fetch_add(1, Ordering::Relaxed);
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
                (admitted.marker_requests, admitted.plan_generation),
            ));
        }
    }
    if inputs.is_empty() {
        return None;
    }
    let (object, planned) = assemble(&inputs, now_ms);
    let expiration_ms = inner.config.producer_id_expiration_ms;
    let sections = inputs
        .into_iter()
        .zip(handles)
        .map(
            |(
                (tp, appends, _),
                (partition, echoes, producers, aborted, (marker_requests, plan_generation)),
            )| {
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
                    plan_generation,
                }
            },
        )
        .zip(planned)
        .collect();
    inner.stats.flush_times.prepare.record(started.elapsed());
    Some(PlannedFlush {
        path: paths::new_wal_object(now_ms),
        object,
        sections,
    })
}

/// Uploads a planned flush, waits for the flush before it (`previous`) to finish, then commits:
/// flushes commit one at a time and in the order they were planned, and a flush planned past
/// one that failed fails too (its offsets were taken from it; see `commit_chunk`).
async fn write(inner: &LogInner, flush: PlannedFlush, previous: Option<oneshot::Receiver<()>>) {
    let PlannedFlush {
        path,
        object,
        sections,
    } = flush;
    let size = object.len();
    let upload_started = Instant::now();
    let uploaded = inner.objects.put(&path, object.clone().into()).await;
    inner
        .stats
        .flush_times
        .upload
        .record(upload_started.elapsed());
    if let Some(previous) = previous {
        // Dropped without a signal when its task ended early: either way it is over.
        let _ = previous.await;
    }
    if let Err(error) = uploaded {
        tracing::warn!(%error, object = %path, "flush object upload failed");
        inner.stats.upload_failures.fetch_add(1, Ordering::Relaxed);
        inner
            .stats
            .last_upload_failed
            .store(true, Ordering::Relaxed);
        let error = LogError::Unavailable(format!("object upload failed: {error}"));
        for (p, _) in sections {
            abandon(inner, p, &error);
        }
        return;
    }
    if let Err(error) = check_commit_deadline(inner, path.as_ref()) {
        for (p, _) in sections {
            abandon(inner, p, &error);
        }
        return;
    }
    inner
        .stats
        .last_upload_failed
        .store(false, Ordering::Relaxed);
    inner.stats.flush_times.object_bytes.record(size as u64);
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
    for item in sections {
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
    inner
        .stats
        .flush_times
        .commit
        .record(commit_started.elapsed());
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
    let mut view = partition.view.lock().expect("view mutex poisoned");
    let awaited = inner.awaited.of(tp);
    // A partition's commit must fit one metadata transaction with its markers' deletions.
    let markers_max = inner
        .store
        .max_txn_ops()
        .saturating_sub(OPS_PER_PARTITION)
        .clamp(1, super::pending::MARKERS_PER_FLUSH_MAX);
    // Planned past the flushes in flight, if any: their offsets and producer state are taken.
    let projected = view.projected.as_ref();
    let from = super::pending::PlanFrom {
        producers: projected
            .and_then(|p| p.producers.as_ref())
            .unwrap_or(&view.producers),
        committed_next_offset: view.state.next_offset,
        next_offset: projected.map_or(view.state.next_offset, |p| p.next_offset),
    };
    let next_offset = from.next_offset;
    let log_start_offset = view.state.log_start_offset;
    let plan_generation = view.plan_generation;
    let sequencing =
        super::pending::sequence(from, awaited.as_ref(), (current, markers_max), now_ms);
    if !sequencing.appends.is_empty() {
        let offsets: i64 = sequencing.appends.iter().map(PendingAppend::offsets).sum();
        let producers = sequencing
            .producers
            .clone()
            .or_else(|| view.projected.take().and_then(|p| p.producers));
        view.projected = Some(super::Projection {
            next_offset: next_offset + offsets,
            producers,
        });
    }
    drop(view);
    for (append, error) in sequencing.rejected {
        let _ = append.reply.send(Err(error));
    }
    fail(
        sequencing.in_flight_duplicates,
        &LogError::Unavailable(format!(
            "{tp}: the batch is in a flush not committed yet; retry"
        )),
    );
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
        plan_generation,
    })
}

/// Commits one chunk. When a compare fails, the partitions whose state or topic changed are
/// failed (fenced) and the others are committed in a new attempt: one deleted topic or one lost
/// partition must not fail every partition that shared its flush.
async fn commit_chunk(inner: &LogInner, object: &str, chunk: Vec<(Prepared, PlannedSection)>) {
    let _state_commits = inner.state_commits.lock().await;
    // A partition planned past a flush that then failed does not continue its committed log:
    // its appends fail (retriable), as that flush's did, and nothing leaves a gap.
    let (mut chunk, broken): (Vec<_>, Vec<_>) =
        chunk.into_iter().partition(|(prepared, planned)| {
            let view = prepared.partition.view.lock().expect("view mutex poisoned");
            view.state.next_offset == planned.section.base_offset
        });
    for (prepared, _) in broken {
        let error = LogError::Unavailable(format!(
            "{}: an earlier flush of the partition failed; retry",
            prepared.tp
        ));
        abandon(inner, prepared, &error);
    }
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
            // No later flush in flight for it: the committed state is all there is.
            if view
                .projected
                .as_ref()
                .is_some_and(|p| p.next_offset == view.state.next_offset)
            {
                view.projected = None;
            }
            view.index.insert(entry.base_offset, entry);
            if let Some((producers, _)) = prepared.producers {
                inner
                    .awaited
                    .committed(&prepared.tp, |id| producers.producers.contains_key(&id));
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
    for (prepared, _) in chunk {
        // Whatever happened, reload the partition from the store before its next use.
        inner
            .partitions
            .write()
            .expect("partitions poisoned")
            .remove(&prepared.tp);
        abandon(inner, prepared, error);
    }
}

/// Fails a partition's part of a flush that will not commit. The flushes planned past it fail
/// too (see `commit_chunk`); the next one plans from the committed state again. A flush planned
/// before an earlier failure dropped the projection leaves the one planned since alone.
fn abandon(inner: &LogInner, prepared: Prepared, error: &LogError) {
    {
        let mut view = prepared.partition.view.lock().expect("view mutex poisoned");
        if view.plan_generation == prepared.plan_generation {
            view.projected = None;
            view.plan_generation += 1;
        }
    }
    fail_prepared(inner, prepared, error);
}

/// Fails a partition's appends. An idempotent producer the partition does not know yet must
/// resend its failed batch before anything after it (a known one is held to its sequence anyway).
fn fail_prepared(inner: &LogInner, prepared: Prepared, error: &LogError) {
    note_failed_sequences(inner, &prepared.tp, &prepared.partition, &prepared.appends);
    fail(prepared.appends, error);
    fail(prepared.echoes.into_iter().map(|(a, _)| a).collect(), error);
}

/// Notes the failed batches of idempotent producers the partition does not know yet: they must
/// be resent before anything after them (`awaited`).
fn note_failed_sequences(
    inner: &LogInner,
    tp: &TopicPartition,
    partition: &PartitionLog,
    appends: &[PendingAppend],
) {
    let view = partition.view.lock().expect("view mutex poisoned");
    inner.awaited.note(
        tp,
        appends.iter().filter_map(PendingAppend::sequenced),
        |id| view.producers.producers.contains_key(&id),
        inner.clock.now_ms(),
    );
}

fn fail(appends: Vec<PendingAppend>, error: &LogError) {
    for append in appends {
        let _ = append.reply.send(Err(error.clone()));
    }
}
