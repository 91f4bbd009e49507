//! Every object key Skiff writes to the bucket, named in one place.
//!
//! ```text
//! wal/<ULID>      one object per flush: record batches of many partitions (see `object`)
//! ```
//! Keys are fresh ULIDs (time-ordered, 80 random bits): an object is written once and never
//! overwritten; only the compactor's garbage collection deletes.

use object_store::path::Path;

pub const WAL_PREFIX: &str = "wal";

/// A fresh, never-used key for a flush object.
pub fn new_wal_object() -> Path {
    Path::from(format!("{WAL_PREFIX}/{}", ulid::Ulid::new()))
}
