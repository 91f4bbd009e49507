//! Ranged reads of objects into memory that is not zero-filled first.
//!
//! object_store's local files answer a ranged GET by zero-filling a buffer of the range's
//! length and then reading the file into it: a pass over memory that the read overwrites at
//! once, 8 % of the broker's CPU while a consumer catches up on the embedded store. Here a
//! local file's range is read into uninitialised capacity instead; any other store's answer is
//! collected as object_store's `get_range` collects it. Either way it is one request, so
//! request counts (and bills) do not change. Several ranges of one object are coalesced into
//! GETs as object_store coalesces them for remote stores.

use bytes::Bytes;
use object_store::path::Path;
use object_store::{GetOptions, GetResultPayload, ObjectStore};
use std::ops::Range;

/// The bytes of `range` of the object at `path`: `ObjectStoreExt::get_range`'s result, for
/// one GET, without zero-filling a local file's buffer. Fewer bytes than asked (a file that
/// ends early) are returned as read: callers check lengths against their index.
pub async fn get_range(
    store: &dyn ObjectStore,
    path: &Path,
    range: Range<u64>,
) -> object_store::Result<Bytes> {
    let result = store
        .get_opts(path, GetOptions::new().with_range(Some(range)))
        .await?;
    match result.payload {
        GetResultPayload::File(file, path) => {
            let range = result.range.clone();
            tokio::task::spawn_blocking(move || read_file_range(file, &path, range))
                .await
                .map_err(|error| object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(error),
                })?
        }
        GetResultPayload::Stream(_) => result.bytes().await,
    }
}

/// The bytes of each of `ranges` of the object at `path`, as `ObjectStore::get_ranges` gets
/// them from a remote store (ranges less than `OBJECT_STORE_COALESCE_DEFAULT` apart share one
/// GET, a few GETs at once), each GET read as [`get_range`] reads it: a local file's without
/// zero-filling.
pub async fn get_ranges(
    store: &dyn ObjectStore,
    path: &Path,
    ranges: &[Range<u64>],
) -> object_store::Result<Vec<Bytes>> {
    object_store::coalesce_ranges(
        ranges,
        |range| async move {
            let bytes = get_range(store, path, range.clone()).await?;
            // The ranges are cut out of what came back: a short read (an object shorter than
            // its index says) is an error here, not a slice past the end.
            if bytes.len() as u64 != range.end - range.start {
                return Err(object_store::Error::Generic {
                    store: "ranged",
                    source: format!(
                        "path={path} range={range:?}: {} bytes read, the object ends early",
                        bytes.len()
                    )
                    .into(),
                });
            }
            Ok(bytes)
        },
        object_store::OBJECT_STORE_COALESCE_DEFAULT,
    )
    .await
}

/// Reads `range` of `file` into a buffer of exactly that capacity, never initialised before
/// the read fills it (`read_to_end` reads into spare capacity).
fn read_file_range(
    mut file: std::fs::File,
    path: &std::path::Path,
    range: Range<u64>,
) -> object_store::Result<Bytes> {
    use std::io::{Read, Seek, SeekFrom};
    let failed = |error: std::io::Error| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("read path={} range={range:?}: {error}", path.display()).into(),
    };
    let length = range.end.saturating_sub(range.start);
    let capacity = usize::try_from(length).map_err(|_| {
        failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "range larger than memory",
        ))
    })?;
    file.seek(SeekFrom::Start(range.start)).map_err(failed)?;
    let mut buffer = Vec::with_capacity(capacity);
    file.take(length).read_to_end(&mut buffer).map_err(failed)?;
    Ok(Bytes::from(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    async fn both_ways(store: &dyn ObjectStore, path: &Path, range: Range<u64>) {
        let ours = get_range(store, path, range.clone()).await.expect("ours");
        let theirs = store.get_range(path, range.clone()).await.expect("theirs");
        assert_eq!(ours, theirs, "range {range:?}");
        // Several ranges, near and far apart, overlapping ones among them.
        let end = range.end;
        let ranges = [
            range.clone(),
            range.start / 2..range.start / 2 + 1,
            end.saturating_sub(3)..end,
            0..end.min(5),
        ];
        let ours = get_ranges(store, path, &ranges).await.expect("ours");
        let theirs = store.get_ranges(path, &ranges).await.expect("theirs");
        assert_eq!(ours, theirs, "ranges {ranges:?}");
    }

    #[tokio::test]
    async fn reads_what_object_store_reads_from_files_and_from_streams() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = LocalFileSystem::new_with_prefix(dir.path()).expect("local store");
        let memory = InMemory::new();
        let path = Path::from("objects/a");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for store in [&local as &dyn ObjectStore, &memory] {
            store.put(&path, data.clone().into()).await.expect("put");
            for range in [0..1, 0..100_000, 17..65_553, 99_999..100_000] {
                both_ways(store, &path, range).await;
            }
        }
    }

    #[tokio::test]
    async fn a_missing_object_or_a_range_past_its_end_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = LocalFileSystem::new_with_prefix(dir.path()).expect("local store");
        let path = Path::from("a");
        assert!(matches!(
            get_range(&local, &path, 0..4).await,
            Err(object_store::Error::NotFound { .. })
        ));
        local.put(&path, vec![1u8; 10].into()).await.expect("put");
        assert!(get_range(&local, &path, 20..30).await.is_err());
        // Ranges past the end, coalesced with one inside: an error, never a panic.
        assert!(get_ranges(&local, &path, &[0..4, 8..16]).await.is_err());
        assert!(get_ranges(&local, &path, &[0..4, 30..40]).await.is_err());
    }
}
