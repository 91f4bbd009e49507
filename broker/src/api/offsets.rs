//! FindCoordinator, OffsetCommit and OffsetFetch: committed offsets for consumers, durable in
//! the metadata store before OffsetCommit is answered.
//!
//! Members of a group commit with their generation through the group's coordinator (one per
//! group among live brokers, by rendezvous hashing); standalone consumers that assign
//! partitions themselves commit with generation -1 (kafka-python `assign` + `commit`,
//! librdkafka `assign` + `commit`).

use super::Broker;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use skiff_tiering::cluster::assignment::preferred_leader;
use skiff_tiering::cluster::membership::live_brokers;
use skiff_tiering::group_offsets::{self, OffsetKey};
use skiff_tiering::keys::{BrokerRecord, CommittedOffset};

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// The node id coordinating `group` now (`None`: no live broker).
pub async fn coordinator_of(
    broker: &Broker,
    group: &str,
) -> Result<Option<i32>, skiff_tiering::cluster::membership::MembershipError> {
    let live = live_brokers(&*broker.store).await?;
    Ok(coordinator(group, &live).map(|b| b.node_id))
}

/// The broker that coordinates `group` among the live ones.
pub fn coordinator<'a>(group: &str, live: &'a [BrokerRecord]) -> Option<&'a BrokerRecord> {
    let ids: Vec<i32> = live.iter().map(|b| b.node_id).collect();
    let id = preferred_leader(&format!("group:{group}"), 0, &ids)?;
    live.iter().find(|b| b.node_id == id)
}

pub async fn find_coordinator(
    broker: &Broker,
    request: FindCoordinatorRequest,
    version: i16,
    session: &crate::security::Session,
) -> FindCoordinatorResponse {
    let keys = if version >= 4 {
        request.coordinator_keys.clone()
    } else {
        vec![request.key.clone()]
    };
    // A store error answers COORDINATOR_NOT_AVAILABLE (retriable), as no live broker does.
    let live = live_brokers(&*broker.store).await.unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot read live brokers for FindCoordinator");
        Vec::new()
    });
    let answers: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| {
            let answer = Coordinator::default().with_key(key.clone());
            let chosen = match request.key_type {
                KEY_TYPE_GROUP => coordinator(&key, &live),
                KEY_TYPE_TRANSACTION => super::txn::coordinator(&key, &live),
                _ => {
                    return answer
                        .with_node_id(BrokerId(-1))
                        .with_error_code(ResponseError::InvalidRequest.code())
                }
            };
            // The coordinator's address on the listener this client connected to.
            let endpoint = chosen.and_then(|b| {
                let (host, port) = b.endpoint(&session.listener.name)?;
                Some((b.node_id, host, port))
            });
            match endpoint {
                Some((node_id, host, port)) => answer
                    .with_node_id(BrokerId(node_id))
                    .with_host(StrBytes::from_string(host.to_owned()))
                    .with_port(port),
                None => answer
                    .with_node_id(BrokerId(-1))
                    .with_error_code(ResponseError::CoordinatorNotAvailable.code()),
            }
        })
        .collect();
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(answers);
    }
    let answer = answers.into_iter().next().unwrap_or_default();
    let response = FindCoordinatorResponse::default()
        .with_error_code(answer.error_code)
        .with_node_id(answer.node_id)
        .with_host(answer.host)
        .with_port(answer.port);
    if version >= 1 {
        response.with_error_message(answer.error_message)
    } else {
        response
    }
}

pub async fn commit(broker: &Broker, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let now = broker.log.clock().now_ms();
    // Members commit through their coordinator, with their generation; standalone consumers
    // (generation -1) may commit anywhere, the offsets being in the shared metadata store.
    let generation = request.generation_id_or_member_epoch;
    let membership_error = if generation >= 0 {
        match super::groups::check_coordinator(broker, &group).await {
            Err(code) => Some(code),
            Ok(()) => broker
                .groups
                .check_commit(
                    &group,
                    &request.member_id,
                    request.group_instance_id.as_deref(),
                    generation,
                )
                .err()
                .map(super::groups::group_error),
        }
    } else {
        broker
            .groups
            .check_commit(
                &group,
                &request.member_id,
                request.group_instance_id.as_deref(),
                generation,
            )
            .err()
            .map(super::groups::group_error)
    };
    let mut accepted = Vec::new();
    let mut answers = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let known = broker.log.catalog().get(&topic.name).await;
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let error = match (&membership_error, &known) {
                (Some(error), _) => Some(*error),
                (None, Err(_)) => Some(ResponseError::CoordinatorLoadInProgress),
                (None, Ok(None)) => Some(ResponseError::UnknownTopicOrPartition),
                (None, Ok(Some(t)))
                    if p.partition_index < 0 || p.partition_index >= t.record.partitions =>
                {
                    Some(ResponseError::UnknownTopicOrPartition)
                }
                (None, Ok(Some(_)))
                    if p.committed_metadata
                        .as_ref()
                        .is_some_and(|m| m.len() > broker.limits.offset_metadata_max_bytes) =>
                {
                    Some(ResponseError::OffsetMetadataTooLarge)
                }
                (None, Ok(Some(_))) => None,
            };
            if error.is_none() {
                accepted.push((
                    OffsetKey {
                        topic: topic.name.0.to_string(),
                        partition: p.partition_index,
                    },
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        commit_timestamp_ms: now,
                    },
                ));
            }
            partitions.push((p.partition_index, error));
        }
        answers.push((topic.name.clone(), partitions));
    }
    // Durable before the answer: a failed write fails every partition it carried (retriable).
    let store_error = match group_offsets::commit(&*broker.store, &group, &accepted).await {
        Ok(()) => None,
        Err(error) => {
            tracing::warn!(%error, group, "offset commit failed");
            Some(ResponseError::CoordinatorNotAvailable)
        }
    };
    OffsetCommitResponse::default().with_topics(
        answers
            .into_iter()
            .map(|(name, partitions)| {
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, error)| {
                                let code = error.or(store_error).map_or(0, |e| e.code());
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// (topic, partitions) asked for; `None`: every partition the group committed.
type Wanted = Option<Vec<(TopicName, Vec<i32>)>>;

/// One group's committed offsets, as (topic, [(partition, offset or None)]).
async fn lookup(
    broker: &Broker,
    group: &str,
    wanted: Wanted,
) -> Result<Vec<(TopicName, Vec<(i32, Option<CommittedOffset>)>)>, ResponseError> {
    let committed = group_offsets::fetch_all(&*broker.store, group)
        .await
        .map_err(|_| ResponseError::CoordinatorLoadInProgress)?;
    Ok(match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(name, partitions)| {
                let stored = committed.get(name.0.as_str());
                let entries = partitions
                    .into_iter()
                    .map(|p| (p, stored.and_then(|s| s.get(&p)).cloned()))
                    .collect();
                (name, entries)
            })
            .collect(),
        None => committed
            .into_iter()
            .map(|(topic, partitions)| {
                let entries = partitions.into_iter().map(|(p, o)| (p, Some(o))).collect();
                (TopicName(StrBytes::from_string(topic)), entries)
            })
            .collect(),
    })
}

pub async fn fetch(
    broker: &Broker,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let require_stable = version >= 7 && request.require_stable;
    let groups: Vec<String> = if version >= 8 {
        request
            .groups
            .iter()
            .map(|g| g.group_id.0.to_string())
            .collect()
    } else {
        vec![request.group_id.0.to_string()]
    };
    // The staged offsets are read before the committed ones: a transaction that settles in
    // between was seen pending (answered unstable), never missed with its old offset read.
    let pendings = if require_stable {
        let mut pendings = Vec::with_capacity(groups.len());
        for group in &groups {
            // Unknown means possibly unstable: every partition of the group is answered so
            // (retriable), never an offset that may be about to move.
            pendings.push(
                match crate::txn::offsets::pending(&*broker.store, group).await {
                    Ok(pending) => Some(pending),
                    Err(error) => {
                        tracing::warn!(%error, group, "cannot read staged transactional offsets");
                        None
                    }
                },
            );
        }
        Some(pendings)
    } else {
        None
    };
    let mut response = fetch_committed(broker, request, version).await;
    if let Some(pendings) = pendings {
        mark_unstable(&pendings, &mut response, version);
    }
    response
}

/// KIP-447: with `require_stable`, a partition for which an open transaction has staged an
/// offset answers UNSTABLE_OFFSET_COMMIT (the client retries) instead of an offset about to
/// change. `pendings` holds each group's staged partitions (`None`: unknown).
fn mark_unstable(
    pendings: &[Option<Vec<(String, i32)>>],
    response: &mut OffsetFetchResponse,
    version: i16,
) {
    let unstable = ResponseError::UnstableOffsetCommit.code();
    for (i, pending) in pendings.iter().enumerate() {
        if pending.as_ref().is_some_and(Vec::is_empty) {
            continue;
        }
        let is_pending = |topic: &str, p: i32| {
            pending
                .as_ref()
                .is_none_or(|pending| pending.iter().any(|(t, q)| t == topic && *q == p))
        };
        if version >= 8 {
            let Some(answer) = response.groups.get_mut(i) else {
                continue;
            };
            for topic in &mut answer.topics {
                for p in &mut topic.partitions {
                    if is_pending(&topic.name.0, p.partition_index) {
                        p.committed_offset = -1;
                        p.committed_leader_epoch = -1;
                        p.error_code = unstable;
                    }
                }
            }
        } else {
            for topic in &mut response.topics {
                for p in &mut topic.partitions {
                    if is_pending(&topic.name.0, p.partition_index) {
                        p.committed_offset = -1;
                        p.committed_leader_epoch = -1;
                        p.error_code = unstable;
                    }
                }
            }
        }
    }
}

async fn fetch_committed(
    broker: &Broker,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    // Kafka's "no offset": -1 and empty metadata; the leader epoch field exists from v5.
    let epoch = |o: &Option<CommittedOffset>| match o {
        Some(o) if version >= 5 => o.leader_epoch,
        _ => -1,
    };
    let metadata = |o: &Option<CommittedOffset>| {
        Some(StrBytes::from_string(
            o.as_ref()
                .and_then(|o| o.metadata.clone())
                .unwrap_or_default(),
        ))
    };
    let offset = |o: &Option<CommittedOffset>| o.as_ref().map_or(-1, |o| o.offset);
    if version >= 8 {
        let mut groups = Vec::with_capacity(request.groups.len());
        for g in request.groups {
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect()
            });
            let answer = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            groups.push(match lookup(broker, &g.group_id, wanted).await {
                Err(error) => answer.with_error_code(error.code()),
                Ok(topics) => answer.with_topics(
                    topics
                        .into_iter()
                        .map(|(name, entries)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(name)
                                .with_partitions(
                                    entries
                                        .iter()
                                        .map(|(p, o)| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(*p)
                                                .with_committed_offset(offset(o))
                                                .with_committed_leader_epoch(epoch(o))
                                                .with_metadata(metadata(o))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
            });
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let group: GroupId = request.group_id;
    let wanted: Wanted = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    match lookup(broker, &group, wanted.clone()).await {
        Err(error) if version >= 2 => OffsetFetchResponse::default().with_error_code(error.code()),
        // v0-v1 have no top-level error: each partition asked for carries it, never an empty
        // answer that a consumer would read as "no committed offset".
        Err(error) => OffsetFetchResponse::default().with_topics(
            wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(name)
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_committed_leader_epoch(-1)
                                        .with_metadata(Some(StrBytes::default()))
                                        .with_error_code(error.code())
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
        Ok(topics) => OffsetFetchResponse::default().with_topics(
            topics
                .into_iter()
                .map(|(name, entries)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(name)
                        .with_partitions(
                            entries
                                .iter()
                                .map(|(p, o)| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(*p)
                                        .with_committed_offset(offset(o))
                                        .with_committed_leader_epoch(epoch(o))
                                        .with_metadata(metadata(o))
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    }
}
