//! Brokers and partition leadership, kept in the metadata store.
//!
//! - [`membership`]: each broker registers itself under `/skiff/brokers/` on a lease it renews;
//!   a broker that stops renewing (crash, pause, partition) disappears after the lease TTL.
//! - [`assignment`]: pure rendezvous hashing of partitions over live brokers.
//! - [`controller`]: every broker's loop that claims the partitions it should lead and hands
//!   over those it should not, from a [`view`] of the cluster it reads and publishes each pass.
//!
//! Claims and releases are transactions on the partition state key, compared on its
//! `mod_revision`; a claim bumps the leader epoch. Since every log commit compares the same key,
//! a broker that lost a partition can never commit to it again (see ARCHITECTURE.md, fencing).

pub mod assignment;
pub mod controller;
pub mod membership;
pub mod view;

use crate::keys::{self, PartitionState};
use crate::metadata::{Compare, MetadataError, MetadataStore, Revision, Txn, TxnOp};
use std::collections::HashMap;

/// Stored partition states with their `mod_revision`, by partition.
pub type PartitionStates = HashMap<i32, (PartitionState, Revision)>;

/// The stored state of every partition of `topic` that has one, with its `mod_revision`.
pub async fn partition_states(
    store: &dyn MetadataStore,
    topic: &str,
) -> Result<PartitionStates, MetadataError> {
    let mut by_topic = states_under(store, &keys::partitions_prefix(topic)).await?;
    Ok(by_topic.remove(topic).unwrap_or_default())
}

/// The stored state of every partition of every topic, by topic (one range request).
pub async fn all_partition_states(
    store: &dyn MetadataStore,
) -> Result<HashMap<String, PartitionStates>, MetadataError> {
    states_under(store, &keys::all_partitions_prefix()).await
}

/// Partition states under `prefix` (a prefix of `/skiff/partitions/`), by topic.
async fn states_under(
    store: &dyn MetadataStore,
    prefix: &str,
) -> Result<HashMap<String, PartitionStates>, MetadataError> {
    let root = keys::all_partitions_prefix();
    let mut out: HashMap<String, PartitionStates> = HashMap::new();
    for kv in store.range_prefix(prefix, 0).await? {
        let Some((topic, partition)) = kv.key[root.len()..].rsplit_once('/') else {
            continue;
        };
        let Ok(partition) = partition.parse::<i32>() else {
            continue;
        };
        let state: PartitionState =
            keys::decode(&kv.key, &kv.value).map_err(MetadataError::Corrupt)?;
        out.entry(topic.to_owned())
            .or_default()
            .insert(partition, (state, kv.mod_revision));
    }
    Ok(out)
}

/// Claims leadership of one partition for `node_id`, if its state is still at `revision`
/// (0: absent) and its topic is still the incarnation created at `topic_create_revision`.
/// Returns the new leader epoch, or `None` if something changed first.
pub async fn claim(
    store: &dyn MetadataStore,
    topic: &str,
    partition: i32,
    node_id: i32,
    current: Option<(&PartitionState, Revision)>,
    topic_create_revision: Revision,
) -> Result<Option<i32>, MetadataError> {
    let (mut state, revision) = match current {
        Some((state, revision)) => {
            let mut next = state.clone();
            next.leader_epoch += 1;
            (next, revision)
        }
        None => (PartitionState::default(), 0),
    };
    state.leader = node_id;
    let key = keys::partition(topic, partition);
    let txn = Txn::when(vec![
        Compare::mod_revision(&key, revision),
        Compare {
            key: keys::topic(topic),
            op: crate::metadata::CompareOp::Equal,
            target: crate::metadata::CompareTarget::CreateRevision(topic_create_revision),
        },
    ])
    .and_then(vec![TxnOp::put(key, keys::encode(&state))]);
    let outcome = store.txn(txn).await?;
    Ok(outcome.succeeded.then_some(state.leader_epoch))
}
