//! Metadata: this broker, the topics asked for (auto-created when allowed), their partitions.

use super::errors::{catalog_error, log_error};
use super::{topic_uuid, Broker};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use skiff_tiering::catalog::{validate_topic_name, Topic};
use skiff_tiering::log::TopicPartition;

/// "Authorized operations were not requested" in Kafka's encoding.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// `None` when the topic list cannot be read: Metadata before v13 has no top-level error code,
/// and an empty list would make clients drop their partitions, so the connection is closed
/// instead and the client retries.
pub async fn handle(
    broker: &Broker,
    request: MetadataRequest,
    version: i16,
) -> Option<MetadataResponse> {
    let node = BrokerId(broker.node.node_id);
    let mut response = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(node)
            .with_host(StrBytes::from_string(broker.node.host.clone()))
            .with_port(broker.node.port)])
        .with_cluster_id(Some(StrBytes::from_string(broker.cluster_id.clone())))
        .with_controller_id(node)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
    // v0: an empty list means all topics; v1+: null means all topics.
    let all = match &request.topics {
        None => true,
        Some(topics) => version == 0 && topics.is_empty(),
    };
    let auto_create = version < 4 || request.allow_auto_topic_creation;
    if all {
        let topics = match broker.log.catalog().list().await {
            Ok(topics) => topics,
            Err(error) => {
                tracing::warn!(%error, "metadata: cannot list topics");
                return None;
            }
        };
        for topic in topics {
            response.topics.push(describe_topic(broker, &topic).await);
        }
        return Some(response);
    }
    for requested in request.topics.unwrap_or_default() {
        let Some(name) = requested.name else {
            // Lookup by topic id (v10+).
            let found = match broker
                .log
                .catalog()
                .find_by_id(&requested.topic_id.simple().to_string())
                .await
            {
                Ok(found) => found,
                Err(error) => {
                    tracing::warn!(%error, "metadata: cannot look up topic id");
                    return None;
                }
            };
            response.topics.push(match found {
                Some(topic) => describe_topic(broker, &topic).await,
                None => topic_error(None, requested.topic_id, ResponseError::UnknownTopicId),
            });
            continue;
        };
        if validate_topic_name(&name).is_err() {
            response.topics.push(topic_error(
                Some(name),
                uuid::Uuid::nil(),
                ResponseError::InvalidTopicException,
            ));
            continue;
        }
        let entry = match broker.topic_or_create(&name, auto_create).await {
            Ok(Some(topic)) => describe_topic(broker, &topic).await,
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

async fn describe_topic(broker: &Broker, topic: &Topic) -> MetadataResponseTopic {
    let node = BrokerId(broker.node.node_id);
    let mut partitions = Vec::with_capacity(topic.record.partitions as usize);
    for index in 0..topic.record.partitions {
        let tp = TopicPartition::new(&topic.record.name, index);
        let (error_code, epoch) = match broker.log.leader_epoch(&tp).await {
            Ok(epoch) => (0, epoch),
            Err(error) => (log_error(&error).code(), -1),
        };
        partitions.push(
            MetadataResponsePartition::default()
                .with_error_code(error_code)
                .with_partition_index(index)
                .with_leader_id(node)
                .with_leader_epoch(epoch)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node]),
        );
    }
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(
            topic.record.name.clone(),
        ))))
        .with_topic_id(topic_uuid(topic))
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
