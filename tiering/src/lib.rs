//! Skiff's log, independent of the Kafka wire protocol and of sockets.
//!
//! Produced record batches are buffered for all partitions, written as one object per flush to an
//! [`object_store::ObjectStore`], and made visible by one commit to a [`metadata::MetadataStore`].
//! Reads find the object covering an offset through the per-partition index and fetch byte ranges.
//! See ARCHITECTURE.md for the data flow and the invariants.

pub mod acls;
pub mod batch;
pub mod catalog;
pub mod clock;
pub mod cluster;
pub mod columnar;
pub mod credentials;
pub mod group_offsets;
pub mod keys;
pub mod latency;
pub mod layout;
pub mod log;
pub mod metadata;
pub mod metered;
pub mod object;
pub mod paths;
pub mod producers;
pub mod ranged;
pub mod records;
pub mod transactions;
pub mod tree;

pub use clock::{Clock, SystemClock};
pub use log::{Log, LogConfig, LogError};
