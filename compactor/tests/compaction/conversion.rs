//! Flush objects to Parquet: what consumers read afterwards, jobs shared between compactors.

use super::fixture::*;

#[tokio::test]
async fn consumers_read_the_same_records_from_parquet() {
    let fx = Fixture::new(100).await;
    fx.topic("t", 2).await;
    let tp = TopicPartition::new("t", 0);
    let mut produced = Vec::new();
    for i in 0..6 {
        produced.extend(fx.produce(&tp, 5 + i, &format!("f{i}")).await);
    }
    fx.produce(&TopicPartition::new("t", 1), 3, "other").await;
    fx.compact().await;

    let layout = fx.layout("t", 0).await;
    assert_eq!(
        layout.parquet_end,
        produced.len() as i64,
        "all of it in Parquet"
    );
    assert!(!layout.files.is_empty());
    assert_eq!(
        fx.keys_under(&keys::index_prefix("t", 0)).await,
        0,
        "tail keys gone"
    );
    assert_eq!(fx.layout("t", 1).await.parquet_end, 3);
    assert!(
        fx.object_keys("parquet/topic=t/partition=0/").await.len() >= 2,
        "jobs are bounded"
    );

    // The broker's view still names the flush objects: once they are gone, it reloads.
    fx.delete_wal_objects().await;
    assert_eq!(fx.consume(&tp, 0).await, produced);
    // A read of plenty spans files: its batches go out as slices of each, in order.
    let big = fx
        .log
        .read(&tp, 0, 1 << 20, Isolation::ReadUncommitted)
        .await
        .expect("read");
    assert!(big.batches.len() > 1);
    assert_eq!(big.records().concat(), big.batches.concat());
    assert_eq!(fx.consume(&tp, 7).await, produced[7..]);

    // New data after the Parquet part: a consumer reads across the boundary.
    let more = fx.produce(&tp, 4, "after").await;
    let mut all = produced.clone();
    all.extend(more);
    assert_eq!(fx.consume(&tp, 0).await, all);
    let (start, end) = fx.log.offsets(&tp).await.expect("offsets");
    assert_eq!((start, end), (0, all.len() as i64));
}

#[tokio::test]
async fn leader_roll_ups_and_swaps_never_lose_or_repeat_a_record() {
    // Fan-out 2: the leader rolls its index up every few flushes, racing the compactor.
    let fx = Fixture::new(2).await;
    fx.topic("t", 1).await;
    let tp = TopicPartition::new("t", 0);
    let mut produced = Vec::new();
    for round in 0..5 {
        for i in 0..7 {
            produced.extend(fx.produce(&tp, 2 + i % 3, &format!("r{round}f{i}")).await);
        }
        fx.compact().await;
        assert_eq!(fx.consume(&tp, 0).await, produced, "round {round}");
    }
    let layout = fx.layout("t", 0).await;
    assert_eq!(layout.parquet_end, produced.len() as i64);
    fx.delete_wal_objects().await;
    assert_eq!(fx.consume(&tp, 0).await, produced);
}

#[tokio::test]
async fn data_below_the_log_start_is_dropped_not_converted() {
    let fx = Fixture::new(100).await;
    fx.topic("t", 1).await;
    let tp = TopicPartition::new("t", 0);
    let mut produced = Vec::new();
    for i in 0..4 {
        produced.extend(fx.produce(&tp, 3, &format!("f{i}")).await);
    }
    fx.log.delete_records(&tp, 7).await.expect("delete records");
    fx.compact().await;
    let layout = fx.layout("t", 0).await;
    assert_eq!(layout.parquet_end, 12);
    let rows: u64 = layout.files.iter().map(|f| f.rows).sum();
    assert_eq!(rows, 5, "only offsets 7..12 were written");
    fx.delete_wal_objects().await;
    assert_eq!(fx.consume(&tp, 7).await, produced[7..]);

    // Everything below a later log start: the files go from the layout.
    let _ = fx.produce(&tp, 2, "late").await;
    fx.log
        .delete_records(&tp, 14)
        .await
        .expect("delete records");
    fx.compact().await;
    let layout = fx.layout("t", 0).await;
    assert_eq!(layout.parquet_end, 14);
    assert!(layout.files.iter().all(|f| f.last_offset >= 14));
}

#[tokio::test]
async fn records_deleted_inside_a_parquet_file_leave_it() {
    let fx = Fixture::new(100).await;
    fx.topic("t", 1).await;
    let tp = TopicPartition::new("t", 0);
    let produced = fx.produce(&tp, 10, "one").await;
    fx.compact().await;
    let before = fx.layout("t", 0).await;
    assert_eq!(before.files.len(), 1);
    assert_eq!(before.files[0].rows, 10);
    fx.log.delete_records(&tp, 6).await.expect("delete records");
    fx.compact().await;
    let after = fx.layout("t", 0).await;
    assert_eq!(after.files.len(), 1);
    assert_eq!((after.files[0].base_offset, after.files[0].rows), (6, 4));
    assert_eq!(fx.consume(&tp, 6).await, produced[6..]);
}

#[tokio::test]
async fn json_topics_get_typed_columns_and_fetch_ignores_them() {
    let fx = Fixture::new(100).await;
    fx.topic_with("j", 1, &[("parquet.value.format", "json")])
        .await;
    let tp = TopicPartition::new("j", 0);
    let produced = produce_keyed(
        &fx,
        &tp,
        &[
            ("a", Some(r#"{"price": 3, "item": "tea", "ok": true}"#)),
            ("b", Some(r#"{"price": 2.5, "item": "cake"}"#)),
            ("c", Some("not json")),
            ("d", None),
        ],
    )
    .await;
    fx.compact().await;
    let layout = fx.layout("j", 0).await;
    let file = &layout.files[0];
    let bytes = fx
        .objects
        .get(&file.object.as_str().into())
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("parquet");
    let names: Vec<String> = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert!(names.ends_with(&[
        "value_item".to_owned(),
        "value_ok".to_owned(),
        "value_price".to_owned()
    ]));
    let kinds: Vec<String> = reader
        .schema()
        .fields()
        .iter()
        .rev()
        .take(3)
        .map(|f| f.data_type().to_string())
        .collect();
    assert_eq!(kinds, vec!["Float64", "Boolean", "Utf8"]);
    // Fetch reads the same records back from the file (with the flush objects gone, nothing
    // else could serve them; a read of typed columns would fail the batch rebuild).
    fx.delete_wal_objects().await;
    assert_eq!(fx.consume_when(&tp, 0, |r| r.len() == 4).await, produced);
}

#[tokio::test]
async fn two_compactors_share_the_work_without_doing_it_twice() {
    let fx = Fixture::new(100).await;
    fx.topic("t", 6).await;
    let mut produced = Vec::new();
    for p in 0..6 {
        let tp = TopicPartition::new("t", p);
        for i in 0..3 {
            produced.push((tp.clone(), fx.produce(&tp, 4, &format!("p{p}f{i}")).await));
        }
    }
    let other = Compactor::new(
        fx.store.clone(),
        fx.objects.clone(),
        fx.clock.clone(),
        CompactorSettings {
            job_max_bytes: 1_000,
            pass_max_bytes: 2_000,
            ..CompactorSettings::default()
        },
    );
    fx.clock.advance_ms(120_000);
    for _ in 0..50 {
        let (a, b) = tokio::join!(fx.compactor.pass(), other.pass());
        let (a, b) = (a.expect("pass"), b.expect("pass"));
        if a.jobs + b.jobs == 0 {
            break;
        }
    }
    let load = |c: &Compactor| {
        let s = c.stats();
        (
            s.files_written.load(std::sync::atomic::Ordering::Relaxed),
            s.conflicts.load(std::sync::atomic::Ordering::Relaxed),
        )
    };
    let ((files_a, conflicts_a), (files_b, conflicts_b)) = (load(&fx.compactor), load(&other));
    assert!(
        files_a > 0 && files_b > 0,
        "both took part: {files_a} and {files_b} files"
    );
    assert_eq!(conflicts_a + conflicts_b, 0, "no job was done twice");
    let mut referenced = 0;
    for p in 0..6 {
        let layout = fx.layout("t", p).await;
        assert_eq!(layout.parquet_end, 12);
        referenced += layout.files.len() as u64;
    }
    assert_eq!(
        referenced,
        files_a + files_b,
        "every file written is in the index"
    );
    let listed = fx.object_keys("parquet").await.len() as u64;
    assert_eq!(listed, files_a + files_b, "no file was written for nothing");
    for (tp, records) in produced.chunks(3).map(|c| {
        (
            c[0].0.clone(),
            c.iter().flat_map(|(_, r)| r.clone()).collect::<Vec<_>>(),
        )
    }) {
        assert_eq!(fx.consume(&tp, 0).await, records);
    }
}
