//! A partition's index as stored, and the compactor's one way of changing it: the swap.
//!
//! The stored index of a partition is three things: its [`Layout`] (the Parquet part, one key),
//! its flush-object rollups and its flush-object tail (one key each). [`IndexSnapshot::load`]
//! reads them at one revision, so that they agree, and [`Swap`] is the transaction that moves a
//! prefix of the flush-object part into the Parquet part (or drops it below the log start).
//!
//! Who writes what:
//! - the leader appends tail keys (never touching existing ones) and rolls its oldest tail keys
//!   or rollups into one rollup, comparing the partition state and the layout's `mod_revision`;
//! - the compactor swaps, comparing the layout's `mod_revision`, the topic's incarnation and the
//!   `mod_revision` of every flush-object key it deletes or replaces.
//!
//! A leader roll-up that read the index before a swap therefore fails (the layout changed), and a
//! swap that read keys a roll-up replaced fails (they are gone): neither can re-reference data the
//! other moved, and appends, which only add keys above everything a swap touches, never conflict.

use crate::keys::{self, IndexEntry, Layout, ParquetFile, RollupBody, RollupEntry};
use crate::metadata::{
    Compare, CompareOp, CompareTarget, KeyValue, MetadataError, MetadataStore, Read, Revision,
};
use crate::metadata::{Txn, TxnOp};
use crate::tree::{self, Slot};
use std::collections::BTreeMap;

/// Parquet files a layout lists inline; beyond this the oldest [`FILES_ROLLUP`] are rolled up
/// into an index object, and so are the oldest rollups beyond it, so the key stays a few KiB.
pub const FILES_INLINE_MAX: usize = 32;
/// Entries moved into one index object when a layout's inline part is rolled up.
pub const FILES_ROLLUP: usize = 16;

/// A partition's index keys, read consistently (see [`IndexSnapshot::load`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexSnapshot {
    pub layout: Layout,
    /// `mod_revision` of the layout key (0: absent).
    pub layout_revision: Revision,
    /// Flush-object rollups by base offset, with their keys' `mod_revision`.
    pub rollups: BTreeMap<i64, (RollupEntry, Revision)>,
    /// The flush-object tail by base offset, with the keys' `mod_revision`.
    pub tail: BTreeMap<i64, (IndexEntry, Revision)>,
}

impl IndexSnapshot {
    /// The reads of a partition's index keys (layout, tail, rollups), for
    /// [`MetadataStore::read_many`]: a caller may add reads of its own after them and build the
    /// snapshot from the first three results with [`IndexSnapshot::from_reads`].
    pub fn reads(topic: &str, partition: i32) -> Vec<Read> {
        vec![
            Read::Key(keys::layout(topic, partition)),
            Read::Prefix(keys::index_prefix(topic, partition)),
            Read::Prefix(keys::rollup_prefix(topic, partition)),
        ]
    }

    /// Reads the layout, the tail and the rollups at one revision, in one request: a swap
    /// commits all three at once, so they agree. A roll-up by the leader also moves tail
    /// entries into a rollup in one transaction; tail entries a rollup covers are dropped here
    /// all the same, once, for every reader.
    pub async fn load(
        store: &dyn MetadataStore,
        topic: &str,
        partition: i32,
    ) -> Result<Self, MetadataError> {
        let mut found = store.read_many(&Self::reads(topic, partition)).await?;
        Self::from_reads(&mut found.results)
    }

    /// The snapshot from the results of [`IndexSnapshot::reads`], taken from the front of
    /// `results`.
    pub fn from_reads(results: &mut Vec<Vec<KeyValue>>) -> Result<Self, MetadataError> {
        if results.len() < 3 {
            return Err(MetadataError::Corrupt(format!(
                "index read: {} results for 3 reads",
                results.len()
            )));
        }
        let mut found = results.drain(..3);
        let (layout_kv, tail_kvs, rollup_kvs) = (
            found.next().unwrap_or_default(),
            found.next().unwrap_or_default(),
            found.next().unwrap_or_default(),
        );
        drop(found);
        let mut tail = BTreeMap::new();
        for kv in tail_kvs {
            let entry: IndexEntry =
                keys::decode(&kv.key, &kv.value).map_err(MetadataError::Corrupt)?;
            tail.insert(entry.base_offset, (entry, kv.mod_revision));
        }
        let mut rollups = BTreeMap::new();
        for kv in rollup_kvs {
            let entry: RollupEntry =
                keys::decode(&kv.key, &kv.value).map_err(MetadataError::Corrupt)?;
            rollups.insert(entry.base_offset, (entry, kv.mod_revision));
        }
        let covered = rollups
            .values()
            .last()
            .map_or(i64::MIN, |(r, _): &(RollupEntry, Revision)| r.last_offset);
        tail.retain(|base, _| *base > covered);
        let (layout, layout_revision) = match layout_kv.first() {
            Some(kv) => (
                keys::decode(&kv.key, &kv.value).map_err(MetadataError::Corrupt)?,
                kv.mod_revision,
            ),
            None => (Layout::default(), 0),
        };
        Ok(Self {
            layout,
            layout_revision,
            rollups,
            tail,
        })
    }

    /// The flush-object part's top level, oldest first: rollups, then the tail.
    pub fn wal_slots(&self) -> Vec<Slot> {
        wal_slots(
            self.rollups.values().map(|(r, _)| r),
            self.tail.values().map(|(e, _)| e),
        )
    }

    /// The whole top level: the Parquet part, then the flush-object part.
    pub fn top_slots(&self) -> Vec<Slot> {
        let mut slots = parquet_slots(&self.layout);
        slots.extend(self.wal_slots());
        slots
    }
}

/// The Parquet part's top level, oldest first.
pub fn parquet_slots(layout: &Layout) -> Vec<Slot> {
    layout
        .rollups
        .iter()
        .cloned()
        .map(Slot::Rollup)
        .chain(layout.files.iter().cloned().map(Slot::File))
        .collect()
}

/// Rollups, then the tail.
pub fn wal_slots<'a>(
    rollups: impl Iterator<Item = &'a RollupEntry>,
    tail: impl Iterator<Item = &'a IndexEntry>,
) -> Vec<Slot> {
    rollups
        .cloned()
        .map(Slot::Rollup)
        .chain(tail.cloned().map(Slot::Section))
        .collect()
}

/// Index objects to write before a layout can be committed.
pub type NewIndexObjects = Vec<(object_store::path::Path, RollupBody)>;

/// Keeps a layout's inline part bounded: rolls its oldest files, then its oldest rollups, into
/// index objects (returned, to be written before the layout is committed).
pub fn bound(layout: &mut Layout, now_ms: i64) -> NewIndexObjects {
    let mut written = Vec::new();
    while layout.files.len() > FILES_INLINE_MAX {
        let files: Vec<ParquetFile> = layout.files.drain(..FILES_ROLLUP).collect();
        let (entry, object) = roll(RollupBody::Files(files), now_ms);
        layout.rollups.push(entry);
        written.push(object);
    }
    while layout.rollups.len() > FILES_INLINE_MAX {
        let rollups: Vec<RollupEntry> = layout.rollups.drain(..FILES_ROLLUP).collect();
        let (entry, object) = roll(RollupBody::Rollups(rollups), now_ms);
        layout.rollups.insert(0, entry);
        written.push(object);
    }
    written
}

/// A body for a fresh index object and the rollup entry pointing to it.
pub fn roll(
    body: RollupBody,
    now_ms: i64,
) -> (RollupEntry, (object_store::path::Path, RollupBody)) {
    let path = crate::paths::new_index_object(now_ms);
    let crc = crc32c::crc32c(&serde_json::to_vec(&body).expect("index entries serialize"));
    let entry =
        tree::rollup_entry(&body, path.to_string(), crc).expect("a rolled-up body is never empty");
    (entry, (path, body))
}

/// The bytes an index object holds for `body` (what [`roll`]'s CRC was computed over).
pub fn encode_body(body: &RollupBody) -> Vec<u8> {
    serde_json::to_vec(body).expect("index entries serialize")
}

/// One flush-object key of the top level, as a swap consumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopKey {
    Tail {
        base_offset: i64,
        revision: Revision,
    },
    Rollup {
        base_offset: i64,
        revision: Revision,
    },
}

/// The compactor's change of a partition's index, as one transaction: the new layout replaces
/// the old one, the consumed flush-object keys go, and a rollup that was consumed only in part
/// is replaced by one for its remainder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    pub topic: String,
    pub partition: i32,
    pub topic_create_revision: Revision,
    /// The layout read (its `mod_revision`; 0: absent).
    pub layout_revision: Revision,
    pub layout: Layout,
    /// Top-level flush-object keys consumed, in offset order.
    pub consumed: Vec<TopKey>,
    /// The rollup standing for what is left of a partly consumed one.
    pub remainder: Option<RollupEntry>,
}

impl Swap {
    pub fn txn(&self) -> Txn {
        let (topic, partition) = (self.topic.as_str(), self.partition);
        let layout_key = keys::layout(topic, partition);
        let mut compares = vec![
            Compare::mod_revision(&layout_key, self.layout_revision),
            Compare {
                key: keys::topic(topic),
                op: CompareOp::Equal,
                target: CompareTarget::CreateRevision(self.topic_create_revision),
            },
        ];
        let mut ops = vec![TxnOp::put(&layout_key, keys::encode(&self.layout))];
        for consumed in &self.consumed {
            let (key, revision) = match consumed {
                TopKey::Tail {
                    base_offset,
                    revision,
                } => (keys::index_entry(topic, partition, *base_offset), *revision),
                TopKey::Rollup {
                    base_offset,
                    revision,
                } => (keys::rollup(topic, partition, *base_offset), *revision),
            };
            compares.push(Compare::mod_revision(&key, revision));
            ops.push(TxnOp::delete(key));
        }
        if let Some(remainder) = &self.remainder {
            ops.push(TxnOp::put(
                keys::rollup(topic, partition, remainder.base_offset),
                keys::encode(remainder),
            ));
        }
        ops.push(TxnOp::delete(keys::compactor_error(topic, partition)));
        Txn::when(compares).and_then(ops)
    }
}

#[cfg(test)]
mod tests;
