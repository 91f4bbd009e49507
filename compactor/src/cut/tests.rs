use super::*;
use object_store::memory::InMemory;
use proptest::prelude::*;
use std::sync::Arc;

fn section(base: i64, len: i64) -> IndexEntry {
    IndexEntry {
        base_offset: base,
        last_offset: base + len - 1,
        max_timestamp: base,
        object: format!("wal/{base}"),
        position: 8,
        length: 100,
        crc32c: 0,
        aborted: Vec::new(),
    }
}

/// A partition's flush-object part as a leader leaves it: `rolled` sections rolled up with
/// `fanout` (the older rollups rolled up once more), then `tail` more sections as tail keys.
fn partition(
    objects: &IndexObjects,
    rolled: usize,
    tail: usize,
    fanout: usize,
) -> (IndexSnapshot, Vec<IndexEntry>) {
    let sections: Vec<IndexEntry> = (0..(rolled + tail) as i64)
        .map(|i| section(i * 3, 3))
        .collect();
    let mut level: Vec<RollupEntry> = Vec::new();
    for chunk in sections[..rolled].chunks(fanout) {
        let (entry, (path, body)) = layout::roll(RollupBody::Sections(chunk.to_vec()), 1);
        objects.insert(path.to_string(), Arc::new(body));
        level.push(entry);
    }
    if level.len() > fanout {
        let older: Vec<RollupEntry> = level.drain(..fanout).collect();
        let (entry, (path, body)) = layout::roll(RollupBody::Rollups(older), 1);
        objects.insert(path.to_string(), Arc::new(body));
        level.insert(0, entry);
    }
    let mut snapshot = IndexSnapshot::default();
    for (i, rollup) in level.into_iter().enumerate() {
        snapshot
            .rollups
            .insert(rollup.base_offset, (rollup, 10 + i as i64));
    }
    for (i, entry) in sections[rolled..].iter().enumerate() {
        snapshot
            .tail
            .insert(entry.base_offset, (entry.clone(), 100 + i as i64));
    }
    (snapshot, sections)
}

async fn check(rolled: usize, tail: usize, fanout: usize, max_bytes: u64, log_start: i64) {
    let objects = IndexObjects::new(Arc::new(InMemory::new()));
    let (snapshot, sections) = partition(&objects, rolled, tail, fanout);
    let mut budget = Budget::new(max_bytes, log_start);
    let cut = cut(&objects, &snapshot, &mut budget, 1).await.expect("cut");
    for (path, body) in &cut.new_objects {
        objects.insert(path.to_string(), Arc::new(body.clone()));
    }
    let k = cut.leaves.len();
    assert!(k >= 1, "a cut takes at least one leaf");
    assert_eq!(cut.leaves, sections[..k], "a prefix, in order");
    let read: u64 = cut
        .leaves
        .iter()
        .filter(|l| l.last_offset >= log_start)
        .map(|l| l.length)
        .sum();
    assert_eq!(read, budget.taken_bytes());
    assert!(
        read <= max_bytes.max(100),
        "within the budget (or one leaf)"
    );
    // What the swap leaves: the remainder, then the top-level keys it did not consume.
    let consumed: Vec<(bool, i64)> = cut
        .consumed
        .iter()
        .map(|key| match key {
            TopKey::Tail { base_offset, .. } => (false, *base_offset),
            TopKey::Rollup { base_offset, .. } => (true, *base_offset),
        })
        .collect();
    let mut left: Vec<Slot> = cut.remainder.iter().cloned().map(Slot::Rollup).collect();
    left.extend(snapshot.wal_slots().into_iter().filter(|slot| {
        let key = (matches!(slot, Slot::Rollup(_)), slot.base_offset());
        !consumed.contains(&key)
    }));
    let rest: Vec<IndexEntry> = objects
        .leaves(left)
        .await
        .expect("leaves")
        .into_iter()
        .map(|leaf| match leaf {
            skiff_tiering::tree::Leaf::Section(e) => e,
            other => panic!("unexpected leaf {other:?}"),
        })
        .collect();
    assert_eq!(rest, sections[k..], "nothing lost, nothing twice");
    // Every consumed key carries the revision it was read at.
    for key in &cut.consumed {
        let found = match key {
            TopKey::Tail {
                base_offset,
                revision,
            } => snapshot.tail.get(base_offset).map(|(_, r)| r) == Some(revision),
            TopKey::Rollup {
                base_offset,
                revision,
            } => snapshot.rollups.get(base_offset).map(|(_, r)| r) == Some(revision),
        };
        assert!(found, "{key:?}");
    }
}

#[tokio::test]
async fn takes_the_tail_within_the_budget() {
    check(0, 10, 4, 350, 0).await;
}

#[tokio::test]
async fn splits_a_nested_rollup_and_keeps_its_rest() {
    // 40 rolled sections with fan-out 4: a rollup of rollups, then rollups, then the tail.
    check(40, 5, 4, 550, 0).await;
    check(40, 5, 4, 100, 0).await;
    check(40, 5, 4, 10_000, 0).await;
}

#[tokio::test]
async fn leaves_below_the_log_start_cost_nothing() {
    let objects = IndexObjects::new(Arc::new(InMemory::new()));
    let (snapshot, _) = partition(&objects, 0, 10, 4);
    // The five sections below offset 15 are dropped, not read.
    let mut budget = Budget::new(200, 15);
    let cut = cut(&objects, &snapshot, &mut budget, 1).await.expect("cut");
    assert_eq!(cut.leaves.len(), 7);
    assert_eq!(budget.taken_bytes(), 200);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn a_cut_takes_a_prefix_and_its_remainder_holds_the_rest(
        rolled in 0usize..60, tail in 0usize..20, fanout in 2usize..6,
        max_bytes in 0u64..3_000, log_start in 0i64..100,
    ) {
        prop_assume!(rolled + tail > 0);
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(check(rolled, tail, fanout, max_bytes, log_start));
    }
}
