//! A [`MetadataStore`] decorator that counts requests, operations and bytes: what a workload
//! costs the metadata store (etcd), measured rather than guessed, and what an operator watches
//! as etcd nears its limits.

use super::{
    KeyValue, LeaseId, MetadataStore, Read, ReadOutcome, Result, Txn, TxnOp, TxnOutcome, WatchEvent,
};
use crate::latency::LatencyHistogram;
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// Requests and what they carried, since the process started.
#[derive(Debug, Default)]
pub struct MetadataCounts {
    pub gets: AtomicU64,
    /// Range reads (by prefix, and `read_many` requests) and the keys they returned.
    pub ranges: AtomicU64,
    pub range_keys: AtomicU64,
    /// Transactions, those whose compares failed, their operations and the bytes they wrote.
    pub txns: AtomicU64,
    pub txns_failed: AtomicU64,
    pub txn_ops: AtomicU64,
    pub txn_put_bytes: AtomicU64,
    pub watches: AtomicU64,
    /// Lease grants, keep-alives and revocations.
    pub lease_requests: AtomicU64,
    /// How long gets, range reads and transactions took.
    pub get_latency: LatencyHistogram,
    pub range_latency: LatencyHistogram,
    pub txn_latency: LatencyHistogram,
}

impl MetadataCounts {
    /// Read requests: gets, and range reads or `read_many` requests.
    pub fn reads(&self) -> u64 {
        self.gets.load(Ordering::Relaxed) + self.ranges.load(Ordering::Relaxed)
    }

    /// (name, value) of every counter, for the admin API.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("gets", load(&self.gets)),
            ("ranges", load(&self.ranges)),
            ("range_keys", load(&self.range_keys)),
            ("txns", load(&self.txns)),
            ("txns_failed", load(&self.txns_failed)),
            ("txn_ops", load(&self.txn_ops)),
            ("txn_put_bytes", load(&self.txn_put_bytes)),
            ("watches", load(&self.watches)),
            ("lease_requests", load(&self.lease_requests)),
        ]
    }

    /// (request kind, latency) for `/metrics`.
    pub fn latencies(&self) -> [(&'static str, &LatencyHistogram); 3] {
        [
            ("get", &self.get_latency),
            ("range", &self.range_latency),
            ("txn", &self.txn_latency),
        ]
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Counts what goes through it to the store it wraps.
#[derive(Debug)]
pub struct MeteredMetadata {
    inner: Arc<dyn MetadataStore>,
    counts: Arc<MetadataCounts>,
}

impl MeteredMetadata {
    pub fn new(inner: Arc<dyn MetadataStore>) -> Self {
        Self {
            inner,
            counts: Arc::new(MetadataCounts::default()),
        }
    }

    pub fn counts(&self) -> Arc<MetadataCounts> {
        self.counts.clone()
    }
}

#[async_trait]
impl MetadataStore for MeteredMetadata {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        add(&self.counts.gets, 1);
        tracing::trace!(key, "metadata get");
        let started = Instant::now();
        let found = self.inner.get(key).await;
        self.counts.get_latency.record(started.elapsed());
        found
    }

    async fn range_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<KeyValue>> {
        add(&self.counts.ranges, 1);
        tracing::trace!(prefix, "metadata range");
        let started = Instant::now();
        let found = self.inner.range_prefix(prefix, limit).await;
        self.counts.range_latency.record(started.elapsed());
        let found = found?;
        add(&self.counts.range_keys, found.len() as u64);
        Ok(found)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        add(&self.counts.txns, 1);
        tracing::trace!(first_key = ?txn.success.first(), "metadata txn");
        let ops = txn.compares.len() + txn.success.len() + txn.failure.len();
        add(&self.counts.txn_ops, ops as u64);
        let put_bytes: usize = txn
            .success
            .iter()
            .chain(&txn.failure)
            .map(|op| match op {
                TxnOp::Put { key, value, .. } => key.len() + value.len(),
                _ => 0,
            })
            .sum();
        add(&self.counts.txn_put_bytes, put_bytes as u64);
        let started = Instant::now();
        let outcome = self.inner.txn(txn).await;
        self.counts.txn_latency.record(started.elapsed());
        let outcome = outcome?;
        if !outcome.succeeded {
            add(&self.counts.txns_failed, 1);
        }
        Ok(outcome)
    }

    async fn read_many(&self, reads: &[Read]) -> Result<ReadOutcome> {
        // One request, counted with the range reads (its keys too).
        add(&self.counts.ranges, 1);
        tracing::trace!(reads = reads.len(), "metadata read_many");
        let started = Instant::now();
        let found = self.inner.read_many(reads).await;
        self.counts.range_latency.record(started.elapsed());
        let found = found?;
        let keys: usize = found.results.iter().map(Vec::len).sum();
        add(&self.counts.range_keys, keys as u64);
        Ok(found)
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<BoxStream<'static, WatchEvent>> {
        add(&self.counts.watches, 1);
        self.inner.watch_prefix(prefix).await
    }

    async fn lease_grant(&self, ttl_ms: i64) -> Result<LeaseId> {
        add(&self.counts.lease_requests, 1);
        self.inner.lease_grant(ttl_ms).await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()> {
        add(&self.counts.lease_requests, 1);
        self.inner.lease_keep_alive(lease).await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        add(&self.counts.lease_requests, 1);
        self.inner.lease_revoke(lease).await
    }

    fn max_txn_ops(&self) -> usize {
        self.inner.max_txn_ops()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::metadata::embedded::EmbeddedStore;
    use crate::metadata::Compare;

    #[tokio::test]
    async fn counts_requests_operations_and_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = EmbeddedStore::open(&dir.path().join("m.redb"), Arc::new(ManualClock::new(0)))
            .await
            .expect("store");
        let store = MeteredMetadata::new(Arc::new(inner));
        let put = Txn::when(vec![Compare::absent("k")]).and_then(vec![TxnOp::put("k", "vv")]);
        assert!(store.txn(put.clone()).await.expect("txn").succeeded);
        assert!(!store.txn(put).await.expect("txn").succeeded);
        store.get("k").await.expect("get");
        assert_eq!(store.range_prefix("", 0).await.expect("range").len(), 1);
        let counts: std::collections::HashMap<_, _> =
            store.counts().snapshot().into_iter().collect();
        assert_eq!(counts["txns"], 2);
        assert_eq!(counts["txns_failed"], 1);
        assert_eq!(counts["txn_ops"], 4);
        assert_eq!(counts["txn_put_bytes"], 6);
        assert_eq!(
            (counts["gets"], counts["ranges"], counts["range_keys"]),
            (1, 1, 1)
        );
    }
}
