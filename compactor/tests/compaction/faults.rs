//! Bad data and unreadable metadata stop a job before it changes or deletes anything.

use super::fixture::*;

#[tokio::test]
async fn bad_data_stops_the_job_changes_nothing_and_is_reported() {
    let fx = Fixture::new(100).await;
    fx.topic("t", 2).await;
    let (bad, good) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
    fx.produce(&bad, 3, "a").await;
    let kept = fx.produce(&good, 3, "b").await;
    // Partition 0's flush object gets damaged in the bucket.
    let tail = fx
        .store
        .range_prefix(&keys::index_prefix("t", 0), 0)
        .await
        .expect("range");
    let entry: keys::IndexEntry = keys::decode(&tail[0].key, &tail[0].value).expect("decode");
    let object: object_store::path::Path = entry.object.as_str().into();
    let mut damaged = fx
        .objects
        .get(&object)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes")
        .to_vec();
    damaged[entry.position as usize + 70] ^= 0xff;
    fx.objects
        .put(&object, Bytes::from(damaged).into())
        .await
        .expect("put");
    fx.clock.advance_ms(120_000);
    let report = fx.compactor.pass().await.expect("pass");
    assert_eq!(report.failures, 1, "{report:?}");
    let recorded = fx
        .store
        .get(&keys::compactor_error("t", 0))
        .await
        .expect("get")
        .expect("the failure is recorded for /v1/compactor");
    let error: keys::CompactorError = keys::decode(&recorded.key, &recorded.value).expect("decode");
    assert!(
        error.error.contains("checksum") || error.error.contains("crc"),
        "{}",
        error.error
    );
    assert_eq!(fx.layout("t", 0).await.parquet_end, 0, "nothing swapped");
    assert_eq!(
        fx.layout("t", 1).await.parquet_end,
        3,
        "other partitions go on"
    );
    assert!(fx.object_keys("wal").await.contains(&object.to_string()));
    assert_eq!(fx.consume_when(&good, 0, |r| r.len() == 3).await, kept);
}

#[tokio::test]
async fn an_unreadable_index_stops_garbage_collection_before_any_delete() {
    // Fan-out 2: a few flushes leave a rollup whose index object the collector must read.
    let fx = Fixture::new(2).await;
    fx.topic("t", 1).await;
    let tp = TopicPartition::new("t", 0);
    for i in 0..8 {
        fx.produce(&tp, 1, &format!("f{i}")).await;
    }
    let index_objects = fx.object_keys("index").await;
    assert!(!index_objects.is_empty(), "the leader rolled its index up");
    fx.objects
        .delete(&index_objects[0].as_str().into())
        .await
        .expect("delete");
    // An orphan old enough to go, were the collection to run.
    let orphan = skiff_tiering::paths::new_wal_object(fx.clock.now_ms());
    fx.objects
        .put(&orphan, Bytes::from_static(b"x").into())
        .await
        .expect("put");
    let before = fx.object_keys("").await;
    fx.clock.advance_ms(4 * 3_600_000);
    for _ in 0..3 {
        assert!(
            fx.compactor.gc().await.is_err(),
            "an unreadable index stops the collection"
        );
        fx.clock.advance_ms(3_600_000);
    }
    assert_eq!(fx.object_keys("").await, before, "nothing was deleted");
}
