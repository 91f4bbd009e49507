//! Times the controller's cluster view read ([`ClusterView::read`]) against a real etcd holding
//! many partitions: what every broker's controller pays on each pass.
//!
//! Starts its own etcd (`SKIFF_ETCD_BIN`, default `etcd`) in a temporary directory, creates
//! `topics` topics of `per_topic` partitions with a stored state each (as if claimed and written
//! to), then reads the view `runs` times and prints the median.
//!
//!     cargo build --release -p skiff-tiering --example cluster_view_scale
//!     target/release/examples/cluster_view_scale [topics=500] [per_topic=100] [runs=7]

// A benchmark: it measures wall time and waits for a real etcd process.
#![allow(clippy::disallowed_methods)]

use skiff_tiering::catalog::Catalog;
use skiff_tiering::cluster::view::ClusterView;
use skiff_tiering::keys::{self, PartitionState};
use skiff_tiering::metadata::etcd::{EtcdConfig, EtcdStore};
use skiff_tiering::metadata::{MetadataStore, Txn, TxnOp};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .map_or(default, |a| a.parse().expect("a number"))
}

#[tokio::main]
async fn main() {
    let (topics, per_topic, runs) = (arg(1, 500), arg(2, 100), arg(3, 7));
    let binary = std::env::var("SKIFF_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut etcd = Command::new(&binary)
        .args(["--name", "bench", "--data-dir"])
        .arg(dir.path())
        .args(["--listen-client-urls", &endpoint])
        .args(["--advertise-client-urls", &endpoint])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("bench={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd (Debian etcd-server)");

    let deadline = Instant::now() + Duration::from_secs(20);
    let store = loop {
        let config = EtcdConfig {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(30),
            ..EtcdConfig::new(vec![endpoint.clone()])
        };
        if let Ok(store) = EtcdStore::connect(&config).await {
            if store.get("/health").await.is_ok() {
                break store;
            }
        }
        assert!(Instant::now() < deadline, "etcd did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let store: Arc<dyn MetadataStore> = Arc::new(store);

    let started = Instant::now();
    let catalog = Catalog::new(Arc::clone(&store));
    let per_topic_i32 = i32::try_from(per_topic).expect("partitions per topic fit i32");
    let mut ops = Vec::new();
    let mut state_bytes = 0;
    for t in 0..topics {
        let name = format!("t{t:05}");
        catalog
            .create(&name, per_topic_i32, Default::default(), 0)
            .await
            .expect("create topic");
        for p in 0..per_topic_i32 {
            // Plausible figures for a partition that has been led and written for a while.
            let state = PartitionState {
                leader: 1 + p % 3,
                leader_epoch: 12,
                log_start_offset: 1_234_567,
                next_offset: 9_876_543_210,
            };
            let key = keys::partition(&name, p);
            let value = keys::encode(&state);
            state_bytes += key.len() + value.len();
            ops.push(TxnOp::put(key, value));
            if ops.len() == store.max_txn_ops() {
                let txn = Txn::when(vec![]).and_then(std::mem::take(&mut ops));
                store.txn(txn).await.expect("put states");
            }
        }
    }
    if !ops.is_empty() {
        store
            .txn(Txn::when(vec![]).and_then(ops))
            .await
            .expect("put states");
    }
    println!(
        "{} partitions in {topics} topics: {:.1} MiB of partition-state keys and values, written in {:.1} s",
        topics * per_topic,
        state_bytes as f64 / f64::from(1 << 20),
        started.elapsed().as_secs_f64()
    );

    let mut times_ms = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let view = ClusterView::read(&store).await.expect("cluster view");
        times_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let read: usize = view.topics.values().map(|t| t.partitions.len()).sum();
        assert_eq!(read, topics * per_topic, "every partition state read");
    }
    let mut sorted = times_ms.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "ClusterView::read over {} partitions: median {:.0} ms of {runs} runs {:?}",
        topics * per_topic,
        sorted[sorted.len() / 2],
        times_ms.iter().map(|t| t.round()).collect::<Vec<_>>()
    );
    let _ = etcd.kill();
    let _ = etcd.wait();
}
