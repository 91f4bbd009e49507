//! Kafka request handling: the version table advertised by ApiVersions and dispatch to one
//! module per API (frames to requests and responses to frames: `codec`).
//!
//! Every codec comes from the `kafka-protocol` crate. A request whose API key or version is not
//! in [`SUPPORTED`] closes the connection, as Kafka does, except ApiVersions, which gets a v0
//! error response so the client can retry with a version we speak.

mod acls;
mod alter_configs;
mod api_versions;
pub mod authz;
mod codec;
mod configs;
mod delete_records;
mod errors;
mod fetch;
mod group_admin;
mod groups;
mod list_offsets;
mod metadata;
mod offsets;
mod produce;
mod producer_ids;
mod records;
mod replicas;
mod scram_credentials;
mod topics;
mod txn;
mod txn_admin;

#[cfg(test)]
use codec::{body_size_hint, RESPONSE_HEADER_BYTES_MAX};
#[cfg(test)]
pub use codec::{decode_request, DecodeError};
pub use codec::{decode_request_within, encode_fetch_response, encode_response, Decoded, Request};
pub use configs::{retention, StaticBrokerConfigs};
pub use offsets::coordinator;
pub use producer_ids::ProducerIds;

use crate::config::TimestampType;
use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind, TopicName};
use skiff_tiering::catalog::{CatalogError, Topic};
use skiff_tiering::cluster::{all_partition_states, partition_states, PartitionStates};
use skiff_tiering::metadata::{MetadataError, MetadataStore};
use skiff_tiering::Log;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// The APIs and versions this broker implements: exactly what ApiVersions advertises.
///
/// Produce stays at min 3 and Fetch at min 4: librdkafka < 2.11 decides which compression codecs
/// the broker supports by probing old versions, and Kafka keeps these minimums for that reason.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    // v12 only changes transaction semantics (KIP-890); v13 names topics by id.
    (ApiKey::Produce, 3, 13),
    // v13+ names topics by id; v15, v17 and v18 add only followers' fields; v16's leader hints
    // (KIP-951) are optional tagged fields, left out.
    (ApiKey::Fetch, 4, 18),
    // v8-v10: earliest-local and latest-tiered queries, a remote-lookup timeout (KIP-405/1005).
    (ApiKey::ListOffsets, 1, 10),
    // v13 adds a top-level error code, always 0 here.
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    // v5 only changes transaction semantics (KIP-890).
    (ApiKey::InitProducerId, 0, 5),
    // v4+ batch transactions and may only verify (KIP-890, broker to coordinator; Skiff's
    // leaders verify through the store, but tools may ask); v5 only lets answers say
    // TRANSACTION_ABORTABLE, which Skiff never does.
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    // v4 adds TRANSACTION_ABORTABLE, v5 transaction version 2 (KIP-890): not offered.
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    // KIP-664's hanging-transaction tools; ListTransactions v1 filters by duration, v2 by a
    // transactional-id pattern.
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    // v5 adds an error code for transactions; v6 (share groups) is not offered.
    (ApiKey::FindCoordinator, 0, 5),
    // v9 (OffsetCommit, OffsetFetch) is v8 for classic groups; member epochs are KIP-848's.
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    // v8 adds a reason, v9 a skip-assignment flag that is never set for classic members.
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::AlterReplicaLogDirs, 1, 2),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    // v0: bare SASL tokens follow instead of SaslAuthenticate (librdkafka < 2.10 only
    // counts on SASL handshakes when v0 is listed).
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

pub fn supported_range(api_key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(key, _, _)| *key == api_key)
        .map(|(_, min, max)| (*min, *max))
}

/// This broker, as other brokers and clients know it (its address is in its membership record).
#[derive(Debug, Clone)]
pub struct Node {
    pub node_id: i32,
    /// Where this broker, when it leads a partition, sends consumers that name their rack.
    pub replica_selector: crate::config::ReplicaSelector,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub connection_max_inflight_requests: usize,
    pub socket_request_max_bytes: usize,
    pub message_max_bytes: usize,
    pub fetch_max_bytes: usize,
    pub connections_max_idle: std::time::Duration,
    /// A connection whose client reads nothing of a response for this long is closed.
    pub connection_write_timeout: std::time::Duration,
    /// Most bytes of metadata one committed offset may carry (`offset.metadata.max.bytes`).
    pub offset_metadata_max_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct TopicDefaults {
    pub auto_create_topics_enable: bool,
    pub num_partitions: i32,
    pub message_timestamp_type: TimestampType,
    /// `log.retention.ms` and `log.retention.bytes`: what topics without their own keep.
    pub retention: skiff_tiering::log::Retention,
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct Broker {
    pub log: Log,
    pub groups: Arc<crate::group::coordinator::Coordinator>,
    pub store: Arc<dyn MetadataStore>,
    pub node: Node,
    pub cluster_id: String,
    pub limits: Limits,
    /// What requests and Fetch responses may hold in memory (see `crate::memory`).
    pub budgets: Arc<crate::memory::Budgets>,
    pub topic_defaults: TopicDefaults,
    /// Settings DescribeConfigs reports for the broker resource beyond `limits` and defaults.
    pub static_configs: StaticBrokerConfigs,
    pub producer_ids: Arc<ProducerIds>,
    /// The transaction coordinator of the transactional ids this broker coordinates.
    pub txn: Arc<crate::txn::Coordinator>,
    /// The latest cluster view the controller read (brokers, topics, leaders).
    pub view: skiff_tiering::cluster::view::ViewCell,
    /// Requests and bytes to the object store, by operation (this process: broker and, when
    /// embedded, compactor).
    pub object_store_counts: Arc<skiff_tiering::metered::ObjectStoreCounts>,
    /// Requests to the metadata store, by kind (this process).
    pub metadata_counts: Arc<skiff_tiering::metadata::metered::MetadataCounts>,
    /// Producers' windows of requests in flight: when all are full, flush without the linger.
    pub windows: Arc<crate::windows::ProduceWindows>,
    /// Buffered bytes from which a flush skips the linger when every window is full (0: never).
    pub flush_window_min_bytes: usize,
    /// What `/metrics` exports (see `crate::metrics`).
    pub metrics: crate::metrics::Metrics,
    /// The compactor this process runs (the embedded default), for `/metrics`.
    pub compactor: Option<Arc<skiff_compactor::Compactor>>,
    /// SASL logins of the SASL listeners.
    pub sasl: Arc<crate::security::sasl::Authenticator>,
    /// ACLs and the decisions on them (`--authorizer`).
    pub authorizer: Arc<crate::security::authorizer::Authorizer>,
}

impl Broker {
    /// The topic, created with defaults first when auto-creation is on and `may_create` agrees.
    async fn topic_or_create(
        &self,
        name: &str,
        may_create: impl FnOnce() -> bool,
    ) -> Result<Option<Topic>, CatalogError> {
        if let Some(topic) = self.log.catalog().get(name).await? {
            return Ok(Some(topic));
        }
        // Asked (an ACL check, logged if refused) only when a topic would be created.
        if !(self.topic_defaults.auto_create_topics_enable && may_create()) {
            return Ok(None);
        }
        let now = self.log.clock().now_ms();
        match self
            .log
            .catalog()
            .create(
                name,
                self.topic_defaults.num_partitions,
                BTreeMap::new(),
                now,
            )
            .await
        {
            Ok(topic) => {
                self.view.invalidate();
                tracing::info!(topic = name, "auto-created topic");
                self.wait_for_leaders(std::slice::from_ref(&topic), AUTO_CREATE_LEADER_WAIT)
                    .await;
                Ok(Some(topic))
            }
            Err(CatalogError::TopicAlreadyExists(_)) => self.log.catalog().get(name).await,
            Err(error) => Err(error),
        }
    }
}

impl Broker {
    /// The names of the topics with these ids (Fetch v13+, Produce v13 name topics by id), from
    /// the controller's view when it is fresh, else from one catalog read for the whole
    /// request. An id missing from the answer names no topic (or one created so recently that
    /// the view does not have it yet; clients retry UNKNOWN_TOPIC_ID).
    async fn topic_names_by_id(
        &self,
        ids: impl IntoIterator<Item = uuid::Uuid>,
    ) -> Result<HashMap<uuid::Uuid, TopicName>, CatalogError> {
        let ids: Vec<uuid::Uuid> = ids.into_iter().filter(|id| !id.is_nil()).collect();
        let mut names = HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(names);
        }
        let name = |n: &str| TopicName(kafka_protocol::protocol::StrBytes::from_string(n.into()));
        match self.view.latest(TOPIC_ID_VIEW_MAX_AGE) {
            Some(view) => {
                for id in ids {
                    if let Some(found) = view.names_by_id.get(&id.simple().to_string()) {
                        names.insert(id, name(found));
                    }
                }
            }
            None => {
                let by_id: HashMap<String, String> = self
                    .log
                    .catalog()
                    .list()
                    .await?
                    .into_iter()
                    .map(|t| (t.record.id, t.record.name))
                    .collect();
                for id in ids {
                    if let Some(found) = by_id.get(&id.simple().to_string()) {
                        names.insert(id, name(found));
                    }
                }
            }
        }
        Ok(names)
    }
}

/// A controller view older than this is not used to resolve topic ids.
const TOPIC_ID_VIEW_MAX_AGE: Duration = Duration::from_secs(2);
/// A controller view older than this is not used to choose transaction coordinators.
const LIVE_BROKERS_VIEW_MAX_AGE: Duration = Duration::from_secs(2);

impl Broker {
    /// The live brokers, from the controller's view when it is fresh, else read from the
    /// store. For choosing transaction coordinators: a view a moment old can only make two
    /// brokers both believe they coordinate an id, and every transition is fenced on the id's
    /// record anyway.
    async fn recent_live_brokers(
        &self,
    ) -> Result<
        Vec<skiff_tiering::keys::BrokerRecord>,
        skiff_tiering::cluster::membership::MembershipError,
    > {
        match self.view.latest(LIVE_BROKERS_VIEW_MAX_AGE) {
            Some(view) => Ok(view.brokers.clone()),
            None => skiff_tiering::cluster::membership::live_brokers(&*self.store).await,
        }
    }
}

/// How long an auto-created topic waits for its partitions to get leaders before the request
/// that created it is answered (clients retry past that anyway).
const AUTO_CREATE_LEADER_WAIT: Duration = Duration::from_secs(2);

impl Broker {
    /// Waits (bounded) until every partition of a new topic has a live leader, as Kafka's
    /// CreateTopics does, so clients do not start with a round of LEADER_NOT_AVAILABLE.
    /// Waits (up to `wait`, all topics together) until every partition of `topics` has a live
    /// leader, so clients that produce right after creating a topic find one.
    pub async fn wait_for_leaders(&self, topics: &[Topic], wait: Duration) {
        /// Up to this many topics are read one small range each; more, one range of all.
        const PER_TOPIC_READS_MAX: usize = 8;
        let few = topics.len() <= PER_TOPIC_READS_MAX;
        let deadline = tokio::time::Instant::now() + wait;
        while !topics.is_empty() && tokio::time::Instant::now() < deadline {
            let live = skiff_tiering::cluster::membership::live_brokers(&*self.store).await;
            if let (Ok(live), Ok(states)) = (live, self.states_of(topics, few).await) {
                let led = topics.iter().all(|topic| {
                    let states = states.get(&topic.record.name);
                    (0..topic.record.partitions).all(|p| {
                        states
                            .and_then(|s| s.get(&p))
                            .is_some_and(|(s, _)| live.iter().any(|b| b.node_id == s.leader))
                    })
                });
                if led {
                    return;
                }
            }
            let pause_ms = if few { 20 } else { 100 };
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
        if !topics.is_empty() {
            tracing::info!(
                topics = topics.len(),
                "partitions still without leaders; clients will retry"
            );
        }
    }

    /// The partition states of `topics`, by topic name.
    async fn states_of(
        &self,
        topics: &[Topic],
        per_topic: bool,
    ) -> Result<HashMap<String, PartitionStates>, MetadataError> {
        if !per_topic {
            return all_partition_states(&*self.store).await;
        }
        let mut states = HashMap::with_capacity(topics.len());
        for topic in topics {
            let read = partition_states(&*self.store, &topic.record.name).await?;
            states.insert(topic.record.name.clone(), read);
        }
        Ok(states)
    }
}

/// What the connection does after a request was handled.
#[derive(Debug)]
pub enum Reply {
    /// The response (the concatenation of its parts: see [`encode_fetch_response`]), and the
    /// memory it holds until it has been written.
    Respond(Vec<Bytes>, crate::memory::Held),
    /// Kafka sends nothing back (Produce with acks=0).
    Nothing,
    /// The response could not be produced; the connection is closed so the client notices.
    Close,
}

/// A request after the part of its handling that must happen in request order.
#[derive(Debug)]
pub struct Staged {
    header: RequestHeader,
    api_key: ApiKey,
    body: StagedBody,
    /// When the request was read (its latency in `/metrics` runs from here).
    started: tokio::time::Instant,
}

enum StagedBody {
    Produce(produce::Staged),
    Other(Box<RequestKind>),
}

impl std::fmt::Debug for StagedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StagedBody::Produce(_) => f.write_str("Produce(staged)"),
            StagedBody::Other(body) => body.fmt(f),
        }
    }
}

impl Staged {
    /// For a produce request that will be answered: whether its producer is idempotent and
    /// the records bytes it queued (see `crate::windows`).
    pub fn produce_window(&self) -> Option<(bool, usize)> {
        match &self.body {
            StagedBody::Produce(staged) => staged.window(),
            StagedBody::Other(_) => None,
        }
    }
}

/// The in-order part of handling: produce data is validated and queued in the log here, so
/// pipelined produce requests on one connection keep their order. Everything else is deferred
/// to [`complete`], which connections run concurrently.
pub async fn stage(
    broker: &Broker,
    request: Box<Request>,
    session: &crate::security::Session,
) -> Staged {
    let started = tokio::time::Instant::now();
    let Request {
        header,
        api_key,
        body,
    } = *request;
    let body = match body {
        RequestKind::Produce(req) => {
            StagedBody::Produce(produce::stage(broker, req, session).await)
        }
        other => StagedBody::Other(Box::new(other)),
    };
    Staged {
        header,
        api_key,
        body,
        started,
    }
}

/// Handles one request from start to end (tests; connections stage and complete separately).
#[cfg(test)]
pub async fn handle(broker: &Broker, request: Box<Request>) -> Reply {
    let session = test_session(crate::config::SecurityProtocol::Plaintext);
    let staged = stage(broker, request, &session).await;
    complete(broker, staged, &broker.budgets.connection(), &session).await
}

/// A connection's session on a listener named after its protocol (tests).
#[cfg(test)]
pub fn test_session(protocol: crate::config::SecurityProtocol) -> crate::security::Session {
    crate::security::Session::new(
        Arc::new(crate::security::ListenerInfo {
            name: protocol.name().into(),
            protocol,
        }),
        "127.0.0.1:1".parse().expect("an address"),
    )
}

/// The concurrent part of handling: waits for commits, long polls, and answers.
pub async fn complete(
    broker: &Broker,
    staged: Staged,
    connection: &crate::memory::ConnectionMemory,
    session: &crate::security::Session,
) -> Reply {
    let (api_key, started) = (staged.api_key, staged.started);
    let reply = answer(broker, staged, connection, session).await;
    broker.metrics.request(api_name(api_key), started.elapsed());
    reply
}

/// Kafka's name of an API (`Produce`, `FindCoordinator`), as in its request metrics: named
/// once per API, not per request.
fn api_name(api_key: ApiKey) -> &'static str {
    static NAMES: std::sync::OnceLock<std::collections::HashMap<ApiKey, &'static str>> =
        std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| {
            ApiKey::iter()
                .map(|key| (key, &*Box::leak(format!("{key:?}").into_boxed_str())))
                .collect()
        })
        .get(&api_key)
        .copied()
        .unwrap_or("Unknown")
}

async fn answer(
    broker: &Broker,
    staged: Staged,
    connection: &crate::memory::ConnectionMemory,
    session: &crate::security::Session,
) -> Reply {
    let Staged {
        header,
        api_key,
        body,
        started,
    } = staged;
    let version = header.request_api_version;
    let span = tracing::debug_span!(
        "request",
        api = ?api_key,
        version,
        correlation_id = header.correlation_id,
        client_id = header.client_id.as_deref().unwrap_or(""),
        listener = %session.listener.name,
        principal = %session.principal().map(|p| p.to_string()).unwrap_or_default(),
    );
    let body = match body {
        StagedBody::Produce(staged) => {
            let response = produce::complete(broker, staged, started).await;
            return match response {
                None => Reply::Nothing,
                Some(response) => respond(
                    api_key,
                    version,
                    header.correlation_id,
                    &ResponseKind::Produce(response),
                    crate::memory::Held::default(),
                ),
            };
        }
        StagedBody::Other(body) => *body,
    };
    // Boxed: every API's handler state lives in this one future, kilobytes, and Produce (the
    // request that comes thousands of times a second) must not allocate that for each task.
    let (response, held) = Box::pin(
        handle_other(broker, &header, api_key, body, connection, session).instrument(span),
    )
    .await;
    let Some(response) = response else {
        return Reply::Close;
    };
    for code in errors::response_errors(&response) {
        broker.metrics.partition_error(api_name(api_key), code);
    }
    respond(api_key, version, header.correlation_id, &response, held)
}

/// Handles every request but Produce, after its ordered part: the response (None: close the
/// connection) and the memory it holds until written (a Fetch's records).
async fn handle_other(
    broker: &Broker,
    header: &RequestHeader,
    api_key: ApiKey,
    body: RequestKind,
    connection: &crate::memory::ConnectionMemory,
    session: &crate::security::Session,
) -> (Option<ResponseKind>, crate::memory::Held) {
    let guard = authz::Guard::new(broker, session, api_key);
    let (body, denied) = match authz::before(&guard, body, header.request_api_version) {
        authz::Decision::Handle(body, denied) => (*body, denied),
        authz::Decision::Refuse(response) => {
            return (Some(*response), crate::memory::Held::default())
        }
        authz::Decision::Close => return (None, crate::memory::Held::default()),
    };
    let (mut response, held) = dispatch(broker, header, body, connection, session).await;
    if let Some(response) = &mut response {
        authz::after(&guard, response, denied);
    }
    (response, held)
}

/// Runs the handler of an authorized request.
async fn dispatch(
    broker: &Broker,
    header: &RequestHeader,
    body: RequestKind,
    connection: &crate::memory::ConnectionMemory,
    session: &crate::security::Session,
) -> (Option<ResponseKind>, crate::memory::Held) {
    let version = header.request_api_version;
    let mut held = crate::memory::Held::default();
    let response = match body {
        RequestKind::ApiVersions(req) => Some(ResponseKind::ApiVersions(api_versions::handle(
            &req, version,
        ))),
        RequestKind::Metadata(req) => metadata::handle(broker, req, version, session)
            .await
            .map(ResponseKind::Metadata),
        RequestKind::Fetch(req) => {
            let (response, reserved) =
                fetch::handle(broker, req, version, connection, session).await;
            held = reserved;
            for topic in &response.responses {
                let bytes: usize = topic.partitions.iter().map(|p| p.records_len()).sum();
                broker.metrics.fetched(topic.topic.as_str(), bytes as u64);
                for partition in topic.partitions.iter().filter(|p| p.error_code != 0) {
                    broker
                        .metrics
                        .partition_error("Fetch", partition.error_code);
                }
            }
            Some(ResponseKind::Fetch(response))
        }
        RequestKind::ListOffsets(req) => Some(ResponseKind::ListOffsets(
            list_offsets::handle(broker, req, version).await,
        )),
        RequestKind::CreateTopics(req) => Some(ResponseKind::CreateTopics(
            topics::create(broker, req, version).await,
        )),
        RequestKind::DeleteTopics(req) => Some(ResponseKind::DeleteTopics(
            topics::delete(
                broker,
                req,
                &authz::Guard::new(broker, session, ApiKey::DeleteTopics),
            )
            .await,
        )),
        RequestKind::CreatePartitions(req) => Some(ResponseKind::CreatePartitions(
            topics::create_partitions(broker, req).await,
        )),
        RequestKind::DescribeConfigs(req) => Some(ResponseKind::DescribeConfigs(
            configs::describe(broker, req).await,
        )),
        RequestKind::JoinGroup(req) => {
            let client_id = header.client_id.as_deref().unwrap_or("").to_owned();
            Some(ResponseKind::JoinGroup(
                groups::join(broker, req, version, &client_id).await,
            ))
        }
        RequestKind::SyncGroup(req) => Some(ResponseKind::SyncGroup(
            groups::sync(broker, req, version).await,
        )),
        RequestKind::Heartbeat(req) => Some(ResponseKind::Heartbeat(
            groups::heartbeat(broker, req).await,
        )),
        RequestKind::LeaveGroup(req) => Some(ResponseKind::LeaveGroup(
            groups::leave(broker, req, version).await,
        )),
        RequestKind::ListGroups(req) => Some(ResponseKind::ListGroups(
            group_admin::list(broker, req, version).await,
        )),
        RequestKind::DescribeGroups(req) => Some(ResponseKind::DescribeGroups(
            group_admin::describe(broker, req, version).await,
        )),
        RequestKind::DeleteGroups(req) => Some(ResponseKind::DeleteGroups(
            group_admin::delete(broker, req).await,
        )),
        RequestKind::OffsetDelete(req) => Some(ResponseKind::OffsetDelete(
            group_admin::delete_offsets(broker, req).await,
        )),
        RequestKind::FindCoordinator(req) => Some(ResponseKind::FindCoordinator(
            offsets::find_coordinator(broker, req, version, session).await,
        )),
        RequestKind::OffsetCommit(req) => Some(ResponseKind::OffsetCommit(
            offsets::commit(broker, req).await,
        )),
        RequestKind::OffsetFetch(req) => Some(ResponseKind::OffsetFetch(
            offsets::fetch(broker, req, version).await,
        )),
        RequestKind::DeleteRecords(req) => Some(ResponseKind::DeleteRecords(
            delete_records::handle(broker, req).await,
        )),
        RequestKind::InitProducerId(req) => Some(ResponseKind::InitProducerId(
            txn::init_producer_id(broker, req, version).await,
        )),
        RequestKind::AddPartitionsToTxn(req) => Some(ResponseKind::AddPartitionsToTxn(
            txn::add_partitions(broker, req, version).await,
        )),
        RequestKind::AddOffsetsToTxn(req) => Some(ResponseKind::AddOffsetsToTxn(
            txn::add_offsets(broker, req, version).await,
        )),
        RequestKind::EndTxn(req) => {
            Some(ResponseKind::EndTxn(txn::end(broker, req, version).await))
        }
        RequestKind::TxnOffsetCommit(req) => Some(ResponseKind::TxnOffsetCommit(
            txn::commit_offsets(broker, req).await,
        )),
        RequestKind::ListTransactions(req) => Some(ResponseKind::ListTransactions(
            txn_admin::list(broker, req).await,
        )),
        RequestKind::DescribeTransactions(req) => Some(ResponseKind::DescribeTransactions(
            txn_admin::describe(broker, req).await,
        )),
        RequestKind::DescribeProducers(req) => Some(ResponseKind::DescribeProducers(
            txn_admin::describe_producers(broker, req).await,
        )),
        RequestKind::AlterConfigs(req) => Some(ResponseKind::AlterConfigs(
            alter_configs::alter(broker, req).await,
        )),
        RequestKind::IncrementalAlterConfigs(req) => Some(ResponseKind::IncrementalAlterConfigs(
            alter_configs::incremental_alter(broker, req).await,
        )),
        RequestKind::ElectLeaders(req) => Some(ResponseKind::ElectLeaders(
            replicas::elect_leaders(broker, req, version).await,
        )),
        RequestKind::DescribeLogDirs(req) => Some(ResponseKind::DescribeLogDirs(
            replicas::describe_log_dirs(broker, req).await,
        )),
        RequestKind::AlterReplicaLogDirs(req) => Some(ResponseKind::AlterReplicaLogDirs(
            replicas::alter_replica_log_dirs(req),
        )),
        RequestKind::ListPartitionReassignments(req) => {
            Some(ResponseKind::ListPartitionReassignments(
                replicas::list_reassignments(broker, req).await,
            ))
        }
        RequestKind::AlterPartitionReassignments(req) => {
            Some(ResponseKind::AlterPartitionReassignments(
                replicas::alter_reassignments(broker, req).await,
            ))
        }
        // Logins are the connection's business on SASL listeners (`crate::server`); anywhere
        // else they are out of place, as in Kafka.
        RequestKind::SaslHandshake(_) => Some(ResponseKind::SaslHandshake(
            kafka_protocol::messages::SaslHandshakeResponse::default()
                .with_error_code(kafka_protocol::ResponseError::IllegalSaslState.code()),
        )),
        RequestKind::SaslAuthenticate(_) => Some(ResponseKind::SaslAuthenticate(
            kafka_protocol::messages::SaslAuthenticateResponse::default()
                .with_error_code(kafka_protocol::ResponseError::IllegalSaslState.code())
                .with_error_message(Some(kafka_protocol::protocol::StrBytes::from_static_str(
                    "SASL is not enabled on this listener",
                ))),
        )),
        RequestKind::DescribeUserScramCredentials(req) => {
            Some(ResponseKind::DescribeUserScramCredentials(
                scram_credentials::describe(broker, req).await,
            ))
        }
        RequestKind::AlterUserScramCredentials(req) => Some(
            ResponseKind::AlterUserScramCredentials(scram_credentials::alter(broker, req).await),
        ),
        RequestKind::CreateAcls(req) => Some(ResponseKind::CreateAcls(
            acls::create(broker, session, req).await,
        )),
        RequestKind::DescribeAcls(req) => Some(ResponseKind::DescribeAcls(
            acls::describe(broker, session, req).await,
        )),
        RequestKind::DeleteAcls(req) => Some(ResponseKind::DeleteAcls(
            acls::delete(broker, session, req).await,
        )),
        other => {
            // decode_request only lets SUPPORTED APIs through, and each has an arm above.
            tracing::error!(request = ?other, "no handler for a supported api");
            None
        }
    };
    (response, held)
}

pub fn respond(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
    held: crate::memory::Held,
) -> Reply {
    let encoded = match response {
        ResponseKind::Fetch(fetch) => encode_fetch_response(version, correlation_id, fetch),
        _ => encode_response(api_key, version, correlation_id, response).map(|b| vec![b]),
    };
    match encoded {
        Ok(parts) => Reply::Respond(parts, held),
        Err(error) => {
            tracing::error!(%error, api = ?api_key, version, "response encoding failed");
            Reply::Close
        }
    }
}

/// Kafka topic ids are UUIDs; ours are stored as 32 hex digits.
pub fn topic_uuid(topic: &Topic) -> uuid::Uuid {
    u128::from_str_radix(&topic.record.id, 16)
        .map(uuid::Uuid::from_u128)
        .unwrap_or_default()
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
