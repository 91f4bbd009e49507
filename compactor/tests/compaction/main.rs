//! The compactor against a real log (embedded metadata store, in-memory bucket): what a broker
//! serves after its data moved to Parquet is exactly what was produced.

mod conversion;
mod faults;
mod fixture;
mod gc;
mod log_compaction;
mod transactions;
