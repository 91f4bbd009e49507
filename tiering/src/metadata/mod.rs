//! The metadata store seam, shaped like etcd's v3 API and nothing more: point reads, ordered range
//! reads, transactions guarded by compares, watches and leases.
//!
//! Two implementations pass the same [`contract`] suite: [`embedded::EmbeddedStore`] (the
//! single-binary default, durable on local disk) and, in cluster mode, etcd. Everything above
//! this trait (topics, partition state, the log index) is expressed as keys and transactions so
//! that it runs unchanged on either.

pub mod contract;
pub mod embedded;
pub mod etcd;
#[cfg(test)]
pub(crate) mod faulty;
pub mod metered;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// A store-wide revision, increased by every transaction that writes (as in etcd).
pub type Revision = i64;
/// A lease handle; keys attached to a lease are deleted when it expires or is revoked.
pub type LeaseId = i64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the transaction that created the key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the transaction that last wrote the key.
    pub mod_revision: Revision,
    /// Number of writes since creation; 0 never appears on a live key.
    pub version: i64,
    pub lease: Option<LeaseId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// What a compare looks at; an absent key has version, create and mod revision 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    ModRevision(Revision),
    CreateRevision(Revision),
    Value(Bytes),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    /// The key does not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            op: CompareOp::Equal,
            target: CompareTarget::Version(0),
        }
    }

    /// The key was last written at exactly `revision` (0: it does not exist).
    pub fn mod_revision(key: impl Into<String>, revision: Revision) -> Self {
        Self {
            key: key.into(),
            op: CompareOp::Equal,
            target: CompareTarget::ModRevision(revision),
        }
    }

    pub fn value(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            op: CompareOp::Equal,
            target: CompareTarget::Value(value.into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: String,
        value: Bytes,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
    /// Deletes every key starting with `prefix`.
    DeletePrefix {
        prefix: String,
    },
    /// Deletes every key in `[start, end)`.
    DeleteRange {
        start: String,
        end: String,
    },
}

impl TxnOp {
    pub fn put(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    pub fn delete(key: impl Into<String>) -> Self {
        TxnOp::Delete { key: key.into() }
    }
}

/// `if all compares hold { success } else { failure }`, applied atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl Txn {
    pub fn when(compares: Vec<Compare>) -> Self {
        Self {
            compares,
            ..Self::default()
        }
    }

    pub fn and_then(mut self, ops: Vec<TxnOp>) -> Self {
        self.success = ops;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOutcome {
    pub succeeded: bool,
    /// The store's revision after the transaction (unchanged if nothing was written).
    pub revision: Revision,
}

/// One read of [`MetadataStore::read_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// The key, if it exists (zero or one result).
    Key(String),
    /// Every key starting with the prefix, in key order. It must fit one response: for a
    /// prefix of unbounded size use [`MetadataStore::range_prefix`], which pages.
    Prefix(String),
}

/// What [`MetadataStore::read_many`] found: one list per read, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The store's revision the reads saw.
    pub revision: Revision,
    pub results: Vec<Vec<KeyValue>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { key: String, revision: Revision },
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The store cannot be reached or failed; the operation may be retried.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    #[error("lease not found: lease={0}")]
    LeaseNotFound(LeaseId),
    /// The request breaks a limit of the store (size, operation count).
    #[error("metadata request too large: {0}")]
    TooLarge(String),
    #[error("metadata store corrupt: {0}")]
    Corrupt(String),
}

impl MetadataError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, MetadataError::Unavailable(_))
    }
}

pub type Result<T, E = MetadataError> = std::result::Result<T, E>;

#[async_trait]
pub trait MetadataStore: Send + Sync + std::fmt::Debug {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys starting with `prefix`, in key order, at most `limit` of them (0: no limit).
    async fn range_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<KeyValue>>;

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome>;

    /// Several keys and prefixes read at one revision in one request (etcd: a transaction of
    /// ranges), so a reader of related keys (a partition's state, index and producers) sees
    /// them as one commit left them, without reading twice to check. At most
    /// [`MetadataStore::max_txn_ops`] reads.
    async fn read_many(&self, reads: &[Read]) -> Result<ReadOutcome>;

    /// Changes to keys starting with `prefix` after this call returns.
    async fn watch_prefix(&self, prefix: &str) -> Result<BoxStream<'static, WatchEvent>>;

    async fn lease_grant(&self, ttl_ms: i64) -> Result<LeaseId>;

    /// Extends the lease to a full TTL from now; fails with `LeaseNotFound` once it expired.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()>;

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()>;

    /// The largest number of operations one transaction may hold (etcd: 128 by default).
    fn max_txn_ops(&self) -> usize;
}

/// The exclusive upper bound of the keys starting with `prefix`.
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

/// Whether a compare holds against the key's current state (None: absent).
pub fn compare_holds(compare: &Compare, current: Option<&KeyValue>) -> bool {
    use std::cmp::Ordering;
    let ordering = match &compare.target {
        CompareTarget::Version(v) => current.map_or(0, |kv| kv.version).cmp(v),
        CompareTarget::ModRevision(r) => current.map_or(0, |kv| kv.mod_revision).cmp(r),
        CompareTarget::CreateRevision(r) => current.map_or(0, |kv| kv.create_revision).cmp(r),
        CompareTarget::Value(v) => match current {
            // etcd: a value compare against a missing key fails whatever the operator.
            None => return false,
            Some(kv) => kv.value.as_ref().cmp(v.as_ref()),
        },
    };
    match compare.op {
        CompareOp::Equal => ordering == Ordering::Equal,
        CompareOp::NotEqual => ordering != Ordering::Equal,
        CompareOp::Less => ordering == Ordering::Less,
        CompareOp::Greater => ordering == Ordering::Greater,
    }
}
