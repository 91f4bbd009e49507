//! The second half of authorization: the items `before` took out of a request answered in the
//! handler's response with their errors, and listings (ListGroups, ListTransactions, OffsetFetch
//! of all topics) cut to what the principal may describe.

use super::{offset_commit_topic, offset_fetch_topic, Denied, Guard};
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

/// Adds refused topics to a response whose topics answer per partition: `$topic` named, its
/// partitions (`$partition`, built by `$fill` from the index and the error code) set by
/// `$partitions`.
macro_rules! refused_partitions {
    ($list:expr, $denied:expr, $topic:ty, $partitions:ident, $partition:ty,
     |$p:ident, $code:ident, $x:ident| $fill:expr) => {
        for (name, indexes, error) in $denied {
            let $code = error.code();
            $list.push(
                <$topic>::default().with_name(name).$partitions(
                    indexes
                        .into_iter()
                        .map(|$p| {
                            let $x = <$partition>::default();
                            $fill
                        })
                        .collect(),
                ),
            );
        }
    };
}

/// Adds the items [`super::before`] took out to the handler's response, with their errors; and takes
/// out of listings (ListGroups, ListTransactions) what the principal may not describe.
pub fn after(guard: &Guard<'_>, response: &mut ResponseKind, denied: Denied) {
    use Operation::*;
    if !guard.broker.authorizer.enabled() {
        return;
    }
    match response {
        ResponseKind::ListGroups(r)
            if !guard.visible(Describe, ResourceType::Cluster, CLUSTER_NAME) =>
        {
            r.groups
                .retain(|g| guard.visible(Describe, ResourceType::Group, g.group_id.as_str()));
        }
        ResponseKind::ListTransactions(r) => {
            r.transaction_states.retain(|t| {
                guard.visible(
                    Describe,
                    ResourceType::TransactionalId,
                    t.transactional_id.as_str(),
                )
            });
        }
        _ => {}
    }
    if denied.is_empty() {
        return;
    }
    let code = |e: ResponseError| e.code();
    match response {
        ResponseKind::ListOffsets(r) => refused_partitions!(
            r.topics,
            denied.topics,
            list_offsets_response::ListOffsetsTopicResponse,
            with_partitions,
            list_offsets_response::ListOffsetsPartitionResponse,
            |p, code, x| x
                .with_partition_index(p)
                .with_error_code(code)
                .with_timestamp(-1)
                .with_offset(-1)
        ),
        ResponseKind::CreateTopics(r) => {
            for (name, _, error) in denied.topics {
                r.topics.push(
                    create_topics_response::CreatableTopicResult::default()
                        .with_name(name)
                        .with_error_code(code(error))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1),
                );
            }
        }
        ResponseKind::DeleteTopics(r) => {
            for (name, _, error) in denied.topics {
                r.responses.push(
                    delete_topics_response::DeletableTopicResult::default()
                        .with_name(Some(name))
                        .with_error_code(code(error)),
                );
            }
        }
        ResponseKind::CreatePartitions(r) => {
            for (name, _, error) in denied.topics {
                r.results.push(
                    create_partitions_response::CreatePartitionsTopicResult::default()
                        .with_name(name)
                        .with_error_code(code(error)),
                );
            }
        }
        ResponseKind::DeleteRecords(r) => {
            refused_partitions!(
                r.topics,
                denied.topics,
                delete_records_response::DeleteRecordsTopicResult,
                with_partitions,
                delete_records_response::DeleteRecordsPartitionResult,
                |p, code, x| x
                    .with_partition_index(p)
                    .with_low_watermark(-1)
                    .with_error_code(code)
            );
        }
        ResponseKind::DescribeConfigs(r) => {
            for (name, resource_type, error) in denied.names {
                r.results.push(
                    describe_configs_response::DescribeConfigsResult::default()
                        .with_resource_type(resource_type)
                        .with_resource_name(name)
                        .with_error_code(code(error)),
                );
            }
        }
        ResponseKind::AlterConfigs(r) => {
            for (name, resource_type, error) in denied.names {
                r.responses.push(
                    alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(resource_type)
                        .with_resource_name(name)
                        .with_error_code(code(error)),
                );
            }
        }
        ResponseKind::IncrementalAlterConfigs(r) => {
            for (name, resource_type, error) in denied.names {
                r.responses.push(
                    incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(resource_type)
                        .with_resource_name(name)
                        .with_error_code(code(error)),
                );
            }
        }
        ResponseKind::OffsetCommit(r) => {
            for (name, partitions, error) in denied.topics {
                r.topics.push(offset_commit_topic(name, partitions, error));
            }
        }
        ResponseKind::OffsetFetch(r) => {
            if !denied.all_topics_of.is_empty() {
                // "All topics": only those the principal may describe.
                r.topics.retain(|t| {
                    guard.visible(Operation::Describe, ResourceType::Topic, t.name.as_str())
                });
                for group in &mut r.groups {
                    if denied.all_topics_of.contains(&group.group_id.0) {
                        group.topics.retain(|t| {
                            guard.visible(Operation::Describe, ResourceType::Topic, t.name.as_str())
                        });
                    }
                }
            }
            for (name, partitions, error) in denied.topics {
                r.topics.push(offset_fetch_topic(name, &partitions, error));
            }
            for (group, name, partitions) in denied.group_topics {
                let Some(answer) = r.groups.iter_mut().find(|g| g.group_id.0 == group) else {
                    continue;
                };
                let code = ResponseError::TopicAuthorizationFailed.code();
                answer.topics.push(
                    offset_fetch_response::OffsetFetchResponseTopics::default()
                        .with_name(name)
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|p| {
                                    offset_fetch_response::OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_error_code(code)
                                })
                                .collect(),
                        ),
                );
            }
            for (group, _, error) in denied.names {
                r.groups.push(
                    offset_fetch_response::OffsetFetchResponseGroup::default()
                        .with_group_id(GroupId(group))
                        .with_error_code(code(error)),
                );
            }
        }
        ResponseKind::DescribeGroups(r) => {
            for (group, _, error) in denied.names {
                r.groups.push(
                    describe_groups_response::DescribedGroup::default()
                        .with_group_id(GroupId(group))
                        .with_error_code(code(error)),
                );
            }
        }
        ResponseKind::DeleteGroups(r) => {
            for (group, _, error) in denied.names {
                r.results.push(
                    delete_groups_response::DeletableGroupResult::default()
                        .with_group_id(GroupId(group))
                        .with_error_code(code(error)),
                );
            }
        }
        ResponseKind::OffsetDelete(r) => {
            refused_partitions!(
                r.topics,
                denied.topics,
                offset_delete_response::OffsetDeleteResponseTopic,
                with_partitions,
                offset_delete_response::OffsetDeleteResponsePartition,
                |p, code, x| x.with_partition_index(p).with_error_code(code)
            );
        }
        ResponseKind::AddPartitionsToTxn(r) => {
            refused_partitions!(
                r.results_by_topic_v3_and_below,
                denied.topics,
                add_partitions_to_txn_response::AddPartitionsToTxnTopicResult,
                with_results_by_partition,
                add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult,
                |p, code, x| x.with_partition_index(p).with_partition_error_code(code)
            );
        }
        ResponseKind::TxnOffsetCommit(r) => {
            refused_partitions!(
                r.topics,
                denied.topics,
                txn_offset_commit_response::TxnOffsetCommitResponseTopic,
                with_partitions,
                txn_offset_commit_response::TxnOffsetCommitResponsePartition,
                |p, code, x| x.with_partition_index(p).with_error_code(code)
            );
        }
        ResponseKind::DescribeProducers(r) => {
            refused_partitions!(
                r.topics,
                denied.topics,
                describe_producers_response::TopicResponse,
                with_partitions,
                describe_producers_response::PartitionResponse,
                |p, code, x| x.with_partition_index(p).with_error_code(code)
            );
        }
        ResponseKind::FindCoordinator(r) => {
            for (key, _, error) in denied.names {
                r.coordinators.push(
                    find_coordinator_response::Coordinator::default()
                        .with_key(key)
                        .with_node_id(BrokerId(-1))
                        .with_error_code(code(error)),
                );
            }
        }
        ResponseKind::DescribeTransactions(r) => {
            for (id, _, error) in denied.names {
                r.transaction_states.push(
                    describe_transactions_response::TransactionState::default()
                        .with_transactional_id(TransactionalId(id))
                        .with_error_code(code(error)),
                );
            }
        }
        other => {
            tracing::error!(response = ?std::mem::discriminant(other), "denied items of an api without a merge rule");
        }
    }
}
