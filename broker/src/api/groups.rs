//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup: the network side of the group coordinator
//! (`crate::group`). Only a group's coordinator answers; other brokers say NOT_COORDINATOR.

use super::offsets::coordinator_of;
use super::Broker;
use crate::group::coordinator::SyncMember;
use crate::group::state::{GroupError, JoinRequest};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

pub fn group_error(error: GroupError) -> ResponseError {
    match error {
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
    }
}

/// NOT_COORDINATOR unless this broker coordinates `group` (COORDINATOR_NOT_AVAILABLE when the
/// broker list cannot be read).
pub async fn check_coordinator(broker: &Broker, group: &str) -> Result<(), ResponseError> {
    match coordinator_of(broker, group).await {
        Ok(Some(id)) if id == broker.node.node_id => Ok(()),
        Ok(_) => Err(ResponseError::NotCoordinator),
        Err(_) => Err(ResponseError::CoordinatorNotAvailable),
    }
}

fn text(s: String) -> StrBytes {
    StrBytes::from_string(s)
}

pub async fn join(
    broker: &Broker,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
) -> JoinGroupResponse {
    let failed = |code: ResponseError| {
        let response = JoinGroupResponse::default()
            .with_error_code(code.code())
            .with_generation_id(-1)
            .with_member_id(request.member_id.clone());
        // Before v7 the protocol name is not nullable.
        if version < 7 {
            response.with_protocol_name(Some(StrBytes::default()))
        } else {
            response
        }
    };
    if let Err(code) = check_coordinator(broker, &request.group_id).await {
        return failed(code);
    }
    let join = JoinRequest {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: client_id.to_owned(),
        client_host: String::new(),
        session_timeout_ms: i64::from(request.session_timeout_ms),
        // v0 has no rebalance timeout: it is the session timeout.
        rebalance_timeout_ms: i64::from(if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        }),
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    match broker.groups.join(&request.group_id, join).await {
        Err(error) => failed(group_error(error)),
        Ok(Err(member_id)) => {
            failed(ResponseError::MemberIdRequired).with_member_id(text(member_id))
        }
        Ok(Ok(joined)) => {
            let response = JoinGroupResponse::default()
                .with_generation_id(joined.generation)
                .with_protocol_name(Some(text(joined.protocol)))
                .with_leader(text(joined.leader))
                .with_member_id(text(joined.member_id))
                .with_members(
                    joined
                        .members
                        .into_iter()
                        .map(|(id, instance, metadata)| {
                            let member = JoinGroupResponseMember::default()
                                .with_member_id(text(id))
                                .with_metadata(metadata);
                            if version >= 5 {
                                member.with_group_instance_id(instance.map(text))
                            } else {
                                member
                            }
                        })
                        .collect(),
                );
            if version >= 7 {
                response.with_protocol_type(Some(text(joined.protocol_type)))
            } else {
                response
            }
        }
    }
}

pub async fn sync(broker: &Broker, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    if let Err(code) = check_coordinator(broker, &request.group_id).await {
        return SyncGroupResponse::default().with_error_code(code.code());
    }
    let assignments = request
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let member = SyncMember {
        member_id: &request.member_id,
        instance_id: request.group_instance_id.as_deref(),
        generation: request.generation_id,
        protocol_type: request.protocol_type.as_deref(),
        protocol: request.protocol_name.as_deref(),
    };
    match broker
        .groups
        .sync(&request.group_id, member, assignments)
        .await
    {
        Ok((assignment, protocol_type, protocol)) => {
            let response = SyncGroupResponse::default().with_assignment(assignment);
            // v5 answers with the group's protocol type and name; earlier versions have none.
            if version >= 5 {
                response
                    .with_protocol_type(Some(text(protocol_type)))
                    .with_protocol_name(Some(text(protocol)))
            } else {
                response
            }
        }
        Err(error) => SyncGroupResponse::default().with_error_code(group_error(error).code()),
    }
}

pub async fn heartbeat(broker: &Broker, request: HeartbeatRequest) -> HeartbeatResponse {
    if let Err(code) = check_coordinator(broker, &request.group_id).await {
        return HeartbeatResponse::default().with_error_code(code.code());
    }
    match broker.groups.heartbeat(
        &request.group_id,
        &request.member_id,
        request.group_instance_id.as_deref(),
        request.generation_id,
    ) {
        Ok(()) => HeartbeatResponse::default(),
        Err(error) => HeartbeatResponse::default().with_error_code(group_error(error).code()),
    }
}

pub async fn leave(
    broker: &Broker,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    if let Err(code) = check_coordinator(broker, &request.group_id).await {
        return LeaveGroupResponse::default().with_error_code(code.code());
    }
    if version < 3 {
        return match broker
            .groups
            .leave(&request.group_id, &request.member_id, None)
        {
            Ok(()) => LeaveGroupResponse::default(),
            Err(error) => LeaveGroupResponse::default().with_error_code(group_error(error).code()),
        };
    }
    let members = request
        .members
        .iter()
        .map(|m| {
            let code = broker
                .groups
                .leave(
                    &request.group_id,
                    &m.member_id,
                    m.group_instance_id.as_deref(),
                )
                .err()
                .map_or(0, |e| group_error(e).code());
            MemberResponse::default()
                .with_member_id(m.member_id.clone())
                .with_group_instance_id(m.group_instance_id.clone())
                .with_error_code(code)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
