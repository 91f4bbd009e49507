//! A partition's index: the newest section entries ("the tail") as keys in the metadata store,
//! older ranges rolled up into immutable index objects in the bucket.
//!
//! The metadata store must stay small (etcd: a few GB in all, 1.5 MiB per request), so no
//! partition may keep a key per flush forever. When the tail passes twice the fan-out
//! (`LogConfig::index_rollup_fanout`, default 100), the leader writes its oldest fan-out entries
//! to an index object and replaces their keys by one rollup key, in one transaction fenced like
//! a commit. Rollup keys are rolled up the same way, so the index is a tree and a partition keeps
//! at most about four times the fan-out in keys however long its log. Reads walk the tree; index
//! objects are immutable, so they are cached without invalidation.

use super::{LogError, LogInner, PartitionLog, PartitionView, TopicPartition};
use crate::keys::{self, IndexEntry, RollupBody, RollupEntry};
use crate::metadata::{Compare, Txn, TxnOp};
use crate::paths;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Entries one index object holds, by default (`LogConfig::index_rollup_fanout`).
pub const ROLLUP_FANOUT: usize = 100;
/// Index objects kept in memory.
const ROLLUP_CACHE_OBJECTS_MAX: usize = 1024;

/// One node of the index tree as seen from its parent.
#[derive(Debug, Clone)]
pub(crate) enum Slot {
    Section(IndexEntry),
    Rollup(RollupEntry),
}

impl Slot {
    fn base_offset(&self) -> i64 {
        match self {
            Slot::Section(e) => e.base_offset,
            Slot::Rollup(r) => r.base_offset,
        }
    }

    pub(crate) fn last_offset(&self) -> i64 {
        match self {
            Slot::Section(e) => e.last_offset,
            Slot::Rollup(r) => r.last_offset,
        }
    }

    pub(crate) fn max_timestamp(&self) -> i64 {
        match self {
            Slot::Section(e) => e.max_timestamp,
            Slot::Rollup(r) => r.max_timestamp,
        }
    }
}

/// The top level of a partition's index, oldest first: rollups, then the tail.
pub(crate) fn top_slots(view: &PartitionView) -> Vec<Slot> {
    view.rollups
        .values()
        .cloned()
        .map(Slot::Rollup)
        .chain(view.index.values().cloned().map(Slot::Section))
        .collect()
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

/// Index objects read recently (immutable, so never stale).
#[derive(Debug, Default)]
pub(crate) struct RollupCache {
    bodies: HashMap<String, Arc<RollupBody>>,
    order: VecDeque<String>,
}

impl RollupCache {
    fn get(&self, object: &str) -> Option<Arc<RollupBody>> {
        self.bodies.get(object).cloned()
    }

    fn insert(&mut self, object: String, body: Arc<RollupBody>) {
        if self.bodies.insert(object.clone(), body).is_none() {
            self.order.push_back(object);
        }
        while self.order.len() > ROLLUP_CACHE_OBJECTS_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.bodies.remove(&oldest);
            }
        }
    }
}

/// The children of a rollup, from the cache or its index object.
pub(crate) async fn children(
    inner: &LogInner,
    rollup: &RollupEntry,
) -> Result<Vec<Slot>, LogError> {
    let cached = inner
        .rollups
        .lock()
        .expect("rollup cache poisoned")
        .get(&rollup.object);
    let body = match cached {
        Some(body) => body,
        None => {
            let bytes = inner
                .objects
                .get(&Path::from(rollup.object.as_str()))
                .await
                .map_err(|e| {
                    LogError::Unavailable(format!("read index object={}: {e}", rollup.object))
                })?
                .bytes()
                .await
                .map_err(|e| {
                    LogError::Unavailable(format!("read index object={}: {e}", rollup.object))
                })?;
            if crc32c::crc32c(&bytes) != rollup.crc32c {
                return Err(LogError::Corrupt(format!(
                    "index object={} checksum",
                    rollup.object
                )));
            }
            let body: RollupBody = serde_json::from_slice(&bytes)
                .map_err(|e| LogError::Corrupt(format!("index object={}: {e}", rollup.object)))?;
            let body = Arc::new(body);
            inner
                .rollups
                .lock()
                .expect("rollup cache poisoned")
                .insert(rollup.object.clone(), body.clone());
            body
        }
    };
    Ok(slots_of(&body))
}

/// An index object's entries as slots, in offset order.
fn slots_of(body: &RollupBody) -> Vec<Slot> {
    match body {
        RollupBody::Sections(entries) => entries.iter().cloned().map(Slot::Section).collect(),
        RollupBody::Rollups(rollups) => rollups.iter().cloned().map(Slot::Rollup).collect(),
    }
}

/// Sections holding offsets from `offset` on, in order, until about `max_bytes` are planned
/// (at least one section).
pub(crate) async fn sections_from(
    inner: &LogInner,
    top: Vec<Slot>,
    offset: i64,
    max_bytes: usize,
) -> Result<Vec<IndexEntry>, LogError> {
    let mut pending: VecDeque<Slot> = top
        .into_iter()
        .filter(|s| s.last_offset() >= offset)
        .collect();
    let mut out = Vec::new();
    let mut planned = 0u64;
    while let Some(slot) = pending.pop_front() {
        if !out.is_empty() && planned >= max_bytes as u64 {
            break;
        }
        match slot {
            Slot::Section(entry) => {
                planned += entry.length;
                out.push(entry);
            }
            Slot::Rollup(rollup) => {
                let inside = children(inner, &rollup).await?;
                for child in inside
                    .into_iter()
                    .rev()
                    .filter(|s| s.last_offset() >= offset)
                {
                    pending.push_front(child);
                }
            }
        }
    }
    Ok(out)
}

/// Walks down the tree choosing a child at each level with `pick`, to one section.
pub(crate) async fn find_section(
    inner: &LogInner,
    mut level: Vec<Slot>,
    pick: impl Fn(&[Slot]) -> Option<usize>,
) -> Result<Option<IndexEntry>, LogError> {
    loop {
        let Some(index) = pick(&level) else {
            return Ok(None);
        };
        match level.swap_remove(index) {
            Slot::Section(entry) => return Ok(Some(entry)),
            Slot::Rollup(rollup) => level = children(inner, &rollup).await?,
        }
    }
}

/// Rolls up the partition's oldest entries if it has too many keys (leader only; fenced like a
/// commit by the partition state's `mod_revision`).
pub(crate) async fn roll_up(
    inner: &LogInner,
    tp: &TopicPartition,
    partition: &PartitionLog,
) -> Result<(), LogError> {
    let (body, revision) = {
        let view = partition.view.lock().expect("view mutex poisoned");
        match plan(&view, inner.config.index_rollup_fanout) {
            Some(body) => (body, view.state_revision),
            None => return Ok(()),
        }
    };
    let slots = slots_of(&body);
    let (Some(first), Some(last)) = (slots.first(), slots.last()) else {
        return Ok(());
    };
    let (first_base, last_base) = (first.base_offset(), last.base_offset());
    let bytes = serde_json::to_vec(&body).expect("index entries serialize");
    let path = paths::new_index_object();
    let entry = RollupEntry {
        base_offset: first_base,
        last_offset: slots
            .iter()
            .map(Slot::last_offset)
            .max()
            .unwrap_or(first_base),
        max_timestamp: slots.iter().map(Slot::max_timestamp).max().unwrap_or(-1),
        object: path.to_string(),
        crc32c: crc32c::crc32c(&bytes),
    };
    inner
        .objects
        .put(&path, bytes.into())
        .await
        .map_err(|e| LogError::Unavailable(format!("index object upload failed: {e}")))?;
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
        RollupBody::Rollups(_) => (
            format!("{rollup_key}\0"),
            format!("{}\0", keys::rollup(&tp.topic, tp.partition, last_base)),
        ),
    };
    let txn = Txn::when(vec![Compare::mod_revision(
        keys::partition(&tp.topic, tp.partition),
        revision,
    )])
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
    }
    view.rollups.insert(entry.base_offset, entry.clone());
    drop(view);
    inner
        .rollups
        .lock()
        .expect("rollup cache poisoned")
        .insert(entry.object, Arc::new(body));
    tracing::debug!(partition = %tp, first_base, last_base, "rolled up index entries");
    Ok(())
}
