//! Fetch: read whole batches from each requested partition, long-polling until `min_bytes` are
//! available or `max_wait_ms` has passed. Sessionless: we always answer `session_id = 0`, which
//! tells clients to keep sending full fetch requests.

use super::errors::log_error;
use super::Broker;
use crate::memory::{ConnectionMemory, Held};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName};
use kafka_protocol::ResponseError;
use skiff_tiering::log::{Isolation, TopicPartition};
use std::time::Duration;
use tokio::time::Instant;

/// Longest long poll we honour, whatever the client asks.
const MAX_WAIT_MS_MAX: u64 = 60_000;

/// Answers a Fetch, with the memory its records hold until the response is written: each pass
/// over the partitions reads only as many bytes as it could reserve first.
pub async fn handle(
    broker: &Broker,
    mut request: FetchRequest,
    version: i16,
    connection: &ConnectionMemory,
    session: &crate::security::Session,
) -> (FetchResponse, Held) {
    let mut resolved = resolve_topic_ids(broker, &mut request, version).await;
    // READ on each topic (after ids became names).
    let guard = super::authz::Guard::new(broker, session, kafka_protocol::messages::ApiKey::Fetch);
    for (topic, result) in request.topics.iter().zip(resolved.iter_mut()) {
        if result.is_ok()
            && !guard.topic(crate::security::acl::Operation::Read, topic.topic.as_str())
        {
            *result = Err(ResponseError::TopicAuthorizationFailed);
        }
    }
    let wait_ms = u64::try_from(request.max_wait_ms)
        .unwrap_or(0)
        .min(MAX_WAIT_MS_MAX);
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_bytes = usize::try_from(request.max_bytes)
        .ok()
        .filter(|m| *m > 0)
        .unwrap_or(usize::MAX)
        .min(broker.limits.fetch_max_bytes);
    let mut commits = broker.log.subscribe_commits();
    loop {
        commits.borrow_and_update();
        // Bounded by the long poll: a fetch that cannot get memory in time (this connection's
        // earlier responses are not yet written, or the broker's budget is spent) answers with
        // no records, and the client fetches again.
        let Ok(reservation) =
            tokio::time::timeout_at(deadline, connection.reserve_fetch(max_bytes)).await
        else {
            return (FetchResponse::default().with_session_id(0), Held::default());
        };
        let (responses, bytes, errors) =
            read_once(broker, &request, &resolved, reservation.bytes()).await;
        let response = FetchResponse::default()
            .with_session_id(0)
            .with_responses(responses);
        // Kafka answers at once when min_bytes is met (min_bytes = 0 always is), on errors,
        // and when nothing was asked for.
        if bytes >= min_bytes || errors || request.topics.is_empty() || Instant::now() >= deadline {
            return (response, reservation.shrink_to(bytes));
        }
        // Nothing is held while waiting.
        drop(reservation);
        tokio::select! {
            changed = commits.changed() => {
                if changed.is_err() {
                    return (response, Held::default());
                }
            }
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// One pass over every requested partition; returns the responses, bytes read, and whether
/// any partition had an error (errors are answered at once, as Kafka does).
async fn read_once(
    broker: &Broker,
    request: &FetchRequest,
    resolved: &[Result<(), ResponseError>],
    max_bytes: usize,
) -> (Vec<FetchableTopicResponse>, usize, bool) {
    let mut total = 0usize;
    let mut errors = false;
    let mut responses = Vec::with_capacity(request.topics.len());
    let isolation = if request.isolation_level == 1 {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    };
    for (topic, resolved) in request.topics.iter().zip(resolved) {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            if let Err(code) = resolved {
                errors = true;
                partitions.push(unanswered(partition.partition).with_error_code(code.code()));
                continue;
            }
            let remaining = max_bytes.saturating_sub(total);
            let data = read_partition(
                broker,
                &topic.topic,
                partition,
                (remaining, total == 0),
                isolation,
            )
            .await;
            total += data.records_len();
            errors |= data.error_code != 0;
            partitions.push(data);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_topic_id(topic.topic_id)
                .with_partitions(partitions),
        );
    }
    (responses, total, errors)
}

async fn read_partition(
    broker: &Broker,
    topic: &TopicName,
    partition: &FetchPartition,
    (remaining, first): (usize, bool),
    isolation: Isolation,
) -> PartitionData {
    let tp = TopicPartition::new(topic, partition.partition);
    let empty = unanswered(partition.partition);
    let fail = |code: ResponseError| empty.clone().with_error_code(code.code());
    match broker.log.leader_epoch(&tp).await {
        Err(error) => return fail(log_error(&error)),
        Ok(epoch) if partition.current_leader_epoch >= 0 => {
            if partition.current_leader_epoch < epoch {
                return fail(ResponseError::FencedLeaderEpoch);
            }
            if partition.current_leader_epoch > epoch {
                return fail(ResponseError::UnknownLeaderEpoch);
            }
        }
        Ok(_) => {}
    }
    let partition_max = usize::try_from(partition.partition_max_bytes).unwrap_or(0);
    // KIP-74: the first batch of the response is sent whole, even over the limits; past it,
    // no batch goes over fetch.max.bytes nor max.partition.fetch.bytes.
    let limit = partition_max.min(remaining);
    if limit == 0 && !first {
        return match broker.log.stable_offsets(&tp).await {
            Ok((start, stable, end)) => empty
                .with_high_watermark(end)
                .with_last_stable_offset(stable)
                .with_log_start_offset(start)
                .with_records(Some(Bytes::new())),
            Err(error) => fail(log_error(&error)),
        };
    }
    let read = if first {
        broker
            .log
            .read(&tp, partition.fetch_offset, limit, isolation)
            .await
    } else {
        broker
            .log
            .read_within(&tp, partition.fetch_offset, limit, isolation)
            .await
    };
    match read {
        Ok(read) => {
            // One part per buffer the read took consecutive batches from: sent from those
            // buffers as they are, never joined into a new one.
            let (records, continued) = match read.records() {
                [] => (Bytes::new(), Vec::new()),
                [first, rest @ ..] => (first.clone(), rest.to_vec()),
            };
            let aborted = read
                .aborted
                .iter()
                .map(|a| {
                    AbortedTransaction::default()
                        .with_producer_id(ProducerId(a.producer_id))
                        .with_first_offset(a.first_offset)
                })
                .collect();
            empty
                .with_high_watermark(read.high_watermark)
                .with_last_stable_offset(read.last_stable_offset)
                .with_log_start_offset(read.log_start_offset)
                .with_aborted_transactions(Some(aborted))
                .with_records(Some(records))
                .with_records_continued(continued)
        }
        Err(error) => {
            let mut data = fail(log_error(&error));
            if let skiff_tiering::LogError::OffsetOutOfRange {
                log_start_offset,
                high_watermark,
                ..
            } = error
            {
                data.high_watermark = high_watermark;
                data.last_stable_offset = high_watermark;
                data.log_start_offset = log_start_offset;
            }
            data
        }
    }
}

/// A partition's answer before anything is known of it.
fn unanswered(partition: i32) -> PartitionData {
    PartitionData::default()
        .with_partition_index(partition)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica(BrokerId(-1))
        .with_aborted_transactions(Some(Vec::new()))
}

/// Fetch v13+ names topics by id: fills in each topic's name; a topic whose id is unknown is
/// answered UNKNOWN_TOPIC_ID (retriable), one the store cannot look up KAFKA_STORAGE_ERROR.
async fn resolve_topic_ids(
    broker: &Broker,
    request: &mut FetchRequest,
    version: i16,
) -> Vec<Result<(), ResponseError>> {
    if version < 13 {
        return vec![Ok(()); request.topics.len()];
    }
    let names = broker
        .topic_names_by_id(request.topics.iter().map(|t| t.topic_id))
        .await;
    let names = match names {
        Ok(names) => names,
        Err(error) => {
            tracing::warn!(%error, "fetch: cannot resolve topic ids");
            return vec![Err(ResponseError::KafkaStorageError); request.topics.len()];
        }
    };
    let mut resolved = Vec::with_capacity(request.topics.len());
    for topic in &mut request.topics {
        resolved.push(match names.get(&topic.topic_id) {
            Some(name) => {
                topic.topic = name.clone();
                Ok(())
            }
            None => Err(ResponseError::UnknownTopicId),
        });
    }
    resolved
}
