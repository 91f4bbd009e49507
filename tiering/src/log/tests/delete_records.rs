//! DeleteRecords moves the log start without fencing the leader.

use super::*;

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
