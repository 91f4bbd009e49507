use super::*;
use crate::clock::ManualClock;
use crate::metadata::embedded::EmbeddedStore;
use std::sync::Arc;

fn file(base: i64, last: i64) -> ParquetFile {
    ParquetFile {
        base_offset: base,
        last_offset: last,
        max_timestamp: last * 10,
        object: format!("parquet/f{base}"),
        bytes: 100,
        rows: (last - base + 1) as u64,
        crc32c: 0,
        aborted: Vec::new(),
    }
}

fn section(base: i64, last: i64) -> IndexEntry {
    IndexEntry {
        base_offset: base,
        last_offset: last,
        max_timestamp: last * 10,
        object: format!("wal/o{base}"),
        position: 8,
        length: 10,
        crc32c: 0,
        aborted: Vec::new(),
    }
}

#[test]
fn bound_keeps_the_inline_part_small_and_in_offset_order() {
    let mut layout = Layout::default();
    let mut written = Vec::new();
    for i in 0..1_000 {
        layout.files.push(file(i * 10, i * 10 + 9));
        written.extend(bound(&mut layout, 1));
        assert!(layout.files.len() <= FILES_INLINE_MAX);
        assert!(layout.rollups.len() <= FILES_INLINE_MAX);
    }
    // The top level still covers every offset once, in order.
    let slots = parquet_slots(&layout);
    let mut next = 0;
    for slot in &slots {
        assert_eq!(slot.base_offset(), next, "contiguous, no overlap");
        next = slot.last_offset() + 1;
    }
    assert_eq!(next, 10_000);
    assert!(!written.is_empty());
    // Every rolled-up body's entry describes it.
    for (_, body) in &written {
        let entry = tree::rollup_entry(body, "x".into(), 0).expect("entry");
        assert!(entry.base_offset <= entry.last_offset);
        assert_eq!(entry.max_timestamp, entry.last_offset * 10);
    }
}

#[tokio::test]
async fn tail_entries_a_rollup_covers_are_not_listed_twice() {
    // What a load sees when a leader's roll-up commits between its tail and rollup reads.
    let (_dir, store) = store().await;
    let rollup = RollupEntry {
        base_offset: 0,
        last_offset: 19,
        max_timestamp: 190,
        object: "index/r".into(),
        crc32c: 0,
        bytes: 20,
        aborted_first: None,
    };
    let mut ops = vec![TxnOp::put(keys::rollup("t", 0, 0), keys::encode(&rollup))];
    for entry in [section(0, 9), section(10, 19), section(20, 29)] {
        ops.push(TxnOp::put(
            keys::index_entry("t", 0, entry.base_offset),
            keys::encode(&entry),
        ));
    }
    assert!(
        store
            .txn(Txn::default().and_then(ops))
            .await
            .expect("put")
            .succeeded
    );
    let snapshot = IndexSnapshot::load(&*store, "t", 0).await.expect("load");
    assert_eq!(snapshot.tail.keys().copied().collect::<Vec<_>>(), vec![20]);
    let bases: Vec<i64> = snapshot.wal_slots().iter().map(Slot::base_offset).collect();
    assert_eq!(bases, vec![0, 20]);
}

async fn store() -> (tempfile::TempDir, Arc<dyn MetadataStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = EmbeddedStore::open(&dir.path().join("meta.redb"), clock)
        .await
        .expect("open store");
    (dir, Arc::new(store))
}

#[tokio::test]
async fn a_swap_moves_the_wal_prefix_and_fails_on_any_concurrent_change() {
    let (_dir, store) = store().await;
    let topic = crate::catalog::Catalog::new(store.clone())
        .create("t", 1, Default::default(), 0)
        .await
        .expect("create");
    for base in [0, 10, 20] {
        let put = Txn::default().and_then(vec![TxnOp::put(
            keys::index_entry("t", 0, base),
            keys::encode(&section(base, base + 9)),
        )]);
        assert!(store.txn(put).await.expect("put").succeeded);
    }
    let snapshot = IndexSnapshot::load(&*store, "t", 0).await.expect("load");
    assert_eq!(snapshot.tail.len(), 3);
    let consumed: Vec<TopKey> = snapshot
        .tail
        .values()
        .take(2)
        .map(|(e, revision)| TopKey::Tail {
            base_offset: e.base_offset,
            revision: *revision,
        })
        .collect();
    let mut layout = snapshot.layout.clone();
    layout.files.push(file(0, 19));
    layout.parquet_end = 20;
    let swap = Swap {
        topic: "t".into(),
        partition: 0,
        topic_create_revision: topic.create_revision,
        layout_revision: snapshot.layout_revision,
        layout,
        consumed,
        remainder: None,
    };
    assert!(store.txn(swap.txn()).await.expect("swap").succeeded);
    let after = IndexSnapshot::load(&*store, "t", 0).await.expect("load");
    assert_eq!(after.layout.parquet_end, 20);
    let bases: Vec<i64> = after.top_slots().iter().map(Slot::base_offset).collect();
    assert_eq!(bases, vec![0, 20], "the file, then the rest of the tail");
    // The same swap again: the layout moved on, and its keys are gone.
    assert!(!store.txn(swap.txn()).await.expect("swap").succeeded);
    let mut stale_keys = swap.clone();
    stale_keys.layout_revision = after.layout_revision;
    assert!(
        !store.txn(stale_keys.txn()).await.expect("swap").succeeded,
        "consumed keys that are gone fail the swap"
    );
}
