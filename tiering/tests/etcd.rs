//! The metadata-store contract and the log's commit protocol against a real etcd.
//!
//! Each test starts its own etcd (Debian `etcd-server`; `scripts/test.sh` installs it) on free
//! loopback ports with a temporary data directory, so tests never share state. Set
//! `SKIFF_ETCD_BIN` to use another binary.

// Waits for a real etcd process in real time; the clock seam is for the code under test.
#![allow(clippy::disallowed_methods)]

use bytes::Bytes;
use futures::FutureExt;
use object_store::memory::InMemory;
use skiff_tiering::batch;
use skiff_tiering::log::{Isolation, TopicPartition};
use skiff_tiering::metadata::contract;
use skiff_tiering::metadata::etcd::{EtcdConfig, EtcdStore};
use skiff_tiering::metadata::MetadataStore;
use skiff_tiering::{Log, LogConfig, SystemClock};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A private etcd, killed (by its own pid) when dropped.
struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn start_etcd() -> (Etcd, EtcdStore) {
    let binary = std::env::var("SKIFF_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(&binary)
        .args(["--name", "test", "--data-dir"])
        .arg(dir.path())
        .args([
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("test={peer_url}")])
        .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {binary:?} ({e}); install etcd-server (scripts/test.sh does)")
        });
    let etcd = Etcd {
        child,
        _dir: dir,
        endpoint: endpoint.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let config = EtcdConfig {
            connect_timeout: Duration::from_millis(500),
            ..EtcdConfig::new(vec![etcd.endpoint.clone()])
        };
        if let Ok(store) = EtcdStore::connect(&config).await {
            if store.get("/health").await.is_ok() {
                return (etcd, store);
            }
        }
        assert!(Instant::now() < deadline, "etcd did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_passes_the_metadata_contract() {
    let (_etcd, store) = start_etcd().await;
    let advance = |ms: i64| tokio::time::sleep(Duration::from_millis(ms as u64)).boxed();
    contract::run_all(&store, &advance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_refuses_oversized_transactions_as_too_large() {
    use skiff_tiering::metadata::{MetadataError, Txn, TxnOp};
    let (_etcd, store) = start_etcd().await;
    let ops = (0..store.max_txn_ops() + 1)
        .map(|i| TxnOp::put(format!("/big/{i}"), "v"))
        .collect();
    let result = store.txn(Txn::when(vec![]).and_then(ops)).await;
    assert!(
        matches!(result, Err(MetadataError::TooLarge(_))),
        "{result:?}"
    );
}

/// A minimal valid v2 batch of one record (uncompressed), as a client would send it.
fn one_record_batch(value: &[u8]) -> Bytes {
    let mut record = vec![0u8, 0, 0, 1, 0, (value.len() * 2) as u8];
    record.extend_from_slice(value);
    record.push(0); // no headers
    let mut batch = vec![0u8; batch::HEADER_LEN];
    batch.push((record.len() * 2) as u8);
    batch.extend_from_slice(&record);
    let batch_length = (batch.len() - batch::LOG_OVERHEAD) as i32;
    batch[8..12].copy_from_slice(&batch_length.to_be_bytes());
    batch[16] = 2;
    batch[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    batch[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    batch[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    batch[57..61].copy_from_slice(&1i32.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(batch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_flush_over_many_partitions_commits_within_etcd_limits() {
    let (_etcd, store) = start_etcd().await;
    let store: Arc<dyn MetadataStore> = Arc::new(store);
    let objects = Arc::new(InMemory::new());
    let config = LogConfig {
        flush_linger_ms: 200,
        ..LogConfig::default()
    };
    let log = Log::open(
        store.clone(),
        objects.clone(),
        Arc::new(SystemClock),
        config.clone(),
    );
    // 150 partitions: 300 puts in one flush, more than twice etcd's 128 operations per txn.
    let partitions = 150;
    let topic = log
        .catalog()
        .create("wide", partitions, Default::default(), 0)
        .await
        .expect("create");
    for p in 0..partitions {
        skiff_tiering::cluster::claim(&*store, "wide", p, 1, None, topic.create_revision)
            .await
            .expect("claim")
            .expect("unclaimed");
    }
    // Load every partition first, so all 150 appends land within one linger.
    for p in 0..partitions {
        let tp = TopicPartition::new("wide", p);
        assert_eq!(log.offsets(&tp).await.expect("offsets"), (0, 0));
    }
    let mut pending = Vec::new();
    for p in 0..partitions {
        let data = one_record_batch(format!("value-{p}").as_bytes());
        let batches = batch::split_and_validate(&data, 1 << 20).expect("valid batch");
        let tp = TopicPartition::new("wide", p);
        pending.push(log.enqueue(tp, batches, false).await.expect("enqueue"));
    }
    for reply in pending {
        assert_eq!(
            reply.await.expect("reply").expect("committed").base_offset,
            0
        );
    }
    assert_eq!(
        log.stats()
            .objects_written
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    log.shutdown().await;

    // A new broker process reads everything back from etcd and the bucket.
    let log = Log::open(store, objects, Arc::new(SystemClock), config);
    for p in 0..partitions {
        let tp = TopicPartition::new("wide", p);
        assert_eq!(log.offsets(&tp).await.expect("offsets"), (0, 1));
        let read = log
            .read(&tp, 0, 1 << 20, Isolation::ReadUncommitted)
            .await
            .expect("read");
        assert_eq!(read.batches.len(), 1);
        let value = format!("value-{p}");
        assert!(read.batches[0].ends_with(&[value.as_bytes(), &[0]].concat()));
    }
    log.shutdown().await;
}

/// The paged range (`metadata/etcd/range.rs`) restarts when its snapshot revision is compacted,
/// recognising etcd's answer by code and text: check this etcd answers that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_reports_a_compacted_revision_as_out_of_range() {
    let (etcd, _store) = start_etcd().await;
    let mut client = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
        .await
        .expect("connect");
    let first = client.put("/compact/k", "1", None).await.expect("put");
    let old = first.header().expect("header").revision();
    let second = client.put("/compact/k", "2", None).await.expect("put");
    let now = second.header().expect("header").revision();
    client.compact(now, None).await.expect("compact");
    let options = etcd_client::GetOptions::new().with_revision(old);
    match client.get("/compact/k", Some(options)).await {
        Err(etcd_client::Error::GRpcStatus(status)) => {
            assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
            assert!(status.message().contains("compacted"), "{status:?}");
        }
        other => panic!("expected a compacted error, got {other:?}"),
    }
}
