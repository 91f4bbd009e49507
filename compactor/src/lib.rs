//! Skiff's compactor: rewrites a partition's flush-object data as Parquet files, applies
//! retention to the bucket, and deletes what nothing references any more.
//!
//! It depends only on `skiff-tiering` and talks to brokers only through the metadata store and
//! the bucket. See ARCHITECTURE.md, "Compaction", for the protocol and its invariants.
//!
//! - [`cut`]: which flush-object leaves a job takes (pure over the index tree);
//! - [`convert`]: reading sections by object and writing one Parquet file;
//! - [`job`]: one partition's plan, conversion and swap;
//! - [`rewrite`]: dropping records below the log start from a file, and log compaction;
//! - [`pass`]: the loop that finds due partitions and runs their jobs;
//! - [`gc`]: mark and sweep of unreferenced objects;
//! - [`lease`]: claims that keep compactors from doing the same work twice;
//! - [`status`]: per-partition progress for the admin API.

pub mod convert;
pub mod cut;
pub mod gc;
pub mod job;
pub mod lease;
pub mod pass;
pub mod rewrite;
pub mod settings;
pub mod status;

pub use pass::{Compactor, CompactorStats, PassReport};
pub use settings::CompactorSettings;
