//! Transactions in the log: markers, the last stable offset and read_committed reads.

use super::*;
use crate::producers::{AbortedTxn, Marker};

pub(super) fn transactional(
    count: i32,
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
) -> Vec<(batch::BatchHeader, Bytes)> {
    let mut bytes = batch::tests::sample_idempotent_batch(count, producer_id, epoch, base_sequence);
    bytes[batch::ATTRIBUTES_OFFSET + 1] |= batch::ATTRIBUTE_TRANSACTIONAL as u8;
    let crc = crc32c::crc32c(&bytes[batch::ATTRIBUTES_OFFSET..]);
    bytes[batch::CRC_OFFSET..batch::CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    let bytes = Bytes::from(bytes);
    vec![(batch::parse_header(&bytes).expect("header"), bytes)]
}

/// The marker ending producer `producer_id`'s transaction (epoch `epoch`) in a partition.
pub(super) fn marker(producer_id: i64, epoch: i16, commit: bool) -> Marker {
    Marker {
        producer_id,
        epoch,
        commit,
        revision: 0,
        end: 0,
    }
}

/// A marker request as the coordinator writes it.
pub(super) async fn request_marker(
    fx: &Fixture,
    tp: &TopicPartition,
    txn: &str,
    marker: Marker,
) -> String {
    let key = keys::marker_request(&tp.topic, tp.partition, txn);
    let request = keys::MarkerRequest {
        producer_id: marker.producer_id,
        producer_epoch: marker.epoch,
        commit: marker.commit,
        requested_ms: 0,
        end: marker.end,
    };
    fx.store
        .txn(Txn::when(vec![]).and_then(vec![TxnOp::put(&key, keys::encode(&request))]))
        .await
        .expect("put request");
    key
}

#[tokio::test]
async fn markers_end_transactions_and_read_committed_stops_at_the_lso() {
    let fx = Fixture::new().await;
    let log = fx.log(0);
    fx.topic(&log, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    let committed = |read: &ReadOutcome| (read.last_stable_offset, read.aborted.clone());
    // Producer 7 opens a transaction at 0; a plain batch follows at 2; producer 8 opens one at 3.
    log.append(tp.clone(), transactional(2, 7, 0, 0), false)
        .await
        .expect("txn 7");
    log.append(tp.clone(), batches(1, 5), false)
        .await
        .expect("plain");
    log.append(tp.clone(), transactional(1, 8, 0, 0), false)
        .await
        .expect("txn 8");
    assert_eq!(log.stable_offsets(&tp).await.expect("offsets"), (0, 0, 4));
    let read = log
        .read(&tp, 0, 1 << 20, Isolation::ReadCommitted)
        .await
        .expect("read");
    assert!(read.batches.is_empty(), "nothing below the LSO yet");
    assert_eq!(read.high_watermark, 4);
    let read = log.read(&tp, 0, 1 << 20, RU).await.expect("read");
    assert_eq!(
        base_offsets(&read),
        vec![0, 2, 3],
        "read_uncommitted sees everything"
    );
    // A plain batch from a producer with an open transaction is refused, as Kafka does.
    assert!(matches!(
        log.append(tp.clone(), idempotent(1, 7, 2), false).await,
        Err(LogError::InvalidTxnState(_))
    ));

    // 7 aborts: its marker lands at 4, the LSO moves to 8's transaction.
    let abort = marker(7, 0, false);
    let key = request_marker(&fx, &tp, "seven", abort).await;
    let outcome = log
        .append_marker(tp.clone(), abort, key.clone())
        .await
        .expect("marker");
    assert_eq!(outcome.base_offset, 4);
    assert!(
        fx.store.get(&key).await.expect("get").is_none(),
        "request answered"
    );
    let read = log
        .read(&tp, 0, 1 << 20, Isolation::ReadCommitted)
        .await
        .expect("read");
    assert_eq!(base_offsets(&read), vec![0, 2]);
    assert_eq!(read.last_stable_offset, 3);
    assert_eq!(
        read.aborted,
        vec![AbortedTxn {
            producer_id: 7,
            first_offset: 0,
            last_offset: 4
        }]
    );

    // 8 commits: everything is stable; 7's abort still overlaps a read from 0, not from 3.
    let commit = marker(8, 0, true);
    let key = request_marker(&fx, &tp, "eight", commit).await;
    log.append_marker(tp.clone(), commit, key)
        .await
        .expect("marker");
    let read = log
        .read(&tp, 0, 1 << 20, Isolation::ReadCommitted)
        .await
        .expect("read");
    assert_eq!(base_offsets(&read), vec![0, 2, 3, 4, 5]);
    assert_eq!((read.last_stable_offset, read.aborted.len()), (6, 1));
    let read = log
        .read(&tp, 5, 1 << 20, Isolation::ReadCommitted)
        .await
        .expect("read");
    assert_eq!(committed(&read), (6, vec![]));
    // A marker under an older epoch than the producer's is refused.
    log.append(tp.clone(), transactional(1, 8, 2, 0), false)
        .await
        .expect("epoch 2");
    let stale = marker(8, 1, true);
    let key = request_marker(&fx, &tp, "eight", stale).await;
    assert!(matches!(
        log.append_marker(tp.clone(), stale, key).await,
        Err(LogError::InvalidProducerEpoch(_))
    ));
    log.shutdown().await;

    // A new leader computes the same LSO and aborted list from what was committed.
    let log = fx.log(0);
    let read = log
        .read(&tp, 0, 1 << 20, Isolation::ReadCommitted)
        .await
        .expect("read");
    assert_eq!(
        read.last_stable_offset, 6,
        "8's epoch-2 transaction is open at 6"
    );
    assert_eq!(read.aborted.len(), 1);
    log.shutdown().await;
}

#[tokio::test]
async fn aborted_transactions_are_found_after_the_index_rolls_up() {
    let fx = Fixture::new().await;
    let log = Log::open(
        fx.store.clone(),
        fx.objects.clone(),
        fx.clock.clone(),
        LogConfig {
            flush_linger_ms: 0,
            index_rollup_fanout: 3,
            ..LogConfig::default()
        },
    );
    fx.topic(&log, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    // Every fifth flush is an aborted transaction: data at 5k, marker at 5k + 1.
    let mut expected = Vec::new();
    for k in 0..12i64 {
        let first = log
            .append(tp.clone(), transactional(1, 7, 0, k as i32), false)
            .await
            .expect("txn")
            .base_offset;
        let abort = marker(7, 0, false);
        let key = request_marker(&fx, &tp, "seven", abort).await;
        let marker = log
            .append_marker(tp.clone(), abort, key)
            .await
            .expect("marker");
        expected.push(AbortedTxn {
            producer_id: 7,
            first_offset: first,
            last_offset: marker.base_offset,
        });
        for _ in 0..3 {
            log.append(tp.clone(), batches(1, 1), false)
                .await
                .expect("plain");
        }
    }
    let rollups = fx
        .store
        .range_prefix(&keys::rollup_prefix("t", 0), 0)
        .await
        .expect("range");
    assert!(!rollups.is_empty(), "the index rolled up");
    let read = log
        .read(&tp, 0, 1 << 20, Isolation::ReadCommitted)
        .await
        .expect("read");
    assert_eq!(
        read.aborted, expected,
        "every abort found through the rollups"
    );
    // A read from the middle reports only what overlaps it.
    let read = log
        .read(&tp, 25, 10, Isolation::ReadCommitted)
        .await
        .expect("read");
    let upper = read
        .batches
        .last()
        .map(|b| batch::parse_header(b).expect("header").last_offset() + 1)
        .expect("some data");
    let overlapping: Vec<AbortedTxn> = expected
        .iter()
        .filter(|a| a.last_offset >= 25 && a.first_offset < upper)
        .copied()
        .collect();
    assert!(!overlapping.is_empty());
    assert_eq!(read.aborted, overlapping);
    log.shutdown().await;
}

#[tokio::test]
async fn a_marker_request_put_again_never_ends_the_next_transaction() {
    let fx = Fixture::new().await;
    let log = fx.log(0);
    fx.topic(&log, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    log.append(tp.clone(), transactional(1, 7, 0, 0), false)
        .await
        .expect("first transaction");
    let commit = Marker {
        producer_id: 7,
        epoch: 0,
        commit: true,
        revision: 0,
        end: 1,
    };
    let key = request_marker(&fx, &tp, "seven", commit).await;
    log.append_marker(tp.clone(), commit, key)
        .await
        .expect("marker");
    // The producer's next transaction opens at 2; then a successor coordinator puts the first
    // ending's request again.
    log.append(tp.clone(), transactional(1, 7, 0, 1), false)
        .await
        .expect("next transaction");
    let key = request_marker(&fx, &tp, "seven", commit).await;
    assert!(matches!(
        log.append_marker(tp.clone(), commit, key).await,
        Err(LogError::InvalidProducerEpoch(_))
    ));
    // Nothing appended: the next transaction is still open at 2.
    assert_eq!(log.stable_offsets(&tp).await.expect("offsets"), (0, 2, 3));
    // Its own ending applies.
    let next = Marker { end: 2, ..commit };
    let key = request_marker(&fx, &tp, "seven", next).await;
    log.append_marker(tp.clone(), next, key)
        .await
        .expect("marker");
    assert_eq!(log.stable_offsets(&tp).await.expect("offsets"), (0, 4, 4));
}

#[tokio::test]
async fn the_lso_never_falls_below_the_log_start() {
    let fx = Fixture::new().await;
    let log = fx.log(0);
    fx.topic(&log, "t", 1).await;
    let tp = TopicPartition::new("t", 0);
    // A transaction opens at 0 and stays open; plain records follow at 2..4.
    log.append(tp.clone(), transactional(2, 7, 0, 0), false)
        .await
        .expect("txn 7");
    log.append(tp.clone(), batches(2, 5), false)
        .await
        .expect("plain");
    assert_eq!(log.stable_offsets(&tp).await.expect("offsets"), (0, 0, 4));
    // DeleteRecords past the open transaction's first offset: the LSO is the log start, never
    // an offset below it (Kafka: max(first unstable offset, log start)).
    log.delete_records(&tp, 3).await.expect("delete records");
    assert_eq!(log.stable_offsets(&tp).await.expect("offsets"), (3, 3, 4));
    let read = log
        .read(&tp, 3, 1 << 20, Isolation::ReadCommitted)
        .await
        .expect("read");
    assert_eq!(read.last_stable_offset, 3);
    assert!(read.batches.is_empty(), "offset 3 is not stable yet");
}
