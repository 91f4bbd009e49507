//! Reading a partition's committed state from the metadata store: the leader's cached load,
//! and the uncached read that leaders and replica views (`replicas`) both use.

use super::{
    layouts::view_index, pending, LogError, LogInner, PartitionLog, PartitionView, TopicPartition,
};
use crate::catalog::Catalog;
use crate::keys::{self, PartitionState};
use crate::layout::IndexSnapshot;
use crate::metadata::{KeyValue, Read, Revision};
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
    /// offset).
    Replica,
}

/// A partition's committed state, index and producer state (see [`LoadFor`]), as the store
/// holds them now; nothing cached. Everything is read in one request at one revision (the
/// topic, the state, the index keys, the producer state), so it is what one commit left: the
/// index may hold sections past the state's high watermark only while a leader's append is in
/// flight (reads stop at the high watermark), and the producer state's markers match the index.
pub(crate) async fn read_partition(
    inner: &LogInner,
    tp: &TopicPartition,
    load_for: LoadFor,
) -> Result<Arc<PartitionLog>, LogError> {
    Ok(read_partition_at(inner, tp, load_for).await?.0)
}

/// [`read_partition`], with the store's revision it read at: any later change of the partition's
/// keys has a larger `mod_revision` (what replica views compare watch events with).
pub(crate) async fn read_partition_at(
    inner: &LogInner,
    tp: &TopicPartition,
    load_for: LoadFor,
) -> Result<(Arc<PartitionLog>, Revision), LogError> {
    let (mut loaded, revision) =
        read_partitions_at(inner, std::slice::from_ref(tp), load_for).await?;
    let partition = loaded.pop().expect("one result per partition read")?;
    Ok((partition, revision))
}

/// Reads a partition's load takes, in the order [`decode_partition`] takes their results.
pub(crate) const READS_PER_PARTITION: usize = 6;

/// [`read_partition_at`] for several partitions in one request, all at one revision: the store's
/// error if the request failed, else each partition's load or why it has none (an unknown topic
/// or partition, a corrupt key). At most [`MetadataStore::max_txn_ops`] /
/// [`READS_PER_PARTITION`] partitions.
///
/// [`MetadataStore::max_txn_ops`]: crate::metadata::MetadataStore::max_txn_ops
pub(crate) async fn read_partitions_at(
    inner: &LogInner,
    tps: &[TopicPartition],
    load_for: LoadFor,
) -> Result<(Vec<Result<Arc<PartitionLog>, LogError>>, Revision), LogError> {
    let mut reads = Vec::with_capacity(tps.len() * READS_PER_PARTITION);
    for tp in tps {
        reads.extend(IndexSnapshot::reads(&tp.topic, tp.partition));
        reads.extend([
            Read::Key(keys::topic(&tp.topic)),
            Read::Key(keys::partition(&tp.topic, tp.partition)),
            Read::Key(keys::producers(&tp.topic, tp.partition)),
        ]);
    }
    debug_assert_eq!(reads.len(), tps.len() * READS_PER_PARTITION);
    let found = inner.store.read_many(&reads).await?;
    if found.results.len() != reads.len() {
        return Err(LogError::Corrupt(format!(
            "the metadata store answered {} of {} reads",
            found.results.len(),
            reads.len()
        )));
    }
    let mut results = found.results.into_iter();
    let loaded = tps
        .iter()
        .map(|tp| {
            let mine: Vec<_> = results.by_ref().take(READS_PER_PARTITION).collect();
            decode_partition(inner, tp, mine, load_for)
        })
        .collect();
    Ok((loaded, found.revision))
}

/// One partition's load from the results of its [`READS_PER_PARTITION`] reads.
fn decode_partition(
    inner: &LogInner,
    tp: &TopicPartition,
    mut results: Vec<Vec<KeyValue>>,
    load_for: LoadFor,
) -> Result<Arc<PartitionLog>, LogError> {
    let unknown = || LogError::UnknownTopicOrPartition(tp.to_string());
    let snapshot = IndexSnapshot::from_reads(&mut results)?;
    let mut rest = results.into_iter().map(|kvs| kvs.into_iter().next());
    let (topic_kv, state_kv, producers_kv) = (
        rest.next().flatten(),
        rest.next().flatten(),
        rest.next().flatten(),
    );
    let topic = Catalog::decode(topic_kv.ok_or_else(unknown)?)?;
    if tp.partition < 0 || tp.partition >= topic.record.partitions {
        return Err(unknown());
    }
    let (state, state_revision) = match state_kv {
        Some(kv) => (
            keys::decode::<PartitionState>(&kv.key, &kv.value).map_err(LogError::Corrupt)?,
            kv.mod_revision,
        ),
        None => (PartitionState::default(), 0),
    };
    let (index, rollups) = view_index(&snapshot);
    let producers = match producers_kv {
        Some(kv) if state.leader == inner.config.node_id || load_for == LoadFor::Replica => {
            keys::decode(&kv.key, &kv.value).map_err(LogError::Corrupt)?
        }
        _ => ProducerStates::default(),
    };
    Ok(Arc::new(PartitionLog {
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
    }))
}
