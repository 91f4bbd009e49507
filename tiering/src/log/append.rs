//! Queuing appends for the flusher: produced batches, transactional producers' batches with
//! their verification, and the transaction markers coordinators ask for. Each waits for buffer
//! space (backpressure) and resolves when its flush commits.

use super::pending::{self, PendingAppend};
use super::{AppendOutcome, Log, LogError, TopicPartition};
use crate::batch::{self, BatchHeader};
use crate::producers::Marker;
use crate::records;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use tokio::sync::oneshot;

impl Log {
    /// Appends validated batches to a partition and waits until they are durable: written to an
    /// object and committed to the metadata store. Returns the assigned base offset.
    pub async fn append(
        &self,
        tp: TopicPartition,
        batches: Vec<(BatchHeader, Bytes)>,
        log_append_time: bool,
    ) -> Result<AppendOutcome, LogError> {
        let receiver = self.enqueue(tp, batches, log_append_time).await?;
        receiver.await.map_err(|_| LogError::ShuttingDown)?
    }

    /// Appends a transaction marker for the coordinator and waits until it is durable. The
    /// commit that stores it deletes `request_key` (its `keys::MarkerRequest`) and applies it to
    /// the partition's producer state: the producer's open transaction here ends, an abort is
    /// recorded for `read_committed` readers, and the marker's epoch fences older ones.
    pub async fn append_marker(
        &self,
        tp: TopicPartition,
        marker: Marker,
        request_key: String,
    ) -> Result<AppendOutcome, LogError> {
        let batch = records::control_batch(&marker, self.inner.clock.now_ms());
        let header = batch::parse_header(&batch).map_err(|e| LogError::Corrupt(e.to_string()))?;
        let marker = pending::MarkerAppend {
            marker,
            request_key,
        };
        let receiver = self
            .enqueue_append(tp, vec![(header, batch)], false, (Some(marker), None))
            .await?;
        // A transaction is not complete (and its producer cannot begin the next one) until its
        // markers are durable: they do not wait for the linger. Markers of transactions ending
        // together still share one object (flushes run one at a time).
        self.inner.flush_urgent.store(true, Ordering::Release);
        self.inner.flush_wakeup.notify_one();
        receiver.await.map_err(|_| LogError::ShuttingDown)?
    }

    /// Queues an append; the receiver resolves when it is committed (or failed).
    pub async fn enqueue(
        &self,
        tp: TopicPartition,
        batches: Vec<(BatchHeader, Bytes)>,
        log_append_time: bool,
    ) -> Result<oneshot::Receiver<Result<AppendOutcome, LogError>>, LogError> {
        self.enqueue_append(tp, batches, log_append_time, (None, None))
            .await
    }

    /// [`Self::enqueue`] for a transactional producer's batch, verified against the
    /// coordinator's state at `verified_revision` (the partition is in its open transaction
    /// there). A batch verified before a marker the partition has since applied for that
    /// producer is refused (INVALID_TXN_STATE): it belongs to the transaction the marker ended.
    pub async fn enqueue_transactional(
        &self,
        tp: TopicPartition,
        batches: Vec<(BatchHeader, Bytes)>,
        log_append_time: bool,
        verified_revision: i64,
    ) -> Result<oneshot::Receiver<Result<AppendOutcome, LogError>>, LogError> {
        self.enqueue_append(
            tp,
            batches,
            log_append_time,
            (None, Some(verified_revision)),
        )
        .await
    }

    async fn enqueue_append(
        &self,
        tp: TopicPartition,
        batches: Vec<(BatchHeader, Bytes)>,
        log_append_time: bool,
        (marker, txn_verified_revision): (Option<pending::MarkerAppend>, Option<i64>),
    ) -> Result<oneshot::Receiver<Result<AppendOutcome, LogError>>, LogError> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(LogError::ShuttingDown);
        }
        // Fail fast on unknown partitions and on partitions led elsewhere, before buffering. A
        // retriable refusal is remembered: the producer's later batches, possibly already on
        // their way here, must not overtake this one once the partition is led here.
        let partition = match self.led_partition(&tp).await {
            Ok(partition) => partition,
            Err(error) => {
                let retriable = matches!(
                    error,
                    LogError::NotLeader(_) | LogError::Fenced(_) | LogError::Unavailable(_)
                );
                if retriable && marker.is_none() {
                    self.inner.awaited.note(
                        &tp,
                        pending::sequenced(&batches),
                        |_| false,
                        self.inner.clock.now_ms(),
                    );
                }
                return Err(error);
            }
        };
        let topic_create_revision = partition.topic_create_revision;
        let leader_epoch = partition
            .view
            .lock()
            .expect("view mutex poisoned")
            .state
            .leader_epoch;
        // Counted before waiting for buffer space, so a hand-over waits for this append too.
        let inflight = partition.inflight.enter();
        let bytes: usize = batches.iter().map(|(_, b)| b.len()).sum();
        if bytes > self.inner.config.buffer_max_bytes {
            return Err(LogError::TooLarge {
                bytes,
                max: self.inner.config.buffer_max_bytes,
            });
        }
        let permits = u32::try_from(bytes).expect("append bytes bounded by buffer_max_bytes");
        // Backpressure: wait until earlier appends are committed and their bytes released.
        let permit = self
            .inner
            .buffer
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| LogError::ShuttingDown)?;
        let (reply, receiver) = oneshot::channel();
        let wake_flusher = {
            let mut pending = self.inner.pending.lock().expect("pending mutex poisoned");
            pending.push(
                tp,
                PendingAppend {
                    topic_create_revision,
                    leader_epoch,
                    _inflight: inflight,
                    batches,
                    log_append_time,
                    bytes,
                    reply,
                    _permit: permit,
                    marker,
                    txn_verified_revision,
                },
                tokio::time::Instant::now(),
            );
            // The first append starts the linger timer; reaching the size flushes early.
            pending.len() == 1 || pending.bytes() >= self.inner.config.flush_max_bytes
        };
        if wake_flusher {
            self.inner.flush_wakeup.notify_one();
        }
        Ok(receiver)
    }
}
