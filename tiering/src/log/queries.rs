//! What a partition this broker leads holds: its batches (the read path is `reader`), offsets,
//! leader epoch and producer state, for Fetch, ListOffsets and the admin APIs.

use super::{
    prefetch, reader, replicas, Isolation, Log, LogError, PartitionLog, ReadOutcome, TopicPartition,
};
use crate::producers::ProducerStates;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A partition a consumer's Fetch pass is about to read: from `offset`, under `leader_epoch`
/// (-1: none), at most `max_bytes` (its `partition_max_bytes`).
#[derive(Debug, Clone)]
pub struct PartitionRead {
    pub tp: TopicPartition,
    pub offset: i64,
    pub leader_epoch: i32,
    pub max_bytes: usize,
}

/// A partition as one read sees it: led by this broker, or a replica view of a partition
/// another broker leads (see `replicas`).
#[derive(Debug, Clone)]
pub struct ReadView {
    partition: Arc<PartitionLog>,
    led_here: bool,
}

impl ReadView {
    /// Whether this broker leads the partition (else the view is a replica's).
    pub fn led_here(&self) -> bool {
        self.led_here
    }

    pub fn leader_epoch(&self) -> i32 {
        let view = self.partition.view.lock().expect("view mutex poisoned");
        view.state.leader_epoch
    }

    /// (log start offset, last stable offset, high watermark).
    pub fn stable_offsets(&self) -> (i64, i64, i64) {
        let view = self.partition.view.lock().expect("view mutex poisoned");
        view.stable_offsets()
    }
}

impl Log {
    /// The partition for a consumer's read from `offset`: the led partition, or, when
    /// `any_replica` (Fetch v11+ from a consumer, which any replica may serve) and another
    /// broker leads it, a replica view of it — checked against the store first when the read
    /// reaches the end of what `isolation` shows or asks for a newer `leader_epoch` (-1: none)
    /// than it knows.
    pub async fn read_view(
        &self,
        tp: &TopicPartition,
        (offset, leader_epoch): (i64, i32),
        isolation: Isolation,
        any_replica: bool,
    ) -> Result<ReadView, LogError> {
        let freshness = any_replica.then_some(replicas::Freshness::Due);
        self.view_for_read(tp, (offset, leader_epoch), isolation, freshness)
            .await
    }

    /// [`Self::read_view`] for a read of a consumer's Fetch pass (any replica may serve it),
    /// after [`Self::prepare_replica_views`] for the pass: a view it brought up to date (of a
    /// partition certainly led elsewhere) is read as it is unless the read cannot do without a
    /// check (past its high watermark, a newer leader epoch), so the pass reads the sections
    /// its prefetch read; any other is checked as [`Self::read_view`] would.
    pub async fn prepared_read_view(
        &self,
        tp: &TopicPartition,
        (offset, leader_epoch): (i64, i32),
        isolation: Isolation,
    ) -> Result<ReadView, LogError> {
        let freshness = if self.rules_out(tp) {
            replicas::Freshness::Prepared
        } else {
            replicas::Freshness::Due
        };
        self.view_for_read(tp, (offset, leader_epoch), isolation, Some(freshness))
            .await
    }

    /// The led partition, or (`freshness` given) a replica view checked as it says.
    async fn view_for_read(
        &self,
        tp: &TopicPartition,
        (offset, leader_epoch): (i64, i32),
        isolation: Isolation,
        freshness: Option<replicas::Freshness>,
    ) -> Result<ReadView, LogError> {
        match (self.led_partition(tp).await, freshness) {
            (Ok(partition), _) => Ok(ReadView {
                partition,
                led_here: true,
            }),
            (Err(LogError::NotLeader(_)), Some(freshness)) => {
                let read = (offset, leader_epoch);
                let partition =
                    replicas::replica_view(&self.inner, tp, read, isolation, freshness).await?;
                Ok(ReadView {
                    partition,
                    led_here: false,
                })
            }
            (Err(error), _) => Err(error),
        }
    }

    /// Brings up to date the replica views a consumer's Fetch pass is about to read: those
    /// [`Self::read_view`] would reload one after the other, each waiting for the store, are
    /// reloaded [`replicas::VIEWS_PER_LOAD`] to a request, several requests at once, so a
    /// fetch of hundreds of partitions served from views costs a few round trips. Only
    /// partitions this broker certainly does not lead are looked at; errors are left for the
    /// reads to meet.
    pub async fn prepare_replica_views(&self, reads: &[PartitionRead], isolation: Isolation) {
        let elsewhere: Vec<&PartitionRead> = reads
            .iter()
            .filter(|read| self.rules_out(&read.tp))
            .collect();
        replicas::prepare(&self.inner, &elsewhere, isolation).await;
    }

    /// Reads into the read cache, together, the flush-object sections a Fetch pass of several
    /// partitions is about to read (`max_bytes` for the whole fetch): sections of one object
    /// one GET per run of nearby ones, objects at once, rather than one GET per partition as
    /// the reads reach them (see `prefetch`). Only partitions this broker has loaded (led, or
    /// a replica view) are looked at; errors are left for the reads to meet.
    pub async fn prefetch(&self, reads: &[PartitionRead], isolation: Isolation, max_bytes: usize) {
        if reads.len() < 2 || !self.inner.sections.enabled() {
            return;
        }
        let wanted: Vec<prefetch::Wanted> = {
            let led = self.inner.partitions.read().expect("partitions poisoned");
            reads
                .iter()
                .filter_map(|read| {
                    let partition = match led.get(&read.tp) {
                        Some(partition) => partition.clone(),
                        None => self.inner.replicas.partition(&read.tp)?,
                    };
                    Some(prefetch::Wanted {
                        partition,
                        offset: read.offset,
                        max_bytes: read.max_bytes,
                    })
                })
                .collect()
        };
        match prefetch::sections_wanted(&self.inner, &wanted, isolation, max_bytes).await {
            Ok(sections) => prefetch::fill(&self.inner, sections).await,
            Err(error) => tracing::debug!(%error, "prefetch skipped; the reads will retry"),
        }
    }

    /// Reads whole batches from `offset` of a partition as `view` shows it: at most
    /// `max_bytes` of them, except that with `first_batch_whole` the first is returned whole
    /// whatever its size (KIP-74: a fetch's first batch), and without it none is returned if
    /// the first does not fit (a fetch's partitions after the first that returned data).
    pub async fn read_from(
        &self,
        view: &ReadView,
        tp: &TopicPartition,
        offset: i64,
        (max_bytes, first_batch_whole): (usize, bool),
        isolation: Isolation,
    ) -> Result<ReadOutcome, LogError> {
        let read = reader::read(
            &self.inner,
            tp,
            &view.partition,
            offset,
            (max_bytes, first_batch_whole),
            isolation,
        )
        .await;
        if !view.led_here && read.as_ref().is_ok_and(|read| !read.batches.is_empty()) {
            self.inner
                .stats
                .replica_reads
                .fetch_add(1, Ordering::Relaxed);
        }
        read
    }

    /// Reads whole batches of a partition this broker leads from `offset`, at most `max_bytes`
    /// of them except that the first is returned whole whatever its size (KIP-74).
    pub async fn read(
        &self,
        tp: &TopicPartition,
        offset: i64,
        max_bytes: usize,
        isolation: Isolation,
    ) -> Result<ReadOutcome, LogError> {
        let view = self.read_view(tp, (offset, -1), isolation, false).await?;
        self.read_from(&view, tp, offset, (max_bytes, true), isolation)
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
        Ok(view.stable_offsets())
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
