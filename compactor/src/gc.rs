//! Garbage collection: deletes the objects nothing references any more (flush objects whose data
//! is all in Parquet or below the log start, replaced index objects and Parquet files, files of
//! deleted topics) and the orphans of crashed writers.
//!
//! Mark, then sweep:
//! 1. **Mark** every object the index references, reading the tail keys, then the rollup keys,
//!    then the layouts (three range reads, each a consistent snapshot), and walking every index
//!    object below them. References only ever move tail → rollup (a leader's roll-up) and
//!    tail/rollup → layout (a compactor's swap), and those reads follow the same order, so an
//!    object still referenced when the last read ends was seen by some read: the marked set is
//!    a superset of what is referenced then, except for objects written since, which are young.
//!    An index object that cannot be read or verified stops the pass: nothing is deleted.
//! 2. **Sweep** every listed object under `wal/`, `index/` and `parquet/`. An unreferenced one
//!    is deleted once (a) its name says it is older than the orphan age, so its writer is past
//!    its commit timeout and can never reference it, and (b) it was seen unreferenced for the
//!    grace period, so reads that began before it was replaced are done. Objects whose names
//!    Skiff did not give are never touched.
//!
//! Nothing ever references an object again once it is unreferenced: roll-ups and remainders only
//! re-point to objects that stay referenced through the same transaction, and a commit of an
//! object older than the commit timeout is refused.

use crate::job::Ctx;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use skiff_tiering::keys::{self, IndexEntry, Layout, RollupEntry};
use skiff_tiering::layout::parquet_slots;
use skiff_tiering::metadata::{MetadataError, Revision};
use skiff_tiering::paths;
use skiff_tiering::tree::{ReadError, Slot};
use std::collections::{HashMap, HashSet};

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("listing the bucket failed: {0}")]
    List(String),
}

/// What to do with one listed object (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Unreferenced and old enough, first seen so now: delete after the grace period.
    Track,
    Delete,
}

/// The sweep's rule for one object: `written_ms` from its name (None: not Skiff's),
/// `unreferenced_since` when it was first seen unreferenced (None: never).
pub fn verdict(
    referenced: bool,
    written_ms: Option<i64>,
    unreferenced_since: Option<i64>,
    now_ms: i64,
    orphan_age_ms: i64,
    grace_ms: i64,
) -> Verdict {
    let Some(written_ms) = written_ms else {
        return Verdict::Keep;
    };
    if referenced || now_ms - written_ms < orphan_age_ms {
        return Verdict::Keep;
    }
    match unreferenced_since {
        Some(since) if now_ms - since >= grace_ms => Verdict::Delete,
        Some(_) => Verdict::Keep,
        None if grace_ms == 0 => Verdict::Delete,
        None => Verdict::Track,
    }
}

/// What one collection did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub referenced: usize,
    pub listed: usize,
    pub deleted: usize,
    pub deleted_bytes: u64,
}

/// The collector's memory between passes: when each unreferenced object was first seen so, the
/// store revision after the last collection, and when the first object it left waiting may be
/// deleted.
#[derive(Debug, Default)]
pub struct Collector {
    unreferenced_since: HashMap<String, i64>,
    /// The earliest time an unreferenced object the last collection kept (younger than the
    /// orphan age, or within its grace period) may be deleted; None when it kept none that ever
    /// will be (objects that are not Skiff's are never deleted). `i64::MIN`: at once (a failed
    /// collection or delete).
    next_due_ms: Option<i64>,
    quiet_at: Option<Revision>,
}

impl Collector {
    /// Whether a collection now would delete nothing the last one did not: the metadata store
    /// has not changed since (`revision`, read before claiming the collection) and no object it
    /// left waiting is due yet. An idle cluster so makes no requests to the bucket, and one with
    /// objects in their grace period makes one collection when the first is due, not one per
    /// interval. (An object uploaded but never committed changes nothing in the store: it waits
    /// for the next change, as it waits for its orphan age anyway.)
    pub fn is_quiet(&self, revision: Revision, now_ms: i64) -> bool {
        self.quiet_at == Some(revision) && self.next_due_ms.is_none_or(|due| now_ms < due)
    }

    /// Notes how the last collection ended: `released` is the store's revision after its claim
    /// was released (None: unknown, or the collection failed).
    pub fn note_done(&mut self, released: Option<Revision>) {
        self.quiet_at = released;
        if released.is_none() {
            self.next_due_ms = Some(i64::MIN);
        }
    }

    /// One mark and sweep.
    pub async fn collect(&mut self, ctx: &Ctx) -> Result<GcReport, GcError> {
        let referenced = mark(ctx).await?;
        let now_ms = ctx.clock.now_ms();
        let settings = &ctx.settings;
        let mut report = GcReport {
            referenced: referenced.len(),
            ..GcReport::default()
        };
        let mut still_unreferenced = HashMap::new();
        self.next_due_ms = Some(i64::MIN);
        let mut next_due_ms: Option<i64> = None;
        let mut due = |at: i64| next_due_ms = Some(next_due_ms.map_or(at, |d| d.min(at)));
        for meta in list_data(&*ctx.objects).await? {
            report.listed += 1;
            let key = meta.location.to_string();
            let is_referenced = referenced.contains(&key);
            let since = self.unreferenced_since.get(&key).copied();
            match verdict(
                is_referenced,
                paths::written_ms(&key),
                since,
                now_ms,
                settings.orphan_age_ms,
                settings.gc_grace_ms,
            ) {
                Verdict::Keep => {
                    let written_ms = paths::written_ms(&key);
                    match (is_referenced, written_ms, since) {
                        (true, _, _) | (false, None, _) => {}
                        // Younger than the orphan age: due when it is that old.
                        (false, Some(written_ms), None) => {
                            due(written_ms.saturating_add(settings.orphan_age_ms))
                        }
                        (false, Some(written_ms), Some(since)) => {
                            due(since
                                .saturating_add(settings.gc_grace_ms)
                                .max(written_ms.saturating_add(settings.orphan_age_ms)));
                            still_unreferenced.insert(key, since);
                        }
                    }
                }
                Verdict::Track => {
                    due(now_ms.saturating_add(settings.gc_grace_ms));
                    still_unreferenced.insert(key, now_ms);
                }
                Verdict::Delete => match ctx.objects.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                        report.deleted += 1;
                        report.deleted_bytes += meta.size;
                        tracing::debug!(object = key, "deleted unreferenced object");
                    }
                    Err(error) => {
                        tracing::warn!(%error, object = key, "delete failed; retried next collection");
                        due(i64::MIN);
                        still_unreferenced.insert(key, since.unwrap_or(now_ms));
                    }
                },
            }
        }
        self.unreferenced_since = still_unreferenced;
        self.next_due_ms = next_due_ms;
        Ok(report)
    }
}

/// Every object the index references (see the module docs for why the read order matters).
pub async fn mark(ctx: &Ctx) -> Result<HashSet<String>, GcError> {
    let store = &*ctx.store;
    let mut referenced = HashSet::new();
    for kv in store.range_prefix(&keys::all_index_prefix(), 0).await? {
        let entry: IndexEntry = keys::decode(&kv.key, &kv.value).map_err(MetadataError::Corrupt)?;
        referenced.insert(entry.object);
    }
    let mut pending: Vec<Slot> = Vec::new();
    for kv in store.range_prefix(&keys::all_rollups_prefix(), 0).await? {
        let entry: RollupEntry =
            keys::decode(&kv.key, &kv.value).map_err(MetadataError::Corrupt)?;
        pending.push(Slot::Rollup(entry));
    }
    for kv in store.range_prefix(&keys::layouts_prefix(), 0).await? {
        let layout: Layout = keys::decode(&kv.key, &kv.value).map_err(MetadataError::Corrupt)?;
        pending.extend(parquet_slots(&layout));
    }
    while let Some(slot) = pending.pop() {
        match slot {
            Slot::Section(entry) => {
                referenced.insert(entry.object);
            }
            Slot::File(file) => {
                referenced.insert(file.object);
            }
            Slot::Rollup(rollup) => {
                pending.extend(ctx.index_objects.children(&rollup).await?);
                referenced.insert(rollup.object);
            }
        }
    }
    Ok(referenced)
}

/// Every object under the prefixes Skiff writes.
async fn list_data(objects: &dyn ObjectStore) -> Result<Vec<ObjectMeta>, GcError> {
    let mut out = Vec::new();
    for prefix in paths::DATA_PREFIXES {
        let listed: Vec<ObjectMeta> = objects
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await
            .map_err(|e| GcError::List(format!("prefix={prefix}: {e}")))?;
        out.extend(listed);
    }
    Ok(out)
}

/// The listed objects [`mark`] does not reach (for tests and tools).
pub async fn unreferenced(
    objects: &dyn ObjectStore,
    referenced: &HashSet<String>,
) -> Result<Vec<String>, GcError> {
    Ok(list_data(objects)
        .await?
        .into_iter()
        .map(|m| m.location.to_string())
        .filter(|k| !referenced.contains(k))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn only_old_unreferenced_objects_go_and_only_after_the_grace_period() {
        let v = |referenced, written, since, now| {
            verdict(referenced, written, since, now, HOUR, 60_000)
        };
        assert_eq!(
            v(true, Some(0), None, 10 * HOUR),
            Verdict::Keep,
            "referenced"
        );
        assert_eq!(
            v(false, None, None, 10 * HOUR),
            Verdict::Keep,
            "not a Skiff name"
        );
        assert_eq!(
            v(false, Some(9 * HOUR + 1), None, 10 * HOUR),
            Verdict::Keep,
            "young: may be in flight"
        );
        assert_eq!(
            v(false, Some(0), None, 10 * HOUR),
            Verdict::Track,
            "first seen unreferenced"
        );
        assert_eq!(
            v(false, Some(0), Some(10 * HOUR - 59_999), 10 * HOUR),
            Verdict::Keep,
            "within the grace"
        );
        assert_eq!(
            v(false, Some(0), Some(10 * HOUR - 60_000), 10 * HOUR),
            Verdict::Delete
        );
        assert_eq!(
            v(true, Some(0), Some(0), 10 * HOUR),
            Verdict::Keep,
            "referenced again wins"
        );
        assert_eq!(
            verdict(false, Some(0), None, HOUR, HOUR, 0),
            Verdict::Delete,
            "no grace"
        );
    }
}
