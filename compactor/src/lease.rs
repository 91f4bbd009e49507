//! Claims on work, held on one lease per compactor process: a partition's job, or garbage
//! collection. A claim only keeps compactors from doing the same work twice; safety never rests
//! on it (every swap is a compare-and-swap on the index), so a claim that lapsed while its
//! holder was paused costs at most a wasted job.

use skiff_tiering::keys::{self, CompactorJob};
use skiff_tiering::metadata::{
    Compare, LeaseId, MetadataError, MetadataStore, Revision, Txn, TxnOp,
};
use std::sync::Arc;

#[derive(Debug)]
pub struct Leases {
    store: Arc<dyn MetadataStore>,
    owner: String,
    ttl_ms: i64,
    lease: tokio::sync::Mutex<Option<LeaseId>>,
}

/// A held claim: its key and the exact value written, which releasing compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: String,
    value: Vec<u8>,
}

impl Leases {
    pub fn new(store: Arc<dyn MetadataStore>, owner: String, ttl_ms: i64) -> Self {
        Self {
            store,
            owner,
            ttl_ms,
            lease: tokio::sync::Mutex::new(None),
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    async fn lease(&self) -> Result<LeaseId, MetadataError> {
        let mut lease = self.lease.lock().await;
        if let Some(id) = *lease {
            return Ok(id);
        }
        let id = self.store.lease_grant(self.ttl_ms).await?;
        *lease = Some(id);
        Ok(id)
    }

    /// Renews the lease (every third of its TTL); a lapsed one is replaced on the next claim.
    pub async fn keep_alive(&self) {
        let current = *self.lease.lock().await;
        let Some(id) = current else { return };
        match self.store.lease_keep_alive(id).await {
            Ok(()) => {}
            Err(MetadataError::LeaseNotFound(_)) => {
                tracing::warn!(lease = id, "compactor lease lapsed; its claims are gone");
                let mut lease = self.lease.lock().await;
                if *lease == Some(id) {
                    *lease = None;
                }
            }
            Err(error) => tracing::warn!(%error, "compactor lease keep-alive failed"),
        }
    }

    /// Claims `key` unless someone holds it.
    pub async fn claim(&self, key: String, now_ms: i64) -> Result<Option<Claim>, MetadataError> {
        match self.try_claim(key.clone(), now_ms).await {
            // The lease lapsed (this process was paused, or the store lost it): a new one.
            Err(MetadataError::LeaseNotFound(_)) => {
                *self.lease.lock().await = None;
                self.try_claim(key, now_ms).await.map_err(|e| match e {
                    MetadataError::LeaseNotFound(id) => {
                        MetadataError::Unavailable(format!("compactor lease {id} lapsed at once"))
                    }
                    other => other,
                })
            }
            other => other,
        }
    }

    async fn try_claim(&self, key: String, now_ms: i64) -> Result<Option<Claim>, MetadataError> {
        let lease = self.lease().await?;
        let value = keys::encode(&CompactorJob {
            owner: self.owner.clone(),
            started_ms: now_ms,
        });
        let txn = Txn::when(vec![Compare::absent(&key)]).and_then(vec![TxnOp::Put {
            key: key.clone(),
            value: value.clone().into(),
            lease: Some(lease),
        }]);
        let outcome = self.store.txn(txn).await?;
        Ok(outcome.succeeded.then_some(Claim { key, value }))
    }

    /// Gives a claim up (if it is still ours).
    /// Returns the store's revision after the release (None if it failed).
    pub async fn release(&self, claim: Claim) -> Option<Revision> {
        let txn = Txn::when(vec![Compare::value(&claim.key, claim.value)])
            .and_then(vec![TxnOp::delete(&claim.key)]);
        match self.store.txn(txn).await {
            Ok(outcome) if outcome.succeeded => Some(outcome.revision),
            Ok(_) => None,
            Err(error) => {
                tracing::debug!(%error, key = claim.key, "claim not released; it lapses with the lease");
                None
            }
        }
    }

    /// Ends the lease: every claim goes at once.
    pub async fn revoke(&self) {
        if let Some(id) = self.lease.lock().await.take() {
            let _ = self.store.lease_revoke(id).await;
        }
    }
}
