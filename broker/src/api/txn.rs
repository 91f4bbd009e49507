//! The transaction APIs: InitProducerId with a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn and TxnOffsetCommit, answered from the coordinator of `crate::txn`
//! with Kafka's error codes for each request version.

use super::Broker;
use crate::txn::{offsets as txn_offsets, CoordError};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::ResponseError;
use skiff_tiering::keys::CommittedOffset;
use skiff_tiering::transactions::{self, Addition, TxnError};
use std::collections::HashMap;

pub use crate::txn::coordinator;

async fn check_coordinator(broker: &Broker, id: &str) -> Result<(), ResponseError> {
    if id.is_empty() {
        return Err(ResponseError::InvalidRequest);
    }
    match broker.recent_live_brokers().await {
        Ok(live) => match coordinator(id, &live) {
            Some(b) if b.node_id == broker.node.node_id => Ok(()),
            _ => Err(ResponseError::NotCoordinator),
        },
        Err(_) => Err(ResponseError::CoordinatorNotAvailable),
    }
}

/// Kafka's code for a coordinator failure; `fenced_known` says whether the request version
/// knows PRODUCER_FENCED (older ones get INVALID_PRODUCER_EPOCH).
fn code(error: &CoordError, fenced_known: bool) -> ResponseError {
    match error {
        CoordError::Txn(TxnError::ProducerFenced) if fenced_known => ResponseError::ProducerFenced,
        CoordError::Txn(TxnError::ProducerFenced) => ResponseError::InvalidProducerEpoch,
        CoordError::Txn(TxnError::ConcurrentTransactions) => ResponseError::ConcurrentTransactions,
        CoordError::Txn(TxnError::InvalidProducerIdMapping) => {
            ResponseError::InvalidProducerIdMapping
        }
        CoordError::Txn(TxnError::InvalidTxnState) => ResponseError::InvalidTxnState,
        CoordError::Txn(TxnError::InvalidTransactionTimeout) => {
            ResponseError::InvalidTransactionTimeout
        }
        CoordError::NotCoordinator => ResponseError::NotCoordinator,
        CoordError::Unavailable(_) => ResponseError::CoordinatorNotAvailable,
        CoordError::TooManyIds => ResponseError::PolicyViolation,
    }
}

pub async fn init_producer_id(
    broker: &Broker,
    request: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let failed = |code: ResponseError| {
        InitProducerIdResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_error_code(code.code())
    };
    let Some(id) = request.transactional_id.as_ref().map(|id| id.0.to_string()) else {
        return broker.producer_ids.handle().await;
    };
    if let Err(code) = check_coordinator(broker, &id).await {
        return failed(code);
    }
    let expected = match (request.producer_id.0, request.producer_epoch) {
        (-1, -1) => None,
        (producer_id, epoch) if producer_id >= 0 && epoch >= 0 => Some((producer_id, epoch)),
        _ => return failed(ResponseError::InvalidRequest),
    };
    match broker
        .txn
        .init_producer_id(&id, request.transaction_timeout_ms, expected)
        .await
    {
        Ok((producer_id, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
        Err(error) => {
            if let CoordError::Unavailable(message) = &error {
                tracing::warn!(transactional_id = id, message, "InitProducerId failed");
            }
            failed(code(&error, version >= 4))
        }
    }
}

/// AddPartitionsToTxn: v0-3 from producers (one transaction); v4+ batches transactions and may
/// only verify (KIP-890: what brokers ask a coordinator; Skiff's own leaders read the store).
pub async fn add_partitions(
    broker: &Broker,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    if version <= 3 {
        let producer = (
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
        );
        let results = add_to_one(
            broker,
            (&request.v3_and_below_transactional_id.0, producer),
            &request.v3_and_below_topics,
            false,
            version,
        )
        .await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    let mut results = Vec::with_capacity(request.transactions.len());
    for txn in &request.transactions {
        let producer = (txn.producer_id.0, txn.producer_epoch);
        let topic_results = add_to_one(
            broker,
            (&txn.transactional_id.0, producer),
            &txn.topics,
            txn.verify_only,
            version,
        )
        .await;
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(txn.transactional_id.clone())
                .with_topic_results(topic_results),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

/// Adds `topics` to one transaction (or, `verify_only`, checks they are in it): one error code
/// per partition.
async fn add_to_one(
    broker: &Broker,
    (id, producer): (&str, (i64, i16)),
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
    version: i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut unknown = Vec::new();
    let mut partitions = Vec::new();
    for topic in topics {
        let known = match broker.log.catalog().get(&topic.name.0).await {
            Ok(Some(record)) => Some(record.record.partitions),
            _ => None,
        };
        for partition in &topic.partitions {
            let exists = known.is_some_and(|count| (0..count).contains(partition));
            if exists {
                partitions.push((topic.name.0.to_string(), *partition));
            } else {
                unknown.push((topic.name.0.to_string(), *partition));
            }
        }
    }
    let fenced_known = version >= 2;
    // Partitions a verification found outside the transaction, with their error.
    let mut failed: HashMap<(String, i32), ResponseError> = HashMap::new();
    // One partition that cannot be added fails the request; the others are not attempted.
    let outcome = if !unknown.is_empty() {
        Err(None)
    } else if let Err(code) = check_coordinator(broker, id).await {
        Err(Some(code))
    } else if verify_only {
        match broker.txn.load(id).await {
            Err(error) => Err(Some(code(&error, true))),
            Ok((None, _)) => Err(Some(ResponseError::InvalidProducerIdMapping)),
            Ok((Some(record), _)) => {
                for (topic, partition) in &partitions {
                    if let Err(error) = transactions::verify(&record, producer, topic, *partition) {
                        let error = code(&CoordError::Txn(error), true);
                        failed.insert((topic.clone(), *partition), error);
                    }
                }
                Ok(())
            }
        }
    } else {
        broker
            .txn
            .add(id, producer, &Addition::Partitions(partitions))
            .await
            .map_err(|e| Some(code(&e, fenced_known)))
    };
    topics
        .iter()
        .map(|topic| {
            let by_partition = topic
                .partitions
                .iter()
                .map(|partition| {
                    let this = (topic.name.0.to_string(), *partition);
                    let error = match &outcome {
                        Ok(()) => failed.get(&this).map_or(0, |code| code.code()),
                        Err(Some(code)) => code.code(),
                        Err(None) if unknown.contains(&this) => {
                            ResponseError::UnknownTopicOrPartition.code()
                        }
                        Err(None) => ResponseError::OperationNotAttempted.code(),
                    };
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*partition)
                        .with_partition_error_code(error)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(topic.name.clone())
                .with_results_by_partition(by_partition)
        })
        .collect()
}

pub async fn add_offsets(
    broker: &Broker,
    request: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let id = request.transactional_id.0.to_string();
    let result = match check_coordinator(broker, &id).await {
        Err(code) => Err(code),
        Ok(()) => broker
            .txn
            .add(
                &id,
                (request.producer_id.0, request.producer_epoch),
                &Addition::Group(request.group_id.0.to_string()),
            )
            .await
            .map_err(|e| code(&e, version >= 2)),
    };
    AddOffsetsToTxnResponse::default().with_error_code(result.err().map_or(0, |c| c.code()))
}

pub async fn end(broker: &Broker, request: EndTxnRequest, version: i16) -> EndTxnResponse {
    let id = request.transactional_id.0.to_string();
    let result = match check_coordinator(broker, &id).await {
        Err(code) => Err(code),
        Ok(()) => broker
            .txn
            .end(
                &id,
                (request.producer_id.0, request.producer_epoch),
                request.committed,
            )
            .await
            .map_err(|e| code(&e, version >= 2)),
    };
    EndTxnResponse::default().with_error_code(result.err().map_or(0, |c| c.code()))
}

/// TxnOffsetCommit, at the group's coordinator: the producer must be the transaction's current
/// one with the group added to it (AddOffsetsToTxn), and a member of a group must be current;
/// the offsets are then staged until the transaction ends.
pub async fn commit_offsets(
    broker: &Broker,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let id = request.transactional_id.0.to_string();
    let now_ms = broker.log.clock().now_ms();
    let mut staged = Vec::new();
    let mut too_large = Vec::new();
    for topic in &request.topics {
        for partition in &topic.partitions {
            let metadata = partition.committed_metadata.as_ref().map(|m| m.to_string());
            if metadata.as_ref().map_or(0, String::len) > broker.limits.offset_metadata_max_bytes {
                too_large.push((topic.name.0.to_string(), partition.partition_index));
                continue;
            }
            staged.push((
                topic.name.0.to_string(),
                partition.partition_index,
                CommittedOffset {
                    offset: partition.committed_offset,
                    leader_epoch: partition.committed_leader_epoch,
                    metadata,
                    commit_timestamp_ms: now_ms,
                },
            ));
        }
    }
    let result = check_and_stage(broker, &request, (&group, &id), &staged).await;
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let oversized =
                        too_large.contains(&(topic.name.0.to_string(), p.partition_index));
                    let error = match &result {
                        Err(code) => code.code(),
                        Ok(()) if oversized => ResponseError::OffsetMetadataTooLarge.code(),
                        Ok(()) => 0,
                    };
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error)
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// Checks the request against the transaction and the group, then stages its offsets fenced on
/// the record it was checked against; checks again if the record moved meanwhile.
async fn check_and_stage(
    broker: &Broker,
    request: &TxnOffsetCommitRequest,
    (group, id): (&str, &str),
    staged: &[(String, i32, CommittedOffset)],
) -> Result<(), ResponseError> {
    /// The record moves under a TxnOffsetCommit only when the producer raced itself (or was
    /// fenced): a few attempts, then the client retries.
    const ATTEMPTS: usize = 3;
    for _ in 0..ATTEMPTS {
        let revision = check_offsets_commit(broker, request, group, id).await?;
        match txn_offsets::stage(&*broker.store, group, id, revision, staged).await {
            Ok(true) => return Ok(()),
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(%error, group, "cannot stage transactional offsets");
                return Err(ResponseError::CoordinatorNotAvailable);
            }
        }
    }
    Err(ResponseError::CoordinatorLoadInProgress)
}

/// Checks a TxnOffsetCommit; returns the revision of the transaction record it checked.
async fn check_offsets_commit(
    broker: &Broker,
    request: &TxnOffsetCommitRequest,
    group: &str,
    id: &str,
) -> Result<skiff_tiering::metadata::Revision, ResponseError> {
    super::groups::check_coordinator(broker, group).await?;
    let (record, revision) = broker
        .txn
        .load(id)
        .await
        .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
    let record = record.ok_or(ResponseError::InvalidProducerIdMapping)?;
    let producer = (request.producer_id.0, request.producer_epoch);
    match transactions::verify_group(&record, producer, group) {
        Ok(()) => {}
        Err(TxnError::ProducerFenced) => return Err(ResponseError::InvalidProducerEpoch),
        Err(error) => return Err(code(&CoordError::Txn(error), false)),
    }
    let member = request.member_id.to_string();
    let instance = request.group_instance_id.as_ref().map(|i| i.to_string());
    if request.generation_id >= 0 || !member.is_empty() || instance.is_some() {
        broker
            .groups
            .check_commit(group, &member, instance.as_deref(), request.generation_id)
            .map_err(super::groups::group_error)?;
    }
    Ok(revision)
}
