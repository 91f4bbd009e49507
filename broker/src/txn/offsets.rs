//! Consumer offsets sent in a transaction (TxnOffsetCommit): kept aside per transactional id
//! (`keys::group_txn_offset`) until the transaction ends, then moved into the group's committed
//! offsets (commit) or dropped (abort), in transactions fenced on the prepared record, so a
//! coordinator that lost the id can never settle offsets of a later transaction. While some are
//! pending for a partition, OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT, as
//! Kafka does, so a `read_committed` consumer never starts from an offset about to change.

use super::CoordError;
use skiff_tiering::keys::{self, CommittedOffset};
use skiff_tiering::metadata::{Compare, MetadataError, MetadataStore, Revision, Txn, TxnOp};

/// Stores offsets of an open transaction while the id's record is still at `revision` (the one
/// the request was checked against): offsets staged after the transaction ended would never be
/// settled, and would hold the group's partitions unstable for good. Returns false, storing
/// nothing more, when the record moved.
pub async fn stage(
    store: &dyn MetadataStore,
    group: &str,
    id: &str,
    revision: Revision,
    offsets: &[(String, i32, CommittedOffset)],
) -> Result<bool, MetadataError> {
    for chunk in offsets.chunks(store.max_txn_ops().saturating_sub(1).max(1)) {
        let ops = chunk
            .iter()
            .map(|(topic, partition, offset)| {
                TxnOp::put(
                    keys::group_txn_offset(group, id, topic, *partition),
                    keys::encode(offset),
                )
            })
            .collect();
        let fenced = Txn::when(vec![Compare::mod_revision(keys::transaction(id), revision)]);
        if !store.txn(fenced.and_then(ops)).await?.succeeded {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Commits (moves into the group's offsets) or aborts (drops) the offsets transaction `id`
/// staged for `group`, while the id's record is still the prepared one at `revision`.
pub async fn settle(
    store: &dyn MetadataStore,
    id: &str,
    revision: Revision,
    group: &str,
    commit: bool,
) -> Result<(), CoordError> {
    let staged = store
        .range_prefix(&keys::group_txn_offsets(group, id), 0)
        .await?;
    let per_offset = if commit { 2 } else { 1 };
    let chunk_len = (store.max_txn_ops().saturating_sub(1) / per_offset).max(1);
    let prefix = keys::group_txn_offsets(group, id);
    for chunk in staged.chunks(chunk_len) {
        let mut ops = Vec::with_capacity(chunk.len() * per_offset);
        for kv in chunk {
            if commit {
                let Some((topic, partition)) = keys::topic_partition_of(&prefix, &kv.key) else {
                    continue;
                };
                ops.push(TxnOp::put(
                    keys::group_offset(group, &topic, partition),
                    kv.value.clone(),
                ));
            }
            ops.push(TxnOp::delete(&kv.key));
        }
        let fenced = Txn::when(vec![Compare::mod_revision(keys::transaction(id), revision)]);
        if !store.txn(fenced.and_then(ops)).await?.succeeded {
            return Err(CoordError::NotCoordinator);
        }
    }
    Ok(())
}

/// The partitions of `group` some open transaction has staged offsets for.
pub async fn pending(
    store: &dyn MetadataStore,
    group: &str,
) -> Result<Vec<(String, i32)>, MetadataError> {
    let prefix = keys::group_txn_offsets_prefix(group);
    Ok(store
        .range_prefix(&prefix, 0)
        .await?
        .iter()
        .filter_map(|kv| {
            // <id>/<topic>/<partition>: skip the id.
            let rest = kv.key.strip_prefix(&prefix)?;
            let (_, topic_partition) = rest.split_once('/')?;
            let (topic, partition) = topic_partition.rsplit_once('/')?;
            Some((topic.to_owned(), partition.parse().ok()?))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_tiering::clock::ManualClock;
    use skiff_tiering::metadata::embedded::EmbeddedStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn offsets_are_staged_only_while_the_transaction_is_where_it_was_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(0));
        let store = EmbeddedStore::open(&dir.path().join("meta.redb"), clock)
            .await
            .expect("store");
        let record = keys::transaction("t");
        let write = |value: &'static [u8]| {
            Txn::when(vec![]).and_then(vec![TxnOp::put(&record, value.to_vec())])
        };
        let checked = store.txn(write(b"ongoing")).await.expect("put").revision;
        let offset = |offset| CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: 0,
        };
        let first = [("in".to_owned(), 0, offset(5))];
        assert!(stage(&store, "g", "t", checked, &first)
            .await
            .expect("stage"));
        // The transaction ends (its record moves): a late stage is refused and stores nothing.
        store.txn(write(b"prepare-commit")).await.expect("put");
        let late = [("in".to_owned(), 1, offset(9))];
        assert!(!stage(&store, "g", "t", checked, &late)
            .await
            .expect("stage"));
        assert_eq!(
            pending(&store, "g").await.expect("pending"),
            [("in".to_owned(), 0)]
        );
    }
}
