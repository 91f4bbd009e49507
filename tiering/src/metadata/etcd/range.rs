//! Prefix ranges read from etcd in pages, as one consistent snapshot.
//!
//! One etcd response must fit the client's receive limit, so a prefix with many keys (the
//! controller's cluster view reads every partition state: ~8 MiB at 50k partitions) cannot be
//! read in one request. Pages hold at most [`RANGE_PAGE_KEYS`] keys, each continuing after the
//! last key of the one before, and all are read at the revision of the first page: the result is
//! the prefix as it was at that revision, as a single request would have returned it.
//!
//! If etcd compacts that revision while the pages are read, the read starts over at the current
//! revision (at most [`COMPACTED_RESTARTS_MAX`] times, then a retriable error). A page too large
//! for the receive limit (large values) is asked for again with half as many keys.
//!
//! The paging loop is plain logic over a [`PageSource`], so it is tested here with a fake.

use crate::metadata::{KeyValue, MetadataError, Result, Revision};
use async_trait::async_trait;

/// Keys per range page: small partition states (~100 bytes) make pages of ~150 KiB, far below the
/// receive limit, and 50k partitions take 50 requests.
pub const RANGE_PAGE_KEYS: usize = 1_000;

/// How many times one read starts over because its snapshot revision was compacted.
pub const COMPACTED_RESTARTS_MAX: usize = 3;

/// Keys in `[start, end)` at `revision` (0: the current one), at most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub start: Vec<u8>,
    /// etcd's `range_end`: `[0]` means every key from `start` on.
    pub end: Vec<u8>,
    pub revision: Revision,
    pub limit: usize,
}

#[derive(Debug)]
pub struct Page {
    pub kvs: Vec<KeyValue>,
    /// The revision the page was read at (etcd's response header).
    pub revision: Revision,
    /// More keys follow in the range.
    pub more: bool,
}

#[derive(Debug)]
pub enum PageError {
    /// The requested revision was compacted away.
    Compacted,
    /// The response would exceed the receive limit.
    TooLarge(String),
    Store(MetadataError),
}

#[async_trait]
pub trait PageSource: Sync {
    async fn page(&self, request: &PageRequest) -> Result<Page, PageError>;
}

/// etcd's range end for a prefix: the prefix with its last byte below 0xff increased, the bytes
/// after it dropped; `[0]` (every key from the prefix on) if there is none.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

/// Keys starting with `prefix`, in key order, at most `limit` of them (0: no limit), from one
/// snapshot however many pages that takes.
pub async fn read_prefix(
    source: &dyn PageSource,
    prefix: &str,
    limit: usize,
    page_keys: usize,
) -> Result<Vec<KeyValue>> {
    assert!(page_keys > 0, "a page holds at least one key");
    for restart in 0..=COMPACTED_RESTARTS_MAX {
        match read_snapshot(source, prefix, limit, page_keys).await {
            Ok(kvs) => return Ok(kvs),
            Err(PageError::Compacted) => {
                tracing::debug!(prefix, restart, "range snapshot compacted; reading again");
            }
            Err(PageError::TooLarge(message)) => return Err(MetadataError::TooLarge(message)),
            Err(PageError::Store(error)) => return Err(error),
        }
    }
    Err(MetadataError::Unavailable(format!(
        "etcd: range snapshot compacted while reading, {} times in a row: prefix={prefix}",
        COMPACTED_RESTARTS_MAX + 1
    )))
}

async fn read_snapshot(
    source: &dyn PageSource,
    prefix: &str,
    limit: usize,
    mut page_keys: usize,
) -> Result<Vec<KeyValue>, PageError> {
    let wanted = if limit == 0 { usize::MAX } else { limit };
    let mut out: Vec<KeyValue> = Vec::new();
    let mut request = PageRequest {
        start: prefix.as_bytes().to_vec(),
        end: prefix_range_end(prefix.as_bytes()),
        revision: 0,
        limit: 0,
    };
    loop {
        request.limit = page_keys.min(wanted - out.len());
        let page = match source.page(&request).await {
            Err(PageError::TooLarge(message)) if request.limit > 1 => {
                page_keys = request.limit / 2;
                tracing::debug!(prefix, page_keys, %message, "range page too large; halving");
                continue;
            }
            result => result?,
        };
        if request.revision == 0 {
            request.revision = page.revision;
        }
        let more = page.more;
        out.extend(page.kvs);
        if !more || out.len() >= wanted {
            out.truncate(wanted);
            return Ok(out);
        }
        let last = out.last().ok_or_else(|| {
            PageError::Store(MetadataError::Corrupt(format!(
                "etcd: empty range page said more keys follow: prefix={prefix}"
            )))
        })?;
        // The smallest key after `last`.
        request.start = last.key.as_bytes().to_vec();
        request.start.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// A key space at a fixed revision, with failures injected by request number.
    struct Fake {
        keys: BTreeMap<Vec<u8>, usize>,
        revision: Revision,
        /// Requests seen so far.
        requests: Mutex<Vec<PageRequest>>,
        /// Request numbers (0-based) answered with `Compacted`.
        compacted_at: Vec<usize>,
        /// Pages of more keys than this are too large.
        keys_max: usize,
    }

    impl Fake {
        fn new(keys: &[&str]) -> Self {
            Self {
                keys: keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (k.as_bytes().to_vec(), i))
                    .collect(),
                revision: 7,
                requests: Mutex::new(Vec::new()),
                compacted_at: Vec::new(),
                keys_max: usize::MAX,
            }
        }

        fn requests(&self) -> Vec<PageRequest> {
            self.requests.lock().expect("not poisoned").clone()
        }
    }

    #[async_trait]
    impl PageSource for Fake {
        async fn page(&self, request: &PageRequest) -> Result<Page, PageError> {
            let n = {
                let mut requests = self.requests.lock().expect("not poisoned");
                requests.push(request.clone());
                requests.len() - 1
            };
            if self.compacted_at.contains(&n) {
                return Err(PageError::Compacted);
            }
            let in_range: Vec<_> = self
                .keys
                .range(request.start.clone()..request.end.clone())
                .collect();
            let taken = request.limit.min(in_range.len());
            if taken > self.keys_max {
                return Err(PageError::TooLarge(format!("{taken} keys")));
            }
            let kvs = in_range[..taken]
                .iter()
                .map(|(k, v)| KeyValue {
                    key: String::from_utf8(k.to_vec()).expect("utf-8"),
                    value: Bytes::from(v.to_string()),
                    create_revision: 1,
                    mod_revision: 1,
                    version: 1,
                    lease: None,
                })
                .collect();
            Ok(Page {
                kvs,
                revision: self.revision,
                more: in_range.len() > taken,
            })
        }
    }

    fn keys_of(kvs: &[KeyValue]) -> Vec<&str> {
        kvs.iter().map(|kv| kv.key.as_str()).collect()
    }

    const KEYS: &[&str] = &["/p/a", "/p/b", "/p/c", "/p/d", "/p/e", "/q"];

    #[tokio::test]
    async fn pages_continue_after_the_last_key_at_the_first_revision() {
        let fake = Fake::new(KEYS);
        let kvs = read_prefix(&fake, "/p/", 0, 2).await.expect("read");
        assert_eq!(keys_of(&kvs), ["/p/a", "/p/b", "/p/c", "/p/d", "/p/e"]);
        let requests = fake.requests();
        assert_eq!(requests.len(), 3);
        assert_eq!(requests[0].revision, 0);
        assert!(requests[1..].iter().all(|r| r.revision == 7));
        assert_eq!(requests[1].start, b"/p/b\0");
        assert!(requests.iter().all(|r| r.end == b"/p0"));
    }

    #[tokio::test]
    async fn a_limit_ends_the_read_inside_a_page() {
        let fake = Fake::new(KEYS);
        let kvs = read_prefix(&fake, "/p/", 3, 2).await.expect("read");
        assert_eq!(keys_of(&kvs), ["/p/a", "/p/b", "/p/c"]);
        let limits: Vec<_> = fake.requests().iter().map(|r| r.limit).collect();
        assert_eq!(limits, [2, 1]);
    }

    #[tokio::test]
    async fn a_compacted_snapshot_is_read_again_from_the_start() {
        let mut fake = Fake::new(KEYS);
        fake.compacted_at = vec![1];
        let kvs = read_prefix(&fake, "/p/", 0, 2).await.expect("read");
        assert_eq!(kvs.len(), 5);
        let requests = fake.requests();
        assert_eq!(requests[2].start, b"/p/");
        assert_eq!(requests[2].revision, 0);
    }

    #[tokio::test]
    async fn compaction_every_time_is_a_retriable_error() {
        let mut fake = Fake::new(KEYS);
        fake.compacted_at = (0..100).collect();
        let error = read_prefix(&fake, "/p/", 0, 2).await.expect_err("fails");
        assert!(error.is_retriable(), "{error:?}");
        assert_eq!(fake.requests().len(), COMPACTED_RESTARTS_MAX + 1);
    }

    #[tokio::test]
    async fn a_page_too_large_is_asked_again_with_fewer_keys() {
        let mut fake = Fake::new(KEYS);
        fake.keys_max = 1;
        let kvs = read_prefix(&fake, "/p/", 0, 4).await.expect("read");
        assert_eq!(kvs.len(), 5);
        let limits: Vec<_> = fake.requests().iter().map(|r| r.limit).collect();
        assert_eq!(limits, [4, 2, 1, 1, 1, 1, 1]);
        fake.keys_max = 0;
        let error = read_prefix(&fake, "/p/", 0, 4).await.expect_err("fails");
        assert!(matches!(error, MetadataError::TooLarge(_)), "{error:?}");
    }

    #[test]
    fn range_end_matches_etcd() {
        assert_eq!(prefix_range_end(b"/p/"), b"/p0");
        assert_eq!(prefix_range_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff"), [0]);
        assert_eq!(prefix_range_end(b""), [0]);
    }
}
