//! Idempotent producers: retries answered with their first offset, failed batches resent first.

use super::*;

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
