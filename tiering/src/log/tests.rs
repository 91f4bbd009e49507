use super::*;
use crate::batch::{self, tests::sample_batch};
use crate::clock::ManualClock;
use crate::metadata::embedded::EmbeddedStore;
use crate::metadata::{Txn, TxnOp};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::memory::InMemory;

mod delete_records;
mod faults;
mod fencing;
mod flushes;
mod index;
mod producers;
mod replicas;
mod transactions;

use faults::{InjectedWrites, PutGate, WriteFault};

const RU: Isolation = Isolation::ReadUncommitted;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn MetadataStore>,
    objects: Arc<InMemory>,
    clock: Arc<ManualClock>,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let store = EmbeddedStore::open(&dir.path().join("meta.redb"), clock.clone())
            .await
            .expect("open store");
        Self {
            _dir: dir,
            store: Arc::new(store),
            objects: Arc::new(InMemory::new()),
            clock,
        }
    }

    fn log(&self, linger_ms: u64) -> Log {
        Log::open(
            self.store.clone(),
            self.objects.clone(),
            self.clock.clone(),
            LogConfig {
                flush_linger_ms: linger_ms,
                ..LogConfig::default()
            },
        )
    }

    /// Creates a topic and makes node 1 (every test log's node) lead all its partitions, as
    /// the cluster controller would.
    async fn topic(&self, log: &Log, name: &str, partitions: i32) {
        let topic = log
            .catalog()
            .create(name, partitions, Default::default(), 0)
            .await
            .expect("create");
        for p in 0..partitions {
            crate::cluster::claim(&*self.store, name, p, 1, None, topic.create_revision)
                .await
                .expect("claim")
                .expect("unclaimed partition");
        }
    }

    async fn object_count(&self) -> usize {
        let listed: Vec<_> = self.objects.list(None).try_collect().await.expect("list");
        listed.len()
    }
}

fn idempotent(
    count: i32,
    producer_id: i64,
    base_sequence: i32,
) -> Vec<(batch::BatchHeader, Bytes)> {
    let bytes = Bytes::from(batch::tests::sample_idempotent_batch(
        count,
        producer_id,
        0,
        base_sequence,
    ));
    vec![(batch::parse_header(&bytes).expect("header"), bytes)]
}

/// The base offset of each batch a read returned.
fn base_offsets(read: &ReadOutcome) -> Vec<i64> {
    read.batches
        .iter()
        .map(|b| batch::parse_header(b).expect("header").base_offset)
        .collect()
}

fn batches(count: i32, ts: i64) -> Vec<(batch::BatchHeader, Bytes)> {
    let bytes = Bytes::from(sample_batch(count, ts, 32));
    vec![(batch::parse_header(&bytes).expect("header"), bytes)]
}

#[tokio::test]
async fn one_object_per_flush_across_partitions() {
    let fx = Fixture::new().await;
    let log = fx.log(50);
    fx.topic(&log, "t", 4).await;
    let mut appends = Vec::new();
    for p in 0..4 {
        for _ in 0..3 {
            appends.push(log.append(TopicPartition::new("t", p), batches(2, 10), false));
        }
    }
    let outcomes = futures::future::join_all(appends).await;
    for per_partition in outcomes.chunks(3) {
        let mut bases: Vec<i64> = per_partition
            .iter()
            .map(|o| o.as_ref().expect("append").base_offset)
            .collect();
        bases.sort();
        assert_eq!(bases, vec![0, 2, 4], "contiguous offsets, no overlap");
    }
    assert_eq!(fx.object_count().await, 1, "one object for all partitions");
    assert_eq!(log.stats().objects_written.load(Ordering::Relaxed), 1);
    for p in 0..4 {
        let tp = TopicPartition::new("t", p);
        assert_eq!(log.offsets(&tp).await.expect("offsets"), (0, 6));
        let read = log.read(&tp, 3, 1 << 20, RU).await.expect("read");
        let firsts: Vec<i64> = read
            .batches
            .iter()
            .map(|b| batch::parse_header(b).expect("header").base_offset)
            .collect();
        assert_eq!(firsts, vec![2, 4], "starts with the batch holding offset 3");
        let records = read.records();
        assert_eq!(records.len(), 1, "one run");
        assert_eq!(records[0], read.batches.concat());
        assert_eq!(
            records[0].as_ptr(),
            read.batches[0].as_ptr(),
            "consecutive batches of one section go out as a slice of it, not a copy"
        );
        for b in &read.batches {
            let header = batch::parse_header(b).expect("header");
            batch::validate(&header, b).expect("stored batches stay valid");
        }
    }
    log.shutdown().await;
}

#[tokio::test]
async fn committed_data_survives_a_new_broker_process() {
    let fx = Fixture::new().await;
    let log = fx.log(1);
    fx.topic(&log, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    for i in 0..5 {
        let outcome = log
            .append(tp.clone(), batches(1, i), false)
            .await
            .expect("append");
        assert_eq!(outcome.base_offset, i);
    }
    log.shutdown().await;
    drop(log);

    // A fresh log over the same stores: nothing cached in memory.
    let log = fx.log(1);
    assert_eq!(log.offsets(&tp).await.expect("offsets"), (0, 5));
    let read = log.read(&tp, 0, 1 << 20, RU).await.expect("read");
    assert_eq!(read.batches.len(), 5);
    let runs = read.records();
    assert_eq!(runs.len(), 5, "five sections, five slices");
    assert_eq!(runs.concat(), read.batches.concat());
    for (run, batch) in runs.iter().zip(&read.batches) {
        assert_eq!(
            run.as_ptr(),
            batch.as_ptr(),
            "a slice of its section, not a copy"
        );
    }
    assert_eq!(log.stats().range_reads.load(Ordering::Relaxed), 5);
    let next = log
        .append(tp.clone(), batches(3, 9), false)
        .await
        .expect("append");
    assert_eq!(next.base_offset, 5);
    assert_eq!(log.offsets(&tp).await.expect("offsets"), (0, 8));
    log.shutdown().await;
}

/// A consumer's read of `tp` from `offset`: no leader epoch, at most 1 MiB.
fn read_of(tp: TopicPartition, offset: i64) -> PartitionRead {
    PartitionRead {
        tp,
        offset,
        leader_epoch: -1,
        max_bytes: 1 << 20,
    }
}

/// Reads of `t`'s four partitions from `offset`, their partitions loaded.
async fn loaded_reads(log: &Log, offset: i64) -> Vec<PartitionRead> {
    let reads: Vec<_> = (0..4)
        .map(|p| read_of(TopicPartition::new("t", p), offset))
        .collect();
    for read in &reads {
        log.offsets(&read.tp).await.expect("load the partition");
    }
    reads
}

#[tokio::test]
async fn a_fetchs_sections_of_one_object_are_read_with_one_get() {
    let fx = Fixture::new().await;
    let log = fx.log(50);
    fx.topic(&log, "t", 4).await;
    let appends = (0..4).map(|p| log.append(TopicPartition::new("t", p), batches(2, 10), false));
    for outcome in futures::future::join_all(appends).await {
        outcome.expect("append");
    }
    assert_eq!(fx.object_count().await, 1, "one object for all partitions");
    log.shutdown().await;
    drop(log);

    // A fresh broker: nothing of the object in memory.
    let log = fx.log(50);
    let reads = loaded_reads(&log, 1).await;
    log.prefetch(&reads, RU, 1 << 20).await;
    let stats = log.stats();
    assert_eq!(stats.prefetch_reads.load(Ordering::Relaxed), 1, "one GET");
    assert_eq!(stats.sections_prefetched.load(Ordering::Relaxed), 4);
    // Read again: all cached, nothing fetched.
    log.prefetch(&reads, RU, 1 << 20).await;
    assert_eq!(stats.prefetch_reads.load(Ordering::Relaxed), 1);
    for wanted in &reads {
        let read = log
            .read(&wanted.tp, wanted.offset, wanted.max_bytes, RU)
            .await
            .expect("read");
        assert_eq!(read.batches.len(), 1);
    }
    assert_eq!(stats.range_reads.load(Ordering::Relaxed), 0);
    assert_eq!(stats.read_cache_hits.load(Ordering::Relaxed), 4);

    // At the end of the log, or past what the fetch may take, nothing is wanted.
    let fresh = fx.log(50);
    let at_end = loaded_reads(&fresh, 2).await;
    fresh.prefetch(&at_end, RU, 1 << 20).await;
    fresh.prefetch(&reads, RU, 0).await;
    assert_eq!(fresh.stats().prefetch_reads.load(Ordering::Relaxed), 0);
    // A fetch of one partition reads nothing ahead; in a fetch of two, a section alone in its
    // run (the other partition is at its end) is read on its own, as its read would.
    fresh.prefetch(&reads[..1], RU, 1 << 20).await;
    assert_eq!(fresh.stats().range_reads.load(Ordering::Relaxed), 0);
    let one_wanted = [reads[0].clone(), at_end[1].clone()];
    fresh.prefetch(&one_wanted, RU, 1 << 20).await;
    assert_eq!(fresh.stats().prefetch_reads.load(Ordering::Relaxed), 0);
    assert_eq!(fresh.stats().range_reads.load(Ordering::Relaxed), 1);
    fresh
        .read(&reads[0].tp, 1, 1 << 20, RU)
        .await
        .expect("read");
    assert_eq!(fresh.stats().range_reads.load(Ordering::Relaxed), 1);
    assert_eq!(fresh.stats().read_cache_hits.load(Ordering::Relaxed), 1);
    log.shutdown().await;
    fresh.shutdown().await;
}

#[tokio::test]
async fn read_bounds_and_unknown_partitions() {
    let fx = Fixture::new().await;
    let log = fx.log(1);
    fx.topic(&log, "t", 2).await;
    let tp = TopicPartition::new("t", 1);
    log.append(tp.clone(), batches(4, 1), false)
        .await
        .expect("append");
    assert!(log
        .read(&tp, 4, 100, RU)
        .await
        .expect("at hwm")
        .batches
        .is_empty());
    assert!(matches!(
        log.read(&tp, 5, 100, RU).await,
        Err(LogError::OffsetOutOfRange {
            high_watermark: 4,
            ..
        })
    ));
    assert!(matches!(
        log.read(&TopicPartition::new("t", 2), 0, 100, RU).await,
        Err(LogError::UnknownTopicOrPartition(_))
    ));
    assert!(matches!(
        log.append(TopicPartition::new("nope", 0), batches(1, 1), false)
            .await,
        Err(LogError::UnknownTopicOrPartition(_))
    ));
    // max_bytes smaller than one batch still returns that batch (KIP-74).
    assert_eq!(
        log.read(&tp, 0, 1, RU).await.expect("read").batches.len(),
        1
    );
    // ... unless the batch must fit (a fetch's later partitions).
    let view = log.read_view(&tp, (0, -1), RU, false).await.expect("view");
    let within = log
        .read_from(&view, &tp, 0, (1, false), RU)
        .await
        .expect("read within");
    assert!(within.batches.is_empty());
    assert!(within.high_watermark > 0);
    log.shutdown().await;
}

#[tokio::test]
async fn idle_log_writes_nothing_and_shutdown_flushes() {
    let fx = Fixture::new().await;
    let log = fx.log(60_000);
    fx.topic(&log, "t", 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(fx.object_count().await, 0);
    let pending = log
        .enqueue(TopicPartition::new("t", 0), batches(1, 1), false)
        .await
        .expect("enqueue");
    log.shutdown().await;
    assert_eq!(
        pending
            .await
            .expect("reply")
            .expect("committed")
            .base_offset,
        0
    );
    assert_eq!(fx.object_count().await, 1);
}

#[tokio::test]
async fn log_append_time_and_timestamp_lookup() {
    let fx = Fixture::new().await;
    let log = fx.log(1);
    fx.topic(&log, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    log.append(tp.clone(), batches(2, 100), false)
        .await
        .expect("append");
    log.append(tp.clone(), batches(2, 300), false)
        .await
        .expect("append");
    let stamped = log
        .append(tp.clone(), batches(1, 5), true)
        .await
        .expect("append");
    assert_eq!(stamped.log_append_time_ms, Some(fx.clock.now_ms()));
    let found = log
        .batch_at_timestamp(&tp, 200)
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(batch::parse_header(&found).expect("header").base_offset, 2);
    assert!(log
        .batch_at_timestamp(&tp, i64::MAX)
        .await
        .expect("lookup")
        .is_none());
    log.shutdown().await;
}

#[tokio::test]
async fn altered_configs_reach_cached_partitions_and_sizes_count_bytes() {
    let fx = Fixture::new().await;
    let log = fx.log(1);
    fx.topic(&log, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    log.append(tp.clone(), batches(3, 1), false)
        .await
        .expect("append");
    let stored: u64 = batches(3, 1).iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(log.size_bytes(&tp).await.expect("size"), stored);
    assert!(log.led_topic(&tp).await.expect("led").configs.is_empty());

    // Another broker alters the topic: this one sees it only when its view is refreshed.
    let altered = log
        .catalog()
        .update_configs("t", |_| {
            Ok([("retention.ms".to_owned(), "1".to_owned())].into())
        })
        .await
        .expect("alter");
    assert!(log.led_topic(&tp).await.expect("led").configs.is_empty());
    log.refresh_topics(|name| (name == "t").then_some(&altered));
    let cached = log.led_topic(&tp).await.expect("led");
    assert_eq!(cached.configs["retention.ms"], "1");

    // An older record (a view read before the alter) never undoes it.
    let mut older = altered.clone();
    older.mod_revision -= 1;
    older.record.configs.clear();
    log.refresh_topic(&older);
    assert_eq!(log.led_topic(&tp).await.expect("led").configs.len(), 1);
    log.shutdown().await;
}
