//! An `ObjectStore` decorator that counts requests and bytes per operation: what a cloud bucket
//! bills, so the cost of a workload is measured, not guessed.
//!
//! `get_ranges` is counted as the requests an S3 client makes for it: object_store merges ranges
//! closer than 1 MiB and fetches each merged range with one GET. A listing counts one request
//! per 1,000 objects (S3's page size). A multipart upload counts as one request (Skiff
//! writes none: objects are at most `--flush-max-bytes` or a Parquet file, PUT whole).

use crate::latency::LatencyHistogram;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// Gap below which object_store merges ranges of one `get_ranges` call.
const COALESCE_BYTES: u64 = 1024 * 1024;
/// Objects per listing request (S3).
const LIST_PAGE: u64 = 1000;

/// Requests and bytes, per operation, since the process started.
#[derive(Debug, Default)]
pub struct ObjectStoreCounts {
    pub puts: AtomicU64,
    pub put_bytes: AtomicU64,
    pub gets: AtomicU64,
    pub get_bytes: AtomicU64,
    pub lists: AtomicU64,
    pub deletes: AtomicU64,
    pub copies: AtomicU64,
    /// How long requests took, to the response (a GET's body is read after): PUT, GET (ranged
    /// reads included), LIST (one page, delimited listings), COPY.
    pub put_latency: LatencyHistogram,
    pub get_latency: LatencyHistogram,
    pub list_latency: LatencyHistogram,
    pub copy_latency: LatencyHistogram,
}

impl ObjectStoreCounts {
    /// (name, value) of every counter, for the admin API.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("puts", load(&self.puts)),
            ("put_bytes", load(&self.put_bytes)),
            ("gets", load(&self.gets)),
            ("get_bytes", load(&self.get_bytes)),
            ("lists", load(&self.lists)),
            ("deletes", load(&self.deletes)),
            ("copies", load(&self.copies)),
        ]
    }

    /// (operation, latency) for `/metrics`.
    pub fn latencies(&self) -> [(&'static str, &LatencyHistogram); 4] {
        [
            ("PUT", &self.put_latency),
            ("GET", &self.get_latency),
            ("LIST", &self.list_latency),
            ("COPY", &self.copy_latency),
        ]
    }
}

/// Runs `request`, recording how long it took.
async fn timed<T>(histogram: &LatencyHistogram, request: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let result = request.await;
    histogram.record(started.elapsed());
    result
}

/// Counts what goes through it to the store it wraps.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
    counts: Arc<ObjectStoreCounts>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            counts: Arc::new(ObjectStoreCounts::default()),
        }
    }

    pub fn counts(&self) -> Arc<ObjectStoreCounts> {
        self.counts.clone()
    }
}

impl std::fmt::Display for MeteredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Metered({})", self.inner)
    }
}

/// The requests one `get_ranges` call makes: ranges merged across gaps under 1 MiB.
fn merged_requests(ranges: &[Range<u64>]) -> u64 {
    let mut sorted: Vec<&Range<u64>> = ranges.iter().collect();
    sorted.sort_by_key(|r| r.start);
    let mut requests = 0u64;
    let mut end: Option<u64> = None;
    for range in sorted {
        match end {
            Some(e) if range.start <= e.saturating_add(COALESCE_BYTES) => {
                end = Some(e.max(range.end));
            }
            _ => {
                requests += 1;
                end = Some(range.end);
            }
        }
    }
    requests
}

fn counted_list(
    stream: BoxStream<'static, Result<ObjectMeta>>,
    counts: Arc<ObjectStoreCounts>,
) -> BoxStream<'static, Result<ObjectMeta>> {
    counts.lists.fetch_add(1, Ordering::Relaxed);
    let mut seen = 0u64;
    stream
        .inspect(move |_| {
            seen += 1;
            if seen.is_multiple_of(LIST_PAGE) {
                counts.lists.fetch_add(1, Ordering::Relaxed);
            }
        })
        .boxed()
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.counts.puts.fetch_add(1, Ordering::Relaxed);
        self.counts
            .put_bytes
            .fetch_add(payload.content_length() as u64, Ordering::Relaxed);
        timed(
            &self.counts.put_latency,
            self.inner.put_opts(location, payload, opts),
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.counts.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.counts.gets.fetch_add(1, Ordering::Relaxed);
        let result = timed(
            &self.counts.get_latency,
            self.inner.get_opts(location, options),
        )
        .await?;
        self.counts
            .get_bytes
            .fetch_add(result.range.end - result.range.start, Ordering::Relaxed);
        Ok(result)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.counts
            .gets
            .fetch_add(merged_requests(ranges), Ordering::Relaxed);
        let fetched = timed(
            &self.counts.get_latency,
            self.inner.get_ranges(location, ranges),
        )
        .await?;
        let bytes: usize = fetched.iter().map(Bytes::len).sum();
        self.counts
            .get_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(fetched)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let counts = self.counts.clone();
        let locations = locations
            .inspect(move |_| {
                counts.deletes.fetch_add(1, Ordering::Relaxed);
            })
            .boxed();
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        counted_list(self.inner.list(prefix), self.counts.clone())
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        counted_list(
            self.inner.list_with_offset(prefix, offset),
            self.counts.clone(),
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.counts.lists.fetch_add(1, Ordering::Relaxed);
        timed(
            &self.counts.list_latency,
            self.inner.list_with_delimiter(prefix),
        )
        .await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.counts.copies.fetch_add(1, Ordering::Relaxed);
        timed(
            &self.counts.copy_latency,
            self.inner.copy_opts(from, to, options),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    #[test]
    fn nearby_ranges_are_one_request() {
        assert_eq!(merged_requests(&[]), 0);
        assert_eq!(merged_requests(&[0..10, 20..30, 5..8]), 1);
        assert_eq!(
            merged_requests(&[0..10, 10 + COALESCE_BYTES + 1..u64::MAX]),
            2
        );
    }

    #[tokio::test]
    async fn counts_requests_and_bytes() {
        let store = MeteredStore::new(Arc::new(InMemory::new()));
        let path = Path::from("wal/a");
        store
            .put(&path, Bytes::from_static(b"0123456789").into())
            .await
            .expect("put");
        store.get_range(&path, 2..6).await.expect("get");
        store
            .get_ranges(&path, &[0..2, 4..9])
            .await
            .expect("ranges");
        let listed: Vec<_> = store.list(None).collect().await;
        assert_eq!(listed.len(), 1);
        store.delete(&path).await.expect("delete");
        let counts: std::collections::HashMap<_, _> =
            store.counts().snapshot().into_iter().collect();
        assert_eq!(counts["puts"], 1);
        assert_eq!(counts["put_bytes"], 10);
        assert_eq!(counts["gets"], 2);
        assert_eq!(counts["get_bytes"], 4 + 7);
        assert_eq!(counts["lists"], 1);
        assert_eq!(counts["deletes"], 1);
        let latency = store.counts();
        assert_eq!(latency.put_latency.summary().count, 1);
        assert_eq!(latency.get_latency.summary().count, 2);
    }
}
