//! CreateTopics, DeleteTopics and CreatePartitions.
//!
//! Replication factor is accepted and reported but means nothing to Skiff: durability comes from
//! the object store, not from broker replicas.

use super::errors::catalog_error;
use super::{configs, topic_uuid, Broker};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use skiff_tiering::catalog::{
    check_growth, check_partition_count as check_partitions, validate_topic_name, CatalogError,
};
use std::collections::BTreeMap;
use std::time::Duration;

fn message(text: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(text.into()))
}

pub async fn create(
    broker: &Broker,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    let mut created_topics = Vec::new();
    for topic in request.topics {
        let mut result = CreatableTopicResult::default()
            .with_name(topic.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        let name = topic.name.0.to_string();
        let partitions = match (topic.num_partitions, topic.assignments.len()) {
            (-1, 0) => broker.topic_defaults.num_partitions,
            (-1, assigned) => i32::try_from(assigned).unwrap_or(i32::MAX),
            (n, _) => n,
        };
        let mut overrides = BTreeMap::new();
        let mut invalid = None;
        for config in &topic.configs {
            let value = config.value.as_deref().unwrap_or_default();
            match configs::validate(&config.name, value) {
                Ok(()) => {
                    overrides.insert(config.name.to_string(), value.to_owned());
                }
                Err(why) => invalid = Some(why),
            }
        }
        let outcome = if let Some(why) = invalid {
            Err((ResponseError::InvalidConfig, why))
        } else if let Err(error) = validate_topic_name(&name) {
            Err((catalog_error(&error), error.to_string()))
        } else if let Err(error) = check_partitions(partitions) {
            Err((catalog_error(&error), error.to_string()))
        } else if topic.replication_factor == 0 || topic.replication_factor < -1 {
            Err((
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor must be -1 or at least 1, got {}",
                    topic.replication_factor
                ),
            ))
        } else if request.validate_only {
            match broker.log.catalog().get(&name).await {
                Ok(Some(_)) => Err((
                    ResponseError::TopicAlreadyExists,
                    format!("topic {name:?} already exists"),
                )),
                Ok(None) => Ok(None),
                Err(error) => Err((catalog_error(&error), error.to_string())),
            }
        } else {
            let now = broker.log.clock().now_ms();
            match broker
                .log
                .catalog()
                .create(&name, partitions, overrides.clone(), now)
                .await
            {
                Ok(created) => {
                    broker.view.invalidate();
                    tracing::info!(topic = name, partitions, "created topic");
                    created_topics.push(created.clone());
                    Ok(Some(created))
                }
                Err(CatalogError::TopicAlreadyExists(_)) => Err((
                    ResponseError::TopicAlreadyExists,
                    format!("topic {name:?} already exists"),
                )),
                Err(error) => Err((catalog_error(&error), error.to_string())),
            }
        };
        match outcome {
            Ok(created) => {
                result.num_partitions = partitions;
                result.replication_factor = topic.replication_factor.max(1);
                if let Some(created) = &created {
                    result.topic_id = topic_uuid(created);
                }
                if version >= 5 {
                    let effective = configs::TopicConfigs::new(broker, &overrides);
                    result.configs = Some(
                        effective
                            .describe_all()
                            .map(|(name, value, overridden)| {
                                CreatableTopicConfigs::default()
                                    .with_name(StrBytes::from_static_str(name))
                                    .with_value(Some(StrBytes::from_string(value)))
                                    .with_config_source(if overridden { 1 } else { 5 })
                            })
                            .collect(),
                    );
                }
            }
            Err((code, why)) => {
                result.error_code = code.code();
                result.error_message = message(why);
            }
        }
        response.topics.push(result);
    }
    // Leaders are awaited once for every topic created, within the request's timeout.
    let wait = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0))
        .min(Duration::from_secs(30));
    broker.wait_for_leaders(&created_topics, wait).await;
    response
}

/// Topics named by id are authorized here, once their names are known (by name: `authz`).
pub async fn delete(
    broker: &Broker,
    request: DeleteTopicsRequest,
    guard: &super::authz::Guard<'_>,
) -> DeleteTopicsResponse {
    use crate::security::acl::Operation;
    // v0-5 name topics in `topic_names`, v6 in `topics` (by name or by id).
    let mut targets: Vec<(Option<String>, uuid::Uuid)> = request
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
        .collect();
    targets.extend(
        request
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let mut response = DeleteTopicsResponse::default();
    for (name, id) in targets {
        let by_id = name.is_none();
        let name = match name {
            Some(name) => Some(name),
            None => match broker
                .log
                .catalog()
                .find_by_id(&id.simple().to_string())
                .await
            {
                Ok(found) => found.map(|t| t.record.name),
                Err(error) => {
                    let result = DeletableTopicResult::default()
                        .with_topic_id(id)
                        .with_error_code(catalog_error(&error).code())
                        .with_error_message(message(error.to_string()));
                    response.responses.push(result);
                    continue;
                }
            },
        };
        let mut result = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(StrBytes::from_string(n))))
            .with_topic_id(id);
        let Some(name) = name else {
            result.error_code = ResponseError::UnknownTopicId.code();
            response.responses.push(result);
            continue;
        };
        if by_id && !guard.topic(Operation::Describe, &name) {
            // As Kafka: a topic the principal may not see is not told to exist.
            result.name = None;
            result.error_code = ResponseError::UnknownTopicId.code();
            response.responses.push(result);
            continue;
        }
        if by_id && !guard.topic(Operation::Delete, &name) {
            result.error_code = ResponseError::TopicAuthorizationFailed.code();
            response.responses.push(result);
            continue;
        }
        match broker.log.catalog().delete(&name).await {
            Ok(deleted) => {
                broker.view.invalidate();
                broker.log.forget_topic(&name);
                result.topic_id = topic_uuid(&deleted);
                tracing::info!(topic = name, "deleted topic");
            }
            Err(error) => {
                result.error_code = catalog_error(&error).code();
                result.error_message = message(error.to_string());
            }
        }
        response.responses.push(result);
    }
    response
}

pub async fn create_partitions(
    broker: &Broker,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut response = CreatePartitionsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        let outcome = if request.validate_only {
            match broker.log.catalog().get(&name).await {
                Ok(Some(existing)) => check_growth(&existing, topic.count),
                Ok(None) => Err(CatalogError::UnknownTopic(name.clone())),
                Err(error) => Err(error),
            }
        } else {
            broker
                .log
                .catalog()
                .create_partitions(&name, topic.count)
                .await
                .map(|_| {
                    broker.view.invalidate();
                    tracing::info!(topic = name, partitions = topic.count, "added partitions");
                })
        };
        if let Err(error) = outcome {
            result.error_code = catalog_error(&error).code();
            result.error_message = message(error.to_string());
        }
        response.results.push(result);
    }
    response
}
