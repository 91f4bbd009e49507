//! How buffered appends become flushes: sizes, parts, offsets.

use super::*;

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
