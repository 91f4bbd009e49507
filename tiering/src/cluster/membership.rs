//! Broker registration: one key per live broker, on a lease the broker keeps alive.

use crate::keys::{self, BrokerRecord, NodeIdCounter};
use crate::metadata::{Compare, LeaseId, MetadataError, MetadataStore, Txn, TxnOp};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

const NODE_ID_ATTEMPTS_MAX: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("node id {0} is registered by a live broker")]
    NodeIdTaken(i32),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("{0}")]
    Corrupt(String),
}

enum Registration {
    Absent,
    Ours(LeaseId),
    Theirs,
}

/// This broker's registration.
#[derive(Debug)]
pub struct Membership {
    store: Arc<dyn MetadataStore>,
    record: BrokerRecord,
    ttl_ms: i64,
    lease: Mutex<LeaseId>,
    /// Set when this broker's session lapsed and another process registered its node id
    /// meanwhile: this process must not lead anything any more.
    displaced: std::sync::atomic::AtomicBool,
}

/// The brokers registered now, by node id.
pub async fn live_brokers(store: &dyn MetadataStore) -> Result<Vec<BrokerRecord>, MembershipError> {
    let kvs = store.range_prefix(&keys::brokers_prefix(), 0).await?;
    kvs.iter()
        .map(|kv| keys::decode(&kv.key, &kv.value).map_err(MembershipError::Corrupt))
        .collect()
}

/// Takes the next free node id from the cluster-wide counter.
pub async fn allocate_node_id(store: &dyn MetadataStore) -> Result<i32, MembershipError> {
    let key = keys::broker_ids();
    for _ in 0..NODE_ID_ATTEMPTS_MAX {
        let current = store.get(&key).await?;
        let (next, revision) = match &current {
            Some(kv) => (
                keys::decode::<NodeIdCounter>(&kv.key, &kv.value)
                    .map_err(MembershipError::Corrupt)?
                    .next_node_id,
                kv.mod_revision,
            ),
            // Leave low ids to brokers configured with explicit ones.
            None => (1000, 0),
        };
        let txn =
            Txn::when(vec![Compare::mod_revision(&key, revision)]).and_then(vec![TxnOp::put(
                &key,
                keys::encode(&NodeIdCounter {
                    next_node_id: next + 1,
                }),
            )]);
        if store.txn(txn).await?.succeeded {
            return Ok(next);
        }
    }
    Err(MembershipError::Metadata(MetadataError::Unavailable(
        "node id counter contended".into(),
    )))
}

impl Membership {
    /// Registers this broker, waiting up to `wait` for a previous holder of the same node id
    /// (say, this broker before a crash) to lapse.
    pub async fn register(
        store: Arc<dyn MetadataStore>,
        mut record: BrokerRecord,
        ttl_ms: i64,
        wait: Duration,
    ) -> Result<Self, MembershipError> {
        record.incarnation = ulid::Ulid::new().to_string();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match Self::try_register(&*store, &record, ttl_ms).await {
                Ok(lease) => {
                    return Ok(Self {
                        store,
                        record,
                        ttl_ms,
                        lease: Mutex::new(lease),
                        displaced: std::sync::atomic::AtomicBool::new(false),
                    })
                }
                Err(MembershipError::NodeIdTaken(id)) if tokio::time::Instant::now() < deadline => {
                    tracing::info!(
                        node_id = id,
                        "node id still registered; waiting for it to lapse"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn try_register(
        store: &dyn MetadataStore,
        record: &BrokerRecord,
        ttl_ms: i64,
    ) -> Result<LeaseId, MembershipError> {
        let lease = store.lease_grant(ttl_ms).await?;
        let key = keys::broker(record.node_id);
        let txn = Txn::when(vec![Compare::absent(&key)]).and_then(vec![TxnOp::Put {
            key,
            value: keys::encode(record).into(),
            lease: Some(lease),
        }]);
        if store.txn(txn).await?.succeeded {
            Ok(lease)
        } else {
            let _ = store.lease_revoke(lease).await;
            Err(MembershipError::NodeIdTaken(record.node_id))
        }
    }

    /// Who holds this node id's registration now.
    async fn registration(&self) -> Result<Registration, MembershipError> {
        let Some(kv) = self.store.get(&keys::broker(self.record.node_id)).await? else {
            return Ok(Registration::Absent);
        };
        let record: BrokerRecord =
            keys::decode(&kv.key, &kv.value).map_err(MembershipError::Corrupt)?;
        Ok(match kv.lease {
            Some(lease) if record.incarnation == self.record.incarnation => {
                Registration::Ours(lease)
            }
            _ => Registration::Theirs,
        })
    }

    /// Whether another process took this node id while this one's session had lapsed.
    pub fn displaced(&self) -> bool {
        self.displaced.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn node_id(&self) -> i32 {
        self.record.node_id
    }

    pub fn ttl_ms(&self) -> i64 {
        self.ttl_ms
    }

    /// Renews the lease; if it lapsed (the broker was paused or cut off for longer than the
    /// TTL), registers again with a new one. Returns true when it had to re-register.
    pub async fn keep_alive(&self) -> Result<bool, MembershipError> {
        let mut lease = self.lease.lock().await;
        match self.store.lease_keep_alive(*lease).await {
            Ok(()) => Ok(false),
            Err(MetadataError::LeaseNotFound(_)) => {
                tracing::warn!(
                    node_id = self.record.node_id,
                    "broker session lapsed; registering again"
                );
                match Self::try_register(&*self.store, &self.record, self.ttl_ms).await {
                    Ok(renewed) => {
                        *lease = renewed;
                        Ok(true)
                    }
                    Err(MembershipError::NodeIdTaken(id)) => match self.registration().await? {
                        // An earlier attempt registered and only its answer was lost: adopt
                        // its lease (if that lapsed too, the next renewal registers again).
                        Registration::Ours(own) => {
                            *lease = own;
                            Ok(true)
                        }
                        // The old key expired between the attempt and the look: try again at
                        // the next renewal.
                        Registration::Absent => {
                            Err(MembershipError::Metadata(MetadataError::Unavailable(
                                "registration raced with its own expiry; retrying".into(),
                            )))
                        }
                        Registration::Theirs => {
                            self.displaced
                                .store(true, std::sync::atomic::Ordering::Release);
                            Err(MembershipError::NodeIdTaken(id))
                        }
                    },
                    Err(error) => Err(error),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Leaves the cluster now (graceful shutdown): other brokers take over at once.
    pub async fn deregister(&self) {
        let lease = *self.lease.lock().await;
        if let Err(error) = self.store.lease_revoke(lease).await {
            tracing::warn!(%error, "cannot revoke the broker lease; it will lapse by itself");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::metadata::embedded::EmbeddedStore;

    fn record(node_id: i32) -> BrokerRecord {
        BrokerRecord {
            node_id,
            host: "127.0.0.1".into(),
            port: 9092,
            rack: None,
            incarnation: String::new(),
            listeners: Vec::new(),
            follower_reads: false,
        }
    }

    /// Re-registers `record` under a fresh lease behind the membership's back, as a registration
    /// whose answer was lost (or another process) would have.
    async fn register_behind(store: &Arc<dyn MetadataStore>, record: &BrokerRecord) -> LeaseId {
        let lease = store.lease_grant(60_000).await.expect("grant");
        store
            .txn(Txn::when(vec![]).and_then(vec![TxnOp::Put {
                key: keys::broker(record.node_id),
                value: keys::encode(record).into(),
                lease: Some(lease),
            }]))
            .await
            .expect("put");
        lease
    }

    #[tokio::test]
    async fn a_lapsed_session_adopts_its_own_registration_and_yields_to_another_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn MetadataStore> = Arc::new(
            EmbeddedStore::open(&dir.path().join("m.redb"), Arc::new(ManualClock::new(0)))
                .await
                .expect("store"),
        );
        let membership = Membership::register(store.clone(), record(7), 60_000, Duration::ZERO)
            .await
            .expect("register");
        // The session lapses, and the re-registration's answer is lost although it applied.
        let lapsed = *membership.lease.lock().await;
        store.lease_revoke(lapsed).await.expect("revoke");
        let own = register_behind(&store, &membership.record).await;
        assert!(membership.keep_alive().await.expect("adopted"));
        assert_eq!(*membership.lease.lock().await, own);
        assert!(!membership.displaced());
        assert!(!membership.keep_alive().await.expect("renewed"));
        // Another process takes the node id while this one is cut off: this one yields.
        store.lease_revoke(own).await.expect("revoke");
        let mut other = membership.record.clone();
        other.incarnation = "another-process".into();
        register_behind(&store, &other).await;
        assert!(matches!(
            membership.keep_alive().await,
            Err(MembershipError::NodeIdTaken(7))
        ));
        assert!(membership.displaced());
    }
}
