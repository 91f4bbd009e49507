//! ListGroups, DescribeGroups, DeleteGroups and OffsetDelete: what admin tools ask a group
//! coordinator. Like Kafka, each broker answers for the groups it coordinates; admin clients
//! ask every broker for ListGroups and the coordinator for the rest.

use super::groups::check_coordinator;
use super::offsets::coordinator_of;
use super::Broker;
use crate::group::coordinator::GroupSummary;
use crate::group::state::Phase;
use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, GroupId, ListGroupsRequest, ListGroupsResponse, OffsetDeleteRequest,
    OffsetDeleteResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::ResponseError;
use skiff_tiering::group_offsets::{self, OffsetKey};
use std::collections::BTreeMap;

fn state_name(phase: Option<Phase>) -> &'static str {
    match phase {
        Some(Phase::Empty) => "Empty",
        Some(Phase::PreparingRebalance) => "PreparingRebalance",
        Some(Phase::CompletingRebalance) => "CompletingRebalance",
        Some(Phase::Stable) => "Stable",
        None => "Dead",
    }
}

/// Groups this broker coordinates: those with members here, and those with committed offsets.
async fn coordinated(
    broker: &Broker,
) -> Result<BTreeMap<String, Option<GroupSummary>>, ResponseError> {
    let mut groups: BTreeMap<String, Option<GroupSummary>> = broker
        .groups
        .summaries()
        .into_iter()
        .map(|s| (s.group_id.clone(), Some(s)))
        .collect();
    let with_offsets = group_offsets::groups(&*broker.store)
        .await
        .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
    for group in with_offsets {
        if groups.contains_key(&group) {
            continue;
        }
        if matches!(coordinator_of(broker, &group).await, Ok(Some(id)) if id == broker.node.node_id)
        {
            groups.insert(group, None);
        }
    }
    Ok(groups)
}

/// The group type (KIP-848) of every group Skiff coordinates.
const GROUP_TYPE_CLASSIC: &str = "classic";

pub async fn list(broker: &Broker, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let groups = match coordinated(broker).await {
        Ok(groups) => groups,
        Err(code) => return ListGroupsResponse::default().with_error_code(code.code()),
    };
    let listed = groups
        .into_iter()
        .map(|(id, summary)| {
            let state = state_name(summary.as_ref().map(|s| s.phase).or(Some(Phase::Empty)));
            let protocol_type = summary
                .map(|s| s.protocol_type)
                .unwrap_or_else(|| "consumer".to_owned());
            (id, protocol_type, state)
        })
        .filter(|(_, _, state)| {
            request.states_filter.is_empty()
                || request.states_filter.iter().any(|f| f.as_str() == *state)
        })
        // v5: every group here runs the classic protocol (Kafka matches the type case-blind).
        .filter(|_| {
            request.types_filter.is_empty()
                || request
                    .types_filter
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(GROUP_TYPE_CLASSIC))
        })
        .map(|(id, protocol_type, state)| {
            let group = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(id)))
                .with_protocol_type(StrBytes::from_string(protocol_type));
            let group = if version >= 5 {
                group.with_group_type(StrBytes::from_static_str(GROUP_TYPE_CLASSIC))
            } else {
                group
            };
            if version >= 4 {
                group.with_group_state(StrBytes::from_static_str(state))
            } else {
                group
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}

pub async fn describe(
    broker: &Broker,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut described = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        let mut answer = DescribedGroup::default().with_group_id(group_id.clone());
        if let Err(code) = check_coordinator(broker, &group_id).await {
            described.push(answer.with_error_code(code.code()));
            continue;
        }
        match broker.groups.summary(&group_id) {
            None => {
                // Kafka describes a group it has no members for as Empty (offsets only) or Dead.
                let has_offsets = group_offsets::fetch_all(&*broker.store, &group_id)
                    .await
                    .is_ok_and(|o| !o.is_empty());
                if !has_offsets && version >= 6 {
                    // KIP-1043: from v6 an unknown group is an error, not a Dead group.
                    described.push(
                        answer
                            .with_error_code(ResponseError::GroupIdNotFound.code())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "group {} not found",
                                group_id.as_str()
                            )))),
                    );
                    continue;
                }
                answer.group_state =
                    StrBytes::from_static_str(if has_offsets { "Empty" } else { "Dead" });
                if has_offsets {
                    answer.protocol_type = StrBytes::from_static_str("consumer");
                }
            }
            Some(summary) => {
                answer.group_state = StrBytes::from_static_str(state_name(Some(summary.phase)));
                answer.protocol_type = StrBytes::from_string(summary.protocol_type);
                answer.protocol_data = StrBytes::from_string(summary.protocol);
                answer.members = summary
                    .members
                    .into_iter()
                    .map(|m| {
                        let member = DescribedGroupMember::default()
                            .with_member_id(StrBytes::from_string(m.member_id))
                            .with_client_id(StrBytes::from_string(m.client_id))
                            .with_client_host(StrBytes::from_string(m.client_host))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment);
                        if version >= 4 {
                            member.with_group_instance_id(m.instance_id.map(StrBytes::from_string))
                        } else {
                            member
                        }
                    })
                    .collect();
            }
        }
        described.push(answer);
    }
    DescribeGroupsResponse::default().with_groups(described)
}

pub async fn delete(broker: &Broker, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let code = match check_coordinator(broker, &group_id).await {
            Err(code) => code.code(),
            Ok(())
                if broker
                    .groups
                    .summary(&group_id)
                    .is_some_and(|s| !s.members.is_empty()) =>
            {
                ResponseError::NonEmptyGroup.code()
            }
            Ok(()) => match group_offsets::fetch_all(&*broker.store, &group_id).await {
                Ok(offsets) if offsets.is_empty() && broker.groups.summary(&group_id).is_none() => {
                    ResponseError::GroupIdNotFound.code()
                }
                // Forgets it from memory too, so it is not listed until it is used again.
                Ok(_) if !broker.groups.forget_if_empty(&group_id) => {
                    ResponseError::NonEmptyGroup.code()
                }
                Ok(_) => match group_offsets::delete_group(&*broker.store, &group_id).await {
                    Ok(()) => 0,
                    Err(_) => ResponseError::CoordinatorNotAvailable.code(),
                },
                Err(_) => ResponseError::CoordinatorNotAvailable.code(),
            },
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// Topics the group's current members subscribe to; `None` when that is unknown (a group not
/// using the consumer protocol, or a subscription that does not decode).
fn subscribed_topics(summary: &GroupSummary) -> Option<Vec<String>> {
    if summary.protocol_type != "consumer" {
        return None;
    }
    let mut topics = Vec::new();
    for member in &summary.members {
        if member.metadata.len() < 2 {
            return None;
        }
        let version = i16::from_be_bytes([member.metadata[0], member.metadata[1]]);
        let mut buf: Bytes = member.metadata.slice(2..);
        let subscription = ConsumerProtocolSubscription::decode(&mut buf, version).ok()?;
        topics.extend(subscription.topics.into_iter().map(|t| t.to_string()));
    }
    Some(topics)
}

pub async fn delete_offsets(broker: &Broker, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    if let Err(code) = check_coordinator(broker, &request.group_id).await {
        return OffsetDeleteResponse::default().with_error_code(code.code());
    }
    // As Kafka: an empty group loses any offsets; a live consumer group keeps those of topics
    // it subscribes to; a live group whose subscriptions are unknown keeps all (NON_EMPTY_GROUP).
    let subscribed = match broker
        .groups
        .summary(&request.group_id)
        .filter(|s| !s.members.is_empty())
    {
        None => Vec::new(),
        Some(summary) => match subscribed_topics(&summary) {
            Some(topics) => topics,
            None => {
                return OffsetDeleteResponse::default()
                    .with_error_code(ResponseError::NonEmptyGroup.code())
            }
        },
    };
    let mut deletable = Vec::new();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let busy = subscribed.iter().any(|t| t.as_str() == topic.name.as_str());
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                if !busy {
                    deletable.push(OffsetKey {
                        topic: topic.name.to_string(),
                        partition: p.partition_index,
                    });
                }
                let code = if busy {
                    ResponseError::GroupSubscribedToTopic.code()
                } else {
                    0
                };
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
            })
            .collect();
        topics.push(
            OffsetDeleteResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions),
        );
    }
    if group_offsets::delete(&*broker.store, &request.group_id, &deletable)
        .await
        .is_err()
    {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code());
    }
    OffsetDeleteResponse::default().with_topics(topics)
}
