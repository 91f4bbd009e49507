//! Every object key Skiff writes to the bucket, named in one place.
//!
//! ```text
//! wal/<ULID>      one object per flush: record batches of many partitions (see `object`)
//! index/<ULID>    an index object: a range of a partition's index rolled up out of the
//!                 metadata store (`keys::RollupBody`, JSON)
//! ```
//! Keys are fresh ULIDs (time-ordered, 80 random bits): an object is written once and never
//! overwritten; only the compactor's garbage collection deletes.

use object_store::path::Path;

pub const WAL_PREFIX: &str = "wal";

pub const INDEX_PREFIX: &str = "index";

/// A fresh, never-used key for an index object.
pub fn new_index_object() -> Path {
    Path::from(format!("{INDEX_PREFIX}/{}", ulid::Ulid::new()))
}

/// A fresh, never-used key for a flush object.
pub fn new_wal_object() -> Path {
    Path::from(format!("{WAL_PREFIX}/{}", ulid::Ulid::new()))
}
