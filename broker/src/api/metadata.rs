//! Metadata: this broker, the topics asked for (auto-created when allowed), their partitions.
//!
//! Brokers and topics come from the controller's latest cluster view (at most `VIEW_MAX_AGE`
//! old); partition leaders are read fresh, with one range for all topics or one per named topic,
//! so a request costs a bounded number of metadata-store reads however many topics exist.
//! Topics the view does not know yet (just created) and a stale view fall back to the store.

use super::errors::catalog_error;
use super::{topic_uuid, Broker};
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use skiff_tiering::catalog::{validate_topic_name, Topic};
use skiff_tiering::cluster::membership::live_brokers;
use skiff_tiering::cluster::{all_partition_states, partition_states, PartitionStates};
use std::time::Duration;

/// A controller view older than this is not used (the controller passes every 500 ms).
const VIEW_MAX_AGE: Duration = Duration::from_secs(2);

/// "Authorized operations were not requested" in Kafka's encoding.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// `None` when the topic list cannot be read: Metadata before v13 has no top-level error code,
/// and an empty list would make clients drop their partitions, so the connection is closed
/// instead and the client retries.
pub async fn handle(
    broker: &Broker,
    request: MetadataRequest,
    version: i16,
    session: &crate::security::Session,
) -> Option<MetadataResponse> {
    let view = broker.view.latest(VIEW_MAX_AGE);
    let live = match &view {
        Some(view) => view.brokers.clone(),
        None => match live_brokers(&*broker.store).await {
            Ok(live) => live,
            Err(error) => {
                tracing::warn!(%error, "metadata: cannot list brokers");
                return None;
            }
        },
    };
    // Each broker's address on the listener this client connected to; brokers without that
    // listener are left out (as Kafka does), and so count as not live here.
    let listener = &*session.listener.name;
    let live: Vec<_> = live
        .into_iter()
        .filter(|b| b.endpoint(listener).is_some())
        .collect();
    let live_ids = Live {
        ids: live.iter().map(|b| b.node_id).collect(),
        follower_reads: live
            .iter()
            .filter(|b| b.follower_reads)
            .map(|b| b.node_id)
            .collect(),
    };
    let live: Vec<(i32, String, i32, Option<String>)> = live
        .into_iter()
        .filter_map(|b| {
            let (host, port) = b.endpoint(listener)?;
            Some((b.node_id, host.to_owned(), port, b.rack.clone()))
        })
        .collect();
    // Any broker can serve admin requests (they are metadata-store transactions); clients that
    // insist on a controller get the lowest live id.
    let controller = live_ids
        .ids
        .iter()
        .copied()
        .min()
        .unwrap_or(broker.node.node_id);
    let mut response = MetadataResponse::default()
        .with_brokers(
            live.into_iter()
                .map(|(node_id, host, port, rack)| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(node_id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port)
                        .with_rack(rack.map(StrBytes::from_string))
                })
                .collect(),
        )
        .with_cluster_id(Some(StrBytes::from_string(broker.cluster_id.clone())))
        .with_controller_id(BrokerId(controller))
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
    // v0: an empty list means all topics; v1+: null means all topics.
    let all = match &request.topics {
        None => true,
        Some(topics) => version == 0 && topics.is_empty(),
    };
    let auto_create = version < 4 || request.allow_auto_topic_creation;
    if all {
        let topics = match &view {
            Some(view) => view.topics.values().map(|t| t.topic.clone()).collect(),
            None => match broker.log.catalog().list().await {
                Ok(topics) => topics,
                Err(error) => {
                    tracing::warn!(%error, "metadata: cannot list topics");
                    return None;
                }
            },
        };
        let mut states = match all_partition_states(&*broker.store).await {
            Ok(states) => states,
            Err(error) => {
                tracing::warn!(%error, "metadata: cannot read partition states");
                return None;
            }
        };
        let guard =
            super::authz::Guard::new(broker, session, kafka_protocol::messages::ApiKey::Metadata);
        for topic in topics {
            // All topics: those the principal may describe.
            if !guard.visible(Operation::Describe, ResourceType::Topic, &topic.record.name) {
                continue;
            }
            let topic_states = states.remove(&topic.record.name).unwrap_or_default();
            response
                .topics
                .push(describe(&topic, &topic_states, &live_ids));
        }
        return Some(response);
    }
    // Each topic once, however often it was named (as Kafka): the answer never grows with
    // repetitions a client sends.
    let mut seen = std::collections::HashSet::new();
    let requested_topics = request.topics.unwrap_or_default().into_iter().filter(|t| {
        seen.insert(match &t.name {
            Some(name) => (Some(name.0.clone()), uuid::Uuid::nil()),
            None => (None, t.topic_id),
        })
    });
    let guard =
        super::authz::Guard::new(broker, session, kafka_protocol::messages::ApiKey::Metadata);
    for requested in requested_topics {
        let Some(name) = requested.name else {
            // Lookup by topic id (v10+).
            let id = requested.topic_id.simple().to_string();
            let in_view = view.as_ref().and_then(|v| {
                v.topics
                    .values()
                    .find(|t| t.topic.record.id == id)
                    .map(|t| t.topic.clone())
            });
            let found = match in_view {
                Some(topic) => Some(topic),
                None => match broker.log.catalog().find_by_id(&id).await {
                    Ok(found) => found,
                    Err(error) => {
                        tracing::warn!(%error, "metadata: cannot look up topic id");
                        return None;
                    }
                },
            };
            response.topics.push(match found {
                Some(topic) if !guard.topic(Operation::Describe, &topic.record.name) => {
                    topic_error(
                        None,
                        requested.topic_id,
                        ResponseError::TopicAuthorizationFailed,
                    )
                }
                Some(topic) => describe_topic(broker, &topic, &live_ids).await,
                None => topic_error(None, requested.topic_id, ResponseError::UnknownTopicId),
            });
            continue;
        };
        if !guard.topic(Operation::Describe, name.as_str()) {
            response.topics.push(topic_error(
                Some(name),
                uuid::Uuid::nil(),
                ResponseError::TopicAuthorizationFailed,
            ));
            continue;
        }
        if validate_topic_name(&name).is_err() {
            response.topics.push(topic_error(
                Some(name),
                uuid::Uuid::nil(),
                ResponseError::InvalidTopicException,
            ));
            continue;
        }
        if let Some(topic) = view.as_ref().and_then(|v| v.topics.get(name.as_str())) {
            response
                .topics
                .push(describe_topic(broker, &topic.topic, &live_ids).await);
            continue;
        }
        // Auto-creation takes CREATE on the cluster or the topic, as CreateTopics does.
        let may_create = || auto_create && guard.create_topic(name.as_str());
        let entry = match broker.topic_or_create(&name, may_create).await {
            Ok(Some(topic)) => describe_topic(broker, &topic, &live_ids).await,
            Ok(None) => topic_error(
                Some(name),
                uuid::Uuid::nil(),
                ResponseError::UnknownTopicOrPartition,
            ),
            Err(error) => topic_error(Some(name), uuid::Uuid::nil(), catalog_error(&error)),
        };
        response.topics.push(entry);
    }
    Some(response)
}

fn topic_error(
    name: Option<TopicName>,
    id: uuid::Uuid,
    error: ResponseError,
) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name)
        .with_topic_id(id)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

async fn describe_topic(broker: &Broker, topic: &Topic, live: &Live) -> MetadataResponseTopic {
    let name = TopicName(StrBytes::from_string(topic.record.name.clone()));
    let states = match partition_states(&*broker.store, &topic.record.name).await {
        Ok(states) => states,
        Err(error) => {
            tracing::warn!(%error, topic = topic.record.name, "metadata: cannot read partitions");
            return topic_error(
                Some(name),
                topic_uuid(topic),
                ResponseError::KafkaStorageError,
            );
        }
    };
    describe(topic, &states, live)
}

/// The live brokers a Metadata answer names, by node id.
struct Live {
    ids: Vec<i32>,
    /// Those that serve consumers' reads of partitions they do not lead (rack-aware replica
    /// selection, registered with their membership): each is listed as a replica of every
    /// partition, after its leader, since a leader may send a consumer to any of them and
    /// clients (the Java one) read only from a replica the partition lists. Every broker
    /// answers the same, whatever its own setting.
    follower_reads: Vec<i32>,
}

/// A partition's replicas: its leader, then (see `Live`) the brokers serving follower reads.
fn replicas(leader: i32, live: &Live) -> Vec<BrokerId> {
    let mut nodes = vec![BrokerId(leader)];
    nodes.extend(
        live.follower_reads
            .iter()
            .filter(|id| **id != leader)
            .map(|id| BrokerId(*id)),
    );
    nodes
}

/// A topic's Metadata entry from its partitions' stored states; partitions whose leader is
/// not live (or none) are LEADER_NOT_AVAILABLE.
fn describe(topic: &Topic, states: &PartitionStates, live: &Live) -> MetadataResponseTopic {
    let name = TopicName(StrBytes::from_string(topic.record.name.clone()));
    let mut partitions = Vec::with_capacity(topic.record.partitions as usize);
    for index in 0..topic.record.partitions {
        let (leader, epoch) = states
            .get(&index)
            .map_or((-1, -1), |(state, _)| (state.leader, state.leader_epoch));
        let leader = if live.ids.contains(&leader) {
            leader
        } else {
            -1
        };
        let (error, nodes) = if leader < 0 {
            (ResponseError::LeaderNotAvailable.code(), Vec::new())
        } else {
            (0, replicas(leader, live))
        };
        partitions.push(
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(index)
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(epoch)
                .with_replica_nodes(nodes.clone())
                .with_isr_nodes(nodes),
        );
    }
    MetadataResponseTopic::default()
        .with_name(Some(name))
        .with_topic_id(topic_uuid(topic))
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
