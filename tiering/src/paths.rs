//! Every object key Skiff writes to the bucket, named in one place.
//!
//! ```text
//! wal/<ULID>      one object per flush: record batches of many partitions (see `object`)
//! index/<ULID>    an index object: a range of a partition's index rolled up out of the
//!                 metadata store (`keys::RollupBody`, JSON)
//! parquet/topic=<topic>/partition=<partition>/<base:020>-<last:020>-<ULID>.parquet
//!                 one partition's records of an offset range as Parquet (see `columnar`);
//!                 Hive-style, so engines prune by topic and partition from the path
//! doctor/<ULID>   a probe `skiff doctor` writes, reads back and deletes at once (outside
//!                 the data prefixes: garbage collection never lists it)
//! ```
//! Keys are fresh ULIDs (80 random bits) whose time part is the writer's clock when it named the
//! object: an object is written once and never overwritten; only the compactor's garbage
//! collection deletes, and it tells an object's age from its name ([`written_ms`]).

use object_store::path::Path;

pub const WAL_PREFIX: &str = "wal";

pub const INDEX_PREFIX: &str = "index";

pub const PARQUET_PREFIX: &str = "parquet";

/// Every prefix Skiff writes under: what garbage collection lists.
pub const DATA_PREFIXES: [&str; 3] = [WAL_PREFIX, INDEX_PREFIX, PARQUET_PREFIX];

/// A fresh ULID whose time part is `now_ms` (the injected clock's, not the system's).
fn fresh_id(now_ms: i64) -> ulid::Ulid {
    ulid::Ulid::from_parts(
        u64::try_from(now_ms).unwrap_or(0),
        ulid::Ulid::new().random(),
    )
}

/// A fresh, never-used key for an index object.
pub fn new_index_object(now_ms: i64) -> Path {
    Path::from(format!("{INDEX_PREFIX}/{}", fresh_id(now_ms)))
}

/// A fresh, never-used key for a flush object.
pub fn new_wal_object(now_ms: i64) -> Path {
    Path::from(format!("{WAL_PREFIX}/{}", fresh_id(now_ms)))
}

pub const DOCTOR_PREFIX: &str = "doctor";

/// A fresh key for `skiff doctor`'s probe of the bucket.
pub fn new_doctor_probe(now_ms: i64) -> Path {
    Path::from(format!("{DOCTOR_PREFIX}/{}", fresh_id(now_ms)))
}

/// When an object Skiff wrote was named (its writer's clock, ms), from the ULID in its key;
/// None for a key Skiff did not name.
pub fn written_ms(key: &str) -> Option<i64> {
    let name = key.rsplit('/').next()?;
    let id = name
        .strip_suffix(".parquet")
        .map_or(name, |stem| stem.rsplit('-').next().unwrap_or(stem));
    let ulid = ulid::Ulid::from_string(id).ok()?;
    i64::try_from(ulid.timestamp_ms()).ok()
}

/// How long ago (ms) the object was named: what the commit timeout is measured against. A
/// writer commits an object within the timeout of naming it or never, so garbage collection,
/// which ages objects by their names too, never deletes one a commit may still reference. 0 for
/// a key Skiff did not name.
pub fn name_age_ms(key: &str, now_ms: i64) -> i64 {
    written_ms(key).map_or(0, |written| now_ms.saturating_sub(written))
}

/// A fresh, never-used key for a Parquet file of `topic`'s `partition` covering offsets
/// `base..=last` (topic names are `[a-zA-Z0-9._-]`, safe in a path).
pub fn new_parquet_file(topic: &str, partition: i32, base: i64, last: i64, now_ms: i64) -> Path {
    Path::from(format!(
        "{PARQUET_PREFIX}/topic={topic}/partition={partition}/{base:020}-{last:020}-{}.parquet",
        fresh_id(now_ms)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_keys_are_hive_style_and_sort_by_offset() {
        let a = new_parquet_file("orders", 3, 0, 99, 5);
        let b = new_parquet_file("orders", 3, 100, 1_000, 5);
        assert!(a
            .as_ref()
            .starts_with("parquet/topic=orders/partition=3/00000000000000000000-"));
        assert!(a.as_ref().ends_with(".parquet"));
        assert!(a.as_ref() < b.as_ref());
    }

    #[test]
    fn object_names_carry_their_writers_time() {
        assert_eq!(written_ms(new_wal_object(1_234).as_ref()), Some(1_234));
        assert_eq!(written_ms(new_index_object(77).as_ref()), Some(77));
        assert_eq!(
            written_ms(new_parquet_file("t", 0, 5, 9, 42).as_ref()),
            Some(42)
        );
        assert_eq!(written_ms("wal/not-a-ulid"), None);
        assert_eq!(written_ms("somebody/else.txt"), None);
    }
}
