use super::*;
use proptest::prelude::*;

fn file(base: i64, last: i64, max_timestamp: i64, bytes: u64) -> ParquetFile {
    ParquetFile {
        base_offset: base,
        last_offset: last,
        max_timestamp,
        object: format!("parquet/{base}"),
        bytes,
        rows: 1,
        crc32c: 0,
        aborted: Vec::new(),
    }
}

fn policy(compact: bool) -> Policy {
    Policy {
        compact,
        min_compaction_lag_ms: 1_000,
        delete_retention_ms: 10_000,
        min_cleanable_dirty_ratio: 0.5,
        json_values: false,
    }
}

#[test]
fn a_file_straddling_the_log_start_is_trimmed() {
    let layout = Layout {
        parquet_end: 30,
        files: vec![file(0, 9, 5, 10), file(10, 19, 5, 10), file(20, 29, 5, 10)],
        ..Layout::default()
    };
    assert_eq!(plan(&layout, (0, i64::MAX), &policy(false), 100), None);
    assert_eq!(
        plan(&layout, (10, i64::MAX), &policy(false), 100),
        None,
        "at a file boundary"
    );
    assert_eq!(
        plan(&layout, (15, i64::MAX), &policy(false), 100),
        Some(Plan {
            slots: 2,
            end: 20,
            compact: false
        })
    );
}

#[test]
fn compaction_waits_for_the_lag_and_the_dirty_ratio() {
    let mut layout = Layout {
        parquet_end: 30,
        files: vec![
            file(0, 9, 100, 10),
            file(10, 19, 200, 10),
            file(20, 29, 5_000, 10),
        ],
        ..Layout::default()
    };
    // The third file is younger than the lag at 4_500: the cleanable range ends before it.
    assert_eq!(
        plan(&layout, (0, i64::MAX), &policy(true), 4_500),
        Some(Plan {
            slots: 2,
            end: 20,
            compact: true
        })
    );
    // Cleaned up to 20: 10 dirty bytes of 30 are under the ratio.
    layout.cleaned_end = 20;
    assert_eq!(plan(&layout, (0, i64::MAX), &policy(true), 10_000), None);
    layout.files.push(file(30, 39, 6_000, 30));
    layout.parquet_end = 40;
    assert_eq!(
        plan(&layout, (0, i64::MAX), &policy(true), 10_000),
        Some(Plan {
            slots: 4,
            end: 40,
            compact: true
        })
    );
}

#[test]
fn cleaning_stops_below_the_last_stable_offset() {
    let layout = Layout {
        parquet_end: 30,
        files: vec![
            file(0, 9, 100, 10),
            file(10, 19, 200, 10),
            file(20, 29, 300, 10),
        ],
        ..Layout::default()
    };
    // A transaction open from offset 15: the second file may hold its records.
    assert_eq!(
        plan(&layout, (0, 15), &policy(true), 10_000),
        Some(Plan {
            slots: 1,
            end: 10,
            compact: true
        })
    );
    assert_eq!(plan(&layout, (0, 5), &policy(true), 10_000), None);
}

/// One record of the model: (key, value; None is a tombstone, timestamp).
type ModelRecord = (u8, Option<u8>, i64);

fn record(offset: i64, (key, value, timestamp): ModelRecord) -> Record {
    Record {
        offset,
        timestamp,
        key: Some(Bytes::from(vec![key])),
        value: value.map(|v| Bytes::from(vec![v])),
        headers: Vec::new(),
    }
}

/// The table a consumer builds replaying records from the start.
fn replay<'a>(records: impl Iterator<Item = &'a Record>) -> BTreeMap<Bytes, Bytes> {
    let mut table = BTreeMap::new();
    for r in records {
        let key = r.key.clone().expect("keyed");
        match &r.value {
            Some(v) => table.insert(key, v.clone()),
            None => table.remove(&key),
        };
    }
    table
}

proptest! {
    #[test]
    fn log_compaction_keeps_the_latest_per_key_and_the_same_table(
        log in prop::collection::vec((0u8..6, prop::option::weighted(0.8, any::<u8>()), 0i64..100), 1..80),
        cleanable in 0usize..80,
        log_start in 0i64..20,
        horizon in 0i64..120,
    ) {
        let records: Vec<Record> = log.iter().enumerate().map(|(i, r)| record(i as i64, *r)).collect();
        let cleanable = cleanable.min(records.len());
        let (range, head) = records.split_at(cleanable);
        let mut latest = HashMap::new();
        for r in range {
            latest.insert(r.key.clone().expect("keyed"), r.offset);
        }
        let kept: Vec<Record> = range
            .iter()
            .filter(|r| keep(r, log_start, Some(&latest), horizon))
            .cloned()
            .collect();
        // Offsets never change and order is kept; nothing at or above the cleanable point moves.
        prop_assert!(kept.windows(2).all(|w| w[0].offset < w[1].offset));
        for r in &kept {
            prop_assert_eq!(&records[r.offset as usize], r);
            prop_assert!(r.offset >= log_start);
            prop_assert_eq!(latest.get(r.key.as_ref().expect("keyed")), Some(&r.offset), "only the latest of a key");
        }
        // Every key's latest record survives, unless below the log start or an old tombstone.
        for (key, &offset) in &latest {
            let r = &records[offset as usize];
            let expired_tombstone = r.value.is_none() && r.timestamp < horizon;
            let survives = kept.iter().any(|k| k.offset == offset);
            prop_assert_eq!(survives, offset >= log_start && !expired_tombstone, "key {:?}", key);
        }
        // Replaying the compacted log rebuilds the same table as replaying everything (from the
        // log start: what a consumer can read).
        let readable: Vec<&Record> = records.iter().filter(|r| r.offset >= log_start).collect();
        let all_latest_readable = latest.values().all(|&o| o >= log_start);
        if all_latest_readable {
            let head = head.iter().filter(|r| r.offset >= log_start);
            prop_assert_eq!(
                replay(kept.iter().chain(head)),
                replay(readable.into_iter())
            );
        }
    }
}
