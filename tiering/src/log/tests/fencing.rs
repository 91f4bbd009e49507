//! Fencing: commits after leadership or the topic changed, and uploads past their deadline, never land.

use super::*;

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
