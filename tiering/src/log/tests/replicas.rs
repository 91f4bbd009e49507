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

fn base_offsets(read: &ReadOutcome) -> Vec<i64> {
    read.batches
        .iter()
        .map(|b| batch::parse_header(b).expect("header").base_offset)
        .collect()
}

#[tokio::test]
async fn another_broker_serves_a_consumer_what_the_leader_committed() {
    let fx = Fixture::new().await;
    let leader = fx.log(10);
    fx.topic(&leader, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    for _ in 0..2 {
        leader
            .append(tp.clone(), batches(3, 10), false)
            .await
            .expect("append");
    }
    let other = replica(&fx, 2, 16);
    assert!(
        matches!(
            other.read_view(&tp, (0, -1), false).await,
            Err(LogError::NotLeader(_))
        ),
        "only the leader serves reads that are not a consumer's Fetch v11+"
    );
    let view = other
        .read_view(&tp, (0, -1), true)
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
async fn a_replica_view_at_the_end_of_the_log_catches_up_after_the_refresh_interval() {
    let fx = Fixture::new().await;
    let leader = fx.log(10);
    fx.topic(&leader, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    leader
        .append(tp.clone(), batches(2, 10), false)
        .await
        .expect("append");
    let other = replica(&fx, 2, 16);
    let view = other.read_view(&tp, (2, -1), true).await.expect("view");
    assert_eq!(view.stable_offsets().2, 2);
    leader
        .append(tp.clone(), batches(2, 10), false)
        .await
        .expect("append");
    let loads = || other.stats().replica_view_loads.load(Ordering::Relaxed);
    assert_eq!(loads(), 1);

    // Below the end, and at the end within the refresh interval: the view as it was.
    let view = other.read_view(&tp, (0, -1), true).await.expect("view");
    assert_eq!(view.stable_offsets().2, 2, "below the end: not checked");
    let view = other.read_view(&tp, (2, -1), true).await.expect("view");
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
    let view = other.read_view(&tp, (2, -1), true).await.expect("view");
    assert_eq!(view.stable_offsets().2, 4);
    assert_eq!(loads(), 2);
    let read = other
        .read_from(&view, &tp, 2, (1 << 20, true), RU)
        .await
        .expect("read");
    assert_eq!(base_offsets(&read), vec![2]);

    // Checked again with nothing new: one key read, no reload.
    fx.clock.advance_ms(REPLICA_VIEW_REFRESH_MS as i64);
    other.read_view(&tp, (4, -1), true).await.expect("view");
    assert_eq!(loads(), 2, "the state key had not moved");

    // Past the view's end (the consumer saw more elsewhere): checked at once.
    leader
        .append(tp.clone(), batches(2, 10), false)
        .await
        .expect("append");
    let view = other.read_view(&tp, (6, -1), true).await.expect("view");
    assert_eq!(view.stable_offsets().2, 6);
    assert_eq!(loads(), 3);
    // Past the store's end too: out of range, as from the leader.
    let view = other.read_view(&tp, (9, -1), true).await.expect("view");
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
    let leader = fx.log(10);
    fx.topic(&leader, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    leader
        .append(tp.clone(), batches(1, 10), false)
        .await
        .expect("append");
    let other = replica(&fx, 2, 16);
    let epoch = other
        .read_view(&tp, (0, -1), true)
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
        .read_view(&tp, (0, epoch + 1), true)
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
    for p in 0..3 {
        let tp = TopicPartition::new("t", p);
        other.read_view(&tp, (0, -1), true).await.expect("view");
        fx.clock.advance_ms(1);
    }
    assert_eq!(other.replica_views(), 2, "the least recently read went");
    other.forget_topic("t");
    assert_eq!(other.replica_views(), 0);
}
