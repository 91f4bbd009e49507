//! A metadata store that fails on demand, for tests: its watches end when told (as etcd's do
//! when it restarts), and `read_many` requests of more reads than a bound are refused (as a
//! response over the client's size limit is). Everything else passes through.

use super::{
    KeyValue, LeaseId, MetadataError, MetadataStore, Read, ReadOutcome, Result, Txn, TxnOutcome,
    WatchEvent,
};
use futures::stream::{BoxStream, StreamExt};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub(crate) struct FaultyStore {
    inner: Arc<dyn MetadataStore>,
    end_watches: tokio::sync::watch::Sender<u64>,
    read_many_max_reads: AtomicUsize,
    refused: AtomicU64,
}

impl FaultyStore {
    pub(crate) fn new(inner: Arc<dyn MetadataStore>) -> Self {
        Self {
            inner,
            end_watches: tokio::sync::watch::channel(0).0,
            read_many_max_reads: AtomicUsize::new(usize::MAX),
            refused: AtomicU64::new(0),
        }
    }

    /// Ends every watch open now.
    pub(crate) fn end_watches(&self) {
        self.end_watches.send_modify(|n| *n += 1);
    }

    /// Refuses `read_many` requests of more than `reads` reads from now on.
    pub(crate) fn refuse_read_many_over(&self, reads: usize) {
        self.read_many_max_reads.store(reads, Ordering::Relaxed);
    }

    /// `read_many` requests refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl MetadataStore for FaultyStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }
    async fn range_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<KeyValue>> {
        self.inner.range_prefix(prefix, limit).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        self.inner.txn(txn).await
    }
    async fn read_many(&self, reads: &[Read]) -> Result<ReadOutcome> {
        let max = self.read_many_max_reads.load(Ordering::Relaxed);
        if reads.len() > max {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(MetadataError::TooLarge(format!(
                "read_many reads={} max={max} (injected)",
                reads.len()
            )));
        }
        self.inner.read_many(reads).await
    }
    async fn watch_prefix(&self, prefix: &str) -> Result<BoxStream<'static, WatchEvent>> {
        let mut end = self.end_watches.subscribe();
        let events = self.inner.watch_prefix(prefix).await?;
        Ok(events
            .take_until(async move {
                let _ = end.changed().await;
            })
            .boxed())
    }
    async fn lease_grant(&self, ttl_ms: i64) -> Result<LeaseId> {
        self.inner.lease_grant(ttl_ms).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.inner.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.inner.lease_revoke(lease).await
    }
    fn max_txn_ops(&self) -> usize {
        self.inner.max_txn_ops()
    }
}
