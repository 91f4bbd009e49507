//! Committed consumer-group offsets, durable in the metadata store.
//!
//! One key per (group, topic, partition). A commit of many partitions is written in as few
//! transactions as the store's operation limit allows; OffsetCommit is answered only after they
//! succeed, so an acknowledged commit survives any broker's death.

use crate::keys::{self, CommittedOffset};
use crate::metadata::{MetadataError, MetadataStore, Txn, TxnOp};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetKey {
    pub topic: String,
    pub partition: i32,
}

/// Writes committed offsets for `group`.
pub async fn commit(
    store: &dyn MetadataStore,
    group: &str,
    offsets: &[(OffsetKey, CommittedOffset)],
) -> Result<(), MetadataError> {
    for chunk in offsets.chunks(store.max_txn_ops().max(1)) {
        let ops = chunk
            .iter()
            .map(|(key, offset)| {
                TxnOp::put(
                    keys::group_offset(group, &key.topic, key.partition),
                    keys::encode(offset),
                )
            })
            .collect();
        store.txn(Txn::when(vec![]).and_then(ops)).await?;
    }
    Ok(())
}

/// Every committed offset of `group`, by topic and partition.
pub async fn fetch_all(
    store: &dyn MetadataStore,
    group: &str,
) -> Result<BTreeMap<String, BTreeMap<i32, CommittedOffset>>, MetadataError> {
    let prefix = keys::group_offsets_prefix(group);
    let mut out: BTreeMap<String, BTreeMap<i32, CommittedOffset>> = BTreeMap::new();
    for kv in store.range_prefix(&prefix, 0).await? {
        let Some((topic, partition)) = kv.key[prefix.len()..].rsplit_once('/') else {
            continue;
        };
        let Ok(partition) = partition.parse::<i32>() else {
            continue;
        };
        let offset: CommittedOffset =
            keys::decode(&kv.key, &kv.value).map_err(MetadataError::Corrupt)?;
        out.entry(topic.to_owned())
            .or_default()
            .insert(partition, offset);
    }
    Ok(out)
}

/// Deletes some committed offsets of `group`.
pub async fn delete(
    store: &dyn MetadataStore,
    group: &str,
    partitions: &[OffsetKey],
) -> Result<(), MetadataError> {
    for chunk in partitions.chunks(store.max_txn_ops().max(1)) {
        let ops = chunk
            .iter()
            .map(|k| TxnOp::delete(keys::group_offset(group, &k.topic, k.partition)))
            .collect();
        store.txn(Txn::when(vec![]).and_then(ops)).await?;
    }
    Ok(())
}

/// The groups that have committed offsets.
pub async fn groups(store: &dyn MetadataStore) -> Result<Vec<String>, MetadataError> {
    let prefix = keys::groups_prefix();
    let mut out: Vec<String> = store
        .range_prefix(&prefix, 0)
        .await?
        .iter()
        .filter_map(|kv| {
            kv.key[prefix.len()..]
                .split('/')
                .next()
                .and_then(keys::unescape_group)
        })
        .collect();
    out.dedup();
    Ok(out)
}

/// Deletes every committed offset of `group`.
pub async fn delete_group(store: &dyn MetadataStore, group: &str) -> Result<(), MetadataError> {
    store
        .txn(Txn::when(vec![]).and_then(vec![TxnOp::DeletePrefix {
            prefix: keys::group_prefix(group),
        }]))
        .await?;
    Ok(())
}

/// Deletes every committed offset of `group` if none was committed within `retention_ms` of
/// `now_ms` (Kafka's `offsets.retention.minutes`, applied by the group's coordinator to groups
/// without members). Each deletion compares the key's revision, so a commit that lands meanwhile
/// keeps its offset. Returns how many offsets were deleted.
pub async fn expire_group(
    store: &dyn MetadataStore,
    group: &str,
    now_ms: i64,
    retention_ms: i64,
) -> Result<usize, MetadataError> {
    let kvs = store
        .range_prefix(&keys::group_offsets_prefix(group), 0)
        .await?;
    let mut newest_ms = i64::MIN;
    for kv in &kvs {
        let offset: CommittedOffset =
            keys::decode(&kv.key, &kv.value).map_err(MetadataError::Corrupt)?;
        newest_ms = newest_ms.max(offset.commit_timestamp_ms);
    }
    if kvs.is_empty() || now_ms.saturating_sub(newest_ms) < retention_ms {
        return Ok(0);
    }
    let mut deleted = 0;
    for chunk in kvs.chunks((store.max_txn_ops() / 2).max(1)) {
        let compares = chunk
            .iter()
            .map(|kv| crate::metadata::Compare::mod_revision(&kv.key, kv.mod_revision))
            .collect();
        let ops = chunk.iter().map(|kv| TxnOp::delete(&kv.key)).collect();
        if store
            .txn(Txn::when(compares).and_then(ops))
            .await?
            .succeeded
        {
            deleted += chunk.len();
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::metadata::embedded::EmbeddedStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn commits_survive_and_stay_per_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(&dir.path().join("m.redb"), Arc::new(ManualClock::new(0)))
            .await
            .expect("store");
        let offset = |o| CommittedOffset {
            offset: o,
            leader_epoch: -1,
            metadata: Some(format!("m{o}")),
            commit_timestamp_ms: 5,
        };
        // 300 partitions: more than one transaction's worth.
        let many: Vec<_> = (0..300)
            .map(|p| {
                (
                    OffsetKey {
                        topic: "t".into(),
                        partition: p,
                    },
                    offset(i64::from(p)),
                )
            })
            .collect();
        commit(&store, "g/1 odd name", &many).await.expect("commit");
        commit(&store, "other", &many[..1]).await.expect("commit");
        let got = fetch_all(&store, "g/1 odd name").await.expect("fetch");
        assert_eq!(got["t"].len(), 300);
        assert_eq!(got["t"][&299], offset(299));
        assert_eq!(
            fetch_all(&store, "g").await.expect("fetch").len(),
            0,
            "prefix of a name"
        );
        delete_group(&store, "g/1 odd name").await.expect("delete");
        assert!(fetch_all(&store, "g/1 odd name")
            .await
            .expect("fetch")
            .is_empty());
        assert_eq!(
            fetch_all(&store, "other").await.expect("fetch")["t"].len(),
            1
        );
    }

    #[tokio::test]
    async fn offsets_expire_only_after_the_retention_since_the_last_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(&dir.path().join("m.redb"), Arc::new(ManualClock::new(0)))
            .await
            .expect("store");
        let at = |partition, ms| {
            (
                OffsetKey {
                    topic: "t".into(),
                    partition,
                },
                CommittedOffset {
                    offset: 1,
                    leader_epoch: -1,
                    metadata: None,
                    commit_timestamp_ms: ms,
                },
            )
        };
        let many: Vec<_> = (0..200).map(|p| at(p, 1_000)).collect();
        commit(&store, "idle", &many).await.expect("commit");
        commit(&store, "idle", &[at(7, 5_000)])
            .await
            .expect("commit");
        assert_eq!(
            expire_group(&store, "idle", 9_999, 5_000)
                .await
                .expect("expire"),
            0
        );
        assert_eq!(
            fetch_all(&store, "idle").await.expect("fetch")["t"].len(),
            200
        );
        assert_eq!(
            expire_group(&store, "idle", 10_000, 5_000)
                .await
                .expect("expire"),
            200
        );
        assert!(fetch_all(&store, "idle").await.expect("fetch").is_empty());
        assert_eq!(
            expire_group(&store, "idle", 20_000, 5_000)
                .await
                .expect("expire"),
            0
        );
    }
}
