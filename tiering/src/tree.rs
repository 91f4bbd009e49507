//! A partition's index as a tree, and reading it.
//!
//! The top level of a partition's index is, oldest first: its Parquet part (the layout's rolled-up
//! manifests and inline files), then the flush-object part (rollups, then the tail). A rollup
//! points to an immutable index object in the bucket holding more slots; the leaves are sections
//! of flush objects and Parquet files. Each slot covers a contiguous offset range, and the ranges
//! of a level are disjoint and ascending, so reads walk down from the top by offset or timestamp.
//! Index objects never change once written, so they are cached without invalidation.

use crate::keys::{IndexEntry, ParquetFile, RollupBody, RollupEntry};
use crate::object;
use crate::producers::AbortedTxn;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Index objects kept in memory.
const CACHE_OBJECTS_MAX: usize = 1024;

/// Why a read of the index or of the data it points to failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The object is gone: garbage-collected after the index moved on (a stale view; reload the
    /// index and read again) or lost.
    #[error("object missing: {0}")]
    Missing(String),
    /// The object store failed; the read may be retried.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("data corrupt: {0}")]
    Corrupt(String),
}

impl ReadError {
    pub fn from_store(what: &str, error: object_store::Error) -> Self {
        match error {
            object_store::Error::NotFound { .. } => ReadError::Missing(format!("{what}: {error}")),
            other => ReadError::Unavailable(format!("{what}: {other}")),
        }
    }
}

impl From<crate::columnar::ColumnarError> for ReadError {
    fn from(error: crate::columnar::ColumnarError) -> Self {
        use crate::columnar::ColumnarError;
        match error {
            ColumnarError::Missing(m) => ReadError::Missing(m),
            ColumnarError::Unavailable(m) => ReadError::Unavailable(m),
            ColumnarError::Corrupt(m) => ReadError::Corrupt(m),
        }
    }
}

/// One node of the index tree as seen from its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    Section(IndexEntry),
    File(ParquetFile),
    Rollup(RollupEntry),
}

/// A leaf of the index tree: where records are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    Section(IndexEntry),
    File(ParquetFile),
}

impl Slot {
    pub fn base_offset(&self) -> i64 {
        match self {
            Slot::Section(e) => e.base_offset,
            Slot::File(f) => f.base_offset,
            Slot::Rollup(r) => r.base_offset,
        }
    }

    pub fn last_offset(&self) -> i64 {
        match self {
            Slot::Section(e) => e.last_offset,
            Slot::File(f) => f.last_offset,
            Slot::Rollup(r) => r.last_offset,
        }
    }

    pub fn max_timestamp(&self) -> i64 {
        match self {
            Slot::Section(e) => e.max_timestamp,
            Slot::File(f) => f.max_timestamp,
            Slot::Rollup(r) => r.max_timestamp,
        }
    }

    /// The smallest first offset of the aborted transactions whose markers are under the slot.
    pub fn aborted_first(&self) -> Option<i64> {
        let first = |aborted: &[AbortedTxn]| aborted.iter().map(|a| a.first_offset).min();
        match self {
            Slot::Section(e) => first(&e.aborted),
            Slot::File(f) => first(&f.aborted),
            Slot::Rollup(r) => r.aborted_first,
        }
    }

    /// Bytes stored under the slot, where known without reading (a rollup written before
    /// rollups recorded their size says 0).
    pub fn bytes(&self) -> u64 {
        match self {
            Slot::Section(e) => e.length,
            Slot::File(f) => f.bytes,
            Slot::Rollup(r) => r.bytes,
        }
    }
}

/// An index object's entries as slots, in offset order.
pub fn slots_of(body: &RollupBody) -> Vec<Slot> {
    match body {
        RollupBody::Sections(entries) => entries.iter().cloned().map(Slot::Section).collect(),
        RollupBody::Rollups(rollups) => rollups.iter().cloned().map(Slot::Rollup).collect(),
        RollupBody::Files(files) => files.iter().cloned().map(Slot::File).collect(),
    }
}

/// The rollup entry for a body written to `object`: its range, timestamp and size.
pub fn rollup_entry(body: &RollupBody, object: String, crc32c: u32) -> Option<RollupEntry> {
    let slots = slots_of(body);
    let first = slots.first()?;
    Some(RollupEntry {
        base_offset: first.base_offset(),
        last_offset: slots.iter().map(Slot::last_offset).max()?,
        max_timestamp: slots.iter().map(Slot::max_timestamp).max()?,
        object,
        crc32c,
        bytes: slots.iter().map(Slot::bytes).sum(),
        aborted_first: slots.iter().filter_map(Slot::aborted_first).min(),
    })
}

#[derive(Debug, Default)]
struct Cache {
    bodies: HashMap<String, Arc<RollupBody>>,
    order: VecDeque<String>,
}

/// Reads index objects (cached: they are immutable) and walks the tree.
#[derive(Debug)]
pub struct IndexObjects {
    objects: Arc<dyn ObjectStore>,
    cache: Mutex<Cache>,
}

impl IndexObjects {
    pub fn new(objects: Arc<dyn ObjectStore>) -> Self {
        Self {
            objects,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Remembers a body this process just wrote (saves reading it back).
    pub fn insert(&self, object: String, body: Arc<RollupBody>) {
        let mut cache = self.cache.lock().expect("index cache poisoned");
        if cache.bodies.insert(object.clone(), body).is_none() {
            cache.order.push_back(object);
        }
        while cache.order.len() > CACHE_OBJECTS_MAX {
            if let Some(oldest) = cache.order.pop_front() {
                cache.bodies.remove(&oldest);
            }
        }
    }

    /// The body a rollup points to, checked against its CRC32C.
    pub async fn body(&self, rollup: &RollupEntry) -> Result<Arc<RollupBody>, ReadError> {
        let cached = self
            .cache
            .lock()
            .expect("index cache poisoned")
            .bodies
            .get(&rollup.object)
            .cloned();
        if let Some(body) = cached {
            return Ok(body);
        }
        let what = format!("index object={}", rollup.object);
        let bytes = self
            .objects
            .get(&Path::from(rollup.object.as_str()))
            .await
            .map_err(|e| ReadError::from_store(&what, e))?
            .bytes()
            .await
            .map_err(|e| ReadError::from_store(&what, e))?;
        if crc32c::crc32c(&bytes) != rollup.crc32c {
            return Err(ReadError::Corrupt(format!("{what}: checksum")));
        }
        let body: RollupBody = serde_json::from_slice(&bytes)
            .map_err(|e| ReadError::Corrupt(format!("{what}: {e}")))?;
        let body = Arc::new(body);
        self.insert(rollup.object.clone(), body.clone());
        Ok(body)
    }

    /// The children of a rollup, in offset order.
    pub async fn children(&self, rollup: &RollupEntry) -> Result<Vec<Slot>, ReadError> {
        Ok(slots_of(&*self.body(rollup).await?))
    }

    /// Walks down from `level` choosing a child at each level with `pick`, to one leaf.
    pub async fn find_leaf(
        &self,
        mut level: Vec<Slot>,
        pick: impl Fn(&[Slot]) -> Option<usize>,
    ) -> Result<Option<Leaf>, ReadError> {
        loop {
            let Some(index) = pick(&level) else {
                return Ok(None);
            };
            match level.swap_remove(index) {
                Slot::Section(entry) => return Ok(Some(Leaf::Section(entry))),
                Slot::File(file) => return Ok(Some(Leaf::File(file))),
                Slot::Rollup(rollup) => level = self.children(&rollup).await?,
            }
        }
    }

    /// Bytes stored under a slot: recorded in the slot where it is, else summed over what is
    /// below (rollups written before rollups recorded their size).
    pub async fn bytes_under(&self, slot: &Slot) -> Result<u64, ReadError> {
        let mut pending = vec![slot.clone()];
        let mut bytes = 0u64;
        while let Some(slot) = pending.pop() {
            match slot {
                Slot::Rollup(rollup) if rollup.bytes == 0 => {
                    pending.extend(self.children(&rollup).await?);
                }
                other => bytes += other.bytes(),
            }
        }
        Ok(bytes)
    }

    /// The aborted transactions a `read_committed` Fetch of `[from, upper)` reports: those whose
    /// abort marker is at or after `from` and whose first offset is below `upper` (Kafka's
    /// rule), in first-offset order. Descends only into slots whose summary says one may match.
    pub async fn aborted(
        &self,
        slots: Vec<Slot>,
        from: i64,
        upper: i64,
    ) -> Result<Vec<AbortedTxn>, ReadError> {
        let relevant =
            |s: &Slot| s.last_offset() >= from && s.aborted_first().is_some_and(|f| f < upper);
        let mut pending: VecDeque<Slot> = slots.into_iter().filter(relevant).collect();
        let mut found = Vec::new();
        while let Some(slot) = pending.pop_front() {
            let listed = match &slot {
                Slot::Section(entry) => &entry.aborted,
                Slot::File(file) => &file.aborted,
                Slot::Rollup(rollup) => {
                    pending.extend(self.children(rollup).await?.into_iter().filter(relevant));
                    continue;
                }
            };
            found.extend(
                listed
                    .iter()
                    .filter(|a| a.last_offset >= from && a.first_offset < upper)
                    .copied(),
            );
        }
        found.sort_by_key(|a| (a.first_offset, a.producer_id));
        Ok(found)
    }

    /// Every leaf under `slots`, in offset order (reads every index object below them).
    pub async fn leaves(&self, slots: Vec<Slot>) -> Result<Vec<Leaf>, ReadError> {
        let mut cursor = LeafCursor::new(slots, i64::MIN);
        let mut out = Vec::new();
        while let Some(leaf) = cursor.next(self).await? {
            out.push(leaf);
        }
        Ok(out)
    }
}

/// The leaves holding offsets from a given offset on, one at a time, in offset order.
#[derive(Debug)]
pub struct LeafCursor {
    pending: VecDeque<Slot>,
    offset: i64,
}

impl LeafCursor {
    pub fn new(top: Vec<Slot>, offset: i64) -> Self {
        Self {
            pending: top
                .into_iter()
                .filter(|s| s.last_offset() >= offset)
                .collect(),
            offset,
        }
    }

    pub async fn next(&mut self, objects: &IndexObjects) -> Result<Option<Leaf>, ReadError> {
        while let Some(slot) = self.pending.pop_front() {
            match slot {
                Slot::Section(entry) => return Ok(Some(Leaf::Section(entry))),
                Slot::File(file) => return Ok(Some(Leaf::File(file))),
                Slot::Rollup(rollup) => {
                    let inside = objects.children(&rollup).await?;
                    for child in inside
                        .into_iter()
                        .rev()
                        .filter(|s| s.last_offset() >= self.offset)
                    {
                        self.pending.push_front(child);
                    }
                }
            }
        }
        Ok(None)
    }
}

/// A flush-object section's bytes, read with one ranged GET and checked against the CRC32C
/// recorded at write time.
pub async fn read_section(
    objects: &dyn ObjectStore,
    entry: &IndexEntry,
) -> Result<Bytes, ReadError> {
    let what = format!("object={}", entry.object);
    let bytes = crate::ranged::get_range(
        objects,
        &Path::from(entry.object.as_str()),
        entry.position..entry.position + entry.length,
    )
    .await
    .map_err(|e| ReadError::from_store(&what, e))?;
    object::verify_section(&bytes, entry.crc32c)
        .map_err(|e| ReadError::Corrupt(format!("{what}: {e}")))?;
    Ok(bytes)
}
