//! Retention (`retention.ms`, `retention.bytes`): the leader moves a partition's log start past
//! the oldest part of its log whose records are all older than the retention time, or that the
//! log can lose and still hold `retention.bytes`, as Kafka deletes whole segments. Our segments are the index's slots (one
//! flush's section, or a rolled-up range of them), taken oldest first up to the first one that
//! still holds a record to keep, so retention never removes a record it should keep; a rolled-up
//! range is kept whole until all of it expired. The log start is committed through
//! [`super::Log::delete_records`]; bytes leave the bucket with the compactor's garbage collection.

use super::index;
use super::{LogError, TopicPartition};
use crate::tree::Slot;

/// Kafka's "no time limit" for `retention.ms`.
pub const RETENTION_UNLIMITED: i64 = -1;

/// The log start after dropping the leading slots whose records are all older than `cutoff_ms`
/// (never before `log_start`).
pub(crate) fn retained_start(slots: &[Slot], log_start: i64, cutoff_ms: i64) -> i64 {
    let mut start = log_start;
    for slot in slots.iter().filter(|s| s.last_offset() >= log_start) {
        if slot.max_timestamp() >= cutoff_ms {
            break;
        }
        start = start.max(slot.last_offset() + 1);
    }
    start
}

/// The log start after dropping the leading slots (last offset, bytes) the log can lose and
/// still hold `retention_bytes` (never before `log_start`).
pub(crate) fn retained_start_by_size(
    slots: &[(i64, u64)],
    log_start: i64,
    retention_bytes: u64,
) -> i64 {
    let live: Vec<&(i64, u64)> = slots
        .iter()
        .filter(|(last, _)| *last >= log_start)
        .collect();
    let mut total: u64 = live.iter().map(|(_, bytes)| bytes).sum();
    let mut start = log_start;
    for (last, bytes) in live {
        if total - bytes < retention_bytes {
            break;
        }
        total -= bytes;
        start = start.max(last + 1);
    }
    start
}

/// What a partition must keep: `retention.ms` and `retention.bytes`, each -1 for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub ms: i64,
    pub bytes: i64,
}

impl super::Log {
    /// Applies `retention` to a partition this broker leads at `now_ms`: returns the new log
    /// start offset if it moved.
    pub async fn enforce_retention(
        &self,
        tp: &TopicPartition,
        retention: Retention,
        now_ms: i64,
    ) -> Result<Option<i64>, LogError> {
        if retention.ms < 0 && retention.bytes < 0 {
            return Ok(None);
        }
        let partition = self.loaded_led_partition(tp).await?;
        let (current, slots) = {
            let view = partition.view.lock().expect("view mutex poisoned");
            (view.state.log_start_offset, index::top_slots(&view))
        };
        let mut target = current;
        if retention.ms >= 0 {
            let cutoff = now_ms.saturating_sub(retention.ms);
            target = target.max(retained_start(&slots, current, cutoff));
        }
        if let Ok(retention_bytes) = u64::try_from(retention.bytes) {
            let mut sized = Vec::with_capacity(slots.len());
            for slot in slots.iter().filter(|s| s.last_offset() >= current) {
                sized.push((
                    slot.last_offset(),
                    self.inner.index_objects.bytes_under(slot).await?,
                ));
            }
            target = target.max(retained_start_by_size(&sized, current, retention_bytes));
        }
        if target <= current {
            return Ok(None);
        }
        self.delete_records(tp, target).await.map(Some)
    }

    /// The partitions the controller last said this broker leads.
    pub fn led_partitions(&self) -> Vec<TopicPartition> {
        self.inner
            .led
            .read()
            .expect("led poisoned")
            .as_ref()
            .map(super::leadership::LedPartitions::led)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::IndexEntry;

    fn section(base: i64, last: i64, max_timestamp: i64) -> Slot {
        Slot::Section(IndexEntry {
            base_offset: base,
            last_offset: last,
            max_timestamp,
            object: String::new(),
            position: 0,
            length: 0,
            crc32c: 0,
            aborted: Vec::new(),
        })
    }

    #[test]
    fn drops_leading_slots_that_expired_and_stops_at_the_first_to_keep() {
        let slots = [
            section(0, 9, 100),
            section(10, 19, 200),
            section(20, 29, 150), // older than the one before it: expires with it
            section(30, 39, 400),
        ];
        assert_eq!(retained_start(&slots, 0, 50), 0, "nothing expired");
        assert_eq!(retained_start(&slots, 0, 101), 10);
        assert_eq!(
            retained_start(&slots, 0, 201),
            30,
            "the older third goes with the second"
        );
        assert_eq!(retained_start(&slots, 0, 500), 40, "everything");
        assert_eq!(retained_start(&slots, 15, 101), 15, "never moves back");
        assert_eq!(retained_start(&slots, 15, 201), 30);
    }

    #[test]
    fn drops_the_oldest_slots_the_log_can_lose_and_still_hold_its_bytes() {
        let slots = [(9, 100), (19, 100), (29, 100), (39, 50)];
        assert_eq!(retained_start_by_size(&slots, 0, 350), 0, "350 held in all");
        assert_eq!(retained_start_by_size(&slots, 0, 250), 10);
        assert_eq!(retained_start_by_size(&slots, 0, 150), 20);
        assert_eq!(
            retained_start_by_size(&slots, 0, 0),
            40,
            "everything may go"
        );
        assert_eq!(
            retained_start_by_size(&slots, 0, 51),
            20,
            "keeps at least 51 bytes"
        );
        assert_eq!(
            retained_start_by_size(&slots, 25, 100),
            25,
            "never moves back"
        );
        assert_eq!(retained_start_by_size(&slots, 25, 50), 30);
    }
}
