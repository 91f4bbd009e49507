//! The embedded metadata store: the single-binary default, durable on local disk.
//!
//! Keys live in one `redb` table; every transaction is one redb write transaction committed with
//! `Durability::Immediate` (fsync) before it returns, so a `kill -9` loses nothing acknowledged.
//! Revisions, versions, compares and prefix deletes follow etcd's semantics so that code written
//! against this store runs unchanged on etcd. Watches are in-process (a broadcast channel; a
//! watcher that falls too far behind sees its stream end and must re-read). Leases live in memory:
//! keys attached to a lease do not outlive the process that granted it, so at open every leased
//! key left by a previous process is deleted, as etcd would once their TTL ran out.

use super::{
    compare_holds, KeyValue, LeaseId, MetadataError, MetadataStore, Read, ReadOutcome, Result,
    Revision, Txn, TxnOp, TxnOutcome, WatchEvent,
};
use crate::clock::Clock;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";
const WATCH_CHANNEL_EVENTS_MAX: usize = 16_384;
const LEASE_SWEEP_INTERVAL_MS: u64 = 100;
/// The embedded store has no protocol limit; this keeps callers honest about batching.
const MAX_TXN_OPS: usize = 128;

#[derive(Debug)]
struct Leases {
    next_id: LeaseId,
    /// lease -> (ttl_ms, deadline_ms)
    live: HashMap<LeaseId, (i64, i64)>,
    keys: HashMap<LeaseId, HashSet<String>>,
}

#[derive(Debug)]
struct Inner {
    db: Database,
    clock: Arc<dyn Clock>,
    leases: Mutex<Leases>,
    events: broadcast::Sender<(Revision, WatchEvent)>,
}

/// A durable single-node [`MetadataStore`] in one file.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

fn storage_err(error: impl std::fmt::Display) -> MetadataError {
    MetadataError::Unavailable(format!("embedded store: {error}"))
}

fn encode_record(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_be_bytes());
    out.extend_from_slice(&kv.mod_revision.to_be_bytes());
    out.extend_from_slice(&kv.version.to_be_bytes());
    out.extend_from_slice(&kv.lease.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&kv.value);
    out
}

fn decode_record(key: &str, raw: &[u8]) -> Result<KeyValue> {
    let field = |i: usize| -> Result<i64> {
        let bytes: [u8; 8] = raw
            .get(i * 8..i * 8 + 8)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| MetadataError::Corrupt(format!("short record key={key}")))?;
        Ok(i64::from_be_bytes(bytes))
    };
    let lease = field(3)?;
    Ok(KeyValue {
        key: key.to_owned(),
        create_revision: field(0)?,
        mod_revision: field(1)?,
        version: field(2)?,
        lease: (lease != 0).then_some(lease),
        value: Bytes::copy_from_slice(&raw[32..]),
    })
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `path` (a file) and starts its lease sweeper.
    pub async fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self> {
        let path = path.to_owned();
        let db = tokio::task::spawn_blocking(move || Database::create(path))
            .await
            .map_err(storage_err)?
            .map_err(storage_err)?;
        let (events, _) = broadcast::channel(WATCH_CHANNEL_EVENTS_MAX);
        let store = Self {
            inner: Arc::new(Inner {
                db,
                clock,
                leases: Mutex::new(Leases {
                    next_id: 1,
                    live: HashMap::new(),
                    keys: HashMap::new(),
                }),
                events,
            }),
        };
        store.drop_orphaned_leased_keys().await?;
        let weak = Arc::downgrade(&store.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(LEASE_SWEEP_INTERVAL_MS));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let store = EmbeddedStore { inner };
                if let Err(error) = store.expire_leases().await {
                    tracing::warn!(%error, "lease sweep failed");
                }
            }
        });
        Ok(store)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(storage_err)?
    }

    async fn drop_orphaned_leased_keys(&self) -> Result<()> {
        let leased: Vec<String> = self
            .blocking(|inner| {
                let read = inner.db.begin_read().map_err(storage_err)?;
                let table = match read.open_table(KV) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                    Err(e) => return Err(storage_err(e)),
                };
                let mut keys = Vec::new();
                for entry in table.iter().map_err(storage_err)? {
                    let (k, v) = entry.map_err(storage_err)?;
                    let kv = decode_record(k.value(), v.value())?;
                    if kv.lease.is_some() {
                        keys.push(kv.key);
                    }
                }
                Ok(keys)
            })
            .await?;
        if !leased.is_empty() {
            let ops = leased.into_iter().map(TxnOp::delete).collect();
            self.apply(Txn::when(vec![]).and_then(ops)).await?;
        }
        Ok(())
    }

    async fn expire_leases(&self) -> Result<()> {
        let now = self.inner.clock.now_ms();
        let expired: Vec<LeaseId> = {
            let leases = self.inner.leases.lock().expect("lease mutex poisoned");
            leases
                .live
                .iter()
                .filter(|(_, (_, deadline))| *deadline <= now)
                .map(|(id, _)| *id)
                .collect()
        };
        for lease in expired {
            self.lease_revoke(lease).await?;
        }
        Ok(())
    }

    /// Applies a transaction in one durable redb write transaction and publishes its events.
    async fn apply(&self, txn: Txn) -> Result<TxnOutcome> {
        for op in txn.success.iter().chain(&txn.failure) {
            if let TxnOp::Put {
                lease: Some(lease), ..
            } = op
            {
                let leases = self.inner.leases.lock().expect("lease mutex poisoned");
                if !leases.live.contains_key(lease) {
                    return Err(MetadataError::LeaseNotFound(*lease));
                }
            }
        }
        let (outcome, events) = self
            .blocking(move |inner| apply_blocking(&inner.db, txn))
            .await?;
        let mut leases = self.inner.leases.lock().expect("lease mutex poisoned");
        for event in events {
            match &event {
                WatchEvent::Put(kv) => {
                    for keys in leases.keys.values_mut() {
                        keys.remove(&kv.key);
                    }
                    if let Some(lease) = kv.lease {
                        leases.keys.entry(lease).or_default().insert(kv.key.clone());
                    }
                }
                WatchEvent::Delete { key, .. } => {
                    for keys in leases.keys.values_mut() {
                        keys.remove(key);
                    }
                }
            }
            // No receiver is fine: nobody watches.
            let _ = self.inner.events.send((outcome.revision, event));
        }
        Ok(outcome)
    }
}

fn apply_blocking(db: &Database, txn: Txn) -> Result<(TxnOutcome, Vec<WatchEvent>)> {
    let write = db.begin_write().map_err(storage_err)?;
    let mut events = Vec::new();
    let outcome = {
        let mut table = write.open_table(KV).map_err(storage_err)?;
        let mut meta = write.open_table(META).map_err(storage_err)?;
        let revision = meta
            .get(REVISION_KEY)
            .map_err(storage_err)?
            .map_or(0, |v| v.value());
        let mut succeeded = true;
        for compare in &txn.compares {
            let current = match table.get(compare.key.as_str()).map_err(storage_err)? {
                Some(raw) => Some(decode_record(&compare.key, raw.value())?),
                None => None,
            };
            if !compare_holds(compare, current.as_ref()) {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { txn.success } else { txn.failure };
        let next_revision = revision + 1;
        for op in ops {
            match op {
                TxnOp::Put { key, value, lease } => {
                    let previous = match table.get(key.as_str()).map_err(storage_err)? {
                        Some(raw) => Some(decode_record(&key, raw.value())?),
                        None => None,
                    };
                    let kv = KeyValue {
                        create_revision: previous
                            .as_ref()
                            .map_or(next_revision, |p| p.create_revision),
                        mod_revision: next_revision,
                        version: previous.as_ref().map_or(0, |p| p.version) + 1,
                        lease,
                        value,
                        key,
                    };
                    table
                        .insert(kv.key.as_str(), encode_record(&kv).as_slice())
                        .map_err(storage_err)?;
                    events.push(WatchEvent::Put(kv));
                }
                TxnOp::Delete { key } => {
                    if table.remove(key.as_str()).map_err(storage_err)?.is_some() {
                        events.push(WatchEvent::Delete {
                            key,
                            revision: next_revision,
                        });
                    }
                }
                TxnOp::DeletePrefix { prefix } => {
                    let end = super::prefix_end(&prefix);
                    delete_between(
                        &mut table,
                        &prefix,
                        end.as_deref(),
                        next_revision,
                        &mut events,
                    )?;
                }
                TxnOp::DeleteRange { start, end } => {
                    delete_between(&mut table, &start, Some(&end), next_revision, &mut events)?;
                }
            }
        }
        let revision = if events.is_empty() {
            revision
        } else {
            meta.insert(REVISION_KEY, next_revision)
                .map_err(storage_err)?;
            next_revision
        };
        TxnOutcome {
            succeeded,
            revision,
        }
    };
    write.commit().map_err(storage_err)?;
    Ok((outcome, events))
}

/// Deletes the keys in `[start, end)` (`end` None: to the last key), recording the events.
fn delete_between(
    table: &mut redb::Table<&str, &[u8]>,
    start: &str,
    end: Option<&str>,
    revision: Revision,
    events: &mut Vec<WatchEvent>,
) -> Result<()> {
    let keys: Vec<String> = {
        let range = match end {
            Some(end) => table.range(start..end),
            None => table.range(start..),
        }
        .map_err(storage_err)?;
        let mut keys = Vec::new();
        for entry in range {
            let (k, _) = entry.map_err(storage_err)?;
            keys.push(k.value().to_owned());
        }
        keys
    };
    for key in keys {
        table.remove(key.as_str()).map_err(storage_err)?;
        events.push(WatchEvent::Delete { key, revision });
    }
    Ok(())
}

#[async_trait]
impl MetadataStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.blocking(move |inner| {
            let read = inner.db.begin_read().map_err(storage_err)?;
            let table = match read.open_table(KV) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(storage_err(e)),
            };
            match table.get(key.as_str()).map_err(storage_err)? {
                Some(raw) => Ok(Some(decode_record(&key, raw.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn range_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<KeyValue>> {
        let prefix = prefix.to_owned();
        self.blocking(move |inner| {
            let read = inner.db.begin_read().map_err(storage_err)?;
            let table = match read.open_table(KV) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(storage_err(e)),
            };
            let end = super::prefix_end(&prefix);
            let range = match &end {
                Some(end) => table.range(prefix.as_str()..end.as_str()),
                None => table.range(prefix.as_str()..),
            }
            .map_err(storage_err)?;
            let mut out = Vec::new();
            for entry in range {
                if limit != 0 && out.len() == limit {
                    break;
                }
                let (k, v) = entry.map_err(storage_err)?;
                out.push(decode_record(k.value(), v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        let ops = txn.success.len().max(txn.failure.len());
        if ops > MAX_TXN_OPS || txn.compares.len() > MAX_TXN_OPS {
            return Err(MetadataError::TooLarge(format!(
                "txn ops={ops} compares={} max={MAX_TXN_OPS}",
                txn.compares.len()
            )));
        }
        self.apply(txn).await
    }

    async fn read_many(&self, reads: &[Read]) -> Result<ReadOutcome> {
        if reads.len() > MAX_TXN_OPS {
            return Err(MetadataError::TooLarge(format!(
                "read_many reads={} max={MAX_TXN_OPS}",
                reads.len()
            )));
        }
        let reads = reads.to_vec();
        self.blocking(move |inner| {
            // One read transaction: a snapshot of the keys and the revision together.
            let read = inner.db.begin_read().map_err(storage_err)?;
            let revision = match read.open_table(META) {
                Ok(meta) => meta
                    .get(REVISION_KEY)
                    .map_err(storage_err)?
                    .map_or(0, |v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => 0,
                Err(e) => return Err(storage_err(e)),
            };
            let table = match read.open_table(KV) {
                Ok(t) => Some(t),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(storage_err(e)),
            };
            let mut results = Vec::with_capacity(reads.len());
            for one in &reads {
                let mut found = Vec::new();
                if let Some(table) = &table {
                    match one {
                        Read::Key(key) => {
                            if let Some(raw) = table.get(key.as_str()).map_err(storage_err)? {
                                found.push(decode_record(key, raw.value())?);
                            }
                        }
                        Read::Prefix(prefix) => {
                            let end = super::prefix_end(prefix);
                            let range = match &end {
                                Some(end) => table.range(prefix.as_str()..end.as_str()),
                                None => table.range(prefix.as_str()..),
                            }
                            .map_err(storage_err)?;
                            for entry in range {
                                let (k, v) = entry.map_err(storage_err)?;
                                found.push(decode_record(k.value(), v.value())?);
                            }
                        }
                    }
                }
                results.push(found);
            }
            Ok(ReadOutcome { revision, results })
        })
        .await
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<BoxStream<'static, WatchEvent>> {
        let prefix = prefix.to_owned();
        let receiver = self.inner.events.subscribe();
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            // A lagging watcher's stream ends: it must re-read and watch again.
            receiver.recv().await.ok().map(|event| (event, receiver))
        })
        .filter_map(move |(_, event)| {
            let key = match &event {
                WatchEvent::Put(kv) => &kv.key,
                WatchEvent::Delete { key, .. } => key,
            };
            let keep = key.starts_with(&prefix);
            async move { keep.then_some(event) }
        });
        Ok(stream.boxed())
    }

    async fn lease_grant(&self, ttl_ms: i64) -> Result<LeaseId> {
        let now = self.inner.clock.now_ms();
        let mut leases = self.inner.leases.lock().expect("lease mutex poisoned");
        let id = leases.next_id;
        leases.next_id += 1;
        leases.live.insert(id, (ttl_ms, now + ttl_ms));
        Ok(id)
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()> {
        let now = self.inner.clock.now_ms();
        let mut leases = self.inner.leases.lock().expect("lease mutex poisoned");
        match leases.live.get_mut(&lease) {
            Some((ttl, deadline)) if *deadline > now => {
                *deadline = now + *ttl;
                Ok(())
            }
            _ => Err(MetadataError::LeaseNotFound(lease)),
        }
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        let keys = {
            let mut leases = self.inner.leases.lock().expect("lease mutex poisoned");
            if leases.live.remove(&lease).is_none() {
                return Err(MetadataError::LeaseNotFound(lease));
            }
            leases.keys.remove(&lease).unwrap_or_default()
        };
        if !keys.is_empty() {
            let ops = keys.into_iter().map(TxnOp::delete).collect();
            self.apply(Txn::when(vec![]).and_then(ops)).await?;
        }
        Ok(())
    }

    fn max_txn_ops(&self) -> usize {
        MAX_TXN_OPS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use futures::FutureExt;

    #[tokio::test]
    async fn passes_the_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(1_000));
        let store = EmbeddedStore::open(&dir.path().join("meta.redb"), clock.clone())
            .await
            .expect("open");
        let advance = |ms| {
            clock.advance_ms(ms);
            futures::future::ready(()).boxed()
        };
        super::super::contract::run_all(&store, &advance).await;
    }

    #[tokio::test]
    async fn survives_reopen_and_drops_leased_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta.redb");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(0));
        {
            let store = EmbeddedStore::open(&path, clock.clone())
                .await
                .expect("open");
            let lease = store.lease_grant(10_000).await.expect("grant");
            store
                .txn(Txn::when(vec![]).and_then(vec![
                    TxnOp::put("durable", "yes"),
                    TxnOp::Put {
                        key: "ephemeral".into(),
                        value: Bytes::from_static(b"x"),
                        lease: Some(lease),
                    },
                ]))
                .await
                .expect("txn");
        }
        let store = EmbeddedStore::open(&path, clock).await.expect("reopen");
        let durable = store.get("durable").await.expect("get").expect("present");
        assert_eq!(durable.value.as_ref(), b"yes");
        assert!(store.get("ephemeral").await.expect("get").is_none());
    }
}
