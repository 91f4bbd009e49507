//! A log and a compactor over the same embedded metadata store and in-memory bucket.

pub use bytes::Bytes;
pub use futures::TryStreamExt;
pub use object_store::memory::InMemory;
pub use object_store::{ObjectStore, ObjectStoreExt};
pub use skiff_compactor::{Compactor, CompactorSettings};
pub use skiff_tiering::batch;
pub use skiff_tiering::clock::ManualClock;
pub use skiff_tiering::keys::{self, Layout};
pub use skiff_tiering::log::{Isolation, TopicPartition};
pub use skiff_tiering::metadata::embedded::EmbeddedStore;
pub use skiff_tiering::metadata::MetadataStore;
pub use skiff_tiering::producers::{AbortedTxn, Marker};
pub use skiff_tiering::records::{self, BatchFields, Header, Record};
pub use skiff_tiering::{Clock, Log, LogConfig};
pub use std::sync::Arc;

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub store: Arc<dyn MetadataStore>,
    pub objects: Arc<InMemory>,
    pub clock: Arc<ManualClock>,
    pub log: Log,
    pub compactor: Arc<Compactor>,
}

impl Fixture {
    pub async fn new(fanout: usize) -> Self {
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

    pub async fn topic(&self, name: &str, partitions: i32) {
        self.topic_with(name, partitions, &[]).await;
    }

    pub async fn topic_with(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
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
    pub async fn produce(&self, tp: &TopicPartition, n: usize, tag: &str) -> Vec<Record> {
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
    pub async fn append(&self, tp: &TopicPartition, records: Vec<Record>) -> Vec<Record> {
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
    pub async fn consume_when(
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
    pub async fn consume(&self, tp: &TopicPartition, mut offset: i64) -> Vec<Record> {
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
            assert_eq!(read.records().concat(), read.batches.concat());
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

    pub async fn layout(&self, topic: &str, partition: i32) -> Layout {
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

    pub async fn keys_under(&self, prefix: &str) -> usize {
        self.store
            .range_prefix(prefix, 0)
            .await
            .expect("range")
            .len()
    }

    pub async fn object_keys(&self, prefix: &str) -> Vec<String> {
        let listed: Vec<_> = self
            .objects
            .list(Some(&prefix.into()))
            .try_collect()
            .await
            .expect("list");
        listed.into_iter().map(|o| o.location.to_string()).collect()
    }

    /// Deletes every flush object, as garbage collection does once nothing references them.
    pub async fn delete_wal_objects(&self) {
        for key in self.object_keys("wal").await {
            self.objects
                .delete(&key.as_str().into())
                .await
                .expect("delete");
        }
    }

    /// Runs passes (with the clock past the freshness) until one does nothing.
    pub async fn compact(&self) {
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

/// Appends one batch of keyed records (None: a tombstone) and returns them as produced.
pub async fn produce_keyed(
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
