//! Idempotent producers: the per-partition sequence state that turns a retried batch into the
//! answer it got the first time instead of a second copy in the log.
//!
//! Kafka's rules (KIP-98, as its brokers apply them to non-transactional producers): every batch
//! of an idempotent producer carries `(producer_id, producer_epoch, base_sequence)`; per partition
//! the leader remembers each producer's epoch and its last five batches with their offsets.
//! - a batch equal (same epoch, first and last sequence) to a remembered one is a duplicate: it
//!   is answered with the offset the first copy got, and not stored again;
//! - otherwise it must continue the sequence (`last + 1`, wrapping at `i32::MAX` to 0), or start
//!   at 0 under a newer epoch; anything else is `OUT_OF_ORDER_SEQUENCE_NUMBER`;
//! - an older epoch is `INVALID_PRODUCER_EPOCH`;
//! - a producer the partition does not know may start at any sequence (its state may have
//!   expired), unless this broker saw its earlier batch fail and is waiting for that one again.
//!
//! Transactional producers (KIP-98) follow the same rules, and the state also says which of them
//! has a transaction open in the partition and from which offset: the first transactional batch
//! opens one, a commit or abort marker (a control batch the partition's leader appends for the
//! transaction coordinator) closes it. The earliest open transaction's first offset is the
//! partition's last stable offset (LSO), where `read_committed` consumers stop; an abort marker
//! yields the [`AbortedTxn`] those consumers are told about, so they drop its records.
//!
//! The state is committed in the same metadata transaction as the batches it describes (see
//! `log::writer`), so a new leader after a failover loads exactly what the old one committed and
//! recognises a batch the old leader committed but died before acknowledging.
//!
//! Pure data and decisions, no I/O.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Batches remembered per producer: Kafka clients keep at most five requests in flight per
/// partition with idempotence on, so a retry is always one of the last five.
pub const BATCHES_REMEMBERED: usize = 5;

/// Producers remembered per partition; beyond it the least recently seen are forgotten (and a
/// retry from one of them would be stored again). Bounds the state's size in the metadata store
/// (about 200 bytes per producer in its compact encoding; the whole state is rewritten by every
/// flush that touches the partition's idempotent producers).
pub const PRODUCERS_PER_PARTITION_MAX: usize = 1_000;
/// Encoded state of one partition at most; producers are forgotten (least recently seen first)
/// until it fits, so one partition's state always fits one metadata transaction.
pub const ENCODED_BYTES_MAX: usize = 256 * 1024;

/// The batch a partition waits for from a producer it does not remember, after this broker
/// refused it (a failed flush, or refused before buffering while leadership moved): a later
/// batch must not overtake it. A client whose retry is refused and whose later batch succeeds
/// counts the refused one as delivered (librdkafka's "implicit ack" of earlier in-doubt
/// messages), so letting the later batch through would lose an acknowledged record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Awaited {
    pub epoch: i16,
    pub first_sequence: i32,
    /// When the refusal was noted (for [`AWAITED_FOR_MS`]).
    pub noted_ms: i64,
}

/// How long a partition waits for a refused batch to come back: librdkafka's default
/// `message.timeout.ms` (the Java client's `delivery.timeout.ms` is shorter, 2 minutes). A
/// client does not resend a batch later than that: it fails it and bumps its epoch.
pub const AWAITED_FOR_MS: i64 = 300_000;

/// Per producer id: the batch a partition waits for (see [`Awaited`]).
pub type AwaitedSequences = std::collections::HashMap<i64, Awaited>;

/// Every idempotent producer a partition remembers: `/skiff/producers/<topic>/<partition>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStates {
    pub producers: BTreeMap<i64, ProducerEntry>,
}

/// Stored compactly (`{"e": epoch, "t": last_seen_ms, "b": [[first_sequence, last_sequence,
/// base_offset, last_offset], ...]}`): the state is rewritten on every flush.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    #[serde(rename = "e", alias = "epoch")]
    pub epoch: i16,
    /// When the producer's last batch was committed (for expiry).
    #[serde(rename = "t", alias = "last_seen_ms")]
    pub last_seen_ms: i64,
    /// The newest batches, oldest first, at most [`BATCHES_REMEMBERED`].
    #[serde(rename = "b", alias = "batches")]
    pub batches: Vec<SequencedBatch>,
    /// The first offset of the producer's transaction open in this partition, if one is.
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    pub txn_first_offset: Option<i64>,
    /// The metadata revision of the last marker request applied here (0: none): a batch that
    /// would open a transaction must have been verified against a later coordinator state,
    /// or it belongs to a transaction this marker already ended.
    #[serde(rename = "m", default, skip_serializing_if = "is_zero")]
    pub marker_revision: i64,
    /// The last transaction ending (`Marker::end`) applied here (0: none known).
    #[serde(rename = "n", default, skip_serializing_if = "is_zero_u64")]
    pub last_end: u64,
}

fn is_zero_u64(value: &u64) -> bool {
    *value == 0
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

/// A transaction that was aborted in a partition: `read_committed` consumers drop this
/// producer's records from `first_offset` up to the abort marker at `last_offset` (Kafka's
/// AbortedTransaction in a Fetch response, and its transaction index entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    #[serde(rename = "p")]
    pub producer_id: i64,
    #[serde(rename = "f")]
    pub first_offset: i64,
    /// The offset of the abort marker.
    #[serde(rename = "l")]
    pub last_offset: i64,
}

/// A transaction marker (control batch) to append for the coordinator: ends `producer_id`'s
/// transaction in the partition, committed or aborted, under `epoch` (which may be newer than
/// the producer's own: the coordinator bumps it to fence a producer whose transaction it aborts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    /// The marker request's metadata revision (see [`ProducerEntry::marker_revision`]).
    pub revision: i64,
    /// Which ending of the producer's transactions this is (the coordinator's count, see
    /// `TransactionRecord::ends`; 0: unknown): a partition applies each ending once, however
    /// often its request is put again.
    pub end: u64,
}

/// A remembered batch as stored: a 4-tuple, or the longer form the first builds wrote.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredBatch {
    Tuple(i32, i32, i64, i64),
    Named {
        first_sequence: i32,
        last_sequence: i32,
        base_offset: i64,
        last_offset: i64,
    },
}

impl From<StoredBatch> for SequencedBatch {
    fn from(stored: StoredBatch) -> Self {
        match stored {
            StoredBatch::Tuple(f, l, b, o) => (f, l, b, o).into(),
            StoredBatch::Named {
                first_sequence,
                last_sequence,
                base_offset,
                last_offset,
            } => (first_sequence, last_sequence, base_offset, last_offset).into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredBatch", into = "(i32, i32, i64, i64)")]
pub struct SequencedBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

impl From<(i32, i32, i64, i64)> for SequencedBatch {
    fn from(
        (first_sequence, last_sequence, base_offset, last_offset): (i32, i32, i64, i64),
    ) -> Self {
        Self {
            first_sequence,
            last_sequence,
            base_offset,
            last_offset,
        }
    }
}

impl From<SequencedBatch> for (i32, i32, i64, i64) {
    fn from(b: SequencedBatch) -> Self {
        (
            b.first_sequence,
            b.last_sequence,
            b.base_offset,
            b.last_offset,
        )
    }
}

/// The sequence numbers one batch (one append) of an idempotent producer claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequenced {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_sequence: i32,
    pub last_sequence: i32,
    /// Part of a transaction (the batch's transactional attribute).
    pub transactional: bool,
    /// For a transactional batch: the revision of the coordinator's state it was verified
    /// against (the partition is in the producer's open transaction there), or
    /// [`CONTINUES_OPEN_TRANSACTION`].
    pub verified_revision: Option<i64>,
}

/// The `verified_revision` of a transactional batch queued unverified because its producer's
/// transaction was open in the partition: should a marker have closed that transaction by the
/// time it is committed, the batch would open a new one unverified, and is refused instead
/// (metadata revisions start at 1, so this is at or below every marker revision).
pub const CONTINUES_OPEN_TRANSACTION: i64 = 0;

impl Sequenced {
    pub fn new(producer_id: i64, epoch: i16, base_sequence: i32, last_offset_delta: i32) -> Self {
        Self {
            producer_id,
            epoch,
            first_sequence: base_sequence,
            last_sequence: increment(base_sequence, last_offset_delta),
            transactional: false,
            verified_revision: None,
        }
    }

    pub fn transactional(self) -> Self {
        Self {
            transactional: true,
            ..self
        }
    }

    pub fn verified_at(self, revision: Option<i64>) -> Self {
        Self {
            verified_revision: revision,
            ..self
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Store the batch.
    Append,
    /// Already stored at this offset: answer with it, store nothing.
    Duplicate {
        base_offset: i64,
    },
    OutOfOrder(String),
    /// A producer the partition does not remember skips a batch that was refused here and not
    /// resent yet ([`Awaited`]): refused so the client resends the earlier batch first.
    AwaitingEarlier(String),
    InvalidEpoch(String),
    /// A plain batch from a producer with a transaction open here (Kafka's INVALID_TXN_STATE).
    InvalidTxnState(String),
}

/// Kafka's sequence arithmetic: sequences run from 0 to `i32::MAX` and wrap to 0.
pub fn increment(sequence: i32, by: i32) -> i32 {
    if sequence > i32::MAX - by {
        by - (i32::MAX - sequence) - 1
    } else {
        sequence + by
    }
}

impl ProducerStates {
    /// What to do with a batch. `awaited` is the first sequence this broker must see next from
    /// a producer the partition does not remember (set after such a producer's batch failed).
    pub fn check(&self, batch: &Sequenced, awaited: Option<(i16, i32)>) -> Verdict {
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            return match awaited {
                Some((epoch, first)) if epoch == batch.epoch && first != batch.first_sequence => {
                    Verdict::AwaitingEarlier(format!(
                        "producer_id={} sequence={} while sequence={first} was refused and not resent yet",
                        batch.producer_id, batch.first_sequence
                    ))
                }
                _ => Verdict::Append,
            };
        };
        if batch.epoch < entry.epoch {
            return Verdict::InvalidEpoch(format!(
                "producer_id={} epoch={} is older than epoch={}",
                batch.producer_id, batch.epoch, entry.epoch
            ));
        }
        if batch.epoch > entry.epoch {
            return if batch.first_sequence == 0 {
                Verdict::Append
            } else {
                Verdict::OutOfOrder(format!(
                    "producer_id={} new epoch={} must start at sequence 0, not {}",
                    batch.producer_id, batch.epoch, batch.first_sequence
                ))
            };
        }
        if let Some(earlier) = entry.batches.iter().find(|b| {
            b.first_sequence == batch.first_sequence && b.last_sequence == batch.last_sequence
        }) {
            return Verdict::Duplicate {
                base_offset: earlier.base_offset,
            };
        }
        if !batch.transactional {
            if let Some(first) = entry.txn_first_offset {
                return Verdict::InvalidTxnState(format!(
                    "producer_id={} sent a non-transactional batch while its transaction from offset={first} is open",
                    batch.producer_id
                ));
            }
        } else if entry.txn_first_offset.is_none() {
            if let Some(verified) = batch.verified_revision {
                if verified <= entry.marker_revision {
                    return Verdict::InvalidTxnState(format!(
                        "producer_id={} batch verified at revision={verified} belongs to a transaction already ended here (marker revision={})",
                        batch.producer_id, entry.marker_revision
                    ));
                }
            }
        }
        let last = entry.batches.last().map_or(-1, |b| b.last_sequence);
        let expected = increment(last, 1);
        if batch.first_sequence == expected {
            Verdict::Append
        } else {
            Verdict::OutOfOrder(format!(
                "producer_id={} epoch={} sequence={} expected={expected}",
                batch.producer_id, batch.epoch, batch.first_sequence
            ))
        }
    }

    /// Whether `producer` (id, epoch) has a transaction open in the partition.
    pub fn has_open_transaction(&self, (producer_id, epoch): (i64, i16)) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|e| e.epoch == epoch && e.txn_first_offset.is_some())
    }

    /// Remembers a batch [`check`](Self::check) allowed, stored at `base_offset..=last_offset`.
    pub fn record(&mut self, batch: &Sequenced, base_offset: i64, last_offset: i64, now_ms: i64) {
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: batch.epoch,
                last_seen_ms: now_ms,
                batches: Vec::new(),
                txn_first_offset: None,
                marker_revision: 0,
                last_end: 0,
            });
        if entry.epoch != batch.epoch {
            entry.epoch = batch.epoch;
            entry.batches.clear();
        }
        entry.last_seen_ms = now_ms;
        if batch.transactional && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(base_offset);
        }
        entry.batches.push(SequencedBatch {
            first_sequence: batch.first_sequence,
            last_sequence: batch.last_sequence,
            base_offset,
            last_offset,
        });
        if entry.batches.len() > BATCHES_REMEMBERED {
            entry.batches.remove(0);
        }
    }

    /// Applies a transaction marker appended at `offset`: closes the producer's open transaction
    /// here (if any; a marker for a partition the transaction wrote nothing to is allowed) and
    /// moves the producer to the marker's epoch, forgetting older batches as an epoch bump does.
    /// An abort that closed a transaction is returned for the aborted-transactions index.
    /// A marker under an older epoch than the producer's is refused (it cannot come from the
    /// coordinator's current view of the producer).
    pub fn apply_marker(
        &mut self,
        marker: &Marker,
        offset: i64,
        now_ms: i64,
    ) -> Result<Option<AbortedTxn>, String> {
        let entry = self
            .producers
            .entry(marker.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: marker.epoch,
                last_seen_ms: now_ms,
                batches: Vec::new(),
                txn_first_offset: None,
                marker_revision: 0,
                last_end: 0,
            });
        if marker.epoch < entry.epoch {
            return Err(format!(
                "marker for producer_id={} epoch={} is older than epoch={}",
                marker.producer_id, marker.epoch, entry.epoch
            ));
        }
        if marker.end != 0 && marker.end <= entry.last_end {
            // A request put again for an ending already applied (a successor coordinator
            // finishing what it found prepared): marking again could end the producer's next
            // transaction here.
            return Err(format!(
                "marker for producer_id={} ending={} was applied already (last ending={})",
                marker.producer_id, marker.end, entry.last_end
            ));
        }
        entry.last_end = entry.last_end.max(marker.end);
        if marker.epoch > entry.epoch {
            entry.epoch = marker.epoch;
            entry.batches.clear();
        }
        entry.last_seen_ms = now_ms;
        entry.marker_revision = entry.marker_revision.max(marker.revision);
        let aborted = match entry.txn_first_offset.take() {
            Some(first_offset) if !marker.commit => Some(AbortedTxn {
                producer_id: marker.producer_id,
                first_offset,
                last_offset: offset,
            }),
            _ => None,
        };
        Ok(aborted)
    }

    /// The last stable offset: the first offset of the earliest open transaction, or the high
    /// watermark when none is open. `read_committed` consumers read below it.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        self.producers
            .values()
            .filter_map(|entry| entry.txn_first_offset)
            .fold(high_watermark, i64::min)
    }

    /// Encodes the state for the metadata store after expiring it (see [`expire`]), forgetting
    /// the least recently seen producers until the encoding fits [`ENCODED_BYTES_MAX`].
    pub fn encode_pruned(&mut self, now_ms: i64, expiration_ms: i64) -> Vec<u8> {
        let mut keep = PRODUCERS_PER_PARTITION_MAX;
        loop {
            self.expire(now_ms, expiration_ms, keep);
            let encoded = serde_json::to_vec(self).expect("producer state always serializes");
            // Producers with open transactions are kept whatever the size (they are bounded by
            // the transactions open at once, each ended by its timeout at the latest).
            let forgettable = self
                .producers
                .values()
                .filter(|entry| entry.txn_first_offset.is_none())
                .count();
            if encoded.len() <= ENCODED_BYTES_MAX || forgettable <= 1 {
                return encoded;
            }
            keep = self.producers.len() - forgettable.div_ceil(2);
        }
    }

    /// Forgets producers not seen for `expiration_ms` (Kafka's `producer.id.expiration.ms`), then
    /// the least recently seen beyond `max_producers`. A producer with a transaction open here is
    /// never forgotten: its marker must find it, and the LSO waits for it (the coordinator's
    /// transaction timeout bounds how long).
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64, max_producers: usize) {
        self.producers.retain(|_, entry| {
            entry.txn_first_offset.is_some()
                || now_ms.saturating_sub(entry.last_seen_ms) < expiration_ms
        });
        if self.producers.len() > max_producers {
            let mut seen: Vec<(i64, i64)> = self
                .producers
                .iter()
                .filter(|(_, entry)| entry.txn_first_offset.is_none())
                .map(|(id, entry)| (entry.last_seen_ms, *id))
                .collect();
            seen.sort_unstable();
            let excess = self.producers.len() - max_producers;
            for (_, id) in seen.into_iter().take(excess) {
                self.producers.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests;
