//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest local (-4, v8+),
//! latest tiered (-5, v9+) and by timestamp. v10 adds a timeout for remote-storage lookups,
//! which never wait here.
//!
//! Kafka's tiered storage (KIP-405) splits a log into local segments and remote ones; Skiff's
//! whole log is in one place, so it answers as a Kafka broker without tiered storage: the
//! earliest local offset is the log start, and no offset is tiered (-1).

use super::errors::log_error;
use super::Broker;
use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::TimestampType;
use kafka_protocol::ResponseError;
use skiff_tiering::log::TopicPartition;
use skiff_tiering::LogError;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub async fn handle(
    broker: &Broker,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let mut response = ListOffsetsResponse::default();
    // read_committed consumers' "latest" is the last stable offset (v2+ carry the level).
    let committed = version >= 2 && request.isolation_level == 1;
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            let tp = TopicPartition::new(&topic.name, partition.partition_index);
            let result = lookup(
                broker,
                &tp,
                (partition.timestamp, committed),
                partition.current_leader_epoch,
            )
            .await;
            let base = ListOffsetsPartitionResponse::default()
                .with_partition_index(partition.partition_index);
            partitions.push(match result {
                Ok((offset, timestamp, epoch)) => base
                    .with_offset(offset)
                    .with_timestamp(timestamp)
                    // The leader epoch field exists from v4 on.
                    .with_leader_epoch(if version >= 4 { epoch } else { -1 }),
                Err(code) => base
                    .with_error_code(code.code())
                    .with_offset(-1)
                    .with_timestamp(-1)
                    .with_leader_epoch(-1),
            });
        }
        response.topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    response
}

/// (offset, timestamp, leader epoch); offset -1 when no record matches a timestamp query.
async fn lookup(
    broker: &Broker,
    tp: &TopicPartition,
    (timestamp, committed): (i64, bool),
    current_leader_epoch: i32,
) -> Result<(i64, i64, i32), ResponseError> {
    let log_err = |e: LogError| log_error(&e);
    let epoch = broker.log.leader_epoch(tp).await.map_err(log_err)?;
    if current_leader_epoch >= 0 && current_leader_epoch < epoch {
        return Err(ResponseError::FencedLeaderEpoch);
    }
    if current_leader_epoch > epoch {
        return Err(ResponseError::UnknownLeaderEpoch);
    }
    let (start, stable, end) = broker.log.stable_offsets(tp).await.map_err(log_err)?;
    match timestamp {
        LATEST if committed => Ok((stable, -1, epoch)),
        LATEST => Ok((end, -1, epoch)),
        EARLIEST | EARLIEST_LOCAL => Ok((start, -1, epoch)),
        LATEST_TIERED => Ok((-1, -1, -1)),
        MAX_TIMESTAMP => {
            let batch = broker
                .log
                .batch_with_max_timestamp(tp)
                .await
                .map_err(log_err)?;
            Ok(match find_record(batch, |ts, max| ts == max)? {
                Some((offset, ts)) => (offset, ts, epoch),
                None => (-1, -1, epoch),
            })
        }
        target if target >= 0 => {
            let batch = broker
                .log
                .batch_at_timestamp(tp, target)
                .await
                .map_err(log_err)?;
            Ok(match find_record(batch, |ts, _| ts >= target)? {
                Some((offset, ts)) => (offset, ts, epoch),
                None => (-1, -1, epoch),
            })
        }
        _ => Err(ResponseError::InvalidRequest),
    }
}

/// The first record of a stored batch matching `predicate(timestamp, batch max timestamp)`.
/// A stored batch that cannot be decoded is damage, answered KAFKA_STORAGE_ERROR, never "no
/// such record".
fn find_record(
    batch: Option<Bytes>,
    predicate: impl Fn(i64, i64) -> bool,
) -> Result<Option<(i64, i64)>, ResponseError> {
    let Some(batch) = batch else {
        return Ok(None);
    };
    let decoded = skiff_tiering::batch::parse_header(&batch)
        .map_err(|e| e.to_string())
        .and_then(|header| super::records::decode_batch(&batch).map(|set| (header, set)));
    let (header, set) = decoded.map_err(|error| {
        tracing::error!(%error, "ListOffsets: a stored batch cannot be decoded");
        ResponseError::KafkaStorageError
    })?;
    Ok(set.records.iter().find_map(|record| {
        let timestamp = match record.timestamp_type {
            TimestampType::LogAppend => header.max_timestamp,
            TimestampType::Creation => record.timestamp,
        };
        predicate(timestamp, header.max_timestamp).then_some((record.offset, timestamp))
    }))
}
