//! What a partition this broker leads holds: its batches (the read path is `reader`), offsets,
//! leader epoch and producer state, for Fetch, ListOffsets and the admin APIs.

use super::{reader, Isolation, Log, LogError, ReadOutcome, TopicPartition};
use crate::producers::ProducerStates;
use bytes::Bytes;

impl Log {
    /// Reads whole batches from `offset`, at most `max_bytes` of them except that the first is
    /// returned whole whatever its size (KIP-74: a fetch's first batch).
    pub async fn read(
        &self,
        tp: &TopicPartition,
        offset: i64,
        max_bytes: usize,
        isolation: Isolation,
    ) -> Result<ReadOutcome, LogError> {
        let partition = self.led_partition(tp).await?;
        reader::read(
            &self.inner,
            tp,
            &partition,
            offset,
            (max_bytes, true),
            isolation,
        )
        .await
    }

    /// Reads whole batches from `offset` that fit in `max_bytes` together (none if the first
    /// does not): a fetch's partitions after the first that returned data.
    pub async fn read_within(
        &self,
        tp: &TopicPartition,
        offset: i64,
        max_bytes: usize,
        isolation: Isolation,
    ) -> Result<ReadOutcome, LogError> {
        let partition = self.led_partition(tp).await?;
        reader::read(
            &self.inner,
            tp,
            &partition,
            offset,
            (max_bytes, false),
            isolation,
        )
        .await
    }

    /// The first stored batch whose max timestamp is at or after `timestamp_ms`.
    pub async fn batch_at_timestamp(
        &self,
        tp: &TopicPartition,
        timestamp_ms: i64,
    ) -> Result<Option<Bytes>, LogError> {
        let partition = self.led_partition(tp).await?;
        reader::batch_at_timestamp(&self.inner, tp, &partition, timestamp_ms).await
    }

    /// The first stored batch holding the partition's largest timestamp.
    pub async fn batch_with_max_timestamp(
        &self,
        tp: &TopicPartition,
    ) -> Result<Option<Bytes>, LogError> {
        let partition = self.led_partition(tp).await?;
        reader::batch_with_max_timestamp(&self.inner, tp, &partition).await
    }

    /// (log start offset, high watermark).
    pub async fn offsets(&self, tp: &TopicPartition) -> Result<(i64, i64), LogError> {
        let partition = self.led_partition(tp).await?;
        let view = partition.view.lock().expect("view mutex poisoned");
        Ok((view.state.log_start_offset, view.state.next_offset))
    }

    /// (log start offset, last stable offset, high watermark).
    pub async fn stable_offsets(&self, tp: &TopicPartition) -> Result<(i64, i64, i64), LogError> {
        let partition = self.led_partition(tp).await?;
        let view = partition.view.lock().expect("view mutex poisoned");
        let end = view.state.next_offset;
        Ok((
            view.state.log_start_offset,
            view.producers
                .last_stable_offset(end)
                .max(view.state.log_start_offset),
            end,
        ))
    }

    /// The idempotent and transactional producers the led partition remembers (DescribeProducers,
    /// the admin API), as last committed or appended here.
    pub async fn producers(&self, tp: &TopicPartition) -> Result<ProducerStates, LogError> {
        let partition = self.led_partition(tp).await?;
        let view = partition.view.lock().expect("view mutex poisoned");
        Ok(view.producers.clone())
    }

    /// Whether `producer` (id, epoch) has a transaction open in the led partition, as last
    /// committed (false when this broker does not lead it).
    pub async fn continues_transaction(&self, tp: &TopicPartition, producer: (i64, i16)) -> bool {
        let Ok(partition) = self.led_partition(tp).await else {
            return false;
        };
        let view = partition.view.lock().expect("view mutex poisoned");
        view.producers.has_open_transaction(producer)
    }

    pub async fn leader_epoch(&self, tp: &TopicPartition) -> Result<i32, LogError> {
        let partition = self.led_partition(tp).await?;
        let view = partition.view.lock().expect("view mutex poisoned");
        Ok(view.state.leader_epoch)
    }
}
