//! Reading a partition's committed state from the metadata store: the leader's cached load,
//! and the uncached read that leaders and replica views (`replicas`) both use.

use super::{
    layouts::view_index, pending, LogError, LogInner, PartitionLog, PartitionView, TopicPartition,
};
use crate::keys::{self, PartitionState};
use crate::layout::IndexSnapshot;
use crate::producers::ProducerStates;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// The partition, cached when this broker leads it (else read afresh each time).
pub(crate) async fn load_partition(
    inner: &LogInner,
    tp: &TopicPartition,
) -> Result<Arc<PartitionLog>, LogError> {
    if let Some(found) = inner
        .partitions
        .read()
        .expect("partitions poisoned")
        .get(tp)
    {
        return Ok(found.clone());
    }
    let generation = inner.cache_generation.load(Ordering::Acquire);
    let loaded = read_partition(inner, tp, LoadFor::Leader).await?;
    if loaded
        .view
        .lock()
        .expect("view mutex poisoned")
        .state
        .leader
        != inner.config.node_id
    {
        // Only led partitions are cached here: a view of someone else's partition would go
        // stale unnoticed, and answering NOT_LEADER from a fresh read costs little (reads of
        // other brokers' partitions keep their own views, refreshed: see `replicas`).
        return Ok(loaded);
    }
    let mut partitions = inner.partitions.write().expect("partitions poisoned");
    if inner.cache_generation.load(Ordering::Acquire) != generation {
        // Cached partitions were dropped while this load ran: what it read may be stale, so it
        // serves this one call and is not cached.
        return Ok(loaded);
    }
    Ok(partitions.entry(tp.clone()).or_insert(loaded).clone())
}

/// What a partition is read from the store for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoadFor {
    /// This broker's own use: it leads the partition (its appends check the producer state,
    /// loaded only then), or it answers that it does not.
    Leader,
    /// A replica view (see `replicas`): producer state always (reads need the last stable
    /// offset), consistent with the partition state read before it.
    Replica,
}

/// Loads giving up on a partition whose producer state keeps changing while it is read.
const LOAD_ATTEMPTS: usize = 8;

/// A partition's committed state, index and producer state (see [`LoadFor`]), as the store
/// holds them now; nothing cached.
///
/// The state is read first, then the index and the producer state, each on its own: the index
/// may hold sections past the state's high watermark (reads stop there), and a replica's load
/// is read again if the producer state is newer than the state (a commit came in between: its
/// markers would end transactions whose entries the index read may lack).
pub(crate) async fn read_partition(
    inner: &LogInner,
    tp: &TopicPartition,
    load_for: LoadFor,
) -> Result<Arc<PartitionLog>, LogError> {
    let unknown = || LogError::UnknownTopicOrPartition(tp.to_string());
    for _ in 0..LOAD_ATTEMPTS {
        let topic = inner.catalog.get(&tp.topic).await?.ok_or_else(unknown)?;
        if tp.partition < 0 || tp.partition >= topic.record.partitions {
            return Err(unknown());
        }
        let state_key = keys::partition(&tp.topic, tp.partition);
        let (state, state_revision) = match inner.store.get(&state_key).await? {
            Some(kv) => (
                keys::decode::<PartitionState>(&kv.key, &kv.value).map_err(LogError::Corrupt)?,
                kv.mod_revision,
            ),
            None => (PartitionState::default(), 0),
        };
        let snapshot = IndexSnapshot::load(&*inner.store, &tp.topic, tp.partition).await?;
        let (index, rollups) = view_index(&snapshot);
        let producers = if state.leader == inner.config.node_id || load_for == LoadFor::Replica {
            match inner
                .store
                .get(&keys::producers(&tp.topic, tp.partition))
                .await?
            {
                Some(kv) if load_for == LoadFor::Replica && kv.mod_revision > state_revision => {
                    continue;
                }
                Some(kv) => keys::decode(&kv.key, &kv.value).map_err(LogError::Corrupt)?,
                None => ProducerStates::default(),
            }
        } else {
            ProducerStates::default()
        };
        return Ok(Arc::new(PartitionLog {
            topic_create_revision: topic.create_revision,
            topic: Mutex::new((topic.mod_revision, topic.record)),
            view: Mutex::new(PartitionView {
                state,
                releasing: false,
                state_revision,
                layout: snapshot.layout,
                layout_revision: snapshot.layout_revision,
                index,
                rollups,
                producers,
                projected: None,
                plan_generation: 0,
            }),
            inflight: pending::Inflight::default(),
            replica: load_for == LoadFor::Replica,
        }));
    }
    Err(LogError::Unavailable(format!(
        "{tp} kept changing while read"
    )))
}
