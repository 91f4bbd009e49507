//! Reads of a partition another broker leads (fetch from follower, `replicas`).

use super::*;

fn replica(fx: &Fixture, node_id: i32, views_max: usize) -> Log {
    Log::open(
        fx.store.clone(),
        fx.objects.clone(),
        fx.clock.clone(),
        LogConfig {
            node_id,
            flush_linger_ms: 10,
            replica_views_max: views_max,
            ..LogConfig::default()
        },
    )
}

/// Node 2 over a metadata store that counts its requests.
fn metered_replica(fx: &Fixture) -> (Log, Arc<crate::metadata::metered::MetadataCounts>) {
    metered_replica_of(fx, crate::log::REPLICA_VIEWS_MAX)
}

/// [`metered_replica`] keeping at most `views_max` views.
fn metered_replica_of(
    fx: &Fixture,
    views_max: usize,
) -> (Log, Arc<crate::metadata::metered::MetadataCounts>) {
    let metered = Arc::new(crate::metadata::metered::MeteredMetadata::new(
        fx.store.clone(),
    ));
    let counts = metered.counts();
    let log = Log::open(
        metered,
        fx.objects.clone(),
        fx.clock.clone(),
        LogConfig {
            node_id: 2,
            replica_views_max: views_max,
            ..LogConfig::default()
        },
    );
    (log, counts)
}

/// A pass's read of `tp` from `offset` (no leader epoch), after its views were prepared.
async fn prepared(log: &Log, tp: &TopicPartition, offset: i64) -> ReadView {
    log.prepared_read_view(tp, (offset, -1), RU)
        .await
        .expect("view")
}

/// Lets the replica's topic watch take in what the store just sent it (the tests run on one
/// thread: the watch's task runs while this one yields).
async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// The leader commits a batch of two records, and the replica's watch hears of it.
async fn commit_two(leader: &Log, tp: &TopicPartition) {
    leader
        .append(tp.clone(), batches(2, 10), false)
        .await
        .expect("append");
    settle().await;
}

/// Node 1 leading partition `t-0`, with `appends` batches of `records` each committed.
async fn led(fx: &Fixture, appends: usize, records: i32) -> (Log, TopicPartition) {
    let leader = fx.log(10);
    fx.topic(&leader, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    for _ in 0..appends {
        leader
            .append(tp.clone(), batches(records, 10), false)
            .await
            .expect("append");
    }
    (leader, tp)
}

#[tokio::test]
async fn another_broker_serves_a_consumer_what_the_leader_committed() {
    let fx = Fixture::new().await;
    let (leader, tp) = led(&fx, 2, 3).await;
    let other = replica(&fx, 2, 16);
    assert!(
        matches!(
            other.read_view(&tp, (0, -1), RU, false).await,
            Err(LogError::NotLeader(_))
        ),
        "only the leader serves reads that are not a consumer's Fetch v11+"
    );
    let view = other
        .read_view(&tp, (0, -1), RU, true)
        .await
        .expect("replica view");
    assert!(!view.led_here());
    assert_eq!(view.stable_offsets(), (0, 6, 6));
    let read = other
        .read_from(&view, &tp, 1, (1 << 20, true), RU)
        .await
        .expect("read");
    let from_leader = leader.read(&tp, 1, 1 << 20, RU).await.expect("read");
    assert_eq!(base_offsets(&read), vec![0, 3]);
    assert_eq!(
        read.batches, from_leader.batches,
        "the same bytes as the leader's"
    );
    assert_eq!(read.high_watermark, 6);
    assert_eq!(other.stats().replica_reads.load(Ordering::Relaxed), 1);
    assert_eq!(other.replica_views(), 1);
}

#[tokio::test]
async fn a_prepared_pass_reads_its_views_as_they_are_unless_it_cannot() {
    let fx = Fixture::new().await;
    let (leader, tp) = led(&fx, 1, 2).await;
    let other = replica(&fx, 2, 16);
    // As the controller tells it: the partition is led elsewhere.
    let mut led = leadership::LedPartitions::default();
    led.add_topic("t", 1);
    other.publish_leadership(led);
    other.read_view(&tp, (2, -1), RU, true).await.expect("view");
    commit_two(&leader, &tp).await;
    let loads = || other.stats().replica_view_loads.load(Ordering::Relaxed);
    assert_eq!(loads(), 1);

    // Due, and moved: a pass that prepared its views does not reload it on its own...
    fx.clock.advance_ms(REPLICA_VIEW_REFRESH_MS as i64);
    let view = prepared(&other, &tp, 2).await;
    assert_eq!(view.stable_offsets().2, 2, "read as it is");
    assert_eq!(loads(), 1);
    // ...but a read past its end, or naming a newer epoch, cannot do without the store.
    let view = prepared(&other, &tp, 3).await;
    assert_eq!(view.stable_offsets().2, 4, "past the end: checked");
    assert_eq!(loads(), 2);
    // The next pass's preparation reloads what is due.
    commit_two(&leader, &tp).await;
    fx.clock.advance_ms(REPLICA_VIEW_REFRESH_MS as i64);
    other
        .prepare_replica_views(&[read_of(tp.clone(), 4)], RU)
        .await;
    assert_eq!(loads(), 3);
    let view = prepared(&other, &tp, 4).await;
    assert_eq!(view.stable_offsets().2, 6);
    // A partition not known to be led elsewhere is not prepared: its read checks it as due.
    other.publish_leadership(leadership::LedPartitions::default());
    commit_two(&leader, &tp).await;
    fx.clock.advance_ms(REPLICA_VIEW_REFRESH_MS as i64);
    let view = prepared(&other, &tp, 6).await;
    assert_eq!(view.stable_offsets().2, 8, "at the end and due: reloaded");
    assert_eq!(loads(), 4);
    leader.shutdown().await;
}

#[tokio::test]
async fn a_replica_view_at_the_end_of_the_log_catches_up_after_the_refresh_interval() {
    let fx = Fixture::new().await;
    let (leader, tp) = led(&fx, 1, 2).await;
    let other = replica(&fx, 2, 16);
    let view = other.read_view(&tp, (2, -1), RU, true).await.expect("view");
    assert_eq!(view.stable_offsets().2, 2);
    commit_two(&leader, &tp).await;
    let loads = || other.stats().replica_view_loads.load(Ordering::Relaxed);
    assert_eq!(loads(), 1);

    // Below the end, and at the end within the refresh interval: the view as it was.
    let view = other.read_view(&tp, (0, -1), RU, true).await.expect("view");
    assert_eq!(view.stable_offsets().2, 2, "below the end: not checked");
    let view = other.read_view(&tp, (2, -1), RU, true).await.expect("view");
    assert_eq!(
        view.stable_offsets().2,
        2,
        "at the end, within the interval"
    );
    let read = other
        .read_from(&view, &tp, 2, (1 << 20, true), RU)
        .await
        .expect("read");
    assert!(
        read.batches.is_empty(),
        "nothing past the view's high watermark"
    );

    // At the end once the interval passed: checked, and reloaded since the state moved.
    fx.clock.advance_ms(REPLICA_VIEW_REFRESH_MS as i64);
    let view = other.read_view(&tp, (2, -1), RU, true).await.expect("view");
    assert_eq!(view.stable_offsets().2, 4);
    assert_eq!(loads(), 2);
    let read = other
        .read_from(&view, &tp, 2, (1 << 20, true), RU)
        .await
        .expect("read");
    assert_eq!(base_offsets(&read), vec![2]);

    // Due again with nothing new: the topic's watch says so, no reload.
    fx.clock.advance_ms(REPLICA_VIEW_REFRESH_MS as i64);
    other.read_view(&tp, (4, -1), RU, true).await.expect("view");
    assert_eq!(loads(), 2, "nothing had moved");

    // Past the view's end (the consumer saw more elsewhere): checked at once.
    commit_two(&leader, &tp).await;
    let view = other.read_view(&tp, (6, -1), RU, true).await.expect("view");
    assert_eq!(view.stable_offsets().2, 6);
    assert_eq!(loads(), 3);
    // Past the store's end too: out of range, as from the leader.
    let view = other.read_view(&tp, (9, -1), RU, true).await.expect("view");
    assert!(matches!(
        other.read_from(&view, &tp, 9, (1 << 20, true), RU).await,
        Err(LogError::OffsetOutOfRange {
            high_watermark: 6,
            ..
        })
    ));
}

#[tokio::test]
async fn a_newer_leader_epoch_than_the_view_knows_checks_it_at_once() {
    let fx = Fixture::new().await;
    let (leader, tp) = led(&fx, 1, 1).await;
    let other = replica(&fx, 2, 16);
    let epoch = other
        .read_view(&tp, (0, -1), RU, true)
        .await
        .expect("view")
        .leader_epoch();
    leader.release(&tp).await.expect("release");
    let topic = leader
        .catalog()
        .get("t")
        .await
        .expect("get")
        .expect("topic");
    let kv = fx
        .store
        .get(&keys::partition("t", 0))
        .await
        .expect("get")
        .expect("state");
    let state: PartitionState = keys::decode(&kv.key, &kv.value).expect("decode");
    crate::cluster::claim(
        &*fx.store,
        "t",
        0,
        3,
        Some((&state, kv.mod_revision)),
        topic.create_revision,
    )
    .await
    .expect("claim")
    .expect("claimed");
    let view = other
        .read_view(&tp, (0, epoch + 1), RU, true)
        .await
        .expect("view");
    assert_eq!(
        view.leader_epoch(),
        epoch + 1,
        "reloaded for the newer epoch"
    );
}

#[tokio::test]
async fn replica_views_are_bounded_and_forgotten_with_their_topic() {
    let fx = Fixture::new().await;
    let leader = fx.log(10);
    fx.topic(&leader, "t", 3).await;
    let other = replica(&fx, 2, 2);
    let tps: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("t", p)).collect();
    let loads = || other.stats().replica_view_loads.load(Ordering::Relaxed);
    let read = |p: usize| other.read_view(&tps[p], (0, -1), RU, true);
    read(0).await.expect("view");
    fx.clock.advance_ms(1);
    read(1).await.expect("view");
    assert_eq!(other.replica_views(), 2);

    // A consumer reading more partitions than there may be views: the views in use stay, the
    // extra partition is loaded for each read rather than evicting one the next pass needs.
    fx.clock.advance_ms(1);
    for _ in 0..3 {
        read(2).await.expect("view");
    }
    assert_eq!(loads(), 5, "the extra partition loaded per read");
    let before = loads();
    read(0).await.expect("view");
    read(1).await.expect("view");
    assert_eq!(loads(), before, "the views in use kept");

    // Once one has not been read for an interval, it makes room.
    fx.clock.advance_ms(REPLICA_VIEW_REFRESH_MS as i64);
    read(1).await.expect("view");
    read(2).await.expect("view");
    assert_eq!(loads(), before + 1);
    read(2).await.expect("view");
    read(1).await.expect("view");
    assert_eq!(loads(), before + 1, "t-2 kept, t-1 too");
    read(0).await.expect("view");
    assert_eq!(loads(), before + 2, "t-0 went; read now, it is not kept");
    other.forget_topic("t");
    assert_eq!(other.replica_views(), 0);
    assert_eq!(other.replica_view_watches(), 0);
}

#[tokio::test]
async fn a_read_committed_consumer_at_the_lso_sees_a_transaction_end_after_the_refresh_interval() {
    use super::transactions::{marker, request_marker, transactional};
    use crate::producers::AbortedTxn;
    let fx = Fixture::new().await;
    let leader = fx.log(10);
    fx.topic(&leader, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    const RC: Isolation = Isolation::ReadCommitted;
    leader
        .append(tp.clone(), transactional(2, 7, 0, 0), false)
        .await
        .expect("txn");
    leader
        .append(tp.clone(), batches(1, 5), false)
        .await
        .expect("plain");
    let other = replica(&fx, 2, 16);
    let view = other.read_view(&tp, (0, -1), RC, true).await.expect("view");
    assert_eq!(
        view.stable_offsets(),
        (0, 0, 3),
        "the open transaction holds the LSO"
    );
    let read = other
        .read_from(&view, &tp, 0, (1 << 20, true), RC)
        .await
        .expect("read");
    assert!(read.batches.is_empty());

    let abort = marker(7, 0, false);
    let key = request_marker(&fx, &tp, "seven", abort).await;
    leader
        .append_marker(tp.clone(), abort, key)
        .await
        .expect("marker");
    // Below the high watermark but at the LSO: the end of what read_committed shows, so the
    // view is checked once the interval has passed.
    let view = other.read_view(&tp, (0, -1), RC, true).await.expect("view");
    assert_eq!(view.stable_offsets().1, 0, "within the interval");
    fx.clock.advance_ms(REPLICA_VIEW_REFRESH_MS as i64);
    let view = other.read_view(&tp, (0, -1), RC, true).await.expect("view");
    assert_eq!(view.stable_offsets(), (0, 4, 4));
    let read = other
        .read_from(&view, &tp, 0, (1 << 20, true), RC)
        .await
        .expect("read");
    assert_eq!(base_offsets(&read), vec![0, 2, 3]);
    assert_eq!(
        read.aborted,
        vec![AbortedTxn {
            producer_id: 7,
            first_offset: 0,
            last_offset: 3
        }],
        "the aborted transaction is reported, as by the leader"
    );
    let from_leader = leader.read(&tp, 0, 1 << 20, RC).await.expect("read");
    assert_eq!(read.aborted, from_leader.aborted);
}

#[tokio::test]
async fn a_stale_view_reading_data_deleted_since_answers_out_of_range_not_the_next_batch() {
    let fx = Fixture::new().await;
    let (leader, tp) = led(&fx, 2, 2).await;
    let other = replica(&fx, 2, 16);
    other.read_view(&tp, (0, -1), RU, true).await.expect("view");
    // DeleteRecords below 2, and garbage collection of the object holding 0..1.
    let first = fx
        .store
        .get(&keys::index_entry("t", 0, 0))
        .await
        .expect("get")
        .expect("entry of offset 0");
    let first: IndexEntry = keys::decode(&first.key, &first.value).expect("decode");
    assert_eq!(
        leader.delete_records(&tp, 2).await.expect("delete records"),
        2
    );
    object_store::ObjectStoreExt::delete(
        &*fx.objects,
        &object_store::path::Path::from(first.object.as_str()),
    )
    .await
    .expect("delete object");

    // The view, fresh as far as its age goes, still starts at 0: the read finds the object
    // gone, reloads the view and answers as the leader would.
    let view = other.read_view(&tp, (0, -1), RU, true).await.expect("view");
    assert_eq!(view.stable_offsets().0, 0, "not checked yet");
    assert!(matches!(
        other.read_from(&view, &tp, 0, (1 << 20, true), RU).await,
        Err(LogError::OffsetOutOfRange {
            log_start_offset: 2,
            ..
        })
    ));
    let read = other
        .read_from(&view, &tp, 2, (1 << 20, true), RU)
        .await
        .expect("read");
    assert_eq!(base_offsets(&read), vec![2]);
}

#[tokio::test]
async fn a_watched_view_reads_the_store_only_when_its_partition_moved() {
    let fx = Fixture::new().await;
    let (leader, tp) = led(&fx, 1, 2).await;
    let (other, counts) = metered_replica(&fx);
    // As the controller tells a broker in a cluster: the topic is known, its partition led
    // elsewhere (answered without a store read).
    let mut led = leadership::LedPartitions::default();
    led.add_topic("t", 1);
    other.publish_leadership(led);
    let reads = || counts.reads();
    let loads = || other.stats().replica_view_loads.load(Ordering::Relaxed);
    let view = other.read_view(&tp, (2, -1), RU, true).await.expect("view");
    assert_eq!(view.stable_offsets().2, 2);
    assert_eq!(other.replica_view_watches(), 1, "one watch for the topic");
    assert_eq!(loads(), 1);
    settle().await;

    // A consumer waiting at the end, many intervals long: nothing moved, nothing read.
    let before = reads();
    for _ in 0..60 {
        fx.clock.advance_ms(REPLICA_VIEW_REFRESH_MS as i64);
        let view = other.read_view(&tp, (2, -1), RU, true).await.expect("view");
        assert_eq!(view.stable_offsets().2, 2);
        settle().await;
    }
    assert_eq!(reads(), before, "no store read while nothing moved");
    assert_eq!(loads(), 1);

    // The leader commits: the view, last read from the store long ago, reloads at once, in
    // one request; another commit within the interval waits for it.
    leader
        .append(tp.clone(), batches(3, 10), false)
        .await
        .expect("append");
    settle().await;
    let view = other.read_view(&tp, (2, -1), RU, true).await.expect("view");
    assert_eq!(view.stable_offsets().2, 5, "the commit is seen");
    assert_eq!(
        (loads(), reads()),
        (2, before + 1),
        "one reload, one request"
    );
    leader
        .append(tp.clone(), batches(1, 10), false)
        .await
        .expect("append");
    settle().await;
    let view = other.read_view(&tp, (5, -1), RU, true).await.expect("view");
    assert_eq!(view.stable_offsets().2, 5, "within the interval");
    fx.clock.advance_ms(REPLICA_VIEW_REFRESH_MS as i64);
    let view = other.read_view(&tp, (5, -1), RU, true).await.expect("view");
    assert_eq!(view.stable_offsets().2, 6, "after it");
    assert_eq!(reads(), before + 2);
    fx.clock.advance_ms(REPLICA_VIEW_REFRESH_MS as i64);
    other.read_view(&tp, (6, -1), RU, true).await.expect("view");
    assert_eq!(reads(), before + 2, "and quiet again");

    // The watch goes with the topic's last view.
    other.forget_topic("t");
    assert_eq!(other.replica_view_watches(), 0);
}

#[tokio::test]
async fn a_fetchs_due_views_are_reloaded_together_before_its_reads() {
    let fx = Fixture::new().await;
    let leader = fx.log(10);
    fx.topic(&leader, "t", 3).await;
    let (other, counts) = metered_replica(&fx);
    let mut led = leadership::LedPartitions::default();
    led.add_topic("t", 3);
    other.publish_leadership(led);
    let tps: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("t", p)).collect();
    for tp in &tps {
        other.read_view(tp, (0, -1), RU, true).await.expect("view");
    }
    for tp in &tps {
        leader
            .append(tp.clone(), batches(1, 10), false)
            .await
            .expect("append");
    }
    settle().await;
    fx.clock.advance_ms(REPLICA_VIEW_REFRESH_MS as i64);
    let loads = || other.stats().replica_view_loads.load(Ordering::Relaxed);
    let reads: Vec<_> = tps.iter().map(|tp| read_of(tp.clone(), 0)).collect();
    let requests = || counts.reads();
    let before = requests();
    other.prepare_replica_views(&reads, RU).await;
    assert_eq!(loads(), 6, "the three moved views reloaded");
    assert_eq!(requests() - before, 1, "with one request");
    for tp in &tps {
        let view = other.read_view(tp, (0, -1), RU, true).await.expect("view");
        assert_eq!(view.stable_offsets().2, 1);
    }
    assert_eq!(loads(), 6, "the reads found them fresh");
    // A partition this broker may lead is left to its read.
    let unknown = [read_of(TopicPartition::new("u", 0), 0)];
    other.prepare_replica_views(&unknown, RU).await;
    assert_eq!(loads(), 6);
    // More views than one request holds (none known yet): a request per VIEWS_PER_LOAD; a
    // partition past the topic's partitions is not ruled out, so left to its read.
    let many = crate::log::replicas::VIEWS_PER_LOAD as i32 + 2;
    fx.topic(&leader, "w", many).await;
    let mut led = leadership::LedPartitions::default();
    led.add_topic("t", 3);
    led.add_topic("w", many);
    other.publish_leadership(led);
    let mut reads: Vec<_> = (0..many)
        .map(|p| read_of(TopicPartition::new("w", p), 0))
        .collect();
    reads.push(read_of(TopicPartition::new("w", many), 0));
    let before = requests();
    other.prepare_replica_views(&reads, RU).await;
    assert_eq!(requests() - before, 2, "two requests for {many} views");
    assert_eq!(loads(), 6 + many as u64);
    assert_eq!(other.replica_views(), 3 + many as usize);
    leader.shutdown().await;
}

#[tokio::test]
async fn views_the_store_will_not_load_together_are_loaded_one_by_one() {
    let fx = Fixture::new().await;
    let leader = fx.log(10);
    fx.topic(&leader, "t", 3).await;
    let store = Arc::new(crate::metadata::faulty::FaultyStore::new(fx.store.clone()));
    // One partition's load, not two.
    store.refuse_read_many_over(6);
    let other = Log::open(
        store.clone(),
        fx.objects.clone(),
        fx.clock.clone(),
        LogConfig {
            node_id: 2,
            ..LogConfig::default()
        },
    );
    let mut led = leadership::LedPartitions::default();
    led.add_topic("t", 3);
    other.publish_leadership(led);
    let tps: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("t", p)).collect();
    for tp in &tps {
        leader
            .append(tp.clone(), batches(1, 10), false)
            .await
            .expect("append");
    }
    let reads: Vec<_> = tps.iter().map(|tp| read_of(tp.clone(), 0)).collect();
    other.prepare_replica_views(&reads, RU).await;
    assert_eq!(store.refused(), 1, "the three together");
    assert_eq!(other.replica_views(), 3, "then one by one");
    for tp in &tps {
        let view = prepared(&other, tp, 0).await;
        assert_eq!(view.stable_offsets().2, 1);
    }

    // A store that answers nothing: one request together, one alone, then the views are
    // dropped and each read meets the error itself.
    store.refuse_read_many_over(0);
    for tp in &tps {
        commit_two(&leader, tp).await;
    }
    fx.clock.advance_ms(REPLICA_VIEW_REFRESH_MS as i64 * 40);
    let refused = store.refused();
    other.prepare_replica_views(&reads, RU).await;
    assert_eq!(store.refused() - refused, 2);
    assert_eq!(other.replica_views(), 0);
    assert!(other
        .prepared_read_view(&tps[0], (0, -1), RU)
        .await
        .is_err());
    leader.shutdown().await;
}

#[tokio::test]
async fn a_partition_past_the_views_bound_is_loaded_once_per_pass_without_a_watch() {
    let fx = Fixture::new().await;
    let leader = fx.log(10);
    fx.topic(&leader, "t", 1).await;
    fx.topic(&leader, "u", 1).await;
    let (other, counts) = metered_replica_of(&fx, 1);
    let mut led = leadership::LedPartitions::default();
    led.add_topic("t", 1);
    led.add_topic("u", 1);
    other.publish_leadership(led);
    let (t, u) = (TopicPartition::new("t", 0), TopicPartition::new("u", 0));
    let loads = || other.stats().replica_view_loads.load(Ordering::Relaxed);
    let watches = || counts.watches.load(Ordering::Relaxed);
    other.read_view(&t, (0, -1), RU, true).await.expect("view");
    assert_eq!((loads(), other.replica_view_watches()), (1, 1));
    // The store's watches open now: t's two (states, layouts) and the log's own layouts watch,
    // which a task opens some time after the log starts.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while watches() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watches never opened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let watches_before = watches();

    // Passes reading both: t's view is in use, so u's cannot be kept; each pass loads it once
    // (its read, not also the pass's preparation) and opens no watch for it.
    let reads = [read_of(t.clone(), 0), read_of(u.clone(), 0)];
    for pass in 1..=3u64 {
        fx.clock.advance_ms(1);
        other.prepare_replica_views(&reads, RU).await;
        for tp in [&t, &u] {
            prepared(&other, tp, 0).await;
        }
        assert_eq!(loads(), 1 + pass, "u loaded once in pass {pass}");
    }
    assert_eq!(watches(), watches_before, "no watch opened for u");
    assert_eq!(
        (other.replica_views(), other.replica_view_watches()),
        (1, 1)
    );

    // Once t's view has not been read for an interval, the pass's preparation loads u's view
    // (there is room again) and the read keeps it.
    fx.clock.advance_ms(REPLICA_VIEW_REFRESH_MS as i64);
    other.prepare_replica_views(&reads[1..], RU).await;
    assert_eq!(loads(), 5);
    prepared(&other, &u, 0).await;
    assert_eq!(loads(), 5, "u kept by the preparation");
    assert_eq!(other.replica_views(), 1);
    leader.shutdown().await;
}
