//! Settings of every `skiff` command: every one is a long flag, an environment variable (`SKIFF_` +
//! flag in upper snake case) and a key of the TOML config file (the flag name, or Kafka's dotted
//! spelling: `flush-linger-ms`, `flush_linger_ms` and `flush.linger.ms` are the same key).
//! Precedence: flag, then environment, then config file, then the default.

mod compactor;
mod file;
mod http;
pub mod listeners;
mod replicas;
mod security;
mod shared;

pub use compactor::{CompactorArgs, CompactorCommandArgs};
pub use file::load_config_file_into_env;
#[cfg(test)]
use file::read_config_file;
pub use http::{asks_certificates, HttpAuthentication, HttpListener};
pub use listeners::{Listener, SecurityProtocol};
pub use replicas::{ReplicaArgs, ReplicaSelector};
pub use security::{AuthorizerArgs, ClientAuth, OauthBearerArgs, SaslArgs, SaslMechanism, TlsArgs};
pub use shared::{LoggingArgs, ProcessArgs, Secret, StoreArgs};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "skiff",
    version,
    about = "Skiff: a diskless, Kafka-compatible message broker that stores its log in object storage"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a broker: the Kafka listener and the HTTP admin API (and, unless
    /// `--compactor-enable false`, the compactor).
    Serve(Box<ServeArgs>),
    /// Run a compactor on its own: rewrites flush objects as Parquet, applies retention and log
    /// compaction to the bucket and deletes unreferenced objects. Any number may run against
    /// one cluster.
    Compactor(Box<CompactorCommandArgs>),
    /// Topics: create, list, describe, alter configs, add partitions, delete (like
    /// `kafka-topics`; works against any Kafka-compatible cluster).
    Topic(crate::admin::TopicCommand),
    /// Consumer groups: list, describe with lag, reset offsets, delete (like
    /// `kafka-consumer-groups`).
    Group(crate::admin::GroupCommand),
    /// The cluster: its id, controller and brokers.
    Cluster(crate::admin::ClusterCommand),
    /// SASL users: set a password, list, delete (SCRAM credentials, like `kafka-configs
    /// --entity-type users`).
    User(crate::admin::UserCommand),
    /// ACLs: create, list, delete (like `kafka-acls`; they apply with `--authorizer standard`).
    Acl(crate::admin::AclCommand),
    /// Check a broker's configuration before serving: the settings, listener addresses, etcd
    /// (or the embedded store), the bucket with the given credentials (a probe object written,
    /// read, listed, deleted) and the clock; takes `serve`'s settings and says what is wrong.
    Doctor(Box<ServeArgs>),
    /// Write records to a topic from the command line or stdin (a quick check, like `kcat -P`).
    Produce(crate::admin::ProduceCommand),
    /// Read records of a topic to stdout as JSON lines or text (a quick check, like `kcat -C`).
    Consume(crate::admin::ConsumeCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TimestampType {
    #[value(name = "CreateTime")]
    CreateTime,
    #[value(name = "LogAppendTime")]
    LogAppendTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML config file; its keys are the settings below (e.g. `flush-linger-ms = 100` or
    /// `"auto.create.topics.enable" = false`). Flags and environment variables override it.
    #[arg(long, env = "SKIFF_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub sasl: SaslArgs,

    #[command(flatten)]
    pub authorizer: AuthorizerArgs,

    /// The Kafka listeners, comma-separated `NAME://HOST:PORT` (Kafka's `listeners`), e.g.
    /// `PLAINTEXT://:9092,SASL_SSL://0.0.0.0:9094`. A name is a security protocol (PLAINTEXT,
    /// SSL, SASL_PLAINTEXT, SASL_SSL) or any name --listener-security-protocol-map maps to one;
    /// an empty host binds every interface; a bare `HOST:PORT` is one PLAINTEXT listener. SSL
    /// listeners need --ssl-keystore-location; SASL ones authenticate with
    /// --sasl-enabled-mechanisms.
    #[arg(
        long,
        env = "SKIFF_LISTENERS",
        default_value = "127.0.0.1:9092",
        value_name = "LISTENERS"
    )]
    pub listeners: String,

    /// The address clients are told for each listener, comma-separated `NAME://HOST:PORT`
    /// (Kafka's `advertised.listeners`): a client is told the addresses of the listener it
    /// connected to. Listeners left out advertise their bound address; with one listener a
    /// bare `HOST:PORT` will do.
    #[arg(long, env = "SKIFF_ADVERTISED_LISTENERS", value_name = "LISTENERS")]
    pub advertised_listeners: Option<String>,

    /// The security protocol of each listener name, comma-separated `NAME:PROTOCOL` (Kafka's
    /// `listener.security.protocol.map`), e.g. `INTERNAL:PLAINTEXT,EXTERNAL:SASL_SSL`.
    #[arg(
        long,
        env = "SKIFF_LISTENER_SECURITY_PROTOCOL_MAP",
        default_value = listeners::DEFAULT_PROTOCOL_MAP,
        value_name = "MAP"
    )]
    pub listener_security_protocol_map: String,

    /// Address the HTTP admin API and console bind (`/health`, `/metrics`, `/v1/topics`, the
    /// console at `/`): `IP:PORT` for HTTP, `https://IP:PORT` for HTTPS with the Kafka listeners'
    /// certificate (--ssl-keystore-location, renewals picked up the same way), requesting
    /// client certificates when --ssl-client-auth is not `none` (a verified one names the
    /// caller).
    #[arg(
        long,
        env = "SKIFF_HTTP_LISTENERS",
        default_value = "127.0.0.1:9644",
        value_name = "ADDR"
    )]
    pub http_listeners: String,

    /// Whether the HTTP admin API and console ask who is calling: `required` (the default when
    /// a Kafka listener uses SASL) takes a SASL user's name and password (HTTP Basic) or an
    /// OAUTHBEARER token (HTTP Bearer) on every route but /health, /ready and /metrics (or,
    /// on an https:// listener with --ssl-client-auth, a client certificate, its principal
    /// mapped by --ssl-principal-mapping-rules), and the caller's principal is what ACLs judge; `none` serves everyone as User:ANONYMOUS.
    /// Basic sends the password in the clear over plain HTTP: serve HTTPS (--http-listeners
    /// https://IP:PORT) or keep the port on loopback.
    #[arg(
        long,
        env = "SKIFF_HTTP_AUTHENTICATION",
        value_enum,
        value_name = "MODE"
    )]
    pub http_authentication: Option<HttpAuthentication>,

    /// This broker's id (Kafka's `node.id`). Default: 1 on the embedded store; in cluster mode
    /// a free id allocated through etcd.
    #[arg(long, env = "SKIFF_NODE_ID")]
    pub node_id: Option<i32>,

    #[command(flatten)]
    pub replicas: ReplicaArgs,

    /// How long a broker that stops renewing its session (crashed, paused, cut off) still
    /// counts as live; its partitions move to other brokers after this (Kafka's
    /// `broker.session.timeout.ms`). etcd counts whole seconds.
    #[arg(
        long,
        env = "SKIFF_BROKER_SESSION_TIMEOUT_MS",
        default_value_t = 6_000,
        value_name = "MS"
    )]
    pub broker_session_timeout_ms: u64,

    /// Cluster id reported to clients in Metadata responses.
    #[arg(long, env = "SKIFF_CLUSTER_ID", default_value = "skiff-embedded")]
    pub cluster_id: String,

    /// How long produced data is buffered before one object holding every partition's data is
    /// written: the first append waits at most this long for its acknowledgement.
    #[arg(
        long,
        env = "SKIFF_FLUSH_LINGER_MS",
        default_value_t = 250,
        value_name = "MS"
    )]
    pub flush_linger_ms: u64,

    /// Buffered produce bytes that trigger a flush before the linger time is up (object size).
    #[arg(long, env = "SKIFF_FLUSH_MAX_BYTES", default_value_t = 8 * 1024 * 1024, value_name = "BYTES")]
    pub flush_max_bytes: usize,

    /// Flushes uploading or committing at once: the next object is assembled and uploaded
    /// while the one before it commits (commits stay one at a time, in order). 1 writes one
    /// object at a time. Each adds up to --flush-max-bytes of memory for its object.
    #[arg(
        long,
        env = "SKIFF_FLUSH_MAX_IN_FLIGHT",
        default_value_t = 2,
        value_name = "FLUSHES"
    )]
    pub flush_max_in_flight: usize,

    /// When every connection with produce requests waiting is an idempotent producer with its
    /// window of requests in flight full (nothing more can arrive before the flush),
    /// flush without waiting for the linger once this many bytes are buffered; 0 turns that
    /// off. Lifts window-limited producers (the Java client's and franz-go's default) from five
    /// requests per linger to the flush speed; smaller objects than this still wait for the
    /// linger, so it bounds the PUTs per GiB this adds. Windows of fewer than five requests in
    /// all (a one-partition producer keeps one in flight) need that share of it. A producer
    /// whose requests come as full as its client makes them (small client batches, such as
    /// the Java client's 16 KB) needs no more than its window holds: its objects hold one
    /// window whenever they are written.
    #[arg(
        long,
        env = "SKIFF_FLUSH_WINDOW_MIN_BYTES",
        default_value_t = 2 * 1024 * 1024,
        value_name = "BYTES"
    )]
    pub flush_window_min_bytes: usize,

    /// Produce bytes accepted but not yet committed; when used up, produce requests wait
    /// (backpressure) instead of the broker buffering more.
    #[arg(long, env = "SKIFF_PRODUCE_BUFFER_MAX_BYTES", default_value_t = 64 * 1024 * 1024, value_name = "BYTES")]
    pub produce_buffer_max_bytes: usize,

    /// Memory for recently written objects, served to tailing consumers without object-store
    /// reads.
    #[arg(long, env = "SKIFF_RECENT_CACHE_MAX_BYTES", default_value_t = 256 * 1024 * 1024, value_name = "BYTES")]
    pub recent_cache_max_bytes: usize,

    /// Memory for flush-object sections read back from the bucket: a consumer catching up
    /// reads each section from the bucket once, and consumers reading the same data at once
    /// share one GET (0 turns the cache off).
    #[arg(
        long,
        env = "SKIFF_READ_CACHE_MAX_BYTES",
        default_value_t = 128 * 1024 * 1024,
        value_name = "BYTES"
    )]
    pub read_cache_max_bytes: usize,

    /// Local disk for the read cache, behind its memory (sections evicted from memory go
    /// there; 0: memory only). It holds only copies of the bucket's data: put it on an
    /// ephemeral volume. Default: 1 GiB with a bucket (`--object-store-url`), 0 on the embedded
    /// store, whose objects are local files already (copying them to another local file cost a
    /// third of a catch-up read's CPU).
    #[arg(long, env = "SKIFF_READ_CACHE_DISK_BYTES", value_name = "BYTES")]
    pub read_cache_disk_bytes: Option<usize>,

    /// Where the read cache keeps its disk part (default: `read-cache` in the data dir).
    #[arg(long, env = "SKIFF_READ_CACHE_DIR", value_name = "DIR")]
    pub read_cache_dir: Option<std::path::PathBuf>,

    /// Index entries per index object. A partition keeps at most about four times this many
    /// index keys in the metadata store (etcd); older ones are rolled up into the bucket.
    #[arg(long, env = "SKIFF_INDEX_ROLLUP_FANOUT", default_value_t = skiff_tiering::log::ROLLUP_FANOUT)]
    pub index_rollup_fanout: usize,

    /// How long a partition remembers an idempotent producer that stopped writing to it
    /// (Kafka's `producer.id.expiration.ms`). A retry from a forgotten producer is stored again.
    #[arg(
        long,
        env = "SKIFF_PRODUCER_ID_EXPIRATION_MS",
        default_value_t = 86_400_000,
        value_name = "MS"
    )]
    pub producer_id_expiration_ms: i64,

    /// The longest transaction timeout a transactional producer may ask for (Kafka's
    /// `transaction.max.timeout.ms`); a longer one gets INVALID_TRANSACTION_TIMEOUT.
    #[arg(
        long,
        env = "SKIFF_TRANSACTION_MAX_TIMEOUT_MS",
        default_value_t = 900_000,
        value_name = "MS"
    )]
    pub transaction_max_timeout_ms: i32,

    /// How long a transactional id is remembered after its last transaction ended (Kafka's
    /// `transactional.id.expiration.ms`); a producer that returns later starts afresh.
    #[arg(
        long,
        env = "SKIFF_TRANSACTIONAL_ID_EXPIRATION_MS",
        default_value_t = 604_800_000,
        value_name = "MS"
    )]
    pub transactional_id_expiration_ms: i64,

    /// Most transactional ids the cluster remembers (Skiff's own bound; each costs a few
    /// hundred bytes of etcd): InitProducerId for a new id beyond it fails with
    /// POLICY_VIOLATION, so a flood of ids cannot fill the metadata store. Ids are counted by
    /// each coordinator's periodic check, so the bound may be passed by what arrives between
    /// two checks.
    #[arg(
        long,
        env = "SKIFF_TRANSACTIONAL_ID_MAX_COUNT",
        default_value_t = 200_000,
        value_name = "COUNT"
    )]
    pub transactional_id_max_count: usize,

    /// How often a transaction coordinator aborts transactions past their timeout, finishes
    /// transactions a failed coordinator left half-ended and forgets expired ids (Kafka's
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`).
    #[arg(
        long,
        env = "SKIFF_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS",
        default_value_t = 10_000,
        value_name = "MS"
    )]
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: u64,

    /// How long a new consumer group waits for more members before its first rebalance
    /// completes (Kafka's `group.initial.rebalance.delay.ms`).
    #[arg(
        long,
        env = "SKIFF_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3_000,
        value_name = "MS"
    )]
    pub group_initial_rebalance_delay_ms: u64,

    /// Shortest session timeout a group member may ask for (Kafka's
    /// `group.min.session.timeout.ms`).
    #[arg(
        long,
        env = "SKIFF_GROUP_MIN_SESSION_TIMEOUT_MS",
        default_value_t = 6_000,
        value_name = "MS"
    )]
    pub group_min_session_timeout_ms: u64,

    /// Longest session timeout a group member may ask for (Kafka's
    /// `group.max.session.timeout.ms`).
    #[arg(
        long,
        env = "SKIFF_GROUP_MAX_SESSION_TIMEOUT_MS",
        default_value_t = 1_800_000,
        value_name = "MS"
    )]
    pub group_max_session_timeout_ms: u64,

    /// Members one consumer group may have (Kafka's `group.max.size`); a member joining a full
    /// group gets GROUP_MAX_SIZE_REACHED. Bounds the coordinator's memory per group.
    #[arg(
        long,
        env = "SKIFF_GROUP_MAX_SIZE",
        default_value_t = 10_000,
        value_name = "MEMBERS"
    )]
    pub group_max_size: usize,

    /// How long the committed offsets of a group without members are kept after its last
    /// commit (Kafka's `offsets.retention.minutes`, 7 days).
    #[arg(
        long,
        env = "SKIFF_OFFSETS_RETENTION_MINUTES",
        default_value_t = 10_080,
        value_name = "MINUTES"
    )]
    pub offsets_retention_minutes: u64,

    /// How often each broker expires the offsets of idle groups it coordinates (Kafka's
    /// `offsets.retention.check.interval.ms`).
    #[arg(
        long,
        env = "SKIFF_OFFSETS_RETENTION_CHECK_INTERVAL_MS",
        default_value_t = 600_000,
        value_name = "MS"
    )]
    pub offsets_retention_check_interval_ms: u64,

    /// How often each broker applies topics' `retention.ms` to the partitions it leads,
    /// moving their log start past records older than that (Kafka's
    /// `log.retention.check.interval.ms`).
    #[arg(
        long,
        env = "SKIFF_LOG_RETENTION_CHECK_INTERVAL_MS",
        default_value_t = 300_000,
        value_name = "MS"
    )]
    pub log_retention_check_interval_ms: u64,
    /// How long topics keep records unless they set `retention.ms` (Kafka's
    /// `log.retention.ms`, 7 days); -1 keeps them forever.
    #[arg(
        long,
        env = "SKIFF_LOG_RETENTION_MS",
        default_value_t = 604_800_000,
        allow_hyphen_values = true,
        value_name = "MS"
    )]
    pub log_retention_ms: i64,
    /// How many bytes a partition keeps unless its topic sets `retention.bytes` (Kafka's
    /// `log.retention.bytes`); -1 for no limit.
    #[arg(
        long,
        env = "SKIFF_LOG_RETENTION_BYTES",
        default_value_t = -1,
        allow_hyphen_values = true,
        value_name = "BYTES"
    )]
    pub log_retention_bytes: i64,

    /// Create a topic when a client asks for its metadata or produces to it (Kafka's
    /// `auto.create.topics.enable`).
    #[arg(long, env = "SKIFF_AUTO_CREATE_TOPICS_ENABLE", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub auto_create_topics_enable: bool,

    /// Partitions of auto-created topics and of CreateTopics requests that don't say (Kafka's
    /// `num.partitions`).
    #[arg(long, env = "SKIFF_NUM_PARTITIONS", default_value_t = 1)]
    pub num_partitions: i32,

    /// Largest record batch accepted, unless a topic's `max.message.bytes` says otherwise
    /// (Kafka's `message.max.bytes`).
    #[arg(
        long,
        env = "SKIFF_MESSAGE_MAX_BYTES",
        default_value_t = 1_048_588,
        value_name = "BYTES"
    )]
    pub message_max_bytes: usize,

    /// Largest request frame; a larger length prefix closes the connection (Kafka's
    /// `socket.request.max.bytes`).
    #[arg(
        long,
        env = "SKIFF_SOCKET_REQUEST_MAX_BYTES",
        default_value_t = 104_857_600,
        value_name = "BYTES"
    )]
    pub socket_request_max_bytes: usize,

    /// Most bytes one Fetch response carries, whatever the client asks (Kafka's
    /// `fetch.max.bytes`); the first batch is always sent whole.
    #[arg(
        long,
        env = "SKIFF_FETCH_MAX_BYTES",
        default_value_t = 57_671_680,
        value_name = "BYTES"
    )]
    pub fetch_max_bytes: usize,

    /// Closes a connection that sends nothing for this long, or takes this long to send one
    /// request (Kafka's `connections.max.idle.ms`).
    #[arg(
        long,
        env = "SKIFF_CONNECTIONS_MAX_IDLE_MS",
        default_value_t = 600_000,
        value_name = "MS"
    )]
    pub connections_max_idle_ms: u64,

    /// Most client connections at once; further connections wait to be accepted (Kafka's
    /// `max.connections`).
    #[arg(long, env = "SKIFF_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Requests one connection may have in progress at once (pipelined clients); the connection
    /// is not read further until one completes. A produce request waits up to
    /// `--flush-linger-ms` for its flush, so a client sending one every few milliseconds needs
    /// hundreds in flight; produce memory is bounded by `--produce-buffer-max-bytes` instead.
    #[arg(
        long,
        env = "SKIFF_CONNECTION_MAX_INFLIGHT_REQUESTS",
        default_value_t = 1000
    )]
    pub connection_max_inflight_requests: usize,

    /// Memory of requests being read and handled, broker-wide (Kafka's
    /// `queued.max.request.bytes`): each frame's bytes and what decoding it allocated (at most
    /// 16 MiB a request); connections wait to read more when it is spent.
    #[arg(
        long,
        env = "SKIFF_QUEUED_MAX_REQUEST_BYTES",
        default_value_t = 128 * 1024 * 1024,
        value_name = "BYTES"
    )]
    pub queued_max_request_bytes: usize,

    /// Largest frame of any request but Produce; a longer one closes the connection. Requests
    /// other than Produce are small (a Metadata request naming 20,000 topics is ~0.5 MB).
    #[arg(
        long,
        env = "SKIFF_NON_PRODUCE_REQUEST_MAX_BYTES",
        default_value_t = 4 * 1024 * 1024,
        value_name = "BYTES"
    )]
    pub non_produce_request_max_bytes: usize,

    /// Memory of Fetch responses from reading their records until they are written, broker-wide.
    /// When it is spent, fetches read less (down to 1 MiB) or wait.
    #[arg(
        long,
        env = "SKIFF_FETCH_BUFFER_MAX_BYTES",
        default_value_t = 64 * 1024 * 1024,
        value_name = "BYTES"
    )]
    pub fetch_buffer_max_bytes: usize,

    /// Share of `--fetch-buffer-max-bytes` one connection may hold: a client that pipelines
    /// fetches and does not read its socket waits for its own earlier responses.
    #[arg(
        long,
        env = "SKIFF_CONNECTION_FETCH_BUFFER_MAX_BYTES",
        default_value_t = 8 * 1024 * 1024,
        value_name = "BYTES"
    )]
    pub connection_fetch_buffer_max_bytes: usize,

    /// Closes a connection whose client reads nothing of a response for this long (the
    /// response holds broker memory until it is written).
    #[arg(
        long,
        env = "SKIFF_CONNECTION_WRITE_TIMEOUT_MS",
        default_value_t = 60_000,
        value_name = "MS"
    )]
    pub connection_write_timeout_ms: u64,

    /// Most bytes of metadata a committed offset may carry; longer commits are answered with
    /// OFFSET_METADATA_TOO_LARGE (Kafka's `offset.metadata.max.bytes`).
    #[arg(
        long,
        env = "SKIFF_OFFSET_METADATA_MAX_BYTES",
        default_value_t = 4096,
        value_name = "BYTES"
    )]
    pub offset_metadata_max_bytes: usize,

    /// Default timestamp type of topics (Kafka's `log.message.timestamp.type`).
    #[arg(
        long,
        env = "SKIFF_LOG_MESSAGE_TIMESTAMP_TYPE",
        value_enum,
        default_value = "CreateTime"
    )]
    pub log_message_timestamp_type: TimestampType,

    #[command(flatten)]
    pub logging: LoggingArgs,

    #[command(flatten)]
    pub process: ProcessArgs,

    /// Label `/metrics`' produce and fetch byte and record counters by topic. A cluster with
    /// very many topics can turn it off to bound the series (the counters then carry
    /// `topic=""`, totals over every topic).
    #[arg(long, env = "SKIFF_METRICS_TOPIC_LABELS", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub metrics_topic_labels: bool,

    /// Run the compactor inside this broker (the embedded default). Turn it off where
    /// compactors run as their own processes (`skiff compactor`).
    #[arg(long, env = "SKIFF_COMPACTOR_ENABLE", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub compactor_enable: bool,

    #[command(flatten)]
    pub compactor: CompactorArgs,
}

/// `--read-cache-disk-bytes` when a bucket is configured and the flag is not given.
const READ_CACHE_DISK_BYTES_WITH_BUCKET: usize = 1024 * 1024 * 1024;

impl ServeArgs {
    /// The read cache's disk part: as given, else 1 GiB in front of a bucket and none in front
    /// of the embedded store's local files.
    pub fn read_cache_disk_bytes(&self) -> usize {
        self.read_cache_disk_bytes
            .unwrap_or(if self.store.object_store_url.is_some() {
                READ_CACHE_DISK_BYTES_WITH_BUCKET
            } else {
                0
            })
    }

    /// `--http-authentication` as given, else `required` when a Kafka listener uses SASL.
    pub fn http_authentication(&self) -> HttpAuthentication {
        self.http_authentication.unwrap_or_else(|| {
            let sasl = self
                .kafka_listeners()
                .is_ok_and(|listeners| listeners.iter().any(|l| l.protocol.sasl()));
            if sasl {
                HttpAuthentication::Required
            } else {
                HttpAuthentication::None
            }
        })
    }

    /// The Kafka listeners, checked (names, protocols, advertised addresses).
    pub fn kafka_listeners(&self) -> anyhow::Result<Vec<Listener>> {
        listeners::parse(
            &self.listeners,
            self.advertised_listeners.as_deref(),
            &self.listener_security_protocol_map,
        )
    }

    pub fn http_listener(&self) -> anyhow::Result<HttpListener> {
        HttpListener::parse(&self.http_listeners)
    }

    pub fn http_bind(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.http_listener()?.bind)
    }

    pub fn log_retention(&self) -> skiff_tiering::log::Retention {
        skiff_tiering::log::Retention {
            ms: self.log_retention_ms,
            bytes: self.log_retention_bytes,
        }
    }

    pub fn budget_settings(&self) -> crate::memory::BudgetSettings {
        crate::memory::BudgetSettings {
            queued_max_request_bytes: self.queued_max_request_bytes,
            non_produce_request_max_bytes: self.non_produce_request_max_bytes,
            fetch_buffer_max_bytes: self.fetch_buffer_max_bytes,
            connection_fetch_buffer_max_bytes: self.connection_fetch_buffer_max_bytes,
        }
    }

    /// Checks the settings once at start, with messages that say what to fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        let kafka = self.kafka_listeners()?;
        crate::security::principal::PrincipalMapper::parse(&self.tls.ssl_principal_mapping_rules)
            .context("--ssl-principal-mapping-rules")?;
        if kafka.iter().any(|l| l.protocol.tls()) {
            // Reads and checks the certificate, key and trust store now, not at first connection.
            crate::security::tls::acceptor(&self.tls, true)?;
        }
        if kafka.iter().any(|l| l.protocol.sasl()) && self.sasl.sasl_enabled_mechanisms.is_empty() {
            bail!("a SASL listener needs at least one of --sasl-enabled-mechanisms");
        }
        for user in &self.authorizer.super_users {
            if !user.trim().is_empty() && !user.trim().contains(':') {
                bail!("--super-users: {user:?} is not a principal (User:NAME)");
            }
        }
        let https = self.http_listener()?.tls_settings(&self.tls)?;
        self.http_authentication()
            .validate(&self.sasl, asks_certificates(https.as_ref()))?;
        if self.node_id.is_some_and(|id| id < 0) {
            bail!("--node-id must not be negative");
        }
        if self.broker_session_timeout_ms < 1_000 {
            bail!("--broker-session-timeout-ms must be at least 1000");
        }
        if self.num_partitions < 1 {
            bail!(
                "--num-partitions must be at least 1, got {}",
                self.num_partitions
            );
        }
        if self.flush_max_bytes == 0 || self.flush_max_bytes > self.produce_buffer_max_bytes {
            bail!("--flush-max-bytes must be between 1 and --produce-buffer-max-bytes");
        }
        if !(1..=16).contains(&self.flush_max_in_flight) {
            bail!(
                "--flush-max-in-flight must be between 1 and 16, got {}",
                self.flush_max_in_flight
            );
        }
        if self.message_max_bytes > self.produce_buffer_max_bytes {
            bail!("--message-max-bytes must not exceed --produce-buffer-max-bytes");
        }
        if self.produce_buffer_max_bytes > u32::MAX as usize {
            bail!("--produce-buffer-max-bytes must be below 4 GiB");
        }
        if self.index_rollup_fanout < 2 {
            bail!("--index-rollup-fanout must be at least 2");
        }
        if self.producer_id_expiration_ms <= 0 {
            bail!("--producer-id-expiration-ms must be positive");
        }
        if self.transaction_max_timeout_ms <= 0 {
            bail!("--transaction-max-timeout-ms must be positive");
        }
        if self.transactional_id_expiration_ms <= 0 {
            bail!("--transactional-id-expiration-ms must be positive");
        }
        if self.transactional_id_max_count == 0 {
            bail!("--transactional-id-max-count must be at least 1");
        }
        if self.transaction_abort_timed_out_transaction_cleanup_interval_ms == 0 {
            bail!("--transaction-abort-timed-out-transaction-cleanup-interval-ms must be positive");
        }
        if self.group_max_size == 0 {
            bail!("--group-max-size must be at least 1");
        }
        if self.offsets_retention_minutes == 0 || self.offsets_retention_check_interval_ms == 0 {
            bail!("--offsets-retention-minutes and --offsets-retention-check-interval-ms must be positive");
        }
        if self.connections_max_idle_ms == 0 {
            bail!("--connections-max-idle-ms must be positive");
        }
        if self.log_retention_ms < -1 || self.log_retention_bytes < -1 {
            bail!("--log-retention-ms and --log-retention-bytes must be -1 (no limit) or more");
        }
        if self.log_retention_check_interval_ms == 0 {
            bail!("--log-retention-check-interval-ms must be positive");
        }
        if self.connection_write_timeout_ms == 0 {
            bail!("--connection-write-timeout-ms must be positive");
        }
        if self.compactor.object_commit_timeout_ms <= 0 {
            bail!("--object-commit-timeout-ms must be positive");
        }
        if self.compactor_enable {
            self.compactor
                .settings()
                .validate()
                .map_err(anyhow::Error::msg)?;
        }
        self.budget_settings()
            .validate(self.socket_request_max_bytes)
            .map_err(anyhow::Error::msg)?;
        if self.max_connections == 0 || self.connection_max_inflight_requests == 0 {
            bail!("--max-connections and --connection-max-inflight-requests must be positive");
        }
        Ok(())
    }
}

/// `PLAINTEXT://HOST:PORT` → `HOST:PORT` (a bare address unchanged).
fn strip_scheme(listener: &str) -> &str {
    listener
        .split_once("://")
        .map_or(listener, |(_, address)| address)
}

fn parse_listener(listener: &str) -> anyhow::Result<SocketAddr> {
    let address = strip_scheme(listener.trim());
    let address = address.replace("localhost:", "127.0.0.1:");
    address
        .parse()
        .with_context(|| format!("expected IP:PORT, got {listener:?}"))
}

#[cfg(test)]
mod tests;
