//! The log: append record batches to partitions, read them back by offset.
//!
//! Writes from all partitions are buffered ([`pending`]), written as one object per flush and
//! committed to the metadata store in one transaction per chunk of partitions ([`writer`]); only
//! then are appends acknowledged. Reads find the covering sections through the per-partition index
//! and serve them from the recent-objects cache or with ranged GETs ([`reader`]).

mod append;
mod awaited;
mod delete_records;
pub mod flush_times;
mod retention;
pub use delete_records::HIGH_WATERMARK;
pub use retention::{Retention, RETENTION_UNLIMITED};
mod index;
mod layouts;
mod load;
use layouts::refresh_index;
pub(crate) use load::{load_partition, LoadFor};
pub mod leadership;
pub mod markers;
mod pending;
mod prefetch;
mod queries;
mod reader;
mod recent;
mod replica_watch;
mod replicas;
pub use replicas::{REPLICA_VIEWS_MAX, REPLICA_VIEW_REFRESH_MS};
pub mod section_cache;
mod writer;

pub use index::ROLLUP_FANOUT;
pub use queries::{PartitionRead, ReadView};
pub use reader::{Isolation, ReadOutcome};

use crate::catalog::{Catalog, CatalogError, Topic};
use crate::clock::Clock;
use crate::columnar::ColumnarReader;
use crate::keys::{self, IndexEntry, Layout, PartitionState, RollupEntry};
use crate::metadata::{Compare, MetadataError, MetadataStore, Revision, Txn, TxnOp};
use crate::producers::ProducerStates;
use object_store::ObjectStore;
use pending::Pending;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{watch, Notify, Semaphore};

/// Default of `LogConfig::object_commit_timeout_ms`.
pub const OBJECT_COMMIT_TIMEOUT_MS: i64 = 60_000;

/// How long a hand-over waits for the partition's buffered appends to be committed.
const RELEASE_DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> Self {
        Self {
            topic: Arc::from(topic),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// This broker's node id: it may append to a partition only while the partition's state
    /// names it leader.
    pub node_id: i32,
    /// How long the first buffered append waits for company before its object is written.
    pub flush_linger_ms: u64,
    /// Buffered bytes that trigger a flush before the linger time is up.
    pub flush_max_bytes: usize,
    /// Flushes uploading or committing at once (commits stay one at a time, in order).
    pub flush_max_in_flight: usize,
    /// Produce bytes accepted but not yet committed; appends wait when it is used up.
    pub buffer_max_bytes: usize,
    /// Recently written objects kept in memory for tailing consumers.
    pub recent_cache_max_bytes: usize,
    /// Index entries per index object; a partition keeps at most about four times this many
    /// keys in the metadata store (see `index`).
    pub index_rollup_fanout: usize,
    /// How long a partition remembers an idempotent producer that stopped writing to it
    /// (Kafka's `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: i64,
    /// An object this broker wrote is committed within this long of being named, or
    /// never: garbage collection deletes unreferenced objects only when they are older than its
    /// orphan age, which must exceed this (see ARCHITECTURE.md, "Garbage collection").
    pub object_commit_timeout_ms: i64,
    /// Memory for Parquet footers' and row groups' rebuilt batches (reads of compacted data).
    pub parquet_cache_max_bytes: usize,
    /// Memory for flush-object sections read back (catch-up reads; 0: none).
    pub read_cache_max_bytes: usize,
    /// How stale a replica view (a partition another broker leads, read for a consumer) may be
    /// at the end of the log: the lag of its high watermark behind the leader's (see
    /// `replicas`).
    pub replica_view_refresh_ms: u64,
    /// Replica views kept at most (least recently used dropped first; 0: none kept, each read
    /// loads the partition from the store).
    pub replica_views_max: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            flush_linger_ms: 250,
            flush_max_bytes: 8 * 1024 * 1024,
            flush_max_in_flight: 2,
            buffer_max_bytes: 64 * 1024 * 1024,
            recent_cache_max_bytes: 256 * 1024 * 1024,
            index_rollup_fanout: index::ROLLUP_FANOUT,
            producer_id_expiration_ms: 86_400_000,
            object_commit_timeout_ms: OBJECT_COMMIT_TIMEOUT_MS,
            parquet_cache_max_bytes: 64 * 1024 * 1024,
            read_cache_max_bytes: 128 * 1024 * 1024,
            replica_view_refresh_ms: REPLICA_VIEW_REFRESH_MS,
            replica_views_max: REPLICA_VIEWS_MAX,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    #[error("unknown topic or partition: {0}")]
    UnknownTopicOrPartition(String),
    /// Another broker (or no broker) leads the partition. Retriable after refreshing metadata.
    #[error("not the leader: {0}")]
    NotLeader(String),
    #[error("offset out of range: offset={offset} log_start={log_start_offset} high_watermark={high_watermark}")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        high_watermark: i64,
    },
    /// The partition's state changed under this writer (another leader, a deleted topic): the
    /// append was not committed. Retriable after refreshing metadata.
    #[error("not committed, partition changed: {0}")]
    Fenced(String),
    /// Object store or metadata store failure; the append may be retried.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("data corrupt: {0}")]
    Corrupt(String),
    #[error("append larger than the produce buffer: bytes={bytes} max={max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("log is shutting down")]
    ShuttingDown,
    /// An idempotent producer's batch does not continue its sequence.
    #[error("out of order sequence: {0}")]
    OutOfOrderSequence(String),
    /// A producer's batch skips an earlier one this broker refused and that was not resent yet
    /// (`producers::Awaited`). Retriable: the client resends the earlier batch first.
    #[error("earlier batch awaited: {0}")]
    AwaitingEarlierBatch(String),
    /// An idempotent producer's batch carries an epoch older than the partition has seen.
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    /// A batch that does not fit the producer's transaction state in the partition.
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
}

impl From<MetadataError> for LogError {
    fn from(error: MetadataError) -> Self {
        match error {
            MetadataError::Corrupt(m) => LogError::Corrupt(m),
            other => LogError::Unavailable(other.to_string()),
        }
    }
}

impl From<crate::tree::ReadError> for LogError {
    fn from(error: crate::tree::ReadError) -> Self {
        match error {
            crate::tree::ReadError::Corrupt(m) => LogError::Corrupt(m),
            other => LogError::Unavailable(other.to_string()),
        }
    }
}

impl From<CatalogError> for LogError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::UnknownTopic(t) => LogError::UnknownTopicOrPartition(t),
            CatalogError::Metadata(m) => m.into(),
            other => LogError::Unavailable(other.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: i64,
    /// Set when the topic uses `LogAppendTime`: the timestamp written into the batches.
    pub log_append_time_ms: Option<i64>,
    pub log_start_offset: i64,
}

/// Counters exposed by the admin API and used by tests.
#[derive(Debug, Default)]
pub struct LogStats {
    pub flushes: AtomicU64,
    pub objects_written: AtomicU64,
    pub object_bytes_written: AtomicU64,
    pub commit_failures: AtomicU64,
    pub upload_failures: AtomicU64,
    /// Whether the latest flush-object upload failed (readiness: the bucket is unreachable).
    pub last_upload_failed: std::sync::atomic::AtomicBool,
    /// Appends refused at flush time because leadership moved after they were accepted.
    pub fenced_appends: AtomicU64,
    pub range_reads: AtomicU64,
    pub recent_cache_hits: AtomicU64,
    /// Sections served from the read cache (`section_cache`) instead of the bucket.
    pub read_cache_hits: AtomicU64,
    /// Of those, sections served from the read cache's disk part.
    pub read_cache_disk_hits: AtomicU64,
    /// Flushes asked for without waiting for the linger ([`Log::flush_without_linger`]).
    pub flushes_without_linger: AtomicU64,
    /// Row groups of Parquet files read back (from the reader's cache or the bucket).
    pub parquet_row_groups_read: AtomicU64,
    /// Reads that returned records of a partition another broker leads, served here for
    /// consumers (KIP-392).
    pub replica_reads: AtomicU64,
    /// Replica views loaded or reloaded from the metadata store for those reads.
    pub replica_view_loads: AtomicU64,
    /// GETs that read several sections of one flush object at once, ahead of a fetch's reads.
    pub prefetch_reads: AtomicU64,
    /// Sections those GETs put in the read cache.
    pub sections_prefetched: AtomicU64,
    /// How long each stage of a flush took.
    pub flush_times: flush_times::FlushTimes,
}

/// One partition's committed state as this broker knows it.
#[derive(Debug)]
pub(crate) struct PartitionLog {
    /// Identifies the incarnation of the topic this partition belongs to.
    pub(crate) topic_create_revision: Revision,
    /// That incarnation's record and its `mod_revision`. Configs change in place
    /// ([`Log::refresh_topic`]); a re-created topic is a new incarnation, whose cached partitions
    /// are dropped.
    pub(crate) topic: Mutex<(Revision, keys::TopicRecord)>,
    pub(crate) view: Mutex<PartitionView>,
    /// Appends accepted and not yet answered; a hand-over waits for them.
    pub(crate) inflight: pending::Inflight,
    /// A replica view of a partition another broker leads (see `replicas`), never appended to.
    pub(crate) replica: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct PartitionView {
    pub(crate) state: PartitionState,
    /// Set while leadership is being handed over: no new appends are accepted.
    pub(crate) releasing: bool,
    /// `mod_revision` of the state key (0: absent); every commit compares it.
    pub(crate) state_revision: Revision,
    /// The Parquet part of the index (see `crate::layout`).
    pub(crate) layout: Layout,
    /// `mod_revision` of the layout key (0: absent); roll-ups compare it.
    pub(crate) layout_revision: Revision,
    /// The index tail: newest sections, by base offset.
    pub(crate) index: BTreeMap<i64, IndexEntry>,
    /// Older ranges rolled up into index objects, by base offset (see `index`).
    pub(crate) rollups: BTreeMap<i64, RollupEntry>,
    /// Committed idempotent-producer state (loaded only for partitions this broker leads).
    pub(crate) producers: ProducerStates,
    /// What the flushes planned and not yet committed will leave, while there are any: the
    /// next flush plans from it (flushes are pipelined; see `writer`).
    pub(crate) projected: Option<Projection>,
    /// Bumped when a failed flush drops the projection: flushes planned before that fail at
    /// their commit (their offsets were projected from it) and leave later plans alone.
    pub(crate) plan_generation: u64,
}

impl PartitionView {
    /// (log start offset, last stable offset, high watermark): the LSO is the first offset of
    /// the earliest open transaction, never below the log start (retention or DeleteRecords may
    /// pass an open transaction's first offset), as Kafka.
    pub(crate) fn stable_offsets(&self) -> (i64, i64, i64) {
        let (start, end) = (self.state.log_start_offset, self.state.next_offset);
        (
            start,
            self.producers.last_stable_offset(end).max(start),
            end,
        )
    }
}

/// A partition as the flushes in flight will leave it once they commit.
#[derive(Debug, Clone)]
pub(crate) struct Projection {
    pub(crate) next_offset: i64,
    /// The producer state, when a flush in flight changes it.
    pub(crate) producers: Option<ProducerStates>,
}

#[derive(Debug)]
pub(crate) struct LogInner {
    pub(crate) store: Arc<dyn MetadataStore>,
    pub(crate) objects: Arc<dyn ObjectStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: LogConfig,
    pub(crate) catalog: Catalog,
    pub(crate) partitions: RwLock<HashMap<TopicPartition, Arc<PartitionLog>>>,
    /// Views of partitions other brokers lead, for consumers' reads (see [`replicas`]).
    pub(crate) replicas: replicas::ReplicaViews,
    pub(crate) pending: Mutex<Pending>,
    /// Wakes the flusher: data arrived, the size trigger was reached, or shutdown.
    pub(crate) flush_wakeup: Notify,
    pub(crate) buffer: Arc<Semaphore>,
    /// Index objects, cached.
    pub(crate) index_objects: crate::tree::IndexObjects,
    /// Parquet files read back as record batches.
    pub(crate) columnar: ColumnarReader,
    /// Partitions whose index grew past the bound at their last commit.
    pub(crate) needs_rollup: Mutex<Vec<(TopicPartition, Arc<PartitionLog>)>>,
    /// Bumped after every commit, and by replica views' watches for every change they see;
    /// long-polling fetches wait on it.
    pub(crate) commits: watch::Sender<u64>,
    pub(crate) recent: Mutex<recent::RecentObjects>,
    /// Sections read back from the bucket (catch-up reads).
    pub(crate) sections: section_cache::SectionCache,
    /// Prefetches of one object take turns (see `prefetch`).
    pub(crate) prefetching: prefetch::Turns,
    pub(crate) stats: LogStats,
    pub(crate) shutting_down: AtomicBool,
    /// Set by a hand-over: flush without waiting for the linger time.
    pub(crate) flush_urgent: AtomicBool,
    /// Bumped whenever cached partitions are dropped; a partition load that started before a
    /// bump does not cache what it read (it may describe a deleted topic).
    pub(crate) cache_generation: AtomicU64,
    /// Batches refused here from idempotent producers a partition does not remember, which it
    /// waits for before their later batches (see `producers::ProducerStates::check`).
    pub(crate) awaited: awaited::AwaitedBatches,
    /// What the controller last published of this broker's leadership (None: nothing yet, so
    /// nothing is ruled out); see [`leadership`].
    pub(crate) led: RwLock<Option<leadership::LedPartitions>>,
    /// Held by every commit that writes partition states outside a hand-over (flush commits,
    /// DeleteRecords), so this broker's own commits never fence one another.
    pub(crate) state_commits: tokio::sync::Mutex<()>,
}

/// The log of every partition this broker leads. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Log {
    inner: Arc<LogInner>,
    flusher: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// Reloads cached views after compactor swaps (see [`layouts`]); stopped at shutdown.
    layout_watcher: Arc<tokio::task::JoinHandle<()>>,
    /// Turns true when the flusher task has ended, by shutdown, panic or otherwise.
    flusher_ended: watch::Receiver<bool>,
}

/// Says that a task ended when dropped, which also happens when the task panics.
struct EndSignal(watch::Sender<bool>);

impl Drop for EndSignal {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

impl Log {
    pub fn open(
        store: Arc<dyn MetadataStore>,
        objects: Arc<dyn ObjectStore>,
        clock: Arc<dyn Clock>,
        config: LogConfig,
    ) -> Self {
        let sections = section_cache::SectionCache::new(config.read_cache_max_bytes);
        Self::open_with_cache(store, objects, clock, config, sections)
    }

    /// [`Log::open`] with a read cache built by the caller (one with a disk part is built
    /// asynchronously: `SectionCache::hybrid`).
    pub fn open_with_cache(
        store: Arc<dyn MetadataStore>,
        objects: Arc<dyn ObjectStore>,
        clock: Arc<dyn Clock>,
        config: LogConfig,
        sections: section_cache::SectionCache,
    ) -> Self {
        let (commits, _) = watch::channel(0);
        let replicas = replicas::ReplicaViews::new(config.replica_views_max);
        let inner = Arc::new(LogInner {
            catalog: Catalog::new(store.clone()),
            buffer: Arc::new(Semaphore::new(config.buffer_max_bytes)),
            recent: Mutex::new(recent::RecentObjects::new(config.recent_cache_max_bytes)),
            sections,
            prefetching: prefetch::Turns::default(),
            index_objects: crate::tree::IndexObjects::new(objects.clone()),
            columnar: ColumnarReader::new(objects.clone(), config.parquet_cache_max_bytes),
            store,
            objects,
            clock,
            config,
            partitions: RwLock::new(HashMap::new()),
            replicas,
            needs_rollup: Mutex::new(Vec::new()),
            pending: Mutex::new(Pending::default()),
            flush_wakeup: Notify::new(),
            commits,
            stats: LogStats::default(),
            shutting_down: AtomicBool::new(false),
            flush_urgent: AtomicBool::new(false),
            cache_generation: AtomicU64::new(0),
            awaited: awaited::AwaitedBatches::default(),
            led: RwLock::new(None),
            state_commits: tokio::sync::Mutex::new(()),
        });
        let (ended, flusher_ended) = watch::channel(false);
        let flusher = tokio::spawn({
            let inner = inner.clone();
            async move {
                let _ended = EndSignal(ended);
                writer::run_flusher(inner).await;
            }
        });
        let layout_watcher = Arc::new(tokio::spawn(layouts::run(Arc::downgrade(&inner))));
        Self {
            inner,
            flusher: Arc::new(Mutex::new(Some(flusher))),
            flusher_ended,
            layout_watcher,
        }
    }

    /// Resolves if the flusher ends before [`Log::shutdown`] was called (a panic or a bug):
    /// appends can then never become durable, so the broker must stop and let another take
    /// its partitions over rather than keep its leadership silently.
    pub async fn flusher_failed(&self) {
        let mut ended = self.flusher_ended.clone();
        // The sender lives in the task; an error means it is gone, which is an end too.
        let _ = ended.wait_for(|ended| *ended).await;
        if self.inner.shutting_down.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    pub fn stats(&self) -> &LogStats {
        &self.inner.stats
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// Produce bytes accepted and waiting for the next flush.
    /// Bytes the read cache of sections holds.
    pub fn read_cache_bytes(&self) -> usize {
        self.inner.sections.usage()
    }

    /// Bytes the read cache's disk part has written and read since start (`None` without one).
    pub fn read_cache_disk_io_bytes(&self) -> Option<(u64, u64)> {
        self.inner.sections.disk_io_bytes()
    }

    /// Partitions other brokers lead that this broker keeps a view of for consumers' reads.
    pub fn replica_views(&self) -> usize {
        self.inner.replicas.len()
    }

    /// Topics whose partitions' changes this broker watches for its replica views.
    pub fn replica_view_watches(&self) -> usize {
        self.inner.replicas.watches()
    }

    pub fn buffered_bytes(&self) -> usize {
        self.inner
            .pending
            .lock()
            .expect("pending mutex poisoned")
            .bytes()
    }

    /// A receiver that changes after every commit of this broker's and every change of a
    /// partition a replica view's watch sees (for long polls).
    pub fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.inner.commits.subscribe()
    }

    /// Whether this broker certainly does not lead `tp`, from what the controller published
    /// (no store read; see [`leadership`]).
    pub fn rules_out(&self, tp: &TopicPartition) -> bool {
        self.inner
            .led
            .read()
            .expect("led poisoned")
            .as_ref()
            .is_some_and(|led| led.rules_out(tp))
    }

    /// Drops what this broker remembers of a topic (after it was deleted or changed).
    pub fn forget_topic(&self, topic: &str) {
        let mut partitions = self.inner.partitions.write().expect("partitions poisoned");
        self.inner.cache_generation.fetch_add(1, Ordering::AcqRel);
        partitions.retain(|tp, _| &*tp.topic != topic);
        self.inner.replicas.forget_topic(topic);
        self.inner.awaited.forget_topic(topic);
    }

    /// Replaces what this broker knows it leads (the controller, after each pass): request
    /// paths then answer partitions it rules out as not led without a store read.
    pub fn publish_leadership(&self, led: leadership::LedPartitions) {
        *self.inner.led.write().expect("led poisoned") = Some(led);
    }

    /// This broker just claimed `tp` (the controller, right after the claim committed).
    pub fn note_claimed(&self, tp: &TopicPartition) {
        if let Some(led) = self.inner.led.write().expect("led poisoned").as_mut() {
            led.insert(tp);
        }
    }

    /// The partition, if this broker leads it (and is not handing it over). A partition the
    /// published leadership rules out is refused without a store read.
    pub(crate) async fn led_partition(
        &self,
        tp: &TopicPartition,
    ) -> Result<Arc<PartitionLog>, LogError> {
        let cached = self
            .inner
            .partitions
            .read()
            .expect("partitions poisoned")
            .contains_key(tp);
        let ruled_out = !cached
            && self
                .inner
                .led
                .read()
                .expect("led poisoned")
                .as_ref()
                .is_some_and(|led| led.rules_out(tp));
        if ruled_out {
            return Err(LogError::NotLeader(format!(
                "{tp} is not led by this broker"
            )));
        }
        self.loaded_led_partition(tp).await
    }

    /// [`Self::led_partition`] asking the store whatever was published (for hand-overs, which
    /// follow the store's view of leadership).
    async fn loaded_led_partition(
        &self,
        tp: &TopicPartition,
    ) -> Result<Arc<PartitionLog>, LogError> {
        let partition = load_partition(&self.inner, tp).await?;
        let (leader, releasing) = {
            let view = partition.view.lock().expect("view mutex poisoned");
            (view.state.leader, view.releasing)
        };
        if leader != self.inner.config.node_id || releasing {
            return Err(LogError::NotLeader(format!("{tp} is led by node {leader}")));
        }
        Ok(partition)
    }

    /// What this broker has cached: (partition, leader, leader epoch, topic incarnation).
    pub fn cached_leadership(&self) -> Vec<(TopicPartition, i32, i32, Revision)> {
        let partitions = self.inner.partitions.read().expect("partitions poisoned");
        partitions
            .iter()
            .map(|(tp, partition)| {
                let view = partition.view.lock().expect("view mutex poisoned");
                (
                    tp.clone(),
                    view.state.leader,
                    view.state.leader_epoch,
                    partition.topic_create_revision,
                )
            })
            .collect()
    }

    /// Drops every cached partition (after this broker's session lapsed). Refused batches stay
    /// awaited: clients resend them whoever leads meanwhile.
    pub fn forget_all(&self) {
        let mut partitions = self.inner.partitions.write().expect("partitions poisoned");
        self.inner.cache_generation.fetch_add(1, Ordering::AcqRel);
        partitions.clear();
        self.inner.replicas.forget_all();
    }

    /// The topic record of a partition this broker leads, from its cache: the produce path's
    /// way to a topic's configs without a metadata-store read per request.
    pub async fn led_topic(&self, tp: &TopicPartition) -> Result<keys::TopicRecord, LogError> {
        let partition = self.led_partition(tp).await?;
        let topic = partition.topic.lock().expect("topic mutex poisoned");
        Ok(topic.1.clone())
    }

    /// Bytes a partition this broker leads keeps in the bucket: its sections' and Parquet files'
    /// lengths, from the view and the rollups' recorded sizes (rollups from before sizes were
    /// recorded are summed from their index objects, immutable and cached).
    pub async fn size_bytes(&self, tp: &TopicPartition) -> Result<u64, LogError> {
        let partition = self.led_partition(tp).await?;
        let slots = {
            let view = partition.view.lock().expect("view mutex poisoned");
            index::top_slots(&view)
        };
        let mut bytes = 0u64;
        for slot in &slots {
            bytes += self.inner.index_objects.bytes_under(slot).await?;
        }
        Ok(bytes)
    }

    /// Takes a newer record of a topic (its configs changed) into the cached partitions of the
    /// same incarnation; older or equal revisions are ignored, so a late view cannot undo a
    /// change this broker already saw.
    pub fn refresh_topic(&self, topic: &Topic) {
        self.refresh_topics(|name| (name == topic.record.name).then_some(topic));
    }

    /// [`refresh_topic`](Self::refresh_topic) for every cached partition, with its topic looked
    /// up by name (one pass over the cache, however many topics there are).
    pub fn refresh_topics<'a>(&self, lookup: impl Fn(&str) -> Option<&'a Topic>) {
        let partitions = self.inner.partitions.read().expect("partitions poisoned");
        for (tp, partition) in partitions.iter() {
            let Some(topic) = lookup(&tp.topic) else {
                continue;
            };
            if partition.topic_create_revision != topic.create_revision {
                continue;
            }
            let mut cached = partition.topic.lock().expect("topic mutex poisoned");
            if cached.0 < topic.mod_revision {
                *cached = (topic.mod_revision, topic.record.clone());
            }
        }
    }

    /// Drops what this broker remembers of one partition; the next use reloads it.
    pub fn forget_partition(&self, tp: &TopicPartition) {
        let mut partitions = self.inner.partitions.write().expect("partitions poisoned");
        self.inner.cache_generation.fetch_add(1, Ordering::AcqRel);
        partitions.remove(tp);
    }

    /// Hands leadership of a partition over: stops accepting appends, commits what is
    /// buffered, then records "no leader" (same epoch; the next leader's claim bumps it).
    pub async fn release(&self, tp: &TopicPartition) -> Result<(), LogError> {
        let partition = self.loaded_led_partition(tp).await?;
        partition
            .view
            .lock()
            .expect("view mutex poisoned")
            .releasing = true;
        // Flush now rather than after the linger, and wait for this partition's appends only:
        // other partitions keep producing meanwhile.
        self.inner.flush_urgent.store(true, Ordering::Release);
        self.inner.flush_wakeup.notify_one();
        if !partition.inflight.drained(RELEASE_DRAIN_WAIT).await {
            partition
                .view
                .lock()
                .expect("view mutex poisoned")
                .releasing = false;
            return Err(LogError::Unavailable(format!(
                "{tp}: buffered appends not committed within {RELEASE_DRAIN_WAIT:?}; hand-over retried later"
            )));
        }
        let (mut state, revision) = {
            let view = partition.view.lock().expect("view mutex poisoned");
            (view.state.clone(), view.state_revision)
        };
        state.leader = -1;
        let state_key = keys::partition(&tp.topic, tp.partition);
        let txn = Txn::when(vec![
            Compare::mod_revision(&state_key, revision),
            writer::topic_incarnation(tp, &partition),
        ])
        .and_then(vec![TxnOp::put(state_key, keys::encode(&state))]);
        let outcome = self.inner.store.txn(txn).await;
        self.forget_partition(tp);
        match outcome {
            Ok(outcome) if outcome.succeeded => Ok(()),
            Ok(_) => Err(LogError::Fenced(format!("{tp} changed before its release"))),
            Err(error) => Err(error.into()),
        }
    }

    /// Starts the next flush without waiting for the linger: now if the flusher is idle, else
    /// as soon as the flush in progress ends. For when waiting cannot make the object fuller
    /// (every producer with data buffered is blocked on its acknowledgements).
    pub fn flush_without_linger(&self) {
        self.inner
            .stats
            .flushes_without_linger
            .fetch_add(1, Ordering::Relaxed);
        self.inner.flush_urgent.store(true, Ordering::Release);
        self.inner.flush_wakeup.notify_one();
    }

    /// Flushes everything buffered, then stops the flusher. Appends after this fail.
    pub async fn shutdown(&self) {
        self.layout_watcher.abort();
        self.inner.shutting_down.store(true, Ordering::Release);
        self.inner.flush_wakeup.notify_one();
        let handle = self.flusher.lock().expect("flusher mutex poisoned").take();
        if let Some(handle) = handle {
            if let Err(error) = handle.await {
                tracing::error!(%error, "flusher task failed");
            }
        }
        // The disk part of the read cache writes what it buffers, for the next run.
        self.inner.sections.close().await;
    }
}

#[cfg(test)]
mod tests;
