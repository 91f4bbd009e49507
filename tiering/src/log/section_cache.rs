//! The read cache of flush-object sections (`foyer`): in memory, and optionally on local disk
//! too (a hybrid cache; the disk part belongs on an ephemeral volume, it holds nothing the
//! bucket does not). A section is read whole (its CRC32C covers it whole), so a consumer
//! catching up through a section, fetch after fetch, reads it from the bucket once; consumers
//! that want the same section at the same time share one GET. Keys name an immutable object,
//! a range in it and its CRC, so nothing is ever invalidated; what comes back from disk is
//! checked against the CRC again.
//!
//! Tailing consumers are served before this, from the objects this broker just wrote
//! (`recent`); Parquet row groups have their own cache (`columnar`).

use crate::keys::IndexEntry;
use crate::object;
use crate::tree::{self, ReadError};
use bytes::Bytes;
use foyer::{
    BlockEngineConfig, Cache, CacheBuilder, Code, DeviceBuilder, FsDeviceBuilder, HybridCache,
    HybridCacheBuilder, PsyncIoEngineConfig, Source,
};
use object_store::ObjectStore;
use std::path::Path;
use std::sync::Arc;

/// Blocks of the disk part: a section (at most about `--flush-max-bytes`, 8 MiB by default,
/// plus one append) fits one, or is kept in memory only.
const DISK_BLOCK_BYTES: usize = 16 * 1024 * 1024;

/// The least memory one shard of the cache holds. foyer splits the memory between shards
/// (eight by default) and each evicts on its own: a section can be 8 MiB (one partition
/// flushed alone), so eighths of the default 128 MiB held two each, and a few hot sections
/// could evict each other while the cache as a whole had room.
const SHARD_MIN_BYTES: usize = 64 * 1024 * 1024;

/// Shards for `memory_bytes`: as many as hold [`SHARD_MIN_BYTES`] each, one to eight.
fn shards(memory_bytes: usize) -> usize {
    (memory_bytes / SHARD_MIN_BYTES).clamp(1, 8)
}

/// A section: its object, range, and the CRC32C its index entry records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SectionKey {
    object: String,
    position: u64,
    length: u64,
    crc32c: u32,
}

impl SectionKey {
    fn of(entry: &IndexEntry) -> Self {
        Self {
            object: entry.object.clone(),
            position: entry.position,
            length: entry.length,
            crc32c: entry.crc32c,
        }
    }
}

impl Code for SectionKey {
    fn encode(&self, writer: &mut impl std::io::Write) -> foyer::Result<()> {
        self.object.encode(writer)?;
        self.position.encode(writer)?;
        self.length.encode(writer)?;
        self.crc32c.encode(writer)
    }

    fn decode(reader: &mut impl std::io::Read) -> foyer::Result<Self> {
        Ok(Self {
            object: String::decode(reader)?,
            position: u64::decode(reader)?,
            length: u64::decode(reader)?,
            crc32c: u32::decode(reader)?,
        })
    }

    fn estimated_size(&self) -> usize {
        self.object.len() + 8 + 8 + 8 + 4
    }
}

fn weight(key: &SectionKey, value: &Bytes) -> usize {
    key.object.len() + value.len()
}

/// Where a section read was served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    Memory,
    /// The read cache's disk part.
    Disk,
    /// A ranged GET from the bucket.
    Bucket,
}

enum Backend {
    Off,
    Memory(Cache<SectionKey, Bytes>),
    Hybrid(HybridCache<SectionKey, Bytes>),
}

pub struct SectionCache {
    backend: Backend,
}

impl std::fmt::Debug for SectionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.backend {
            Backend::Off => "off",
            Backend::Memory(_) => "memory",
            Backend::Hybrid(_) => "memory and disk",
        };
        f.debug_struct("SectionCache").field("kind", &kind).finish()
    }
}

impl SectionCache {
    /// In memory only (`memory_bytes` = 0: no cache).
    pub fn new(memory_bytes: usize) -> Self {
        let backend = if memory_bytes == 0 {
            Backend::Off
        } else {
            Backend::Memory(
                CacheBuilder::new(memory_bytes)
                    .with_name("skiff_sections")
                    .with_shards(shards(memory_bytes))
                    .with_weighter(weight)
                    .build(),
            )
        };
        Self { backend }
    }

    /// In memory and, up to `disk_bytes`, in files under `dir` (`disk_bytes` = 0: memory
    /// only). What a previous run left there may be served again: keys name immutable bytes,
    /// and every disk read is checked against the CRC.
    pub async fn hybrid(
        memory_bytes: usize,
        dir: &Path,
        disk_bytes: usize,
    ) -> Result<Self, String> {
        if disk_bytes == 0 || memory_bytes == 0 {
            return Ok(Self::new(memory_bytes));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the read cache dir {}: {e}", dir.display()))?;
        let device = FsDeviceBuilder::new(dir)
            .with_capacity(disk_bytes)
            .build()
            .map_err(|e| format!("read cache dir {}: {e}", dir.display()))?;
        let cache = HybridCacheBuilder::new()
            .with_name("skiff_sections")
            .memory(memory_bytes)
            .with_shards(shards(memory_bytes))
            .with_weighter(weight)
            .storage()
            // pread/pwrite on the blocking pool: no io_uring needed.
            .with_io_engine_config(PsyncIoEngineConfig::new())
            .with_engine_config(BlockEngineConfig::new(device).with_block_size(DISK_BLOCK_BYTES))
            .build()
            .await
            .map_err(|e| format!("read cache dir {}: {e}", dir.display()))?;
        Ok(Self {
            backend: Backend::Hybrid(cache),
        })
    }

    /// The section's bytes, checked against its CRC32C, from the cache or one ranged GET
    /// (shared with concurrent readers of the same section), and where they came from.
    pub(crate) async fn read(
        &self,
        objects: &Arc<dyn ObjectStore>,
        entry: &IndexEntry,
    ) -> Result<(Bytes, Served), ReadError> {
        let from_bucket = || {
            let objects = objects.clone();
            let entry = entry.clone();
            move || async move { tree::read_section(&*objects, &entry).await }
        };
        let fetched = match &self.backend {
            Backend::Off => {
                return Ok((tree::read_section(&**objects, entry).await?, Served::Bucket))
            }
            Backend::Memory(cache) => {
                let key = SectionKey::of(entry);
                if let Some(found) = cache.get(&key) {
                    return Ok((found.value().clone(), Served::Memory));
                }
                cache
                    .get_or_fetch(&key, from_bucket())
                    .await
                    .map(|found| found.value().clone())
            }
            Backend::Hybrid(cache) => {
                let key = SectionKey::of(entry);
                if let Ok(Some(found)) = cache.get(&key).await {
                    let bytes = found.value().clone();
                    // What comes back from local disk is checked again (memory holds only
                    // checked bytes), and dropped if it went bad.
                    let from_disk = found.source() == Source::Disk;
                    if !from_disk {
                        return Ok((bytes, Served::Memory));
                    }
                    if object::verify_section(&bytes, entry.crc32c).is_ok() {
                        return Ok((bytes, Served::Disk));
                    }
                    tracing::warn!(object = entry.object, "read cache entry corrupt; dropped");
                    cache.remove(&key);
                }
                cache
                    .get_or_fetch(&key, from_bucket())
                    .await
                    .map(|found| found.value().clone())
            }
        };
        fetched
            .map(|bytes| (bytes, Served::Bucket))
            .map_err(|error| {
                error
                    .downcast_ref::<ReadError>()
                    .cloned()
                    .unwrap_or_else(|| ReadError::Unavailable(error.to_string()))
            })
    }

    /// Whether sections are cached at all (a memory budget of 0 turns the cache off).
    pub(crate) fn enabled(&self) -> bool {
        !matches!(self.backend, Backend::Off)
    }

    /// Whether the section is cached (in memory, or maybe on disk: the disk part's index can
    /// answer yes for what it lost, and the read then fetches it again).
    pub(crate) fn contains(&self, entry: &IndexEntry) -> bool {
        let key = SectionKey::of(entry);
        match &self.backend {
            Backend::Off => false,
            Backend::Memory(cache) => cache.contains(&key),
            Backend::Hybrid(cache) => cache.contains(&key),
        }
    }

    /// Caches a section read by other means (a prefetch); `bytes` must have been checked
    /// against the entry's CRC.
    pub(crate) fn insert(&self, entry: &IndexEntry, bytes: Bytes) {
        let key = SectionKey::of(entry);
        match &self.backend {
            Backend::Off => {}
            Backend::Memory(cache) => {
                cache.insert(key, bytes);
            }
            Backend::Hybrid(cache) => {
                cache.insert(key, bytes);
            }
        }
    }

    /// Bytes held in memory now.
    pub(crate) fn usage(&self) -> usize {
        match &self.backend {
            Backend::Off => 0,
            Backend::Memory(cache) => cache.usage(),
            Backend::Hybrid(cache) => cache.memory().usage(),
        }
    }

    /// Bytes the disk part has written and read since start (`None` without a disk part).
    pub(crate) fn disk_io_bytes(&self) -> Option<(u64, u64)> {
        match &self.backend {
            Backend::Hybrid(cache) => {
                let statistics = cache.statistics();
                Some((
                    statistics.disk_write_bytes() as u64,
                    statistics.disk_read_bytes() as u64,
                ))
            }
            Backend::Off | Backend::Memory(_) => None,
        }
    }

    /// Writes what the disk part still buffers, and stops it.
    pub(crate) async fn close(&self) {
        if let Backend::Hybrid(cache) = &self.backend {
            if let Err(error) = cache.close().await {
                tracing::warn!(%error, "read cache did not close cleanly");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::path::Path as ObjectPath;
    use object_store::ObjectStoreExt;

    fn entry(crc32c: u32) -> IndexEntry {
        IndexEntry {
            base_offset: 0,
            last_offset: 0,
            max_timestamp: 0,
            object: "o".into(),
            position: 4,
            length: 7,
            crc32c,
            aborted: Vec::new(),
        }
    }

    /// Puts `body` as object `name`, and the index entry of all of it as one section.
    async fn put_object(store: &InMemory, name: String, body: impl Into<Bytes>) -> IndexEntry {
        let body: Bytes = body.into();
        store
            .put(&ObjectPath::from(name.as_str()), body.clone().into())
            .await
            .expect("put");
        IndexEntry {
            object: name,
            position: 0,
            length: body.len() as u64,
            crc32c: crc32c::crc32c(&body),
            ..entry(0)
        }
    }

    /// Reads through `cache` twice, the object deleted in between; then a bad CRC.
    async fn read_once_and_checked(cache: &SectionCache) {
        let store = Arc::new(InMemory::new());
        let body = Bytes::from_static(b"....section....");
        store
            .put(&ObjectPath::from("o"), body.clone().into())
            .await
            .expect("put");
        let good = entry(crc32c::crc32c(&body[4..11]));
        let objects: Arc<dyn ObjectStore> = store.clone();
        assert_eq!(
            cache.read(&objects, &good).await.expect("read"),
            (body.slice(4..11), Served::Bucket)
        );
        // Gone from the bucket: still served, from the cache.
        store.delete(&ObjectPath::from("o")).await.expect("delete");
        assert_eq!(
            cache.read(&objects, &good).await.expect("read"),
            (body.slice(4..11), Served::Memory)
        );
        assert!(cache.usage() >= 7);
        // A bad CRC is an error, and nothing is cached.
        store
            .put(&ObjectPath::from("o"), body.clone().into())
            .await
            .expect("put");
        assert!(matches!(
            cache.read(&objects, &entry(1)).await,
            Err(ReadError::Corrupt(_))
        ));
        assert!(matches!(
            cache.read(&objects, &entry(1)).await,
            Err(ReadError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn large_sections_fill_the_whole_memory_not_a_shard_of_it() {
        assert_eq!(
            [16 << 20, 128 << 20, 256 << 20, 4 << 30].map(shards),
            [1, 2, 4, 8]
        );
        // Seven sections of 7.5 MiB in 64 MiB: with eight shards of 8 MiB each, one section
        // per shard at most, and two hashed to one shard evict each other.
        let cache = SectionCache::new(64 << 20);
        let store = Arc::new(InMemory::new());
        let objects: Arc<dyn ObjectStore> = store.clone();
        let mut entries = Vec::new();
        for i in 0..7u8 {
            let entry = put_object(&store, format!("o{i}"), vec![i; 15 << 19]).await;
            cache.read(&objects, &entry).await.expect("read");
            entries.push(entry);
        }
        for entry in &entries {
            assert_eq!(
                cache.read(&objects, entry).await.expect("read").1,
                Served::Memory,
                "{}",
                entry.object
            );
        }
    }

    #[tokio::test]
    async fn a_section_is_read_once_and_checked_in_memory() {
        read_once_and_checked(&SectionCache::new(1 << 20)).await;
        let off = SectionCache::new(0);
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        store
            .put(
                &ObjectPath::from("o"),
                Bytes::from_static(b"....section....").into(),
            )
            .await
            .expect("put");
        let good = entry(crc32c::crc32c(b"section"));
        assert_eq!(
            off.read(&store, &good).await.expect("read").1,
            Served::Bucket,
            "off: always a GET"
        );
        assert_eq!(off.usage(), 0);
    }

    #[tokio::test]
    async fn a_section_is_read_once_and_checked_on_disk_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = SectionCache::hybrid(1 << 20, &dir.path().join("cache"), 64 << 20)
            .await
            .expect("hybrid");
        read_once_and_checked(&cache).await;
        cache.close().await;
    }

    #[tokio::test]
    async fn sections_evicted_from_memory_are_served_from_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Memory holds about one section: the others go to disk when evicted.
        let cache = SectionCache::hybrid(40, &dir.path().join("cache"), 64 << 20)
            .await
            .expect("hybrid");
        let store = Arc::new(InMemory::new());
        let objects: Arc<dyn ObjectStore> = store.clone();
        let mut entries = Vec::new();
        for i in 0..4 {
            let body = Bytes::from(format!("section number {i}"));
            let entry = put_object(&store, format!("o{i}"), body.clone()).await;
            assert_eq!(
                cache.read(&objects, &entry).await.expect("read").1,
                Served::Bucket
            );
            entries.push((entry, body));
        }
        for (entry, _) in &entries {
            store
                .delete(&ObjectPath::from(entry.object.as_str()))
                .await
                .expect("delete");
        }
        // Every section is still served with the bucket empty (the disk writes are
        // asynchronous: allow them a moment).
        for (entry, body) in &entries {
            let mut found = None;
            for _ in 0..100 {
                if let Ok(read) = cache.read(&objects, entry).await {
                    found = Some(read);
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let (bytes, served) = found.expect("served");
            assert_eq!(bytes, *body, "{}", entry.object);
            assert_ne!(served, Served::Bucket, "{}", entry.object);
        }
        cache.close().await;
    }
}
