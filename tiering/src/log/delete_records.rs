//! DeleteRecords: moves a partition's log start offset forward (Kafka's `deleteRecords`).
//!
//! The new log start is committed in the partition state, fenced like every commit (the state's
//! `mod_revision` and the topic's incarnation), under the same lock as flush commits so the
//! leader never fences itself. Offsets below it are then out of range for Fetch and ListOffsets
//! (earliest) answers it. The records stay in their objects until the compactor's garbage
//! collection removes what no partition can still read.

use super::{writer, LogError, TopicPartition};
use crate::keys;
use crate::metadata::{Compare, Txn, TxnOp};

/// Kafka's "up to the high watermark" in DeleteRecords.
pub const HIGH_WATERMARK: i64 = -1;

impl super::Log {
    /// Makes `offset` (or the high watermark, for [`HIGH_WATERMARK`]) the partition's log start
    /// offset unless it already is past it; returns the log start offset after the call (Kafka's
    /// low watermark). An offset beyond the high watermark is out of range.
    pub async fn delete_records(&self, tp: &TopicPartition, offset: i64) -> Result<i64, LogError> {
        let partition = self.loaded_led_partition(tp).await?;
        let _state_commits = self.inner.state_commits.lock().await;
        let (mut state, revision) = {
            let view = partition.view.lock().expect("view mutex poisoned");
            if view.releasing {
                return Err(LogError::NotLeader(format!("{tp} is being handed over")));
            }
            (view.state.clone(), view.state_revision)
        };
        let target = if offset == HIGH_WATERMARK {
            state.next_offset
        } else {
            offset
        };
        if target < 0 || target > state.next_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: state.log_start_offset,
                high_watermark: state.next_offset,
            });
        }
        if target <= state.log_start_offset {
            return Ok(state.log_start_offset);
        }
        state.log_start_offset = target;
        let state_key = keys::partition(&tp.topic, tp.partition);
        let txn = Txn::when(vec![
            Compare::mod_revision(&state_key, revision),
            writer::topic_incarnation(tp, &partition),
        ])
        .and_then(vec![TxnOp::put(state_key, keys::encode(&state))]);
        match self.inner.store.txn(txn).await {
            Ok(outcome) if outcome.succeeded => {
                let mut view = partition.view.lock().expect("view mutex poisoned");
                view.state.log_start_offset = target;
                view.state_revision = outcome.revision;
                drop(view);
                // Long polls and readers below the new start see it at once.
                self.inner.commits.send_modify(|n| *n += 1);
                tracing::info!(partition = %tp, log_start_offset = target, "records deleted");
                Ok(target)
            }
            Ok(_) => {
                self.forget_partition(tp);
                Err(LogError::Fenced(format!(
                    "{tp} changed before DeleteRecords"
                )))
            }
            // Ambiguous: reloading tells the next request which it was.
            Err(error) => {
                self.forget_partition(tp);
                Err(error.into())
            }
        }
    }
}
