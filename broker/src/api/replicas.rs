//! Replica-management admin APIs, answered as Kafka answers for a cluster where every partition
//! has exactly one replica, its leader, and no broker has log directories.
//!
//! A partition's data lives in the object store and its leader is the live broker preferred by
//! rendezvous hashing (`cluster/assignment.rs`), claimed automatically, so:
//! - ElectLeaders: ELECTION_NOT_NEEDED for a partition with a live leader (the preferred broker
//!   claims it already), PREFERRED_LEADER_NOT_AVAILABLE / ELIGIBLE_LEADERS_NOT_AVAILABLE while it
//!   has none; a null partition list means every partition and, as in Kafka, lists only those
//!   whose election did not come out as "not needed".
//! - ListPartitionReassignments: never one in progress.
//! - AlterPartitionReassignments: moving replicas is refused with INVALID_REPLICA_ASSIGNMENT
//!   (asking for the current single replica is a no-op), cancelling gets
//!   NO_REASSIGNMENT_IN_PROGRESS.
//! - DescribeLogDirs: one virtual log dir, [`VIRTUAL_LOG_DIR`], holding the partitions this
//!   broker leads, each with its size in bytes (see `Log::size_bytes`) and offset lag 0.
//! - AlterReplicaLogDirs: LOG_DIR_NOT_FOUND for every partition.

use super::Broker;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
    AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, ElectLeadersRequest, ElectLeadersResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use skiff_tiering::cluster::{all_partition_states, membership::live_brokers};
use skiff_tiering::log::TopicPartition;
use std::collections::BTreeMap;

/// The one log dir DescribeLogDirs reports: not a path on this machine, but the shared object
/// store every broker's partitions live in.
pub const VIRTUAL_LOG_DIR: &str = "/skiff/object-store";

/// Why replicas cannot be moved, for every refusal.
const DISKLESS: &str = "skiff is diskless: each partition has one replica, its leader, chosen \
     among live brokers by rendezvous hashing; data lives in the object store, so there is \
     nothing to reassign";

/// ElectLeaders election types.
const ELECTION_PREFERRED: i8 = 0;

/// Every partition: topic name → (partition index → live leader, if any).
type Leaders = BTreeMap<String, BTreeMap<i32, Option<i32>>>;

async fn leaders(broker: &Broker) -> Result<Leaders, String> {
    let topics = broker
        .log
        .catalog()
        .list()
        .await
        .map_err(|e| e.to_string())?;
    let states = all_partition_states(&*broker.store)
        .await
        .map_err(|e| e.to_string())?;
    let live = live_brokers(&*broker.store)
        .await
        .map_err(|e| e.to_string())?;
    let mut leaders = Leaders::new();
    for topic in topics {
        let states = states.get(&topic.record.name);
        let partitions = (0..topic.record.partitions)
            .map(|p| {
                let leader = states
                    .and_then(|s| s.get(&p))
                    .map(|(state, _)| state.leader)
                    .filter(|leader| live.iter().any(|b| b.node_id == *leader));
                (p, leader)
            })
            .collect();
        leaders.insert(topic.record.name, partitions);
    }
    Ok(leaders)
}

fn text(message: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(message.into()))
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// One partition's election outcome (pure): Kafka's code and message.
fn election(leader: Option<Option<i32>>, election_type: i8) -> (ResponseError, String) {
    match leader {
        None => (
            ResponseError::UnknownTopicOrPartition,
            "unknown topic or partition".to_owned(),
        ),
        Some(Some(leader)) => (
            ResponseError::ElectionNotNeeded,
            format!("leader is already the preferred one: leader={leader}"),
        ),
        Some(None) if election_type == ELECTION_PREFERRED => (
            ResponseError::PreferredLeaderNotAvailable,
            "no live leader yet; the preferred live broker claims it shortly".to_owned(),
        ),
        Some(None) => (
            ResponseError::EligibleLeadersNotAvailable,
            "no live leader yet; the preferred live broker claims it shortly".to_owned(),
        ),
    }
}

pub async fn elect_leaders(
    broker: &Broker,
    request: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    let mut response = ElectLeadersResponse::default();
    let leaders = match leaders(broker).await {
        Ok(leaders) => leaders,
        Err(error) => {
            tracing::warn!(%error, "elect leaders: cannot read partitions");
            // v0 has no top-level error: each partition asked for carries it.
            let failed = |p: &i32| {
                PartitionResult::default()
                    .with_partition_id(*p)
                    .with_error_code(ResponseError::KafkaStorageError.code())
            };
            response.replica_election_results = request
                .topic_partitions
                .iter()
                .flatten()
                .map(|t| {
                    ReplicaElectionResult::default()
                        .with_topic(t.topic.clone())
                        .with_partition_result(t.partitions.iter().map(failed).collect())
                })
                .collect();
            if version >= 1 {
                response.error_code = ResponseError::KafkaStorageError.code();
            }
            return response;
        }
    };
    let requested: Vec<(String, Vec<i32>)> = match &request.topic_partitions {
        Some(topics) => topics
            .iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
            .collect(),
        None => leaders
            .iter()
            .map(|(name, partitions)| (name.clone(), partitions.keys().copied().collect()))
            .collect(),
    };
    let every = request.topic_partitions.is_none();
    for (name, partitions) in requested {
        let results: Vec<PartitionResult> = partitions
            .into_iter()
            .filter_map(|p| {
                let leader = leaders.get(&name).and_then(|ps| ps.get(&p)).copied();
                let (code, message) = election(leader, request.election_type);
                (!(every && code == ResponseError::ElectionNotNeeded)).then(|| {
                    PartitionResult::default()
                        .with_partition_id(p)
                        .with_error_code(code.code())
                        .with_error_message(text(message))
                })
            })
            .collect();
        if !results.is_empty() {
            response.replica_election_results.push(
                ReplicaElectionResult::default()
                    .with_topic(topic_name(&name))
                    .with_partition_result(results),
            );
        }
    }
    response
}

pub async fn list_reassignments(
    broker: &Broker,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let response = ListPartitionReassignmentsResponse::default();
    let Some(topics) = request.topics else {
        return response;
    };
    let leaders = match leaders(broker).await {
        Ok(leaders) => leaders,
        Err(error) => {
            return response
                .with_error_code(ResponseError::KafkaStorageError.code())
                .with_error_message(text(error))
        }
    };
    let unknown = topics.iter().find_map(|t| {
        t.partition_indexes
            .iter()
            .find(|p| {
                leaders
                    .get(t.name.as_str())
                    .is_none_or(|ps| !ps.contains_key(p))
            })
            .map(|p| format!("{}-{p}", t.name.as_str()))
    });
    match unknown {
        Some(partition) => response
            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
            .with_error_message(text(format!("unknown topic or partition: {partition}"))),
        None => response,
    }
}

/// One partition's answer to a reassignment (pure).
fn reassignment(
    leader: Option<Option<i32>>,
    replicas: Option<&[i32]>,
) -> Result<(), (ResponseError, String)> {
    match (leader, replicas) {
        (None, _) => Err((
            ResponseError::UnknownTopicOrPartition,
            "unknown topic or partition".to_owned(),
        )),
        (Some(_), None) => Err((
            ResponseError::NoReassignmentInProgress,
            "no reassignment in progress to cancel".to_owned(),
        )),
        (Some(Some(leader)), Some([only])) if *only == leader => Ok(()),
        (Some(_), Some(_)) => Err((ResponseError::InvalidReplicaAssignment, DISKLESS.into())),
    }
}

pub async fn alter_reassignments(
    broker: &Broker,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let response = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(request.allow_replication_factor_change);
    let leaders = match leaders(broker).await {
        Ok(leaders) => leaders,
        Err(error) => {
            return response
                .with_error_code(ResponseError::KafkaStorageError.code())
                .with_error_message(text(error))
        }
    };
    let responses = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let leader = leaders
                        .get(topic.name.as_str())
                        .and_then(|ps| ps.get(&p.partition_index))
                        .copied();
                    let replicas: Option<Vec<i32>> = p
                        .replicas
                        .as_ref()
                        .map(|r| r.iter().map(|id| id.0).collect());
                    let (code, message) = match reassignment(leader, replicas.as_deref()) {
                        Ok(()) => (0, None),
                        Err((code, message)) => (code.code(), text(message)),
                    };
                    ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                        .with_error_message(message)
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    response.with_responses(responses)
}

pub async fn describe_log_dirs(
    broker: &Broker,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let response = DescribeLogDirsResponse::default();
    let leaders = match leaders(broker).await {
        Ok(leaders) => leaders,
        Err(error) => {
            tracing::warn!(%error, "describe log dirs: cannot read partitions");
            // On the log dir, which every version carries (the top-level code is v3+).
            return response.with_results(vec![DescribeLogDirsResult::default()
                .with_error_code(ResponseError::KafkaStorageError.code())
                .with_log_dir(StrBytes::from_static_str(VIRTUAL_LOG_DIR))
                .with_total_bytes(-1)
                .with_usable_bytes(-1)]);
        }
    };
    let me = broker.node.node_id;
    let wanted = |name: &str, p: i32| match &request.topics {
        None => true,
        Some(topics) => topics
            .iter()
            .any(|t| t.topic.as_str() == name && t.partitions.contains(&p)),
    };
    let mut topics = Vec::new();
    for (name, partitions) in &leaders {
        let mut described = Vec::new();
        for (&p, leader) in partitions {
            if *leader != Some(me) || !wanted(name, p) {
                continue;
            }
            // A partition handed over meanwhile is no longer here: left out, as Kafka leaves
            // out replicas it does not host.
            let Ok(bytes) = broker.log.size_bytes(&TopicPartition::new(name, p)).await else {
                continue;
            };
            described.push(
                DescribeLogDirsPartition::default()
                    .with_partition_index(p)
                    .with_partition_size(i64::try_from(bytes).unwrap_or(i64::MAX))
                    .with_offset_lag(0)
                    .with_is_future_key(false),
            );
        }
        if !described.is_empty() {
            topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(topic_name(name))
                    .with_partitions(described),
            );
        }
    }
    response.with_results(vec![DescribeLogDirsResult::default()
        .with_error_code(0)
        .with_log_dir(StrBytes::from_static_str(VIRTUAL_LOG_DIR))
        .with_topics(topics)
        // An object store has no volume size to report.
        .with_total_bytes(-1)
        .with_usable_bytes(-1)])
}

pub fn alter_replica_log_dirs(request: AlterReplicaLogDirsRequest) -> AlterReplicaLogDirsResponse {
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for dir in request.dirs {
        for topic in dir.topics {
            by_topic
                .entry(topic.name.0.to_string())
                .or_default()
                .extend(topic.partitions);
        }
    }
    let results = by_topic
        .into_iter()
        .map(|(name, partitions)| {
            AlterReplicaLogDirTopicResult::default()
                .with_topic_name(topic_name(&name))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|p| {
                            AlterReplicaLogDirPartitionResult::default()
                                .with_partition_index(p)
                                .with_error_code(ResponseError::LogDirNotFound.code())
                        })
                        .collect(),
                )
        })
        .collect();
    AlterReplicaLogDirsResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elections_and_reassignments_follow_kafka_codes() {
        assert_eq!(
            election(Some(Some(1)), 0).0,
            ResponseError::ElectionNotNeeded
        );
        assert_eq!(
            election(Some(None), 0).0,
            ResponseError::PreferredLeaderNotAvailable
        );
        assert_eq!(
            election(Some(None), 1).0,
            ResponseError::EligibleLeadersNotAvailable
        );
        assert_eq!(election(None, 0).0, ResponseError::UnknownTopicOrPartition);
        let code = |r: Result<(), (ResponseError, String)>| r.map_err(|(code, _)| code);
        assert_eq!(
            code(reassignment(Some(Some(1)), None)),
            Err(ResponseError::NoReassignmentInProgress)
        );
        assert_eq!(code(reassignment(Some(Some(1)), Some(&[1]))), Ok(()));
        assert_eq!(
            code(reassignment(Some(Some(1)), Some(&[1, 2]))),
            Err(ResponseError::InvalidReplicaAssignment)
        );
        assert_eq!(
            code(reassignment(Some(None), Some(&[2]))),
            Err(ResponseError::InvalidReplicaAssignment)
        );
        assert_eq!(
            code(reassignment(None, Some(&[1]))),
            Err(ResponseError::UnknownTopicOrPartition)
        );
    }
}
