use super::*;
use crate::batch::{self, tests::sample_batch};
use crate::clock::ManualClock;
use crate::metadata::embedded::EmbeddedStore;
use crate::metadata::{Txn, TxnOp};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::memory::InMemory;

mod faults;
mod flushes;
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
        assert_eq!(records, read.batches.concat());
        assert_eq!(
            records.as_ptr(),
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
    assert_eq!(
        read.records(),
        read.batches.concat(),
        "five sections joined"
    );
    assert_eq!(log.stats().range_reads.load(Ordering::Relaxed), 5);
    let next = log
        .append(tp.clone(), batches(3, 9), false)
        .await
        .expect("append");
    assert_eq!(next.base_offset, 5);
    assert_eq!(log.offsets(&tp).await.expect("offsets"), (0, 8));
    log.shutdown().await;
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
    let within = log.read_within(&tp, 0, 1, RU).await.expect("read within");
    assert!(within.batches.is_empty());
    assert!(within.high_watermark > 0);
    log.shutdown().await;
}

#[tokio::test]
async fn a_commit_after_the_partition_changed_is_fenced() {
    let fx = Fixture::new().await;
    let log = fx.log(1);
    fx.topic(&log, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    log.append(tp.clone(), batches(1, 1), false)
        .await
        .expect("append");
    // Another leader takes over: it bumps the epoch (and appends) behind this broker's back.
    let state = PartitionState {
        leader: 2,
        leader_epoch: 1,
        log_start_offset: 0,
        next_offset: 1,
    };
    fx.store
        .txn(Txn::when(vec![]).and_then(vec![TxnOp::put(
            keys::partition("t", 0),
            keys::encode(&state),
        )]))
        .await
        .expect("takeover");
    let fenced = log.append(tp.clone(), batches(1, 1), false).await;
    assert!(matches!(fenced, Err(LogError::Fenced(_))), "{fenced:?}");
    // Nothing the fenced append wrote is visible, and this broker now knows it is not leader.
    let stored = fx
        .store
        .get(&keys::partition("t", 0))
        .await
        .expect("get")
        .expect("state");
    assert_eq!(
        keys::decode::<PartitionState>(&stored.key, &stored.value),
        Ok(state)
    );
    assert!(matches!(
        log.offsets(&tp).await,
        Err(LogError::NotLeader(_))
    ));
    assert!(matches!(
        log.append(tp.clone(), batches(1, 1), false).await,
        Err(LogError::NotLeader(_))
    ));
    log.shutdown().await;
}

#[tokio::test]
async fn a_fenced_partition_does_not_fail_its_flush_mates() {
    let fx = Fixture::new().await;
    let log = fx.log(100);
    fx.topic(&log, "t", 2).await;
    let (p0, p1) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
    log.append(p0.clone(), batches(1, 1), false)
        .await
        .expect("append");
    log.append(p1.clone(), batches(1, 1), false)
        .await
        .expect("append");
    let first = log
        .enqueue(p0.clone(), batches(1, 1), false)
        .await
        .expect("enqueue");
    let second = log
        .enqueue(p1.clone(), batches(1, 1), false)
        .await
        .expect("enqueue");
    // Partition 0 changes hands before the flush commits.
    let state = PartitionState {
        leader: 2,
        leader_epoch: 1,
        log_start_offset: 0,
        next_offset: 1,
    };
    fx.store
        .txn(Txn::when(vec![]).and_then(vec![TxnOp::put(
            keys::partition("t", 0),
            keys::encode(&state),
        )]))
        .await
        .expect("takeover");
    assert!(matches!(
        first.await.expect("reply"),
        Err(LogError::Fenced(_))
    ));
    assert_eq!(
        second.await.expect("reply").expect("committed").base_offset,
        1
    );
    assert_eq!(log.offsets(&p1).await.expect("offsets"), (0, 2));
    log.shutdown().await;
}

#[tokio::test]
async fn data_for_a_deleted_topic_is_never_committed_into_its_successor() {
    let fx = Fixture::new().await;
    let log = fx.log(200);
    fx.topic(&log, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    let recreate = || fx.topic(&log, "t", 1);
    // As DeleteTopics does: delete, then forget, before the flush; then re-create.
    let pending = log
        .enqueue(tp.clone(), batches(1, 1), false)
        .await
        .expect("enqueue");
    log.catalog().delete("t").await.expect("delete");
    log.forget_topic("t");
    recreate().await;
    let outcome = pending.await.expect("reply");
    assert!(
        matches!(outcome, Err(LogError::UnknownTopicOrPartition(_))),
        "{outcome:?}"
    );
    assert_eq!(log.offsets(&tp).await.expect("offsets"), (0, 0));
    // The same when the flusher still has the old incarnation cached (no forget).
    let pending = log
        .enqueue(tp.clone(), batches(1, 1), false)
        .await
        .expect("enqueue");
    log.catalog().delete("t").await.expect("delete");
    recreate().await;
    assert!(pending.await.expect("reply").is_err());
    log.forget_topic("t");
    assert_eq!(log.offsets(&tp).await.expect("offsets"), (0, 0));
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
async fn a_producer_outrunning_storage_waits_instead_of_buffering_more() {
    use object_store::throttle::{ThrottleConfig, ThrottledStore};
    let fx = Fixture::new().await;
    let one = batches(1, 1);
    let append_bytes = one[0].1.len();
    // Room for exactly one append; every PUT takes 300 ms.
    let slow = ThrottledStore::new(
        InMemory::new(),
        ThrottleConfig {
            wait_put_per_call: std::time::Duration::from_millis(300),
            ..ThrottleConfig::default()
        },
    );
    let log = Log::open(
        fx.store.clone(),
        Arc::new(slow),
        fx.clock.clone(),
        LogConfig {
            flush_linger_ms: 1,
            flush_max_bytes: append_bytes,
            buffer_max_bytes: append_bytes,
            ..LogConfig::default()
        },
    );
    fx.topic(&log, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    let first = log.enqueue(tp.clone(), one, false).await.expect("enqueue");
    // The buffer is full until the first append is committed: the second must wait.
    let second = log.enqueue(tp.clone(), batches(1, 1), false);
    tokio::pin!(second);
    assert!(
        futures::poll!(second.as_mut()).is_pending(),
        "a full produce buffer must hold the next append back"
    );
    assert_eq!(
        first.await.expect("reply").expect("committed").base_offset,
        0
    );
    let second = second.await.expect("enqueued once the buffer drained");
    assert_eq!(
        second.await.expect("reply").expect("committed").base_offset,
        1
    );
    let bigger = Bytes::from(sample_batch(1, 1, 64));
    let header = batch::parse_header(&bigger).expect("header");
    assert!(matches!(
        log.enqueue(tp, vec![(header, bigger)], false).await,
        Err(LogError::TooLarge { .. })
    ));
    log.shutdown().await;
}

#[tokio::test]
async fn the_index_rolls_up_into_objects_and_stays_bounded_in_the_store() {
    let fx = Fixture::new().await;
    let fanout = 3;
    let config = LogConfig {
        flush_linger_ms: 0,
        index_rollup_fanout: fanout,
        ..LogConfig::default()
    };
    let log = Log::open(
        fx.store.clone(),
        fx.objects.clone(),
        fx.clock.clone(),
        config.clone(),
    );
    fx.topic(&log, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    // One flush per append: 60 sections, 2 records each, timestamps 1000 + 10 * i.
    let flushes = 60;
    for i in 0..flushes {
        let outcome = log
            .append(tp.clone(), batches(2, 1_000 + 10 * i), false)
            .await
            .expect("append");
        assert_eq!(outcome.base_offset, 2 * i);
    }
    let tail = fx
        .store
        .range_prefix(&keys::index_prefix("t", 0), 0)
        .await
        .expect("range");
    let rollups = fx
        .store
        .range_prefix(&keys::rollup_prefix("t", 0), 0)
        .await
        .expect("range");
    assert!(tail.len() <= 2 * fanout, "tail of {} keys", tail.len());
    assert!(rollups.len() <= 2 * fanout, "{} rollup keys", rollups.len());
    assert!(!rollups.is_empty());
    let depth_two = rollups.iter().any(|kv| {
        let r: keys::RollupEntry = keys::decode(&kv.key, &kv.value).expect("rollup");
        r.last_offset - r.base_offset + 1 > (2 * fanout) as i64
    });
    assert!(
        depth_two,
        "rollups of rollups should exist after {flushes} flushes"
    );
    log.shutdown().await;

    // A fresh broker reads every offset back through the tree, from the store and the bucket.
    let log = Log::open(
        fx.store.clone(),
        fx.objects.clone(),
        fx.clock.clone(),
        config,
    );
    assert_eq!(log.offsets(&tp).await.expect("offsets"), (0, 2 * flushes));
    for offset in 0..2 * flushes {
        let read = log.read(&tp, offset, 1, RU).await.expect("read");
        let header = batch::parse_header(&read.batches[0]).expect("header");
        assert_eq!(header.base_offset, offset - offset % 2, "offset {offset}");
    }
    let all = log.read(&tp, 0, 1 << 20, RU).await.expect("read all");
    assert_eq!(all.batches.len() as i64, flushes);
    let at = log
        .batch_at_timestamp(&tp, 1_000 + 10 * 17 - 5)
        .await
        .expect("ts")
        .expect("found");
    assert_eq!(batch::parse_header(&at).expect("header").base_offset, 34);
    let max = log
        .batch_with_max_timestamp(&tp)
        .await
        .expect("max")
        .expect("found");
    assert_eq!(
        batch::parse_header(&max).expect("header").base_offset,
        2 * (flushes - 1)
    );
    log.shutdown().await;
}

#[tokio::test]
async fn idempotent_retries_get_the_first_offset_and_are_stored_once() {
    let fx = Fixture::new().await;
    let log = fx.log(20);
    fx.topic(&log, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    let first = log.append(tp.clone(), idempotent(3, 7, 0), false).await;
    assert_eq!(first.expect("append").base_offset, 0);
    // A retry of a committed batch.
    let retry = log.append(tp.clone(), idempotent(3, 7, 0), false).await;
    assert_eq!(retry.expect("retry").base_offset, 0);
    // A batch and its retry in the same flush: both answered with one offset.
    let a = log
        .enqueue(tp.clone(), idempotent(2, 7, 3), false)
        .await
        .expect("enqueue");
    let b = log
        .enqueue(tp.clone(), idempotent(2, 7, 3), false)
        .await
        .expect("enqueue");
    assert_eq!(a.await.expect("reply").expect("append").base_offset, 3);
    assert_eq!(b.await.expect("reply").expect("echo").base_offset, 3);
    // Gaps and replays older than the last five batches are refused.
    assert!(matches!(
        log.append(tp.clone(), idempotent(1, 7, 9), false).await,
        Err(LogError::OutOfOrderSequence(_))
    ));
    // Another producer and plain batches are independent.
    assert_eq!(
        log.append(tp.clone(), idempotent(1, 8, 40), false)
            .await
            .expect("other producer")
            .base_offset,
        5
    );
    assert_eq!(
        log.append(tp.clone(), batches(1, 1), false)
            .await
            .expect("plain")
            .base_offset,
        6
    );
    assert_eq!(log.offsets(&tp).await.expect("offsets"), (0, 7));
    log.shutdown().await;

    // A new leader (another process) knows what its predecessor committed.
    let log = fx.log(20);
    let retry = log.append(tp.clone(), idempotent(2, 7, 3), false).await;
    assert_eq!(retry.expect("retry after restart").base_offset, 3);
    assert_eq!(
        log.append(tp.clone(), idempotent(1, 7, 5), false)
            .await
            .expect("next in sequence")
            .base_offset,
        7
    );
    assert_eq!(log.offsets(&tp).await.expect("offsets"), (0, 8));
    log.shutdown().await;
    // The producer state lives with the topic and goes with it.
    assert!(fx
        .store
        .get(&keys::producers("t", 0))
        .await
        .expect("get")
        .is_some());
    log.catalog().delete("t").await.expect("delete");
    assert!(fx
        .store
        .range_prefix(&keys::topic_producers_prefix("t"), 0)
        .await
        .expect("range")
        .is_empty());
}

#[tokio::test]
async fn a_new_producer_whose_batch_failed_must_resend_it_first() {
    let fx = Fixture::new().await;
    let log = fx.log(50);
    fx.topic(&log, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    let first = log
        .enqueue(tp.clone(), idempotent(2, 7, 0), false)
        .await
        .expect("enqueue");
    // The partition state changes under the flush (same leader): its commit is fenced.
    let stored = fx
        .store
        .get(&keys::partition("t", 0))
        .await
        .expect("get")
        .expect("state");
    fx.store
        .txn(Txn::when(vec![]).and_then(vec![TxnOp::put(stored.key.clone(), stored.value.clone())]))
        .await
        .expect("touch");
    assert!(matches!(
        first.await.expect("reply"),
        Err(LogError::Fenced(_))
    ));
    // The batch after the failed one may not overtake it; the resent one is stored first.
    assert!(matches!(
        log.append(tp.clone(), idempotent(2, 7, 2), false).await,
        Err(LogError::AwaitingEarlierBatch(_))
    ));
    assert_eq!(
        log.append(tp.clone(), idempotent(2, 7, 0), false)
            .await
            .expect("resent")
            .base_offset,
        0
    );
    assert_eq!(
        log.append(tp.clone(), idempotent(2, 7, 2), false)
            .await
            .expect("next")
            .base_offset,
        2
    );
    assert!(log.inner.awaited.is_empty());
    log.shutdown().await;
}

#[tokio::test]
async fn a_batch_refused_while_leadership_moves_is_not_overtaken() {
    let fx = Fixture::new().await;
    let log = fx.log(1);
    fx.topic(&log, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    let put_state = |leader: i32, leader_epoch: i32, next_offset: i64| {
        let state = PartitionState {
            leader,
            leader_epoch,
            log_start_offset: 0,
            next_offset,
        };
        let store = fx.store.clone();
        async move {
            store
                .txn(Txn::when(vec![]).and_then(vec![TxnOp::put(
                    keys::partition("t", 0),
                    keys::encode(&state),
                )]))
                .await
                .expect("put state");
        }
    };
    // Node 2 leads: a new producer's first batch is refused before buffering.
    put_state(2, 1, 0).await;
    assert!(matches!(
        log.append(tp.clone(), idempotent(2, 7, 0), false).await,
        Err(LogError::NotLeader(_))
    ));
    // Leadership comes back here (the session lapsed meanwhile: the cache is dropped, the
    // refusal is not) before the client resent it; its next batch arrives first.
    put_state(1, 2, 0).await;
    log.forget_all();
    assert!(matches!(
        log.append(tp.clone(), idempotent(2, 7, 2), false).await,
        Err(LogError::AwaitingEarlierBatch(_))
    ));
    assert_eq!(
        log.append(tp.clone(), idempotent(2, 7, 0), false)
            .await
            .expect("resent")
            .base_offset,
        0
    );
    assert_eq!(
        log.append(tp.clone(), idempotent(2, 7, 2), false)
            .await
            .expect("next")
            .base_offset,
        2
    );
    assert!(log.inner.awaited.is_empty());
    // A refusal long past (the client gave the batch up) holds nothing back.
    put_state(2, 3, 4).await;
    log.forget_all();
    assert!(log
        .append(tp.clone(), idempotent(1, 8, 0), false)
        .await
        .is_err());
    put_state(1, 4, 4).await;
    log.forget_all();
    fx.clock.advance_ms(crate::producers::AWAITED_FOR_MS);
    assert_eq!(
        log.append(tp.clone(), idempotent(1, 8, 5), false)
            .await
            .expect("after the wait")
            .base_offset,
        4
    );
    log.shutdown().await;
}

#[tokio::test]
async fn a_flusher_that_dies_is_reported_not_silent() {
    let fx = Fixture::new().await;
    let log = Log::open(
        fx.store.clone(),
        Arc::new(InjectedWrites(InMemory::new(), WriteFault::Panic)),
        fx.clock.clone(),
        LogConfig {
            flush_linger_ms: 1,
            ..LogConfig::default()
        },
    );
    fx.topic(&log, "doomed", 1).await;
    let appending = {
        let log = log.clone();
        tokio::spawn(async move {
            log.append(TopicPartition::new("doomed", 0), batches(1, 1), false)
                .await
        })
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), log.flusher_failed())
        .await
        .expect("the flusher's death is reported");
    appending.abort();
}

#[tokio::test]
async fn a_flusher_stopped_by_shutdown_is_no_failure() {
    let fx = Fixture::new().await;
    let log = fx.log(1);
    log.shutdown().await;
    let reported =
        tokio::time::timeout(std::time::Duration::from_millis(100), log.flusher_failed()).await;
    assert!(reported.is_err());
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

#[tokio::test]
async fn delete_records_moves_the_log_start_and_never_fences_the_leader() {
    let fx = Fixture::new().await;
    let log = fx.log(1);
    fx.topic(&log, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    for _ in 0..3 {
        log.append(tp.clone(), batches(2, 1), false)
            .await
            .expect("append");
    }
    assert_eq!(log.offsets(&tp).await.expect("offsets"), (0, 6));
    assert_eq!(log.delete_records(&tp, 3).await.expect("delete"), 3);
    assert_eq!(log.offsets(&tp).await.expect("offsets"), (3, 6));
    assert!(matches!(
        log.read(&tp, 2, 1 << 20, RU).await,
        Err(LogError::OffsetOutOfRange {
            log_start_offset: 3,
            ..
        })
    ));
    // The batch holding offset 3 (2..=3) is returned whole, as Kafka does.
    let read = log
        .read(&tp, 3, 1 << 20, RU)
        .await
        .expect("read from the new start");
    assert_eq!(read.log_start_offset, 3);
    assert_eq!(read.batches.len(), 2);
    // Lower offsets change nothing; beyond the high watermark is out of range.
    assert_eq!(log.delete_records(&tp, 1).await.expect("no-op"), 3);
    assert!(matches!(
        log.delete_records(&tp, 7).await,
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // Appends and DeleteRecords interleaved: neither fences the other.
    let appending = {
        let log = log.clone();
        let tp = tp.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                log.append(tp.clone(), batches(1, 1), false)
                    .await
                    .expect("append beside DeleteRecords");
            }
        })
    };
    for offset in 4..20 {
        // Out of range while the appends have not reached it yet; never fenced.
        let low = log.delete_records(&tp, offset).await;
        assert!(
            matches!(low, Ok(o) if o >= 4) || matches!(low, Err(LogError::OffsetOutOfRange { .. })),
            "{low:?}"
        );
        tokio::task::yield_now().await;
    }
    appending.await.expect("appends");
    assert_eq!(
        log.delete_records(&tp, HIGH_WATERMARK)
            .await
            .expect("to the end"),
        26
    );
    log.shutdown().await;
    // Durable: a new leader (a fresh log on the same stores) starts from it.
    let reopened = fx.log(1);
    assert_eq!(reopened.offsets(&tp).await.expect("offsets"), (26, 26));
    reopened.shutdown().await;
}

#[tokio::test]
async fn an_upload_slower_than_the_commit_timeout_is_never_committed() {
    let fx = Fixture::new().await;
    let log = Log::open(
        fx.store.clone(),
        Arc::new(InjectedWrites(
            InMemory::new(),
            WriteFault::Pause(fx.clock.clone(), 61_000),
        )),
        fx.clock.clone(),
        LogConfig {
            flush_linger_ms: 1,
            object_commit_timeout_ms: 60_000,
            ..LogConfig::default()
        },
    );
    fx.topic(&log, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    let refused = log.append(tp.clone(), batches(1, 1), false).await;
    assert!(
        matches!(refused, Err(LogError::Unavailable(ref m)) if m.contains("not committed within")),
        "{refused:?}"
    );
    assert_eq!(
        log.offsets(&tp).await.expect("offsets"),
        (0, 0),
        "nothing committed"
    );
    log.shutdown().await;
}
