//! The read cache of flush-object sections (`foyer`, in memory): a section is read whole (its
//! CRC32C covers it whole), so a consumer catching up through a section, fetch after fetch,
//! reads it from the bucket once; consumers that want the same section at the same time share
//! one GET. Keys name an immutable object and a range in it, so nothing is ever invalidated.
//!
//! Tailing consumers are served before this, from the objects this broker just wrote
//! (`recent`); Parquet row groups have their own cache (`columnar`).

use crate::keys::IndexEntry;
use crate::tree::{self, ReadError};
use bytes::Bytes;
use foyer::{Cache, CacheBuilder};
use object_store::ObjectStore;
use std::sync::Arc;

/// A section: (object key, position, length, CRC32C its index entry records).
type SectionKey = (String, u64, u64, u32);

pub(crate) struct SectionCache {
    /// None when the cache is off (`read_cache_max_bytes` = 0).
    cache: Option<Cache<SectionKey, Bytes>>,
}

impl std::fmt::Debug for SectionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SectionCache")
            .field("capacity", &self.cache.as_ref().map(Cache::capacity))
            .finish()
    }
}

impl SectionCache {
    pub(crate) fn new(max_bytes: usize) -> Self {
        let cache = (max_bytes > 0).then(|| {
            CacheBuilder::new(max_bytes)
                .with_name("skiff_sections")
                .with_weighter(|key: &SectionKey, value: &Bytes| key.0.len() + value.len())
                .build()
        });
        Self { cache }
    }

    /// The section's bytes, checked against its CRC32C, from the cache or one ranged GET
    /// (shared with concurrent readers of the same section). `hit` says which.
    pub(crate) async fn read(
        &self,
        objects: &Arc<dyn ObjectStore>,
        entry: &IndexEntry,
    ) -> Result<(Bytes, bool), ReadError> {
        let Some(cache) = &self.cache else {
            return Ok((tree::read_section(&**objects, entry).await?, false));
        };
        let key: SectionKey = (
            entry.object.clone(),
            entry.position,
            entry.length,
            entry.crc32c,
        );
        if let Some(found) = cache.get(&key) {
            return Ok((found.value().clone(), true));
        }
        let objects = objects.clone();
        let entry = entry.clone();
        let fetched = cache
            .get_or_fetch(&key, move || async move {
                tree::read_section(&*objects, &entry).await
            })
            .await;
        match fetched {
            Ok(found) => Ok((found.value().clone(), false)),
            Err(error) => Err(error
                .downcast_ref::<ReadError>()
                .cloned()
                .unwrap_or_else(|| ReadError::Unavailable(error.to_string()))),
        }
    }

    /// Bytes held now.
    pub(crate) fn usage(&self) -> usize {
        self.cache.as_ref().map_or(0, Cache::usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn a_section_is_read_once_and_checked() {
        let store = Arc::new(InMemory::new());
        let body = Bytes::from_static(b"....section....");
        store
            .put(&Path::from("o"), body.clone().into())
            .await
            .expect("put");
        let entry = |crc32c| IndexEntry {
            base_offset: 0,
            last_offset: 0,
            max_timestamp: 0,
            object: "o".into(),
            position: 4,
            length: 7,
            crc32c,
            aborted: Vec::new(),
        };
        let good = entry(crc32c::crc32c(&body[4..11]));
        let objects: Arc<dyn ObjectStore> = store.clone();
        let cache = SectionCache::new(1 << 20);
        assert_eq!(
            cache.read(&objects, &good).await.expect("read"),
            (body.slice(4..11), false)
        );
        // Gone from the bucket: still served, from memory.
        store.delete(&Path::from("o")).await.expect("delete");
        assert_eq!(
            cache.read(&objects, &good).await.expect("read"),
            (body.slice(4..11), true)
        );
        assert!(cache.usage() >= 7);
        // A bad CRC is an error, and nothing is cached.
        store
            .put(&Path::from("o"), body.clone().into())
            .await
            .expect("put");
        let bad = entry(1);
        assert!(matches!(
            cache.read(&objects, &bad).await,
            Err(ReadError::Corrupt(_))
        ));
        // Off: always from the bucket.
        let off = SectionCache::new(0);
        assert!(!off.read(&objects, &good).await.expect("read").1);
        assert_eq!(off.usage(), 0);
    }
}
