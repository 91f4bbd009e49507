//! Batches this broker refused from idempotent producers a partition does not remember, which
//! the partition waits for before any later batch of theirs (`producers::Awaited`).
//!
//! A refusal is retriable (a failed flush, leadership moving, a store error), so the client
//! resends the batch; but it may already have sent later ones on the same connection. Kafka
//! accepts a producer it does not know at any sequence (its state may have expired), so without
//! this a later batch would be stored first, and librdkafka would then count the refused batch as
//! delivered when its retry fails ("implicit ack"). Entries are in memory: a broker that restarts
//! has refused nothing since.

use super::TopicPartition;
use crate::producers::{Awaited, AwaitedSequences, Sequenced, AWAITED_FOR_MS};
use std::collections::HashMap;
use std::sync::Mutex;

/// Bounds the memory of refused producers (every partition together); beyond it, expired entries
/// are dropped first, then nothing more is noted (order after a refusal is the client's).
const ENTRIES_MAX: usize = 100_000;

#[derive(Debug, Default)]
pub(crate) struct AwaitedBatches {
    partitions: Mutex<HashMap<TopicPartition, AwaitedSequences>>,
}

impl AwaitedBatches {
    /// Notes the refused `batches` of producers `known` does not accept (the partition remembers
    /// those, and holds them to their sequences anyway). A producer's first refusal stands until
    /// it is resent: later refusals do not move it.
    pub(crate) fn note(
        &self,
        tp: &TopicPartition,
        batches: impl IntoIterator<Item = Sequenced>,
        known: impl Fn(i64) -> bool,
        now_ms: i64,
    ) {
        let mut partitions = self.partitions.lock().expect("awaited mutex poisoned");
        for batch in batches {
            if known(batch.producer_id) {
                continue;
            }
            let mut total: usize = partitions.values().map(HashMap::len).sum();
            if total >= ENTRIES_MAX {
                for waiting in partitions.values_mut() {
                    waiting.retain(|_, a| now_ms.saturating_sub(a.noted_ms) < AWAITED_FOR_MS);
                }
                partitions.retain(|_, waiting| !waiting.is_empty());
                total = partitions.values().map(HashMap::len).sum();
                if total >= ENTRIES_MAX {
                    return;
                }
            }
            let fresh = Awaited {
                epoch: batch.epoch,
                first_sequence: batch.first_sequence,
                noted_ms: now_ms,
            };
            let entry = partitions
                .entry(tp.clone())
                .or_default()
                .entry(batch.producer_id)
                .or_insert(fresh);
            // An expired entry, or one under an older epoch, no longer holds anything back.
            if entry.epoch != fresh.epoch || now_ms.saturating_sub(entry.noted_ms) >= AWAITED_FOR_MS
            {
                *entry = fresh;
            }
        }
    }

    /// What `tp` waits for, if anything.
    pub(crate) fn of(&self, tp: &TopicPartition) -> Option<AwaitedSequences> {
        self.partitions
            .lock()
            .expect("awaited mutex poisoned")
            .get(tp)
            .cloned()
    }

    /// After a commit: producers the partition now remembers are no longer waited for.
    pub(crate) fn committed(&self, tp: &TopicPartition, known: impl Fn(i64) -> bool) {
        let mut partitions = self.partitions.lock().expect("awaited mutex poisoned");
        if let Some(waiting) = partitions.get_mut(tp) {
            waiting.retain(|id, _| !known(*id));
            if waiting.is_empty() {
                partitions.remove(tp);
            }
        }
    }

    pub(crate) fn forget_topic(&self, topic: &str) {
        self.partitions
            .lock()
            .expect("awaited mutex poisoned")
            .retain(|tp, _| &*tp.topic != topic);
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.partitions
            .lock()
            .expect("awaited mutex poisoned")
            .is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer_id: i64, epoch: i16, first: i32) -> Sequenced {
        Sequenced::new(producer_id, epoch, first, 2)
    }

    #[test]
    fn the_first_refusal_stands_until_it_expires_or_the_epoch_moves() {
        let awaited = AwaitedBatches::default();
        let tp = TopicPartition::new("t", 0);
        awaited.note(&tp, [batch(7, 0, 0), batch(8, 0, 5)], |id| id == 8, 1_000);
        awaited.note(&tp, [batch(7, 0, 3)], |_| false, 2_000);
        let waiting = awaited.of(&tp).expect("waiting");
        assert_eq!(waiting.len(), 1, "a known producer is not noted");
        assert_eq!(
            waiting[&7],
            Awaited {
                epoch: 0,
                first_sequence: 0,
                noted_ms: 1_000
            }
        );
        awaited.note(&tp, [batch(7, 1, 0)], |_| false, 3_000);
        assert_eq!(awaited.of(&tp).expect("waiting")[&7].epoch, 1);
        let later = 3_000 + AWAITED_FOR_MS;
        awaited.note(&tp, [batch(7, 1, 9)], |_| false, later);
        assert_eq!(awaited.of(&tp).expect("waiting")[&7].first_sequence, 9);
        awaited.committed(&tp, |id| id == 7);
        assert!(awaited.is_empty());
    }
}
