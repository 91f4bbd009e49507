//! Produce: validate every partition's record batches, hand them to the log, and answer once
//! each partition's data is committed (acks=1 and acks=-1 both mean: written to the object
//! store and committed to the metadata store; acks=0 gets no response at all).

use super::configs::{self, TopicConfigs};
use super::errors::{batch_error, catalog_error, log_error};
use super::Broker;
use crate::config::TimestampType;
use futures::future::join_all;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use skiff_tiering::batch;
use skiff_tiering::log::{AppendOutcome, TopicPartition};
use skiff_tiering::LogError;
use std::time::Duration;
use tokio::sync::oneshot;

type Pending = oneshot::Receiver<Result<AppendOutcome, LogError>>;

/// What one partition's produce turned into before waiting for the commit.
enum Slot {
    Failed(ResponseError, String),
    Waiting(Pending),
}

/// A produce request whose data is validated and queued in the log, not yet committed.
pub struct Staged {
    acks: i16,
    timeout_ms: i32,
    topics: Vec<(TopicName, Vec<(i32, Slot)>)>,
}

/// Validates and queues every partition's data. Connections run this in request order, so
/// pipelined produce requests to one partition are appended in the order they were sent.
pub async fn stage(broker: &Broker, request: ProduceRequest) -> Staged {
    let acks = request.acks;
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        let name = topic_data.name.0.to_string();
        let topic = if !(-1..=1).contains(&acks) {
            Err((ResponseError::InvalidRequiredAcks, format!("acks={acks}")))
        } else if request.transactional_id.is_some() {
            Err((
                ResponseError::InvalidTxnState,
                "transactions are not supported yet".to_owned(),
            ))
        } else {
            match broker.topic_or_create(&name, true).await {
                Ok(Some(topic)) => Ok(topic),
                Ok(None) => Err((ResponseError::UnknownTopicOrPartition, name.clone())),
                Err(error) => Err((catalog_error(&error), error.to_string())),
            }
        };
        let mut slots = Vec::with_capacity(topic_data.partition_data.len());
        for partition in topic_data.partition_data {
            let slot = match &topic {
                Err((code, message)) => Slot::Failed(*code, message.clone()),
                Ok(topic) => {
                    let topic_configs = TopicConfigs::new(broker, &topic.record.configs);
                    append(
                        broker,
                        &name,
                        partition.index,
                        partition.records,
                        &topic_configs,
                    )
                    .await
                }
            };
            slots.push((partition.index, slot));
        }
        topics.push((topic_data.name, slots));
    }
    Staged {
        acks,
        timeout_ms: request.timeout_ms,
        topics,
    }
}

/// Waits until every queued partition is committed (or failed) and builds the response;
/// `None` for acks=0, which Kafka never answers.
pub async fn complete(broker: &Broker, staged: Staged) -> Option<ProduceResponse> {
    let Staged {
        acks,
        timeout_ms,
        topics,
    } = staged;
    if acks == 0 {
        // The appends proceed; nobody waits for them.
        return None;
    }
    let wait = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0))
        .max(Duration::from_millis(broker_min_wait_ms(broker)));
    let mut response = ProduceResponse::default();
    for (name, slots) in topics {
        let partitions = join_all(slots.into_iter().map(|(index, slot)| async move {
            let result = match slot {
                Slot::Failed(code, message) => Err((code, message)),
                Slot::Waiting(pending) => match tokio::time::timeout(wait, pending).await {
                    Err(_) => Err((
                        ResponseError::RequestTimedOut,
                        "not committed within the request timeout".to_owned(),
                    )),
                    Ok(Err(_)) => Err((
                        ResponseError::NotLeaderOrFollower,
                        "broker shutting down".to_owned(),
                    )),
                    Ok(Ok(Err(error))) => Err((log_error(&error), error.to_string())),
                    Ok(Ok(Ok(outcome))) => Ok(outcome),
                },
            };
            partition_response(index, result)
        }))
        .await;
        response.responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(partitions),
        );
    }
    Some(response)
}

/// A produce never times out before its flush had a fair chance to happen.
fn broker_min_wait_ms(broker: &Broker) -> u64 {
    broker.flush_linger_ms + 1_000
}

async fn append(
    broker: &Broker,
    topic: &str,
    partition: i32,
    records: Option<bytes::Bytes>,
    configs: &TopicConfigs<'_>,
) -> Slot {
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return Slot::Failed(ResponseError::CorruptMessage, "no records".to_owned());
    };
    let max_batch_bytes = configs.max_message_bytes();
    let batches = match batch::split_and_validate(&records, max_batch_bytes) {
        Ok(batches) => batches,
        Err(error) => {
            tracing::debug!(%error, topic, partition, "rejected produce data");
            return Slot::Failed(batch_error(&error), error.to_string());
        }
    };
    for (header, batch) in &batches {
        if header.count_is_implausible() {
            let holds = super::records::decode_batch(batch).map(|set| set.records.len());
            if holds != Ok(usize::try_from(header.records_count).unwrap_or(0)) {
                return Slot::Failed(
                    ResponseError::InvalidRecord,
                    format!("batch claims {} records: {holds:?}", header.records_count),
                );
            }
        }
    }
    if configs.is_compacted() {
        if let Err(message) = configs::check_keys_for_compaction(&batches) {
            return Slot::Failed(ResponseError::InvalidRecord, message);
        }
    }
    let log_append_time = configs.timestamp_type() == TimestampType::LogAppendTime;
    match broker
        .log
        .enqueue(
            TopicPartition::new(topic, partition),
            batches,
            log_append_time,
        )
        .await
    {
        Ok(pending) => Slot::Waiting(pending),
        Err(error) => Slot::Failed(log_error(&error), error.to_string()),
    }
}

fn partition_response(
    index: i32,
    result: Result<AppendOutcome, (ResponseError, String)>,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default().with_index(index);
    match result {
        Ok(outcome) => response
            .with_error_code(0)
            .with_base_offset(outcome.base_offset)
            .with_log_append_time_ms(outcome.log_append_time_ms.unwrap_or(-1))
            .with_log_start_offset(outcome.log_start_offset),
        Err((code, message)) => response
            .with_error_code(code.code())
            .with_base_offset(-1)
            .with_log_append_time_ms(-1)
            .with_log_start_offset(-1)
            .with_error_message(Some(StrBytes::from_string(message))),
    }
}
