//! Authorization of every API (Kafka's `KafkaApis` checks), before its handler runs.
//!
//! [`before`] looks at a request with the session's principal: a request wholly refused gets
//! its error response at once; items the principal may not touch (topics, groups,
//! transactional ids, config resources) are taken out of the request and remembered, and
//! [`after`] adds them to the handler's response with Kafka's error (TOPIC_AUTHORIZATION_FAILED,
//! GROUP_AUTHORIZATION_FAILED, TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
//! CLUSTER_AUTHORIZATION_FAILED). Produce and Fetch check their topics where they resolve them
//! (`produce::stage`, `fetch::handle`), Metadata where it lists topics.
//!
//! Every API key the broker serves has an arm here: one added without one does not compile.
//!
//! Every refusal a client hears of is logged when its request is done (Kafka's authorizer log:
//! principal, host, API, operation and resources, at info) and counted
//! (`skiff_authorization_denials_total` by operation and resource type). Checks that only
//! narrow a listing (all topics in Metadata, ListGroups, ListTransactions, an OffsetFetch of
//! all topics) go through [`Guard::visible`] and are not: they are no one's failure, as in Kafka
//! (`logIfDenied = false`).

mod after;
mod before;

pub use after::after;
pub use before::before;

use super::Broker;
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::authorizer::Access;
use crate::security::Session;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// Config resource types of DescribeConfigs and (Incremental)AlterConfigs.
const CONFIG_TOPIC: i8 = 2;
const CONFIG_BROKER: i8 = 4;
const CONFIG_BROKER_LOGGER: i8 = 8;
/// FindCoordinator's key type of transactional ids.
const KEY_TYPE_TRANSACTION: i8 = 1;

/// Refused resources of one request named in its log line at most.
const DENIALS_LOGGED_MAX: usize = 8;

/// The permission checks of one request.
pub struct Guard<'a> {
    broker: &'a Broker,
    api: ApiKey,
    /// The principal, host and ACLs, looked up once per request.
    access: Access,
    /// Checks refused, for the log and the metric (at most [`DENIALS_LOGGED_MAX`] named).
    denials: std::sync::Mutex<Denials>,
}

#[derive(Default)]
struct Denials {
    count: usize,
    named: Vec<(Operation, ResourceType, String)>,
}

impl<'a> Guard<'a> {
    pub fn new(broker: &'a Broker, session: &Session, api: ApiKey) -> Guard<'a> {
        Guard {
            broker,
            api,
            access: broker.authorizer.access(session),
            denials: Default::default(),
        }
    }

    /// Whether the operation is allowed; a refusal is logged and counted when the request is
    /// done.
    pub fn allows(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        let allowed = self.access.allows(operation, resource_type, name);
        if !allowed {
            self.deny(operation, resource_type, name);
        }
        allowed
    }

    /// Records a refusal the client is told of (for checks with alternatives, made with
    /// [`Guard::visible`] until none is left).
    fn deny(&self, operation: Operation, resource_type: ResourceType, name: &str) {
        self.broker
            .metrics
            .authorization_denied(operation.name(), resource_type.name());
        let mut denials = self.denials.lock().unwrap_or_else(|e| e.into_inner());
        denials.count += 1;
        if denials.named.len() < DENIALS_LOGGED_MAX {
            denials
                .named
                .push((operation, resource_type, name.to_owned()));
        }
    }

    /// Whether a listing shows the resource: checked like [`Guard::allows`], but a refusal
    /// only narrows the listing and is neither logged nor counted.
    pub fn visible(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        self.access.allows(operation, resource_type, name)
    }

    pub fn topic(&self, operation: Operation, name: &str) -> bool {
        self.allows(operation, ResourceType::Topic, name)
    }

    pub fn group(&self, operation: Operation, name: &str) -> bool {
        self.allows(operation, ResourceType::Group, name)
    }

    pub fn transactional_id(&self, operation: Operation, name: &str) -> bool {
        self.allows(operation, ResourceType::TransactionalId, name)
    }

    pub fn cluster(&self, operation: Operation) -> bool {
        self.allows(operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// CREATE on the cluster or on the topic (a refusal names the topic).
    pub fn create_topic(&self, name: &str) -> bool {
        self.visible(Operation::Create, ResourceType::Cluster, CLUSTER_NAME)
            || self.topic(Operation::Create, name)
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let denials = std::mem::take(self.denials.get_mut().unwrap_or_else(|e| e.into_inner()));
        if denials.count == 0 {
            return;
        }
        let (principal, host) = match &self.access {
            Access::Checked {
                principal, host, ..
            } => (principal.as_str(), host.as_str()),
            _ => ("", ""),
        };
        let resources: Vec<String> = denials
            .named
            .iter()
            .map(|(operation, resource_type, name)| {
                format!("{} {}:{name}", operation.name(), resource_type.name())
            })
            .collect();
        tracing::info!(
            target: "skiff::authorizer",
            principal,
            host,
            api = ?self.api,
            denied = denials.count,
            resources = resources.join(", "),
            "authorization denied"
        );
    }
}

/// Items taken out of a request, to be answered with an error.
#[derive(Debug, Default)]
pub struct Denied {
    /// (topic, partitions, error code)
    topics: Vec<(TopicName, Vec<i32>, ResponseError)>,
    /// (name, resource or key type, error code): groups, transactional ids, config resources.
    names: Vec<(StrBytes, i8, ResponseError)>,
    /// OffsetFetch: groups asked for all their topics (answered with those the principal may
    /// describe), and topics refused within a group (v8+).
    all_topics_of: Vec<StrBytes>,
    group_topics: Vec<(StrBytes, TopicName, Vec<i32>)>,
}

impl Denied {
    fn is_empty(&self) -> bool {
        self.topics.is_empty()
            && self.names.is_empty()
            && self.all_topics_of.is_empty()
            && self.group_topics.is_empty()
    }
}

/// What to do with a request.
pub enum Decision {
    /// Handle it (with items taken out, if any) and add them to the answer with [`after`].
    Handle(Box<RequestKind>, Denied),
    /// Answer with this error response.
    Refuse(Box<ResponseKind>),
    /// Close the connection (an API without a rule: never served unchecked).
    Close,
}

fn offset_fetch_topic(
    name: TopicName,
    partitions: &[i32],
    error: ResponseError,
) -> offset_fetch_response::OffsetFetchResponseTopic {
    offset_fetch_response::OffsetFetchResponseTopic::default()
        .with_name(name)
        .with_partitions(
            partitions
                .iter()
                .map(|p| {
                    offset_fetch_response::OffsetFetchResponsePartition::default()
                        .with_partition_index(*p)
                        .with_committed_offset(-1)
                        .with_error_code(error.code())
                })
                .collect(),
        )
}

fn offset_commit_topic(
    name: TopicName,
    partitions: Vec<i32>,
    error: ResponseError,
) -> offset_commit_response::OffsetCommitResponseTopic {
    offset_commit_response::OffsetCommitResponseTopic::default()
        .with_name(name)
        .with_partitions(
            partitions
                .into_iter()
                .map(|p| {
                    offset_commit_response::OffsetCommitResponsePartition::default()
                        .with_partition_index(p)
                        .with_error_code(error.code())
                })
                .collect(),
        )
}
