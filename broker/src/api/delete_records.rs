//! DeleteRecords: each partition's leader moves its log start offset forward (`kafka-delete-records`,
//! `AdminClient.delete_records`). The answer is the new low watermark; offset -1 means "up to the
//! high watermark", as in Kafka. Records below it are no longer served; their bytes leave the
//! bucket when the compactor's garbage collection finds nothing referencing them.

use super::errors::log_error;
use super::Broker;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use skiff_tiering::log::TopicPartition;

pub async fn handle(broker: &Broker, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let tp = TopicPartition::new(&topic.name, partition.partition_index);
            let result = DeleteRecordsPartitionResult::default()
                .with_partition_index(partition.partition_index);
            partitions.push(
                match broker.log.delete_records(&tp, partition.offset).await {
                    Ok(low_watermark) => result.with_low_watermark(low_watermark),
                    Err(error) => {
                        tracing::debug!(%error, partition = %tp, "delete records refused");
                        result
                            .with_low_watermark(-1)
                            .with_error_code(log_error(&error).code())
                    }
                },
            );
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
