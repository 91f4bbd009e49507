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

/// Per producer id: the (epoch, first sequence) a partition waits for from a producer it does
/// not remember, after that producer's batch failed on this broker.
pub type AwaitedSequences = std::collections::HashMap<i64, (i16, i32)>;

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
}

impl Sequenced {
    pub fn new(producer_id: i64, epoch: i16, base_sequence: i32, last_offset_delta: i32) -> Self {
        Self {
            producer_id,
            epoch,
            first_sequence: base_sequence,
            last_sequence: increment(base_sequence, last_offset_delta),
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
    InvalidEpoch(String),
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
                    Verdict::OutOfOrder(format!(
                        "producer_id={} sequence={} while sequence={first} failed and was not retried yet",
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

    /// Remembers a batch [`check`](Self::check) allowed, stored at `base_offset..=last_offset`.
    pub fn record(&mut self, batch: &Sequenced, base_offset: i64, last_offset: i64, now_ms: i64) {
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: batch.epoch,
                last_seen_ms: now_ms,
                batches: Vec::new(),
            });
        if entry.epoch != batch.epoch {
            entry.epoch = batch.epoch;
            entry.batches.clear();
        }
        entry.last_seen_ms = now_ms;
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

    /// Encodes the state for the metadata store after expiring it (see [`expire`]), forgetting
    /// the least recently seen producers until the encoding fits [`ENCODED_BYTES_MAX`].
    pub fn encode_pruned(&mut self, now_ms: i64, expiration_ms: i64) -> Vec<u8> {
        let mut keep = PRODUCERS_PER_PARTITION_MAX;
        loop {
            self.expire(now_ms, expiration_ms, keep);
            let encoded = serde_json::to_vec(self).expect("producer state always serializes");
            if encoded.len() <= ENCODED_BYTES_MAX || self.producers.len() <= 1 {
                return encoded;
            }
            keep = self.producers.len() / 2;
        }
    }

    /// Forgets producers not seen for `expiration_ms` (Kafka's `producer.id.expiration.ms`), then
    /// the least recently seen beyond `max_producers`.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64, max_producers: usize) {
        self.producers
            .retain(|_, entry| now_ms.saturating_sub(entry.last_seen_ms) < expiration_ms);
        if self.producers.len() > max_producers {
            let mut seen: Vec<(i64, i64)> = self
                .producers
                .iter()
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seq(producer_id: i64, epoch: i16, first: i32, count: i32) -> Sequenced {
        Sequenced::new(producer_id, epoch, first, count - 1)
    }

    #[test]
    fn unknown_producer_may_start_anywhere_unless_a_failure_is_awaited() {
        let states = ProducerStates::default();
        assert_eq!(states.check(&seq(7, 0, 0, 3), None), Verdict::Append);
        assert_eq!(states.check(&seq(7, 0, 42, 3), None), Verdict::Append);
        assert!(matches!(
            states.check(&seq(7, 0, 10, 3), Some((0, 0))),
            Verdict::OutOfOrder(_)
        ));
        assert_eq!(
            states.check(&seq(7, 0, 0, 3), Some((0, 0))),
            Verdict::Append
        );
        // A failure under an older epoch does not hold back a bumped producer.
        assert_eq!(
            states.check(&seq(7, 1, 10, 3), Some((0, 0))),
            Verdict::Append
        );
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_out_of_order() {
        let mut states = ProducerStates::default();
        let mut offset = 100;
        for first in [0, 3, 6] {
            let b = seq(7, 0, first, 3);
            assert_eq!(states.check(&b, None), Verdict::Append);
            states.record(&b, offset, offset + 2, 1);
            offset += 3;
        }
        assert_eq!(
            states.check(&seq(7, 0, 3, 3), None),
            Verdict::Duplicate { base_offset: 103 }
        );
        assert!(matches!(
            states.check(&seq(7, 0, 10, 3), None),
            Verdict::OutOfOrder(_)
        ));
        // Same first sequence, different length: not the same batch.
        assert!(matches!(
            states.check(&seq(7, 0, 3, 2), None),
            Verdict::OutOfOrder(_)
        ));
        assert_eq!(states.check(&seq(7, 0, 9, 1), None), Verdict::Append);
        assert!(matches!(
            states.check(&seq(7, 1, 9, 1), None),
            Verdict::OutOfOrder(_)
        ));
        assert_eq!(states.check(&seq(7, 1, 0, 1), None), Verdict::Append);
        states.record(&seq(7, 1, 0, 1), 200, 200, 2);
        assert_eq!(states.producers[&7].batches.len(), 1);
        assert!(matches!(
            states.check(&seq(7, 0, 9, 1), None),
            Verdict::InvalidEpoch(_)
        ));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut states = ProducerStates::default();
        for i in 0..7 {
            states.record(&seq(1, 0, i, 1), i64::from(i), i64::from(i), 0);
        }
        assert_eq!(states.producers[&1].batches.len(), BATCHES_REMEMBERED);
        assert!(matches!(
            states.check(&seq(1, 0, 1, 1), None),
            Verdict::OutOfOrder(_)
        ));
        assert_eq!(
            states.check(&seq(1, 0, 2, 1), None),
            Verdict::Duplicate { base_offset: 2 }
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(increment(i32::MAX, 1), 0);
        assert_eq!(increment(i32::MAX - 1, 3), 1);
        let mut states = ProducerStates::default();
        let last = seq(1, 0, i32::MAX - 1, 2);
        assert_eq!(last.last_sequence, i32::MAX);
        states.record(&last, 0, 1, 0);
        assert_eq!(states.check(&seq(1, 0, 0, 5), None), Verdict::Append);
    }

    #[test]
    fn expiry_by_age_then_by_count() {
        let mut states = ProducerStates::default();
        for id in 0..10 {
            states.record(&seq(id, 0, 0, 1), 0, 0, id * 100);
        }
        states.expire(1_000, 500, 100);
        assert_eq!(
            states.producers.keys().copied().collect::<Vec<_>>(),
            vec![6, 7, 8, 9]
        );
        states.expire(1_000, 500, 2);
        assert_eq!(
            states.producers.keys().copied().collect::<Vec<_>>(),
            vec![8, 9]
        );
    }

    proptest! {
        /// Any retry of any of the last five batches, in any order, is recognised with its
        /// original offset; anything else is never called a duplicate.
        #[test]
        fn retries_of_recent_batches_are_always_recognised(
            sizes in proptest::collection::vec(1i32..50, 1..20),
            retry in any::<proptest::sample::Index>(),
            start in 0i32..i32::MAX,
        ) {
            let mut states = ProducerStates::default();
            let mut sent = Vec::new();
            let mut next_seq = start;
            let mut offset = 0i64;
            for size in &sizes {
                let b = Sequenced::new(9, 3, next_seq, size - 1);
                prop_assert_eq!(states.check(&b, None), Verdict::Append);
                states.record(&b, offset, offset + i64::from(*size) - 1, 0);
                sent.push((b, offset));
                offset += i64::from(*size);
                next_seq = increment(b.last_sequence, 1);
            }
            let (b, base_offset) = sent[retry.index(sent.len())];
            let recent = sent.len() - sent.iter().position(|(s, _)| *s == b).expect("sent") <= BATCHES_REMEMBERED;
            let verdict = states.check(&b, None);
            if recent {
                prop_assert_eq!(verdict, Verdict::Duplicate { base_offset });
            } else {
                prop_assert!(matches!(verdict, Verdict::OutOfOrder(_)));
            }
            let encoded = serde_json::to_vec(&states).expect("encode");
            let decoded: ProducerStates = serde_json::from_slice(&encoded).expect("decode");
            prop_assert_eq!(decoded, states);
        }
    }

    #[test]
    fn state_in_the_first_builds_longer_form_still_decodes() {
        let old = br#"{"producers":{"7":{"epoch":1,"last_seen_ms":5,"batches":[{"first_sequence":0,"last_sequence":2,"base_offset":10,"last_offset":12}]}}}"#;
        let states: ProducerStates = serde_json::from_slice(old).expect("decode");
        assert_eq!(
            states.check(&Sequenced::new(7, 1, 0, 2), None),
            Verdict::Duplicate { base_offset: 10 }
        );
    }

    #[test]
    fn the_encoded_state_stays_bounded() {
        let mut states = ProducerStates::default();
        for id in 0..5_000i64 {
            for i in 0..5 {
                let b = Sequenced::new(id + 1_000_000_000, 0, i * 100, 99);
                states.record(&b, 1 << 40, (1 << 40) + 99, 1_700_000_000_000 + id);
            }
        }
        let encoded = states.encode_pruned(1_700_000_010_000, 86_400_000);
        assert!(encoded.len() <= ENCODED_BYTES_MAX, "{}", encoded.len());
        assert!(states.producers.len() <= PRODUCERS_PER_PARTITION_MAX);
        // The most recently seen survive.
        assert!(states.producers.contains_key(&(1_000_000_000 + 4_999)));
        let per_producer = encoded.len() / states.producers.len();
        assert!(per_producer < 256, "{per_producer} bytes per producer");
        let decoded: ProducerStates = serde_json::from_slice(&encoded).expect("decode");
        assert_eq!(decoded, states);
    }
}
