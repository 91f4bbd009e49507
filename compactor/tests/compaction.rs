//! The compactor against a real log (embedded metadata store, in-memory bucket): what a broker
//! serves after its data moved to Parquet is exactly what was produced.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use skiff_compactor::{Compactor, CompactorSettings};
use skiff_tiering::batch;
use skiff_tiering::clock::ManualClock;
use skiff_tiering::keys::{self, Layout};
use skiff_tiering::log::{Isolation, TopicPartition};
use skiff_tiering::metadata::embedded::EmbeddedStore;
use skiff_tiering::metadata::MetadataStore;
use skiff_tiering::producers::{AbortedTxn, Marker};
use skiff_tiering::records::{self, BatchFields, Header, Record};
use skiff_tiering::{Clock, Log, LogConfig};
use std::sync::Arc;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn MetadataStore>,
    objects: Arc<InMemory>,
    clock: Arc<ManualClock>,
    log: Log,
    compactor: Arc<Compactor>,
}

impl Fixture {
    async fn new(fanout: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let store: Arc<dyn MetadataStore> = Arc::new(
            EmbeddedStore::open(&dir.path().join("meta.redb"), clock.clone())
                .await
                .expect("open store"),
        );
        let objects = Arc::new(InMemory::new());
        let log = Log::open(
            store.clone(),
            objects.clone(),
            clock.clone(),
            LogConfig {
                flush_linger_ms: 1,
                index_rollup_fanout: fanout,
                ..LogConfig::default()
            },
        );
        let compactor = Compactor::new(
            store.clone(),
            objects.clone(),
            clock.clone(),
            CompactorSettings {
                job_max_bytes: 1_000,
                pass_max_bytes: 2_000,
                ..CompactorSettings::default()
            },
        );
        Self {
            _dir: dir,
            store,
            objects,
            clock,
            log,
            compactor,
        }
    }

    async fn topic(&self, name: &str, partitions: i32) {
        self.topic_with(name, partitions, &[]).await;
    }

    async fn topic_with(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        let configs = configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let topic = self
            .log
            .catalog()
            .create(name, partitions, configs, 0)
            .await
            .expect("create");
        for p in 0..partitions {
            skiff_tiering::cluster::claim(&*self.store, name, p, 1, None, topic.create_revision)
                .await
                .expect("claim")
                .expect("unclaimed");
        }
    }

    /// Appends one batch of `n` records and returns them as produced.
    async fn produce(&self, tp: &TopicPartition, n: usize, tag: &str) -> Vec<Record> {
        let records = (0..n)
            .map(|i| Record {
                offset: i as i64,
                timestamp: 1_700_000_000_000 + i as i64,
                key: (i % 2 == 0).then(|| Bytes::from(format!("{tag}-key-{i}"))),
                value: Some(Bytes::from(format!(
                    "{tag}-value-{i}-{}",
                    "x".repeat(i * 7)
                ))),
                headers: vec![Header {
                    key: Bytes::from_static(b"h"),
                    value: Some(Bytes::from(format!("{i}"))),
                }],
            })
            .collect();
        self.append(tp, records).await
    }

    /// Appends `records` (offsets relative to the batch) as one plain batch; returns them at
    /// the offsets the log gave them.
    async fn append(&self, tp: &TopicPartition, records: Vec<Record>) -> Vec<Record> {
        let fields = BatchFields {
            base_offset: 0,
            last_offset: records.len() as i64 - 1,
            partition_leader_epoch: 0,
            log_append_time: false,
            transactional: false,
            control: false,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        };
        let bytes = records::encode(&fields, &records);
        let header = batch::parse_header(&bytes).expect("header");
        let (_, start) = self.log.offsets(tp).await.expect("offsets");
        let outcome = self
            .log
            .append(tp.clone(), vec![(header, bytes)], false)
            .await
            .expect("append");
        assert_eq!(outcome.base_offset, start);
        records
            .into_iter()
            .map(|mut r| {
                r.offset += start;
                r
            })
            .collect()
    }

    /// What [`Self::consume`] returns once `done` holds for it (the broker learns of a swap
    /// through its layout watch, asynchronously), or after 5 s.
    async fn consume_when(
        &self,
        tp: &TopicPartition,
        offset: i64,
        done: impl Fn(&[Record]) -> bool,
    ) -> Vec<Record> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let records = self.consume(tp, offset).await;
            if done(&records) || tokio::time::Instant::now() > deadline {
                return records;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Every record the log serves from `offset`, read in small fetches.
    async fn consume(&self, tp: &TopicPartition, mut offset: i64) -> Vec<Record> {
        let mut out = Vec::new();
        loop {
            let read = self
                .log
                .read(tp, offset, 300, Isolation::ReadUncommitted)
                .await
                .expect("read");
            if read.batches.is_empty() {
                assert_eq!(offset, read.high_watermark);
                return out;
            }
            assert_eq!(read.records(), read.batches.concat());
            for bytes in read.batches {
                let header = batch::parse_header(&bytes).expect("header");
                batch::verify_crc(&header, &bytes).expect("a valid batch CRC");
                let records = records::decode(&header, &bytes).expect("decode");
                assert!(records.iter().all(|r| r.offset <= header.last_offset()));
                for record in records::decode(&header, &bytes).expect("decode") {
                    if record.offset >= offset {
                        out.push(record);
                    }
                }
                offset = header.last_offset() + 1;
            }
        }
    }

    async fn layout(&self, topic: &str, partition: i32) -> Layout {
        match self
            .store
            .get(&keys::layout(topic, partition))
            .await
            .expect("get")
        {
            Some(kv) => keys::decode(&kv.key, &kv.value).expect("decode"),
            None => Layout::default(),
        }
    }

    async fn keys_under(&self, prefix: &str) -> usize {
        self.store
            .range_prefix(prefix, 0)
            .await
            .expect("range")
            .len()
    }

    async fn object_keys(&self, prefix: &str) -> Vec<String> {
        let listed: Vec<_> = self
            .objects
            .list(Some(&prefix.into()))
            .try_collect()
            .await
            .expect("list");
        listed.into_iter().map(|o| o.location.to_string()).collect()
    }

    /// Deletes every flush object, as garbage collection does once nothing references them.
    async fn delete_wal_objects(&self) {
        for key in self.object_keys("wal").await {
            self.objects
                .delete(&key.as_str().into())
                .await
                .expect("delete");
        }
    }

    /// Runs passes (with the clock past the freshness) until one does nothing.
    async fn compact(&self) {
        self.clock.advance_ms(120_000);
        for _ in 0..100 {
            let report = self.compactor.pass().await.expect("pass");
            assert_eq!(report.failures, 0, "{report:?}");
            if report.jobs == 0 {
                return;
            }
        }
        panic!("compaction did not finish");
    }
}

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
    // A read of plenty spans files: its batches joined in order.
    let big = fx
        .log
        .read(&tp, 0, 1 << 20, Isolation::ReadUncommitted)
        .await
        .expect("read");
    assert!(big.batches.len() > 1);
    assert_eq!(big.records(), big.batches.concat());
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

/// Appends one batch of keyed records (None: a tombstone) and returns them as produced.
async fn produce_keyed(
    fx: &Fixture,
    tp: &TopicPartition,
    items: &[(&str, Option<&str>)],
) -> Vec<Record> {
    let records = items
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            offset: i as i64,
            timestamp: fx.clock.now_ms(),
            key: Some(Bytes::from(k.to_string())),
            value: v.map(|v| Bytes::from(v.to_string())),
            headers: Vec::new(),
        })
        .collect();
    fx.append(tp, records).await
}

#[tokio::test]
async fn log_compaction_keeps_the_latest_value_per_key_at_its_offset() {
    let fx = Fixture::new(100).await;
    fx.topic_with(
        "c",
        1,
        &[
            ("cleanup.policy", "compact"),
            ("delete.retention.ms", "300000"),
            ("min.cleanable.dirty.ratio", "0.1"),
        ],
    )
    .await;
    let tp = TopicPartition::new("c", 0);
    let mut all = Vec::new();
    all.extend(
        produce_keyed(
            &fx,
            &tp,
            &[("a", Some("a1")), ("b", Some("b1")), ("c", Some("c1"))],
        )
        .await,
    );
    all.extend(
        produce_keyed(
            &fx,
            &tp,
            &[("a", Some("a2")), ("b", None), ("d", Some("d1"))],
        )
        .await,
    );
    all.extend(produce_keyed(&fx, &tp, &[("a", Some("a3")), ("c", None)]).await);
    fx.compact().await;
    let survivors = fx.consume_when(&tp, 0, |r| r.len() == 4).await;
    let seen: Vec<(i64, Option<Bytes>)> = survivors
        .iter()
        .map(|r| (r.offset, r.value.clone()))
        .collect();
    // The tombstones are still within delete.retention.ms: they stay, the values they deleted go.
    assert_eq!(
        seen,
        vec![
            (4, None), // b deleted
            (5, Some(Bytes::from_static(b"d1"))),
            (6, Some(Bytes::from_static(b"a3"))),
            (7, None), // c deleted
        ]
    );
    for r in &survivors {
        assert_eq!(r, &all[r.offset as usize], "offsets and records unchanged");
    }
    assert_eq!(fx.log.offsets(&tp).await.expect("offsets"), (0, 8));
    // A later update dirties the range again; past delete.retention.ms the tombstones go too.
    all.extend(produce_keyed(&fx, &tp, &[("d", Some("d2"))]).await);
    fx.clock.advance_ms(300_000);
    fx.compact().await;
    let values: Vec<(i64, Option<Bytes>)> = fx
        .consume_when(&tp, 0, |r| r.len() == 2)
        .await
        .iter()
        .map(|r| (r.offset, r.value.clone()))
        .collect();
    assert_eq!(
        values,
        vec![
            (6, Some(Bytes::from_static(b"a3"))),
            (8, Some(Bytes::from_static(b"d2")))
        ]
    );
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

/// Appends producer 9's transactional batch of one record (sequence `sequence`) and aborts it;
/// returns the aborted transaction.
async fn aborted_transaction(
    fx: &Fixture,
    tp: &TopicPartition,
    sequence: i32,
    key: Option<&str>,
    value: Option<&str>,
) -> AbortedTxn {
    transaction(fx, tp, sequence, (key, value), false).await
}

/// Appends producer 9's transactional batch of one record (sequence `sequence`) and its marker;
/// returns the transaction's first offset and its marker's offset.
async fn transaction(
    fx: &Fixture,
    tp: &TopicPartition,
    sequence: i32,
    (key, value): (Option<&str>, Option<&str>),
    commit: bool,
) -> AbortedTxn {
    let records = vec![Record {
        offset: 0,
        timestamp: fx.clock.now_ms(),
        key: key.map(|k| Bytes::from(k.to_string())),
        value: value.map(|v| Bytes::from(v.to_string())),
        headers: vec![],
    }];
    let fields = BatchFields {
        base_offset: 0,
        last_offset: 0,
        partition_leader_epoch: 0,
        log_append_time: false,
        transactional: true,
        control: false,
        producer_id: 9,
        producer_epoch: 0,
        base_sequence: sequence,
    };
    let bytes = records::encode(&fields, &records);
    let header = batch::parse_header(&bytes).expect("header");
    let first = fx
        .log
        .append(tp.clone(), vec![(header, bytes)], false)
        .await
        .expect("transactional append")
        .base_offset;
    let abort = Marker {
        producer_id: 9,
        epoch: 0,
        commit,
        revision: 0,
        end: 0,
    };
    let key = keys::marker_request(&tp.topic, tp.partition, "nine");
    let marker = fx
        .log
        .append_marker(tp.clone(), abort, key)
        .await
        .expect("marker")
        .base_offset;
    AbortedTxn {
        producer_id: 9,
        first_offset: first,
        last_offset: marker,
    }
}

#[tokio::test]
async fn log_compaction_cleans_transactions_as_kafka_does() {
    let fx = Fixture::new(100).await;
    fx.topic_with(
        "c",
        1,
        &[
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.1"),
            ("delete.retention.ms", "600000"),
        ],
    )
    .await;
    let tp = TopicPartition::new("c", 0);
    produce_keyed(&fx, &tp, &[("k", Some("committed")), ("j", Some("j1"))]).await;
    // Aborted: its value never replaces the committed one, and it is removed.
    let aborted = aborted_transaction(&fx, &tp, 0, Some("k"), Some("aborted")).await;
    // Aborted, with a key nothing else writes: removed all the same.
    let lost = aborted_transaction(&fx, &tp, 1, Some("x"), Some("lost")).await;
    // Committed: compacted like plain records (j1 goes).
    transaction(&fx, &tp, 2, (Some("j"), Some("j-txn")), true).await;
    // A committed tombstone (Kafka Streams changelogs have them): goes after
    // delete.retention.ms, and its marker with it.
    transaction(&fx, &tp, 3, (Some("t"), None), true).await;
    fx.compact().await;
    let marker = Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0]));
    let values = |records: &[Record]| -> Vec<Option<Bytes>> {
        records.iter().map(|r| r.value.clone()).collect()
    };
    // Within delete.retention.ms: the aborted transaction's marker stays (with its entry in
    // the aborted list), and so do the tombstone and every commit marker.
    let survivors = fx.consume_when(&tp, 0, |r| r.len() == 7).await;
    assert_eq!(
        values(&survivors),
        vec![
            Some(Bytes::from_static(b"committed")),
            marker.clone(),
            marker.clone(),
            Some(Bytes::from_static(b"j-txn")),
            marker.clone(),
            None,
            marker.clone(),
        ]
    );
    let layout = fx.layout("c", 0).await;
    let listed: Vec<AbortedTxn> = layout
        .files
        .iter()
        .flat_map(|f| f.aborted.clone())
        .collect();
    assert_eq!(listed, [aborted, lost]);
    assert!(layout.tombstones_expire_ms > 0, "a cleaning is due later");
    // Past it: the tombstone goes, and the markers of transactions left empty; the commit
    // marker of j's transaction stays with its record.
    fx.clock.advance_ms(600_000);
    fx.compact().await;
    let survivors = fx.consume_when(&tp, 0, |r| r.len() == 3).await;
    assert_eq!(
        values(&survivors),
        vec![
            Some(Bytes::from_static(b"committed")),
            Some(Bytes::from_static(b"j-txn")),
            marker,
        ]
    );
    let layout = fx.layout("c", 0).await;
    assert!(layout.files.iter().all(|f| f.aborted.is_empty()));
    assert_eq!(layout.tombstones_expire_ms, 0, "no cleaning is due");
}

#[tokio::test]
async fn aborted_transactions_survive_conversion_to_parquet() {
    let fx = Fixture::new(100).await;
    fx.topic("t", 1).await;
    let tp = TopicPartition::new("t", 0);
    let mut expected = Vec::new();
    for k in 0..4i32 {
        // Producer 9's transaction k, aborted, then plain data.
        expected.push(aborted_transaction(&fx, &tp, k, None, Some(&format!("txn-{k}"))).await);
        fx.produce(&tp, 3, &format!("plain{k}")).await;
    }
    fx.compact().await;
    let layout = fx.layout("t", 0).await;
    assert!(
        layout.parquet_end > expected[3].last_offset,
        "all in Parquet"
    );
    fx.delete_wal_objects().await;
    let end = fx.log.offsets(&tp).await.expect("offsets").1;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let read = loop {
        // The broker learns of the swap through its layout watch: wait for its reload.
        let read = fx
            .log
            .read(&tp, 0, 1 << 20, Isolation::ReadCommitted)
            .await
            .expect("read");
        if read.batches.len() > 1 || tokio::time::Instant::now() > deadline {
            break read;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(read.last_stable_offset, end);
    assert_eq!(
        read.aborted, expected,
        "every abort found in the Parquet files"
    );
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
