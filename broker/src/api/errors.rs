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
