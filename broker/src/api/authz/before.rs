//! The first half of authorization: each API's rule, before its handler runs — a request
//! wholly refused is answered at once; items the principal may not touch are taken out and
//! remembered in [`Denied`] for [`super::after`].

use super::{
    offset_commit_topic, offset_fetch_topic, Decision, Denied, Guard, CONFIG_BROKER,
    CONFIG_BROKER_LOGGER, CONFIG_TOPIC, KEY_TYPE_TRANSACTION,
};
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

fn topic_error(name: &TopicName, partitions: Vec<i32>, error: ResponseError, denied: &mut Denied) {
    denied.topics.push((name.clone(), partitions, error));
}

/// Takes out of `topics` those `allowed` refuses, remembering their partitions.
fn retain_topics<T>(
    topics: &mut Vec<T>,
    name: impl Fn(&T) -> &TopicName,
    partitions: impl Fn(&T) -> Vec<i32>,
    allowed: impl Fn(&str) -> bool,
    denied: &mut Denied,
) {
    topics.retain(|t| {
        let ok = allowed(name(t).as_str());
        if !ok {
            topic_error(
                name(t),
                partitions(t),
                ResponseError::TopicAuthorizationFailed,
                denied,
            );
        }
        ok
    });
}

/// Takes out of `items` (groups, transactional ids, config resources) those `allowed`
/// refuses, remembering each one's name, type and error.
fn retain_named<T>(
    items: &mut Vec<T>,
    key: impl Fn(&T) -> (&StrBytes, i8),
    allowed: impl Fn(&T) -> bool,
    error: impl Fn(&T) -> ResponseError,
    denied: &mut Denied,
) {
    items.retain(|item| {
        let ok = allowed(item);
        if !ok {
            let (name, kind) = key(item);
            denied.names.push((name.clone(), kind, error(item)));
        }
        ok
    });
}

fn refuse(response: ResponseKind) -> Decision {
    Decision::Refuse(Box::new(response))
}

/// The checks of `body` (all APIs but Produce, Fetch and Metadata, which check their own).
pub fn before(guard: &Guard<'_>, body: RequestKind, version: i16) -> Decision {
    use Operation::*;
    let mut denied = Denied::default();
    if !guard.broker.authorizer.enabled() {
        return Decision::Handle(Box::new(body), denied);
    }
    let cluster_error = ResponseError::ClusterAuthorizationFailed.code();
    let body = match body {
        // Checked by their handlers, or need no permission.
        RequestKind::Produce(_)
        | RequestKind::Fetch(_)
        | RequestKind::Metadata(_)
        | RequestKind::ApiVersions(_)
        | RequestKind::SaslHandshake(_)
        | RequestKind::SaslAuthenticate(_)
        | RequestKind::CreateAcls(_)
        | RequestKind::DescribeAcls(_)
        | RequestKind::DeleteAcls(_) => body,
        RequestKind::ListOffsets(mut req) => {
            retain_topics(
                &mut req.topics,
                |t| &t.name,
                |t| t.partitions.iter().map(|p| p.partition_index).collect(),
                |n| guard.topic(Describe, n),
                &mut denied,
            );
            RequestKind::ListOffsets(req)
        }
        RequestKind::CreateTopics(mut req) => {
            retain_topics(
                &mut req.topics,
                |t| &t.name,
                |_| Vec::new(),
                |n| guard.create_topic(n),
                &mut denied,
            );
            RequestKind::CreateTopics(req)
        }
        RequestKind::DeleteTopics(mut req) => {
            // Topics named by id are checked by name in the handler's lookup; names here.
            retain_topics(
                &mut req.topic_names,
                |t| t,
                |_| Vec::new(),
                |n| guard.topic(Delete, n),
                &mut denied,
            );
            // Topics named by id are checked by the handler, once their names are known.
            req.topics.retain(|t| match &t.name {
                Some(name) if !guard.topic(Delete, name.as_str()) => {
                    topic_error(
                        name,
                        Vec::new(),
                        ResponseError::TopicAuthorizationFailed,
                        &mut denied,
                    );
                    false
                }
                _ => true,
            });
            RequestKind::DeleteTopics(req)
        }
        RequestKind::CreatePartitions(mut req) => {
            retain_topics(
                &mut req.topics,
                |t| &t.name,
                |_| Vec::new(),
                |n| guard.topic(Alter, n),
                &mut denied,
            );
            RequestKind::CreatePartitions(req)
        }
        RequestKind::DeleteRecords(mut req) => {
            retain_topics(
                &mut req.topics,
                |t| &t.name,
                |t| t.partitions.iter().map(|p| p.partition_index).collect(),
                |n| guard.topic(Delete, n),
                &mut denied,
            );
            RequestKind::DeleteRecords(req)
        }
        RequestKind::DescribeConfigs(mut req) => {
            retain_named(
                &mut req.resources,
                |r| (&r.resource_name, r.resource_type),
                |r| config_allowed(guard, r.resource_type, r.resource_name.as_str(), false),
                |r| config_error(r.resource_type),
                &mut denied,
            );
            RequestKind::DescribeConfigs(req)
        }
        RequestKind::AlterConfigs(mut req) => {
            retain_named(
                &mut req.resources,
                |r| (&r.resource_name, r.resource_type),
                |r| config_allowed(guard, r.resource_type, r.resource_name.as_str(), true),
                |r| config_error(r.resource_type),
                &mut denied,
            );
            RequestKind::AlterConfigs(req)
        }
        RequestKind::IncrementalAlterConfigs(mut req) => {
            retain_named(
                &mut req.resources,
                |r| (&r.resource_name, r.resource_type),
                |r| config_allowed(guard, r.resource_type, r.resource_name.as_str(), true),
                |r| config_error(r.resource_type),
                &mut denied,
            );
            RequestKind::IncrementalAlterConfigs(req)
        }
        // Consumer groups: READ on the group.
        RequestKind::JoinGroup(req) => {
            if !guard.group(Read, req.group_id.as_str()) {
                return refuse(ResponseKind::JoinGroup(
                    JoinGroupResponse::default()
                        .with_error_code(ResponseError::GroupAuthorizationFailed.code())
                        .with_generation_id(-1),
                ));
            }
            RequestKind::JoinGroup(req)
        }
        RequestKind::SyncGroup(req) => {
            if !guard.group(Read, req.group_id.as_str()) {
                return refuse(ResponseKind::SyncGroup(
                    SyncGroupResponse::default()
                        .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
                ));
            }
            RequestKind::SyncGroup(req)
        }
        RequestKind::Heartbeat(req) => {
            if !guard.group(Read, req.group_id.as_str()) {
                return refuse(ResponseKind::Heartbeat(
                    HeartbeatResponse::default()
                        .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
                ));
            }
            RequestKind::Heartbeat(req)
        }
        RequestKind::LeaveGroup(req) => {
            if !guard.group(Read, req.group_id.as_str()) {
                return refuse(ResponseKind::LeaveGroup(
                    LeaveGroupResponse::default()
                        .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
                ));
            }
            RequestKind::LeaveGroup(req)
        }
        RequestKind::OffsetCommit(mut req) => {
            if !guard.group(Read, req.group_id.as_str()) {
                let topics = req.topics.iter().map(|t| {
                    (
                        t.name.clone(),
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                });
                return refuse(ResponseKind::OffsetCommit(
                    OffsetCommitResponse::default().with_topics(
                        topics
                            .map(|(name, partitions)| {
                                offset_commit_topic(
                                    name,
                                    partitions,
                                    ResponseError::GroupAuthorizationFailed,
                                )
                            })
                            .collect(),
                    ),
                ));
            }
            retain_topics(
                &mut req.topics,
                |t| &t.name,
                |t| t.partitions.iter().map(|p| p.partition_index).collect(),
                |n| guard.topic(Read, n),
                &mut denied,
            );
            RequestKind::OffsetCommit(req)
        }
        RequestKind::OffsetFetch(mut req) => {
            if version < 8 && !guard.group(Describe, req.group_id.as_str()) {
                let error = ResponseError::GroupAuthorizationFailed;
                // v0-v1 have no top-level error: each partition asked for carries it.
                let topics = if version < 2 {
                    req.topics
                        .iter()
                        .flatten()
                        .map(|t| offset_fetch_topic(t.name.clone(), &t.partition_indexes, error))
                        .collect()
                } else {
                    Vec::new()
                };
                return refuse(ResponseKind::OffsetFetch(
                    OffsetFetchResponse::default()
                        .with_error_code(error.code())
                        .with_topics(topics),
                ));
            }
            match &mut req.topics {
                Some(topics) => retain_topics(
                    topics,
                    |t| &t.name,
                    |t| t.partition_indexes.clone(),
                    |n| guard.topic(Describe, n),
                    &mut denied,
                ),
                // All the group's topics: those the principal may describe (in `after`).
                None => denied.all_topics_of.push(req.group_id.0.clone()),
            }
            // v8+: several groups; one the principal may not describe is answered apart.
            retain_named(
                &mut req.groups,
                |g| (&g.group_id.0, 0),
                |g| guard.group(Describe, g.group_id.as_str()),
                |_| ResponseError::GroupAuthorizationFailed,
                &mut denied,
            );
            for group in &mut req.groups {
                match &mut group.topics {
                    Some(topics) => topics.retain(|t| {
                        let ok = guard.topic(Describe, t.name.as_str());
                        if !ok {
                            denied.group_topics.push((
                                group.group_id.0.clone(),
                                t.name.clone(),
                                t.partition_indexes.clone(),
                            ));
                        }
                        ok
                    }),
                    None => denied.all_topics_of.push(group.group_id.0.clone()),
                }
            }
            RequestKind::OffsetFetch(req)
        }
        RequestKind::ListGroups(req) => RequestKind::ListGroups(req),
        RequestKind::DescribeGroups(mut req) => {
            retain_named(
                &mut req.groups,
                |g| (&g.0, 0),
                |g| guard.group(Describe, g.as_str()),
                |_| ResponseError::GroupAuthorizationFailed,
                &mut denied,
            );
            RequestKind::DescribeGroups(req)
        }
        RequestKind::DeleteGroups(mut req) => {
            retain_named(
                &mut req.groups_names,
                |g| (&g.0, 0),
                |g| guard.group(Delete, g.as_str()),
                |_| ResponseError::GroupAuthorizationFailed,
                &mut denied,
            );
            RequestKind::DeleteGroups(req)
        }
        RequestKind::OffsetDelete(mut req) => {
            if !guard.group(Delete, req.group_id.as_str()) {
                return refuse(ResponseKind::OffsetDelete(
                    OffsetDeleteResponse::default()
                        .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
                ));
            }
            retain_topics(
                &mut req.topics,
                |t| &t.name,
                |t| t.partitions.iter().map(|p| p.partition_index).collect(),
                |n| guard.topic(Read, n),
                &mut denied,
            );
            RequestKind::OffsetDelete(req)
        }
        RequestKind::FindCoordinator(mut req) => {
            // DESCRIBE on the group or the transactional id.
            let allowed = |key_type: i8, key: &str| match key_type {
                KEY_TYPE_TRANSACTION => guard.transactional_id(Describe, key),
                _ => guard.group(Describe, key),
            };
            let error = |key_type: i8| match key_type {
                KEY_TYPE_TRANSACTION => ResponseError::TransactionalIdAuthorizationFailed,
                _ => ResponseError::GroupAuthorizationFailed,
            };
            if version < 4 {
                if !allowed(req.key_type, req.key.as_str()) {
                    return refuse(ResponseKind::FindCoordinator(
                        FindCoordinatorResponse::default()
                            .with_error_code(error(req.key_type).code())
                            .with_node_id(BrokerId(-1)),
                    ));
                }
            } else {
                let key_type = req.key_type;
                req.coordinator_keys.retain(|key| {
                    let ok = allowed(key_type, key.as_str());
                    if !ok {
                        denied.names.push((key.clone(), key_type, error(key_type)));
                    }
                    ok
                });
            }
            RequestKind::FindCoordinator(req)
        }
        // Transactions: WRITE on the transactional id; idempotence: IDEMPOTENT_WRITE on the
        // cluster or WRITE on some topic (as Kafka 3+).
        RequestKind::InitProducerId(req) => {
            let allowed = match &req.transactional_id {
                Some(id) => guard.transactional_id(Write, id.as_str()),
                None => {
                    let allowed =
                        guard.visible(IdempotentWrite, ResourceType::Cluster, CLUSTER_NAME)
                            || guard.visible(Write, ResourceType::Topic, "*")
                            || any_topic_write(guard);
                    if !allowed {
                        guard.deny(IdempotentWrite, ResourceType::Cluster, CLUSTER_NAME);
                    }
                    allowed
                }
            };
            if !allowed {
                let error = if req.transactional_id.is_some() {
                    ResponseError::TransactionalIdAuthorizationFailed
                } else {
                    ResponseError::ClusterAuthorizationFailed
                };
                return refuse(ResponseKind::InitProducerId(
                    InitProducerIdResponse::default()
                        .with_error_code(error.code())
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1),
                ));
            }
            RequestKind::InitProducerId(req)
        }
        RequestKind::AddPartitionsToTxn(mut req) => {
            let v3_id = req.v3_and_below_transactional_id.clone();
            if !v3_id.is_empty() {
                if !guard.transactional_id(Write, v3_id.as_str()) {
                    let topics = std::mem::take(&mut req.v3_and_below_topics);
                    for t in topics {
                        topic_error(
                            &t.name,
                            t.partitions,
                            ResponseError::TransactionalIdAuthorizationFailed,
                            &mut denied,
                        );
                    }
                } else {
                    retain_topics(
                        &mut req.v3_and_below_topics,
                        |t| &t.name,
                        |t| t.partitions.clone(),
                        |n| guard.topic(Write, n),
                        &mut denied,
                    );
                    // All or nothing, as Kafka: with a topic refused, none is added and the
                    // others are OPERATION_NOT_ATTEMPTED.
                    if !denied.topics.is_empty() {
                        for t in std::mem::take(&mut req.v3_and_below_topics) {
                            topic_error(
                                &t.name,
                                t.partitions,
                                ResponseError::OperationNotAttempted,
                                &mut denied,
                            );
                        }
                    }
                }
            }
            // v4+ (brokers' batched form): only for those allowed everything they name.
            // (CLUSTER_ACTION first: an item a broker may touch anyway is no refusal.)
            if !req.transactions.is_empty()
                && !guard.visible(ClusterAction, ResourceType::Cluster, CLUSTER_NAME)
                && req.transactions.iter().any(|t| {
                    !guard.transactional_id(Write, t.transactional_id.as_str())
                        || t.topics
                            .iter()
                            .any(|x| !guard.topic(Write, x.name.as_str()))
                })
            {
                return refuse(ResponseKind::AddPartitionsToTxn(
                    AddPartitionsToTxnResponse::default().with_error_code(cluster_error),
                ));
            }
            RequestKind::AddPartitionsToTxn(req)
        }
        RequestKind::AddOffsetsToTxn(req) => {
            let error = if !guard.transactional_id(Write, req.transactional_id.as_str()) {
                Some(ResponseError::TransactionalIdAuthorizationFailed)
            } else if !guard.group(Read, req.group_id.as_str()) {
                Some(ResponseError::GroupAuthorizationFailed)
            } else {
                None
            };
            if let Some(error) = error {
                return refuse(ResponseKind::AddOffsetsToTxn(
                    AddOffsetsToTxnResponse::default().with_error_code(error.code()),
                ));
            }
            RequestKind::AddOffsetsToTxn(req)
        }
        RequestKind::EndTxn(req) => {
            if !guard.transactional_id(Write, req.transactional_id.as_str()) {
                return refuse(ResponseKind::EndTxn(
                    EndTxnResponse::default()
                        .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code()),
                ));
            }
            RequestKind::EndTxn(req)
        }
        RequestKind::TxnOffsetCommit(mut req) => {
            let whole = if !guard.transactional_id(Write, req.transactional_id.as_str()) {
                Some(ResponseError::TransactionalIdAuthorizationFailed)
            } else if !guard.group(Read, req.group_id.as_str()) {
                Some(ResponseError::GroupAuthorizationFailed)
            } else {
                None
            };
            if let Some(error) = whole {
                let topics = std::mem::take(&mut req.topics);
                for t in topics {
                    let partitions = t.partitions.iter().map(|p| p.partition_index).collect();
                    topic_error(&t.name, partitions, error, &mut denied);
                }
            } else {
                retain_topics(
                    &mut req.topics,
                    |t| &t.name,
                    |t| t.partitions.iter().map(|p| p.partition_index).collect(),
                    |n| guard.topic(Read, n),
                    &mut denied,
                );
            }
            RequestKind::TxnOffsetCommit(req)
        }
        RequestKind::DescribeProducers(mut req) => {
            retain_topics(
                &mut req.topics,
                |t| &t.name,
                |t| t.partition_indexes.clone(),
                |n| guard.topic(Read, n),
                &mut denied,
            );
            RequestKind::DescribeProducers(req)
        }
        RequestKind::DescribeTransactions(mut req) => {
            retain_named(
                &mut req.transactional_ids,
                |id| (&id.0, 0),
                |id| guard.transactional_id(Describe, id.as_str()),
                |_| ResponseError::TransactionalIdAuthorizationFailed,
                &mut denied,
            );
            RequestKind::DescribeTransactions(req)
        }
        RequestKind::ListTransactions(req) => RequestKind::ListTransactions(req),
        // The cluster's own business.
        RequestKind::ElectLeaders(req) => {
            if !guard.cluster(Alter) {
                return refuse(ResponseKind::ElectLeaders(
                    ElectLeadersResponse::default().with_error_code(cluster_error),
                ));
            }
            RequestKind::ElectLeaders(req)
        }
        RequestKind::DescribeLogDirs(req) => {
            if !guard.cluster(Describe) {
                return refuse(ResponseKind::DescribeLogDirs(
                    DescribeLogDirsResponse::default().with_error_code(cluster_error),
                ));
            }
            RequestKind::DescribeLogDirs(req)
        }
        RequestKind::AlterReplicaLogDirs(req) => {
            if !guard.cluster(Alter) {
                let results = req
                    .dirs
                    .iter()
                    .flat_map(|d| d.topics.iter())
                    .map(|t| {
                        alter_replica_log_dirs_response::AlterReplicaLogDirTopicResult::default()
                            .with_topic_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        alter_replica_log_dirs_response::AlterReplicaLogDirPartitionResult::default()
                                            .with_partition_index(*p)
                                            .with_error_code(cluster_error)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                return refuse(ResponseKind::AlterReplicaLogDirs(
                    AlterReplicaLogDirsResponse::default().with_results(results),
                ));
            }
            RequestKind::AlterReplicaLogDirs(req)
        }
        RequestKind::ListPartitionReassignments(req) => {
            if !guard.cluster(Describe) {
                return refuse(ResponseKind::ListPartitionReassignments(
                    ListPartitionReassignmentsResponse::default().with_error_code(cluster_error),
                ));
            }
            RequestKind::ListPartitionReassignments(req)
        }
        RequestKind::AlterPartitionReassignments(req) => {
            if !guard.cluster(Alter) {
                return refuse(ResponseKind::AlterPartitionReassignments(
                    AlterPartitionReassignmentsResponse::default().with_error_code(cluster_error),
                ));
            }
            RequestKind::AlterPartitionReassignments(req)
        }
        RequestKind::DescribeUserScramCredentials(req) => {
            if !guard.cluster(Describe) {
                return refuse(ResponseKind::DescribeUserScramCredentials(
                    DescribeUserScramCredentialsResponse::default().with_error_code(cluster_error),
                ));
            }
            RequestKind::DescribeUserScramCredentials(req)
        }
        RequestKind::AlterUserScramCredentials(req) => {
            if !guard.cluster(Alter) {
                let mut users: Vec<StrBytes> = req
                    .deletions
                    .iter()
                    .map(|d| d.name.clone())
                    .chain(req.upsertions.iter().map(|u| u.name.clone()))
                    .collect();
                // Each user once, in the order the request names them.
                let mut seen = std::collections::HashSet::new();
                users.retain(|u| seen.insert(u.clone()));
                return refuse(ResponseKind::AlterUserScramCredentials(
                    AlterUserScramCredentialsResponse::default().with_results(
                        users
                            .into_iter()
                            .map(|user| {
                                alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default()
                                    .with_user(user)
                                    .with_error_code(cluster_error)
                            })
                            .collect(),
                    ),
                ));
            }
            RequestKind::AlterUserScramCredentials(req)
        }
        other => {
            // An API without an arm: never served unchecked.
            tracing::error!(request = ?other, "no authorization rule for a served api");
            return Decision::Close;
        }
    };
    Decision::Handle(Box::new(body), denied)
}

/// Whether the principal may WRITE some topic (Kafka lets such principals be idempotent).
fn any_topic_write(guard: &Guard<'_>) -> bool {
    let acls = guard.broker.authorizer.current();
    let any = acls
        .bindings()
        .filter(|b| b.pattern.resource_type == ResourceType::Topic)
        .any(|b| guard.visible(Operation::Write, ResourceType::Topic, &b.pattern.name));
    any
}

fn config_allowed(guard: &Guard<'_>, resource_type: i8, name: &str, alter: bool) -> bool {
    let operation = if alter {
        Operation::AlterConfigs
    } else {
        Operation::DescribeConfigs
    };
    match resource_type {
        CONFIG_TOPIC => guard.topic(operation, name),
        CONFIG_BROKER | CONFIG_BROKER_LOGGER => guard.cluster(operation),
        // Unknown types are the handler's to refuse.
        _ => true,
    }
}

fn config_error(resource_type: i8) -> ResponseError {
    if resource_type == CONFIG_TOPIC {
        ResponseError::TopicAuthorizationFailed
    } else {
        ResponseError::ClusterAuthorizationFailed
    }
}
