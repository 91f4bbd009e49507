//! Produce data waiting for the next flush, grouped by partition in arrival order.
//!
//! Pure bookkeeping, no I/O: the flusher takes a batch of partitions out and turns them into one
//! object with [`assemble`]; offsets are assigned there, from the partition's committed next
//! offset, so a failed flush never leaves holes or reassigned offsets behind.

use super::{AppendOutcome, LogError, TopicPartition};
use crate::batch::{self, BatchHeader};
use crate::object::{ObjectBuilder, SectionMeta};
use crate::producers::{
    AbortedTxn, AwaitedSequences, Marker, ProducerStates, Sequenced, Verdict, AWAITED_FOR_MS,
};
use bytes::Bytes;
use indexmap::IndexMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

pub(crate) type Reply = oneshot::Sender<Result<AppendOutcome, LogError>>;

#[derive(Debug)]
pub(crate) struct PendingAppend {
    /// The topic incarnation the append was accepted for; a flush that finds another one
    /// (the topic was deleted and re-created meanwhile) fails the append.
    pub(crate) topic_create_revision: crate::metadata::Revision,
    /// The leader epoch under which it was accepted; a flush under any other epoch (or after
    /// leadership moved) fails it.
    pub(crate) leader_epoch: i32,
    /// Counts the append as in flight on its partition until it is answered (dropped).
    pub(crate) _inflight: InflightGuard,
    pub(crate) batches: Vec<(BatchHeader, Bytes)>,
    pub(crate) log_append_time: bool,
    pub(crate) bytes: usize,
    pub(crate) reply: Reply,
    /// Produce-buffer bytes held until the append is committed or failed.
    pub(crate) _permit: OwnedSemaphorePermit,
    /// Set when the append is a transaction marker (its one batch is the control batch).
    pub(crate) marker: Option<MarkerAppend>,
    /// For transactional batches: the coordinator state revision they were verified against.
    pub(crate) txn_verified_revision: Option<i64>,
}

/// A transaction marker appended for the coordinator: its request key is deleted by the
/// commit that stores the marker.
#[derive(Debug, Clone)]
pub(crate) struct MarkerAppend {
    pub(crate) marker: Marker,
    pub(crate) request_key: String,
}

/// Markers one partition takes per flush at most (each deletes its request key in the commit,
/// and a commit has a bounded number of operations: fewer when the store allows fewer); more are
/// refused with a retriable error and appended again by the next rescan.
pub(crate) const MARKERS_PER_FLUSH_MAX: usize = 64;

/// The sequence numbers an append of `batches` claims, if they come from an idempotent producer
/// (whose appends hold exactly one batch: see `batch::split_and_validate`).
pub(crate) fn sequenced(batches: &[(BatchHeader, Bytes)]) -> Option<Sequenced> {
    match batches {
        [(h, _)] if h.is_idempotent() => {
            let sequenced = Sequenced::new(
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                h.last_offset_delta,
            );
            Some(if h.is_transactional() {
                sequenced.transactional()
            } else {
                sequenced
            })
        }
        _ => None,
    }
}

impl PendingAppend {
    /// The sequence numbers the append claims, if it comes from an idempotent producer (whose
    /// appends hold exactly one batch: see `batch::split_and_validate`).
    pub(crate) fn sequenced(&self) -> Option<Sequenced> {
        if self.marker.is_some() {
            return None;
        }
        let sequenced = sequenced(&self.batches)?;
        Some(if sequenced.transactional {
            sequenced.verified_at(self.txn_verified_revision)
        } else {
            sequenced
        })
    }

    /// How many offsets the append takes.
    pub(crate) fn offsets(&self) -> i64 {
        self.batches
            .iter()
            .map(|(h, _)| i64::from(h.last_offset_delta) + 1)
            .sum()
    }
}

/// One partition's appends sorted by what idempotence makes of them (see `producers`).
#[derive(Debug, Default)]
pub(crate) struct Sequencing {
    /// To be stored, in arrival order.
    pub(crate) appends: Vec<PendingAppend>,
    /// Retries of an append earlier in this flush: answered with its offset once it commits.
    pub(crate) echoes: Vec<(PendingAppend, i64)>,
    /// Retries of committed appends: answered with the committed offset at once.
    pub(crate) committed_duplicates: Vec<(PendingAppend, i64)>,
    /// Retries of appends in an earlier flush not committed yet: refused (retriable), since
    /// that flush may still fail; the client's next retry finds them committed.
    pub(crate) in_flight_duplicates: Vec<PendingAppend>,
    pub(crate) rejected: Vec<(PendingAppend, LogError)>,
    /// The partition's producer state once this flush commits, if the flush changes it.
    pub(crate) producers: Option<ProducerStates>,
    /// Transactions the flush's abort markers end (for the section's index entry).
    pub(crate) aborted: Vec<AbortedTxn>,
    /// Marker request keys the commit deletes.
    pub(crate) marker_requests: Vec<String>,
}

/// Where a flush plans a partition's appends from: its committed state, or what the earlier
/// flushes still in flight will leave ([`super::Projection`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlanFrom<'a> {
    /// Producer state the flush's appends are checked against.
    pub(crate) producers: &'a ProducerStates,
    /// The partition's committed next offset: retries below it are answered at once.
    pub(crate) committed_next_offset: i64,
    /// The offset the flush's first append takes (the committed next offset, or past the
    /// flushes in flight).
    pub(crate) next_offset: i64,
}

/// Checks each append of an idempotent producer against the partition's producer state as the
/// flush would leave it, assigning offsets the way [`assemble`] will.
pub(crate) fn sequence(
    from: PlanFrom<'_>,
    awaited: Option<&AwaitedSequences>,
    (appends, markers_max): (Vec<PendingAppend>, usize),
    now_ms: i64,
) -> Sequencing {
    let base = from.producers;
    let committed_next_offset = from.committed_next_offset;
    let flush_first_offset = from.next_offset;
    let mut out = Sequencing::default();
    let mut next_offset = flush_first_offset;
    for append in appends {
        if let Some(marker) = &append.marker {
            if out.marker_requests.len() >= markers_max {
                out.rejected.push((
                    append,
                    LogError::Unavailable("too many markers for one flush; retry".into()),
                ));
                continue;
            }
            let states = out.producers.get_or_insert_with(|| base.clone());
            match states.apply_marker(&marker.marker, next_offset, now_ms) {
                Ok(aborted) => {
                    out.aborted.extend(aborted);
                    out.marker_requests.push(marker.request_key.clone());
                    next_offset += append.offsets();
                    out.appends.push(append);
                }
                Err(message) => out
                    .rejected
                    .push((append, LogError::InvalidProducerEpoch(message))),
            }
            continue;
        }
        let Some(batch) = append.sequenced() else {
            next_offset += append.offsets();
            out.appends.push(append);
            continue;
        };
        let states = out.producers.as_ref().unwrap_or(base);
        let awaited = awaited
            .and_then(|a| a.get(&batch.producer_id))
            .filter(|a| now_ms.saturating_sub(a.noted_ms) < AWAITED_FOR_MS)
            .map(|a| (a.epoch, a.first_sequence));
        match states.check(&batch, awaited) {
            Verdict::Append => {
                let last_offset = next_offset + append.offsets() - 1;
                out.producers.get_or_insert_with(|| base.clone()).record(
                    &batch,
                    next_offset,
                    last_offset,
                    now_ms,
                );
                next_offset = last_offset + 1;
                out.appends.push(append);
            }
            Verdict::Duplicate { base_offset } if base_offset < committed_next_offset => {
                out.committed_duplicates.push((append, base_offset));
            }
            Verdict::Duplicate { base_offset } if base_offset < flush_first_offset => {
                out.in_flight_duplicates.push(append);
            }
            Verdict::Duplicate { base_offset } => out.echoes.push((append, base_offset)),
            Verdict::OutOfOrder(message) => out
                .rejected
                .push((append, LogError::OutOfOrderSequence(message))),
            Verdict::AwaitingEarlier(message) => out
                .rejected
                .push((append, LogError::AwaitingEarlierBatch(message))),
            Verdict::InvalidEpoch(message) => out
                .rejected
                .push((append, LogError::InvalidProducerEpoch(message))),
            Verdict::InvalidTxnState(message) => out
                .rejected
                .push((append, LogError::InvalidTxnState(message))),
        }
    }
    out
}

/// Appends of one partition accepted but not answered yet.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    state: Arc<(AtomicUsize, Notify)>,
}

#[derive(Debug)]
pub(crate) struct InflightGuard {
    state: Arc<(AtomicUsize, Notify)>,
}

impl Inflight {
    pub(crate) fn enter(&self) -> InflightGuard {
        self.state.0.fetch_add(1, Ordering::AcqRel);
        InflightGuard {
            state: self.state.clone(),
        }
    }

    /// Waits until no append is in flight; false if that took longer than `wait`.
    pub(crate) async fn drained(&self, wait: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.state.1.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drop in between cannot be missed.
            notified.as_mut().enable();
            if self.state.0.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.state.0.load(Ordering::Acquire) == 0;
            }
        }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.state.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.state.1.notify_waiters();
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Pending {
    partitions: IndexMap<TopicPartition, Vec<PendingAppend>>,
    bytes: usize,
    appends: usize,
    first_at: Option<Instant>,
}

impl Pending {
    pub(crate) fn push(&mut self, tp: TopicPartition, append: PendingAppend, now: Instant) {
        self.bytes += append.bytes;
        self.appends += 1;
        self.first_at.get_or_insert(now);
        self.partitions.entry(tp).or_default().push(append);
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of queued appends.
    pub(crate) fn len(&self) -> usize {
        self.appends
    }

    /// When the oldest queued append arrived.
    pub(crate) fn first_at(&self) -> Option<Instant> {
        self.first_at
    }

    /// Takes partitions, in arrival order, until `max_bytes` are taken. A partition that does
    /// not fit whole gives the appends that fit (at least one append is always taken), so no
    /// section grows past about `max_bytes`: a reader fetching from it reads at most that much.
    /// What is left keeps its order and counts as arrived now.
    pub(crate) fn take(
        &mut self,
        max_bytes: usize,
        now: Instant,
    ) -> Vec<(TopicPartition, Vec<PendingAppend>)> {
        if self.bytes <= max_bytes {
            self.bytes = 0;
            self.appends = 0;
            self.first_at = None;
            return self.partitions.drain(..).collect();
        }
        let mut taken = Vec::new();
        let mut taken_bytes = 0;
        while taken_bytes < max_bytes {
            let Some(appends) = self.partitions.get_index_mut(0).map(|(_, a)| a) else {
                break;
            };
            let whole: usize = appends.iter().map(|a| a.bytes).sum();
            let (tp, part) = if taken_bytes + whole <= max_bytes {
                self.partitions
                    .shift_remove_index(0)
                    .expect("the first partition exists")
            } else {
                // The appends that fit; one at least when nothing is taken yet.
                let mut fit = 0;
                let mut fit_bytes = 0;
                for append in appends.iter() {
                    let first = taken.is_empty() && fit == 0;
                    if !first && taken_bytes + fit_bytes + append.bytes > max_bytes {
                        break;
                    }
                    fit += 1;
                    fit_bytes += append.bytes;
                }
                if fit == 0 {
                    break;
                }
                let part: Vec<PendingAppend> = appends.drain(..fit).collect();
                let emptied = appends.is_empty();
                let bytes: usize = part.iter().map(|a| a.bytes).sum();
                let tp = if emptied {
                    self.partitions
                        .shift_remove_index(0)
                        .expect("the first partition exists")
                        .0
                } else {
                    let (tp, _) = self
                        .partitions
                        .get_index(0)
                        .expect("the first partition exists");
                    tp.clone()
                };
                taken.push((tp, part));
                self.bytes -= bytes;
                self.appends -= fit;
                // The partition stays first with its other appends, for the next flush: a
                // partition appears once per flush (offsets are assigned per partition).
                break;
            };
            let bytes: usize = part.iter().map(|a| a.bytes).sum();
            taken_bytes += bytes;
            self.bytes -= bytes;
            self.appends -= part.len();
            taken.push((tp, part));
        }
        self.first_at = (!self.partitions.is_empty()).then_some(now);
        taken
    }
}

/// One partition's part of an assembled object.
#[derive(Debug)]
pub(crate) struct PlannedSection {
    pub(crate) tp: TopicPartition,
    pub(crate) section: SectionMeta,
    /// Base offset assigned to each append, in order.
    pub(crate) base_offsets: Vec<i64>,
    pub(crate) log_append_time_ms: Option<i64>,
}

/// Builds one object from the taken partitions: assigns offsets starting at each partition's
/// committed next offset, rewrites base offsets (and `LogAppendTime` timestamps) in the copies.
pub(crate) fn assemble(
    partitions: &[(TopicPartition, Vec<PendingAppend>, i64)],
    now_ms: i64,
) -> (Bytes, Vec<PlannedSection>) {
    let total: usize = partitions
        .iter()
        .flat_map(|(_, appends, _)| appends.iter().map(|a| a.bytes))
        .sum();
    let footer: usize = partitions
        .iter()
        .map(|(tp, _, _)| crate::object::footer_bytes_per_section_max(&tp.topic))
        .sum();
    let mut builder = ObjectBuilder::with_capacity(total + footer);
    let mut planned = Vec::with_capacity(partitions.len());
    for (tp, appends, next_offset) in partitions {
        let mut next_offset = *next_offset;
        builder.begin_section(&tp.topic, tp.partition, next_offset);
        let mut base_offsets = Vec::with_capacity(appends.len());
        let mut log_append_time_ms = None;
        for append in appends {
            base_offsets.push(next_offset);
            for (header, bytes) in &append.batches {
                let copy = builder.append_batch(bytes);
                batch::set_base_offset(copy, next_offset);
                let mut max_timestamp = header.max_timestamp;
                if append.log_append_time {
                    batch::set_log_append_time(copy, now_ms);
                    max_timestamp = now_ms;
                    log_append_time_ms = Some(now_ms);
                }
                next_offset += i64::from(header.last_offset_delta) + 1;
                builder.note_batch(next_offset - 1, max_timestamp);
            }
        }
        planned.push(PlannedSection {
            tp: tp.clone(),
            section: builder.end_section(),
            base_offsets,
            log_append_time_ms,
        });
    }
    let (object, _) = builder.finish();
    (object, planned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::sample_batch;
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    fn append(
        count: i32,
        ts: i64,
        log_append_time: bool,
    ) -> (
        PendingAppend,
        oneshot::Receiver<Result<AppendOutcome, LogError>>,
    ) {
        let bytes = Bytes::from(sample_batch(count, ts, 16));
        let header = batch::parse_header(&bytes).expect("header");
        let (reply, rx) = oneshot::channel();
        let permit = Arc::new(Semaphore::new(1 << 20))
            .try_acquire_many_owned(bytes.len() as u32)
            .expect("permit");
        (
            PendingAppend {
                topic_create_revision: 1,
                leader_epoch: 0,
                _inflight: Inflight::default().enter(),
                bytes: bytes.len(),
                batches: vec![(header, bytes)],
                log_append_time,
                reply,
                _permit: permit,
                marker: None,
                txn_verified_revision: None,
            },
            rx,
        )
    }

    #[tokio::test]
    async fn assigns_contiguous_offsets_per_partition() {
        let a = TopicPartition::new("a", 0);
        let b = TopicPartition::new("b", 2);
        let parts = vec![
            (
                a.clone(),
                vec![append(3, 10, false).0, append(2, 20, false).0],
                100,
            ),
            (b.clone(), vec![append(1, 30, true).0], 0),
        ];
        let (object, planned) = assemble(&parts, 999);
        assert_eq!(planned[0].base_offsets, vec![100, 103]);
        assert_eq!(planned[0].section.last_offset, 104);
        assert_eq!(planned[0].section.max_timestamp, 20);
        assert_eq!(planned[1].base_offsets, vec![0]);
        assert_eq!(planned[1].log_append_time_ms, Some(999));
        let footer = crate::object::read_footer(&object).expect("footer");
        assert_eq!(footer.len(), 2);
        let s = &planned[0].section;
        let section = &object[s.position as usize..(s.position + s.length) as usize];
        let offsets: Vec<(i64, i64)> = batch::headers(section)
            .map(|(_, h)| (h.base_offset, h.last_offset()))
            .collect();
        assert_eq!(offsets, vec![(100, 102), (103, 104)]);
        let s = &planned[1].section;
        let section = &object[s.position as usize..(s.position + s.length) as usize];
        let header = batch::parse_header(section).expect("header");
        batch::validate(&header, section).expect("crc recomputed after LogAppendTime rewrite");
        assert_eq!(header.max_timestamp, 999);
    }

    #[tokio::test]
    async fn take_respects_size_and_keeps_order() {
        let mut pending = Pending::default();
        let now = Instant::now();
        for p in 0..4 {
            pending.push(TopicPartition::new("t", p), append(1, 0, false).0, now);
        }
        let per = pending.bytes() / 4;
        let taken = pending.take(per * 2, now);
        let order: Vec<i32> = taken.iter().map(|(tp, _)| tp.partition).collect();
        assert_eq!(order, vec![0, 1]);
        assert_eq!(pending.len(), 2);
        assert_eq!(pending.bytes(), per * 2);
        let rest = pending.take(usize::MAX, now);
        assert_eq!(rest.len(), 2);
        assert_eq!(pending.len(), 0);
        assert!(pending.first_at().is_none());
    }

    #[tokio::test]
    async fn a_partition_over_the_size_is_taken_in_parts_in_order() {
        let mut pending = Pending::default();
        let now = Instant::now();
        let big = TopicPartition::new("big", 0);
        let mut receivers = Vec::new();
        for ts in 0..5 {
            let (a, rx) = append(1, ts, false);
            receivers.push(rx);
            pending.push(big.clone(), a, now);
        }
        pending.push(TopicPartition::new("small", 0), append(1, 9, false).0, now);
        let per = pending.bytes() / 6;
        let timestamps = |taken: &[(TopicPartition, Vec<PendingAppend>)]| -> Vec<(String, i64)> {
            taken
                .iter()
                .flat_map(|(tp, appends)| {
                    appends
                        .iter()
                        .map(|a| (tp.topic.to_string(), a.batches[0].0.max_timestamp))
                })
                .collect()
        };
        // Room for two appends: the first two of the big partition, which stays first.
        let taken = pending.take(per * 2, now);
        assert_eq!(timestamps(&taken), [("big".into(), 0), ("big".into(), 1)]);
        assert_eq!(pending.bytes(), per * 4);
        // One append always goes, even over the size.
        let taken = pending.take(per / 2, now);
        assert_eq!(timestamps(&taken), [("big".into(), 2)]);
        // Room for one and a half: one, and the partition is never taken twice in one flush.
        pending.push(TopicPartition::new("small", 1), append(1, 8, false).0, now);
        let taken = pending.take(per + per / 2, now);
        assert_eq!(timestamps(&taken), [("big".into(), 3)]);
        let taken = pending.take(per * 3, now);
        assert_eq!(
            timestamps(&taken),
            [("big".into(), 4), ("small".into(), 9), ("small".into(), 8)]
        );
        assert_eq!((pending.len(), pending.bytes()), (0, 0));
    }
}
