//! What the compactor has done and has left, per partition, read from the metadata store (so
//! any broker or compactor can answer `/v1/compactor`, whoever did the work).

use serde::Serialize;
use skiff_tiering::catalog::Catalog;
use skiff_tiering::keys::{
    self, CompactorError, CompactorJob, IndexEntry, Layout, PartitionState, RollupEntry,
};
use skiff_tiering::layout::parquet_slots;
use skiff_tiering::metadata::{MetadataError, MetadataStore};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    /// Offsets below this are in Parquet (or below the log start).
    pub parquet_end: i64,
    /// Bytes of the Parquet files the index references.
    pub parquet_bytes: u64,
    /// Records not yet in Parquet.
    pub backlog_records: i64,
    /// Flush-object bytes not yet in Parquet (rollups written before sizes were recorded
    /// count 0).
    pub backlog_bytes: u64,
    /// Flush objects holding that backlog, plus one per rolled-up range.
    pub backlog_objects: usize,
    /// When the compactor last changed this partition's index (ms since the epoch).
    pub last_compacted_ms: Option<i64>,
    /// The last failure, until a job succeeds again.
    pub last_error: Option<CompactorError>,
    /// The compactor working on the partition now.
    pub job: Option<CompactorJob>,
}

async fn by_partition<T: for<'de> serde::Deserialize<'de>>(
    store: &dyn MetadataStore,
    prefix: &str,
) -> Result<HashMap<(String, i32), Vec<T>>, MetadataError> {
    let mut out: HashMap<(String, i32), Vec<T>> = HashMap::new();
    for kv in store.range_prefix(prefix, 0).await? {
        let Some(tp) = keys::topic_partition_of(prefix, &kv.key) else {
            continue;
        };
        let value = keys::decode(&kv.key, &kv.value).map_err(MetadataError::Corrupt)?;
        out.entry(tp).or_default().push(value);
    }
    Ok(out)
}

/// The first value stored for a partition.
fn first<T: Clone>(map: &HashMap<(String, i32), Vec<T>>, tp: &(String, i32)) -> Option<T> {
    map.get(tp).and_then(|v| v.first().cloned())
}

/// Every partition's compaction status, by topic and partition.
pub async fn read(store: &Arc<dyn MetadataStore>) -> Result<Vec<PartitionStatus>, MetadataError> {
    let topics = Catalog::new(store.clone())
        .list()
        .await
        .map_err(|e| match e {
            skiff_tiering::catalog::CatalogError::Metadata(m) => m,
            other => MetadataError::Unavailable(other.to_string()),
        })?;
    let store = &**store;
    let states: HashMap<_, Vec<PartitionState>> =
        by_partition(store, &keys::all_partitions_prefix()).await?;
    let layouts: HashMap<_, Vec<Layout>> = by_partition(store, &keys::layouts_prefix()).await?;
    let tails: HashMap<_, Vec<IndexEntry>> = by_partition(store, &keys::all_index_prefix()).await?;
    let rollups: HashMap<_, Vec<RollupEntry>> =
        by_partition(store, &keys::all_rollups_prefix()).await?;
    let errors: HashMap<_, Vec<CompactorError>> =
        by_partition(store, &keys::compactor_errors_prefix()).await?;
    let jobs: HashMap<_, Vec<CompactorJob>> =
        by_partition(store, &keys::compactor_jobs_prefix()).await?;
    let mut out = Vec::new();
    for topic in topics {
        for partition in 0..topic.record.partitions {
            let tp = (topic.record.name.clone(), partition);
            let state: PartitionState = first(&states, &tp).unwrap_or_default();
            let layout: Layout = first(&layouts, &tp).unwrap_or_default();
            let tail = tails.get(&tp).map(Vec::as_slice).unwrap_or_default();
            let rolled = rollups.get(&tp).map(Vec::as_slice).unwrap_or_default();
            let objects: BTreeSet<&str> = tail.iter().map(|e| e.object.as_str()).collect();
            out.push(PartitionStatus {
                topic: tp.0.clone(),
                partition,
                log_start_offset: state.log_start_offset,
                high_watermark: state.next_offset,
                parquet_end: layout.parquet_end,
                parquet_bytes: parquet_slots(&layout).iter().map(|s| s.bytes()).sum(),
                backlog_records: (state.next_offset
                    - layout.parquet_end.max(state.log_start_offset))
                .max(0),
                backlog_bytes: tail.iter().map(|e| e.length).sum::<u64>()
                    + rolled.iter().map(|r| r.bytes).sum::<u64>(),
                backlog_objects: objects.len() + rolled.len(),
                last_compacted_ms: (layout.compacted_ms > 0).then_some(layout.compacted_ms),
                last_error: first(&errors, &tp),
                job: first(&jobs, &tp),
            });
        }
    }
    Ok(out)
}
