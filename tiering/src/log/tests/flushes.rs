//! How buffered appends become flushes: sizes, parts, offsets.

use super::*;
use crate::batch::BatchHeader;
use tokio::sync::oneshot;

#[tokio::test]
async fn a_partition_buffered_past_the_flush_size_is_written_in_parts_with_contiguous_offsets() {
    let fx = Fixture::new().await;
    let append_bytes = batches(2, 0)[0].1.len();
    let log = Log::open(
        fx.store.clone(),
        fx.objects.clone(),
        fx.clock.clone(),
        LogConfig {
            // Everything arrives within the linger; each flush holds two and a half appends.
            flush_linger_ms: 200,
            flush_max_bytes: append_bytes * 5 / 2,
            ..LogConfig::default()
        },
    );
    fx.topic(&log, "t", 2).await;
    let big = TopicPartition::new("t", 0);
    let mut waiting = Vec::new();
    for ts in 0..7 {
        waiting.push(
            log.enqueue(big.clone(), batches(2, ts), false)
                .await
                .expect("enqueue"),
        );
    }
    let small = TopicPartition::new("t", 1);
    let other = log
        .enqueue(small.clone(), batches(2, 9), false)
        .await
        .expect("enqueue");
    let mut offsets = Vec::new();
    for reply in waiting {
        offsets.push(reply.await.expect("reply").expect("committed").base_offset);
    }
    assert_eq!(offsets, [0, 2, 4, 6, 8, 10, 12]);
    assert_eq!(
        other.await.expect("reply").expect("committed").base_offset,
        0
    );
    let read = log
        .read(&big, 0, 1 << 20, Isolation::ReadUncommitted)
        .await
        .expect("read");
    let bases: Vec<i64> = read
        .batches
        .iter()
        .map(|b| batch::parse_header(b).expect("header").base_offset)
        .collect();
    assert_eq!(bases, offsets);
    assert!(
        log.stats().objects_written.load(Ordering::Relaxed) >= 3,
        "more than one object"
    );
    log.shutdown().await;
}

/// Enqueues `batches` and waits until their flush's object reaches the store (its `nth` PUT,
/// held there until the test releases it): the append's reply.
async fn uploading(
    log: &Log,
    gate: &PutGate,
    tp: &TopicPartition,
    batches: Vec<(BatchHeader, Bytes)>,
    nth: usize,
) -> oneshot::Receiver<Result<AppendOutcome, LogError>> {
    let reply = log
        .enqueue(tp.clone(), batches, false)
        .await
        .expect("enqueue");
    gate.arrived(nth).await;
    reply
}

/// A log over a store whose writes wait for the test, planning up to `in_flight` flushes at once.
async fn gated(fx: &Fixture, in_flight: usize) -> (Log, Arc<PutGate>) {
    let gate = Arc::new(PutGate::default());
    let log = Log::open(
        fx.store.clone(),
        Arc::new(InjectedWrites(
            InMemory::new(),
            WriteFault::Gate(gate.clone()),
        )),
        fx.clock.clone(),
        LogConfig {
            flush_linger_ms: 0,
            flush_max_in_flight: in_flight,
            ..LogConfig::default()
        },
    );
    fx.topic(&log, "t", 1).await;
    (log, gate)
}

fn base_offset(
    outcome: Result<Result<AppendOutcome, LogError>, tokio::sync::oneshot::error::RecvError>,
) -> i64 {
    outcome.expect("reply").expect("committed").base_offset
}

#[tokio::test]
async fn a_flush_uploads_while_the_one_before_it_commits_and_commits_after_it() {
    let fx = Fixture::new().await;
    let (log, gate) = gated(&fx, 2).await;
    let tp = TopicPartition::new("t", 0);
    let first = uploading(&log, &gate, &tp, batches(2, 0), 1).await;
    // The second flush is planned past the first (offset 2) and uploads while it is held.
    let mut second = uploading(&log, &gate, &tp, batches(3, 1), 2).await;
    gate.release(1, true);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        second.try_recv().is_err(),
        "the second flush commits only after the first"
    );
    gate.release(0, true);
    assert_eq!(base_offset(first.await), 0);
    assert_eq!(base_offset(second.await), 2);
    let read = log
        .read(&tp, 0, 1 << 20, Isolation::ReadUncommitted)
        .await
        .expect("read");
    assert_eq!(read.high_watermark, 5);
    assert_eq!(read.batches.len(), 2);
    log.shutdown().await;
}

#[tokio::test]
async fn a_flush_planned_past_one_that_failed_fails_and_leaves_no_gap() {
    let fx = Fixture::new().await;
    let (log, gate) = gated(&fx, 2).await;
    let tp = TopicPartition::new("t", 0);
    let first = uploading(&log, &gate, &tp, batches(2, 0), 1).await;
    let second = uploading(&log, &gate, &tp, batches(3, 1), 2).await;
    gate.release(1, true);
    gate.release(0, false);
    assert!(matches!(
        first.await.expect("reply"),
        Err(LogError::Unavailable(_))
    ));
    assert!(matches!(
        second.await.expect("reply"),
        Err(LogError::Unavailable(_))
    ));
    // The next flush plans from the committed state again: offset 0, no hole.
    let third = uploading(&log, &gate, &tp, batches(1, 2), 3).await;
    gate.release(2, true);
    assert_eq!(base_offset(third.await), 0);
    assert_eq!(log.offsets(&tp).await.expect("offsets"), (0, 1));
    log.shutdown().await;
}

#[tokio::test]
async fn an_idempotent_producer_continues_its_sequence_across_flushes_in_flight() {
    let fx = Fixture::new().await;
    let (log, gate) = gated(&fx, 3).await;
    let tp = TopicPartition::new("t", 0);
    let known = uploading(&log, &gate, &tp, idempotent(2, 7, 0), 1).await;
    gate.release(0, true);
    assert_eq!(base_offset(known.await), 0);
    // Sequences 2 and 4 in two flushes in flight: the second is checked against the state the
    // first will leave (against the committed state it would be a gap).
    let a = uploading(&log, &gate, &tp, idempotent(2, 7, 2), 2).await;
    let b = uploading(&log, &gate, &tp, idempotent(2, 7, 4), 3).await;
    // A retry of sequence 2 while its flush is in flight is refused (retriable): that flush may
    // still fail.
    let retry = log
        .enqueue(tp.clone(), idempotent(2, 7, 2), false)
        .await
        .expect("enqueue");
    assert!(matches!(
        retry.await.expect("reply"),
        Err(LogError::Unavailable(_))
    ));
    gate.release(1, false);
    gate.release(2, true);
    assert!(a.await.expect("reply").is_err());
    assert!(b.await.expect("reply").is_err());
    // Resent in order, they are stored in order.
    let a = uploading(&log, &gate, &tp, idempotent(2, 7, 2), 4).await;
    let b = uploading(&log, &gate, &tp, idempotent(2, 7, 4), 5).await;
    gate.release(3, true);
    gate.release(4, true);
    assert_eq!(base_offset(a.await), 2);
    assert_eq!(base_offset(b.await), 4);
    log.shutdown().await;
}

#[tokio::test]
async fn a_failed_flush_costs_only_the_flushes_planned_past_it() {
    let fx = Fixture::new().await;
    let (log, gate) = gated(&fx, 2).await;
    let tp = TopicPartition::new("t", 0);
    let a = uploading(&log, &gate, &tp, batches(2, 0), 1).await;
    let b = uploading(&log, &gate, &tp, batches(2, 1), 2).await;
    gate.release(0, false);
    assert!(a.await.expect("reply").is_err());
    // Planned while b (planned past a) is still in flight: from the committed state.
    let c = uploading(&log, &gate, &tp, batches(2, 2), 3).await;
    gate.release(1, true);
    assert!(b.await.expect("reply").is_err(), "b was planned past a");
    // b's failure leaves c's plan alone: d is planned past c and both commit.
    let d = uploading(&log, &gate, &tp, batches(2, 3), 4).await;
    gate.release(2, true);
    gate.release(3, true);
    assert_eq!(base_offset(c.await), 0);
    assert_eq!(base_offset(d.await), 2);
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

/// A consumer may have seen a commit elsewhere (a replica view, watching the store) before the
/// leader applied it: offsets a flush in flight was given are answered empty, as Kafka answers
/// offsets between its high watermark and log end offset; only past them is out of range.
#[tokio::test]
async fn offsets_of_a_flush_in_flight_are_not_out_of_range() {
    let fx = Fixture::new().await;
    let (log, gate) = gated(&fx, 1).await;
    let tp = TopicPartition::new("t", 0);
    let held = uploading(&log, &gate, &tp, batches(2, 0), 1).await;
    for offset in [1, 2] {
        let read = log
            .read(&tp, offset, 1 << 20, Isolation::ReadUncommitted)
            .await
            .expect("in flight: not out of range");
        assert!(read.batches.is_empty());
        assert_eq!(read.high_watermark, 0);
    }
    assert!(matches!(
        log.read(&tp, 3, 1 << 20, Isolation::ReadUncommitted).await,
        Err(LogError::OffsetOutOfRange {
            high_watermark: 0,
            ..
        })
    ));
    gate.release(0, true);
    assert_eq!(base_offset(held.await), 0);
    let read = log
        .read(&tp, 1, 1 << 20, Isolation::ReadUncommitted)
        .await
        .expect("read");
    assert_eq!((read.high_watermark, read.batches.len()), (2, 1));
    log.shutdown().await;
}
