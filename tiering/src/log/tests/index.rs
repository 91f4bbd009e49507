//! The index rolls up into objects, so a partition's keys in the store stay bounded.

use super::*;

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
