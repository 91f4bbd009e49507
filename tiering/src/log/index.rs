//! The leader's side of a partition's index: the newest section entries ("the tail") as keys in
//! the metadata store, older ranges rolled up into immutable index objects in the bucket (the
//! tree itself, and reading it, are in `crate::tree`; the Parquet part in `crate::layout`).
//!
//! The metadata store must stay small (etcd: a few GB in all, 1.5 MiB per request), so no
//! partition may keep a key per flush forever. When the tail passes twice the fan-out
//! (`LogConfig::index_rollup_fanout`, default 100), the leader writes its oldest fan-out entries
//! to an index object and replaces their keys by one rollup key, in one transaction fenced like
//! a commit and on the partition's layout (so it never crosses a compactor's swap). Rollup keys
//! are rolled up the same way, so the flush-object part is a tree and a partition keeps at most
//! about four times the fan-out in keys however long its log.

use super::{LogError, LogInner, PartitionLog, PartitionView, TopicPartition};
use crate::keys::{self, RollupBody};
use crate::layout;
use crate::metadata::{Compare, Txn, TxnOp};
use crate::tree::{self, Slot};
use object_store::ObjectStoreExt;
use std::sync::Arc;

/// Entries one index object holds, by default (`LogConfig::index_rollup_fanout`).
pub const ROLLUP_FANOUT: usize = 100;

/// The top level of a partition's index, oldest first: the Parquet part, then rollups, then
/// the tail.
pub(crate) fn top_slots(view: &PartitionView) -> Vec<Slot> {
    let mut slots = layout::parquet_slots(&view.layout);
    slots.extend(layout::wal_slots(
        view.rollups.values(),
        view.index.values(),
    ));
    slots
}

/// What to roll up next, if the partition's keys passed the bound (pure).
pub(crate) fn plan(view: &PartitionView, fanout: usize) -> Option<RollupBody> {
    let trigger = 2 * fanout;
    if view.index.len() > trigger {
        Some(RollupBody::Sections(
            view.index.values().take(fanout).cloned().collect(),
        ))
    } else if view.rollups.len() > trigger {
        Some(RollupBody::Rollups(
            view.rollups.values().take(fanout).cloned().collect(),
        ))
    } else {
        None
    }
}

/// Rolls up the partition's oldest entries if it has too many keys (leader only; fenced like a
/// commit by the partition state's `mod_revision`, and by the layout's, so a compactor's swap
/// since the view was read makes it fail, and the view is reloaded).
pub(crate) async fn roll_up(
    inner: &LogInner,
    tp: &TopicPartition,
    partition: &PartitionLog,
) -> Result<(), LogError> {
    let (body, layout_revision) = {
        let view = partition.view.lock().expect("view mutex poisoned");
        match plan(&view, inner.config.index_rollup_fanout) {
            Some(body) => (body, view.layout_revision),
            None => return Ok(()),
        }
    };
    let slots = tree::slots_of(&body);
    let (Some(first), Some(last)) = (slots.first(), slots.last()) else {
        return Ok(());
    };
    let (first_base, last_base) = (first.base_offset(), last.base_offset());
    let bytes = layout::encode_body(&body);
    let path = crate::paths::new_index_object(inner.clock.now_ms());
    let entry = tree::rollup_entry(&body, path.to_string(), crc32c::crc32c(&bytes))
        .expect("a planned roll-up is never empty");
    inner
        .objects
        .put(&path, bytes.into())
        .await
        .map_err(|e| LogError::Unavailable(format!("index object upload failed: {e}")))?;
    super::writer::check_commit_deadline(inner, path.as_ref())?;
    let rollup_key = keys::rollup(&tp.topic, tp.partition, first_base);
    // The rolled keys go; one rollup key stands for them. etcd refuses a put and a delete of
    // the same key in one transaction, so a range of rollups is replaced by overwriting its
    // first key and deleting the rest.
    let (delete_start, delete_end) = match &body {
        RollupBody::Sections(_) => (
            keys::index_entry(&tp.topic, tp.partition, first_base),
            format!(
                "{}\0",
                keys::index_entry(&tp.topic, tp.partition, last_base)
            ),
        ),
        _ => (
            format!("{rollup_key}\0"),
            format!("{}\0", keys::rollup(&tp.topic, tp.partition, last_base)),
        ),
    };
    // Under the commit lock: a flush commit must not move the state between the read of its
    // revision and this transaction, and a reload of the view must not run in between.
    let _state_commits = inner.state_commits.lock().await;
    let revision = {
        let view = partition.view.lock().expect("view mutex poisoned");
        if view.layout_revision != layout_revision {
            return Err(LogError::Fenced(format!(
                "{tp}: index reloaded before its roll-up"
            )));
        }
        view.state_revision
    };
    let txn = Txn::when(vec![
        Compare::mod_revision(keys::partition(&tp.topic, tp.partition), revision),
        Compare::mod_revision(keys::layout(&tp.topic, tp.partition), layout_revision),
    ])
    .and_then(vec![
        TxnOp::DeleteRange {
            start: delete_start,
            end: delete_end,
        },
        TxnOp::put(rollup_key, keys::encode(&entry)),
    ]);
    if !inner.store.txn(txn).await?.succeeded {
        return Err(LogError::Fenced(format!(
            "{tp} changed before its index roll-up"
        )));
    }
    let mut view = partition.view.lock().expect("view mutex poisoned");
    match &body {
        RollupBody::Sections(entries) => {
            for e in entries {
                view.index.remove(&e.base_offset);
            }
        }
        RollupBody::Rollups(rollups) => {
            for r in rollups {
                view.rollups.remove(&r.base_offset);
            }
        }
        // `plan` never rolls Parquet files up: they are the compactor's.
        RollupBody::Files(_) => debug_assert!(false, "the leader rolled up Parquet files"),
    }
    view.rollups.insert(entry.base_offset, entry.clone());
    drop(view);
    inner.index_objects.insert(entry.object, Arc::new(body));
    tracing::debug!(partition = %tp, first_base, last_base, "rolled up index entries");
    Ok(())
}
