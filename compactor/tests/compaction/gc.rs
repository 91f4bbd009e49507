//! Garbage collection: exactly what nothing references is deleted, and it rests when idle.

use super::fixture::*;

#[tokio::test]
async fn garbage_collection_deletes_exactly_what_nothing_references() {
    let fx = Fixture::new(2).await;
    fx.topic("t", 2).await;
    let tp = TopicPartition::new("t", 0);
    let mut produced = Vec::new();
    for i in 0..9 {
        produced.extend(fx.produce(&tp, 3, &format!("f{i}")).await);
        fx.produce(&TopicPartition::new("t", 1), 1, "one").await;
    }
    fx.compact().await;
    // An orphan of a crashed job, and an object Skiff did not name.
    let orphan = skiff_tiering::paths::new_parquet_file("t", 0, 0, 5, 1_700_000_000_000);
    fx.objects
        .put(&orphan, Bytes::from_static(b"x").into())
        .await
        .expect("put");
    fx.objects
        .put(&"wal/README".into(), Bytes::from_static(b"not ours").into())
        .await
        .expect("put");
    let wal_before = fx.object_keys("wal").await.len();
    assert!(wal_before > 2);

    let first = fx.compactor.gc().await.expect("gc").expect("claimed");
    assert_eq!(first.deleted, 0, "nothing is old enough yet");
    fx.clock.advance_ms(2 * 3_600_000);
    let young = skiff_tiering::paths::new_wal_object(fx.clock.now_ms());
    fx.objects
        .put(&young, Bytes::from_static(b"in flight").into())
        .await
        .expect("put");
    let tracked = fx.compactor.gc().await.expect("gc").expect("claimed");
    assert_eq!(
        tracked.deleted, 0,
        "first seen unreferenced: the grace period starts"
    );
    fx.clock.advance_ms(10 * 60_000);
    let swept = fx.compactor.gc().await.expect("gc").expect("claimed");
    assert!(swept.deleted >= wal_before, "{swept:?}");

    // What is left is what the index references, plus the young upload and the foreign object.
    let ctx = skiff_compactor::job::Ctx::new(
        fx.store.clone(),
        fx.objects.clone(),
        fx.clock.clone(),
        CompactorSettings::default(),
    );
    let referenced = skiff_compactor::gc::mark(&ctx).await.expect("mark");
    let mut left = skiff_compactor::gc::unreferenced(&*fx.objects, &referenced)
        .await
        .expect("list");
    left.sort();
    let mut expected = vec!["wal/README".to_owned(), young.to_string()];
    expected.sort();
    assert_eq!(left, expected);
    assert!(!fx
        .object_keys("parquet")
        .await
        .contains(&orphan.to_string()));
    // The broker's view named the deleted flush objects: it reloads and serves from Parquet.
    assert_eq!(fx.consume(&tp, 0).await, produced);
}

#[tokio::test]
async fn garbage_collection_rests_while_nothing_changes() {
    let fx = Fixture::new(100).await;
    fx.topic("t", 1).await;
    let tp = TopicPartition::new("t", 0);
    // Nothing unreferenced: the collection leaves nothing waiting...
    assert!(fx.compactor.gc().await.expect("gc").is_some());
    // ...so while the store stays as it was, none runs (an idle cluster lists nothing).
    fx.clock.advance_ms(3_600_000);
    assert!(fx.compactor.gc().await.expect("gc").is_none());
    assert!(fx.compactor.gc().await.expect("gc").is_none());
    // A commit changes the store: the next one runs.
    fx.produce(&tp, 1, "x").await;
    assert!(fx.compactor.gc().await.expect("gc").is_some());
    // One that leaves objects waiting (the flush objects the compaction replaced, younger than
    // the orphan age, then in their grace period) rests until the first is due, then deletes.
    fx.compact().await;
    let waiting = fx.compactor.gc().await.expect("gc").expect("runs");
    assert_eq!(waiting.deleted, 0, "{waiting:?}");
    assert!(
        fx.compactor.gc().await.expect("gc").is_none(),
        "nothing due yet"
    );
    fx.clock
        .advance_ms(CompactorSettings::default().orphan_age_ms);
    let tracked = fx
        .compactor
        .gc()
        .await
        .expect("gc")
        .expect("old enough: tracked");
    assert_eq!(tracked.deleted, 0, "{tracked:?}");
    assert!(
        fx.compactor.gc().await.expect("gc").is_none(),
        "in its grace period"
    );
    fx.clock
        .advance_ms(CompactorSettings::default().gc_grace_ms);
    let swept = fx
        .compactor
        .gc()
        .await
        .expect("gc")
        .expect("grace over: runs");
    assert!(swept.deleted >= 1, "{swept:?}");
    assert!(
        fx.compactor.gc().await.expect("gc").is_none(),
        "nothing left waiting"
    );
}
