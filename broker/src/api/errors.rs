//! The one mapping from Skiff's errors to Kafka error codes.

use kafka_protocol::ResponseError;
use skiff_tiering::batch::BatchError;
use skiff_tiering::catalog::CatalogError;
use skiff_tiering::LogError;

pub fn log_error(error: &LogError) -> ResponseError {
    match error {
        LogError::UnknownTopicOrPartition(_) => ResponseError::UnknownTopicOrPartition,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::Fenced(_) | LogError::NotLeader(_) => ResponseError::NotLeaderOrFollower,
        LogError::Unavailable(_) | LogError::Corrupt(_) => ResponseError::KafkaStorageError,
        LogError::TooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::ShuttingDown => ResponseError::NotLeaderOrFollower,
        LogError::OutOfOrderSequence(_) => ResponseError::OutOfOrderSequenceNumber,
        // Retriable without side effects for every client: librdkafka requeues the batch
        // behind the refused earlier one and resends both in order, with no epoch bump
        // (OUT_OF_ORDER_SEQUENCE_NUMBER would bump the epoch, stalling every partition, and is
        // fatal to it when the sequence is the next it expects).
        LogError::AwaitingEarlierBatch(_) => ResponseError::NotLeaderOrFollower,
        LogError::InvalidProducerEpoch(_) => ResponseError::InvalidProducerEpoch,
        LogError::InvalidTxnState(_) => ResponseError::InvalidTxnState,
    }
}

pub fn batch_error(error: &BatchError) -> ResponseError {
    match error {
        BatchError::Corrupt(_) => ResponseError::CorruptMessage,
        BatchError::Invalid(_) => ResponseError::InvalidRecord,
        BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
    }
}

pub fn catalog_error(error: &CatalogError) -> ResponseError {
    match error {
        CatalogError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        CatalogError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        CatalogError::InvalidTopicName(_) => ResponseError::InvalidTopicException,
        CatalogError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        CatalogError::Conflict(_) => ResponseError::UnknownServerError,
        CatalogError::InvalidConfig(_) => ResponseError::InvalidConfig,
        CatalogError::Metadata(_) | CatalogError::Corrupt(_) => ResponseError::KafkaStorageError,
    }
}

/// A metadata-store failure outside the log: retriable ones as a timeout (the client retries).
pub fn metadata_error(error: &skiff_tiering::metadata::MetadataError) -> ResponseError {
    if error.is_retriable() {
        ResponseError::RequestTimedOut
    } else {
        ResponseError::UnknownServerError
    }
}

/// The error codes a response answers (one per failed partition or item where the API answers
/// per partition or item, else the request's own), for the error metrics. Produce and Fetch are
/// counted where they are built.
pub fn response_errors(response: &kafka_protocol::messages::ResponseKind) -> Vec<i16> {
    use kafka_protocol::messages::ResponseKind as R;
    let codes: Vec<i16> = match response {
        R::FindCoordinator(r) => std::iter::once(r.error_code)
            .chain(r.coordinators.iter().map(|c| c.error_code))
            .collect(),
        R::JoinGroup(r) => vec![r.error_code],
        R::SyncGroup(r) => vec![r.error_code],
        R::Heartbeat(r) => vec![r.error_code],
        R::LeaveGroup(r) => vec![r.error_code],
        R::ListGroups(r) => vec![r.error_code],
        R::OffsetFetch(r) => vec![r.error_code],
        R::InitProducerId(r) => vec![r.error_code],
        R::AddOffsetsToTxn(r) => vec![r.error_code],
        R::EndTxn(r) => vec![r.error_code],
        R::ListTransactions(r) => vec![r.error_code],
        R::ApiVersions(r) => vec![r.error_code],
        R::SaslHandshake(r) => vec![r.error_code],
        R::SaslAuthenticate(r) => vec![r.error_code],
        R::DescribeUserScramCredentials(r) => std::iter::once(r.error_code)
            .chain(r.results.iter().map(|u| u.error_code))
            .collect(),
        R::AlterUserScramCredentials(r) => r.results.iter().map(|u| u.error_code).collect(),
        R::DescribeGroups(r) => r.groups.iter().map(|g| g.error_code).collect(),
        R::DeleteGroups(r) => r.results.iter().map(|g| g.error_code).collect(),
        R::CreateTopics(r) => r.topics.iter().map(|t| t.error_code).collect(),
        R::DeleteTopics(r) => r.responses.iter().map(|t| t.error_code).collect(),
        R::CreatePartitions(r) => r.results.iter().map(|t| t.error_code).collect(),
        R::DescribeConfigs(r) => r.results.iter().map(|t| t.error_code).collect(),
        R::AlterConfigs(r) => r.responses.iter().map(|t| t.error_code).collect(),
        R::IncrementalAlterConfigs(r) => r.responses.iter().map(|t| t.error_code).collect(),
        R::OffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        R::TxnOffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        R::ListOffsets(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        R::DeleteRecords(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        R::AddPartitionsToTxn(r) => std::iter::once(r.error_code)
            .chain(
                r.results_by_topic_v3_and_below
                    .iter()
                    .chain(
                        r.results_by_transaction
                            .iter()
                            .flat_map(|t| &t.topic_results),
                    )
                    .flat_map(|t| {
                        t.results_by_partition
                            .iter()
                            .map(|p| p.partition_error_code)
                    }),
            )
            .collect(),
        _ => Vec::new(),
    };
    codes.into_iter().filter(|code| *code != 0).collect()
}
