//! The compactor's settings, shared by `skiff serve` (which runs one unless
//! `--compactor-enable false`) and `skiff compactor`.

use super::{
    AuthorizerArgs, HttpAuthentication, HttpListener, LoggingArgs, ProcessArgs, SaslArgs,
    StoreArgs, TlsArgs,
};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct CompactorArgs {
    /// Records are readable as Parquet in the bucket at most about this long after they were
    /// acknowledged. Shorter means more, smaller Parquet files (about one per active partition
    /// per half this time).
    #[arg(
        long,
        env = "SKIFF_COMPACTOR_FRESHNESS_MS",
        default_value_t = 60_000,
        value_name = "MS"
    )]
    pub compactor_freshness_ms: i64,

    /// Flush-object bytes one partition's job converts at most: about the largest Parquet
    /// file's input. A partition with more is converted by several jobs.
    #[arg(long, env = "SKIFF_COMPACTOR_JOB_MAX_BYTES", default_value_t = 64 * 1024 * 1024, value_name = "BYTES")]
    pub compactor_job_max_bytes: u64,

    /// Flush-object bytes one pass reads at most (the compactor's memory is about twice this).
    #[arg(long, env = "SKIFF_COMPACTOR_PASS_MAX_BYTES", default_value_t = 64 * 1024 * 1024, value_name = "BYTES")]
    pub compactor_pass_max_bytes: u64,

    /// How often garbage collection deletes objects nothing references any more.
    #[arg(
        long,
        env = "SKIFF_COMPACTOR_GC_INTERVAL_MS",
        default_value_t = 300_000,
        value_name = "MS"
    )]
    pub compactor_gc_interval_ms: i64,

    /// How long an object stays after nothing references it, for reads that began before.
    #[arg(
        long,
        env = "SKIFF_COMPACTOR_GC_GRACE_MS",
        default_value_t = 300_000,
        value_name = "MS"
    )]
    pub compactor_gc_grace_ms: i64,

    /// Unreferenced objects younger than this are never deleted (their commit may still come).
    /// Must exceed `--object-commit-timeout-ms` of every broker and compactor.
    #[arg(
        long,
        env = "SKIFF_COMPACTOR_ORPHAN_AGE_MS",
        default_value_t = 3_600_000,
        value_name = "MS"
    )]
    pub compactor_orphan_age_ms: i64,

    /// Memory for the keys of one log-compaction pass over a partition (Kafka's
    /// `log.cleaner.dedupe.buffer.size`): a partition with more distinct keys in its cleanable
    /// range is not cleaned, and `/v1/compactor` says why.
    #[arg(long, env = "SKIFF_COMPACTOR_DEDUPE_BUFFER_MAX_BYTES", default_value_t = 64 * 1024 * 1024, value_name = "BYTES")]
    pub compactor_dedupe_buffer_max_bytes: u64,

    /// An object is committed (referenced by the index) within this long of being named (just
    /// before its upload), or never: a broker or compactor that was slower (paused, cut off)
    /// drops it.
    #[arg(
        long,
        env = "SKIFF_OBJECT_COMMIT_TIMEOUT_MS",
        default_value_t = skiff_tiering::log::OBJECT_COMMIT_TIMEOUT_MS,
        value_name = "MS"
    )]
    pub object_commit_timeout_ms: i64,
}

impl CompactorArgs {
    pub fn settings(&self) -> skiff_compactor::CompactorSettings {
        skiff_compactor::CompactorSettings {
            freshness_ms: self.compactor_freshness_ms,
            job_max_bytes: self.compactor_job_max_bytes,
            pass_max_bytes: self.compactor_pass_max_bytes,
            object_commit_timeout_ms: self.object_commit_timeout_ms,
            gc_interval_ms: self.compactor_gc_interval_ms,
            gc_grace_ms: self.compactor_gc_grace_ms,
            orphan_age_ms: self.compactor_orphan_age_ms,
            dedupe_buffer_max_bytes: self.compactor_dedupe_buffer_max_bytes,
            ..skiff_compactor::CompactorSettings::default()
        }
    }
}

/// Settings of `skiff compactor`.
#[derive(Debug, Clone, Args)]
pub struct CompactorCommandArgs {
    /// TOML config file; its keys are the settings below. Flags and environment variables
    /// override it.
    #[arg(long, env = "SKIFF_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten)]
    pub compactor: CompactorArgs,

    /// Address the compactor's HTTP API binds (`/health`, `/v1/compactor`): `IP:PORT` for
    /// HTTP, `https://IP:PORT` for HTTPS with the certificate of --ssl-keystore-location.
    #[arg(
        long,
        env = "SKIFF_HTTP_LISTENERS",
        default_value = "127.0.0.1:9645",
        value_name = "ADDR"
    )]
    pub http_listeners: String,

    /// Whether the HTTP API asks who is calling, as `skiff serve`'s does: `required` takes a
    /// SASL user's password (HTTP Basic, checked against the users in the metadata store) or
    /// an OAUTHBEARER token (Bearer), or on an https:// listener with --ssl-client-auth a
    /// client certificate, on every route but /health and /metrics, and with
    /// `--authorizer standard` the `/v1` views need DESCRIBE on the cluster; `none` serves
    /// everyone.
    #[arg(
        long,
        env = "SKIFF_HTTP_AUTHENTICATION",
        value_enum,
        default_value = "none",
        value_name = "MODE"
    )]
    pub http_authentication: HttpAuthentication,

    /// The users' settings, for `--http-authentication required` (the same as the brokers').
    #[command(flatten)]
    pub sasl: SaslArgs,

    /// The certificate of an `https://` HTTP listener, and the client certificates it requests
    /// with --ssl-client-auth (the same flags as the brokers').
    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub authorizer: AuthorizerArgs,

    #[command(flatten)]
    pub logging: LoggingArgs,

    #[command(flatten)]
    pub process: ProcessArgs,
}

impl CompactorCommandArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        let https = self.http_listener()?.tls_settings(&self.tls)?;
        self.http_authentication
            .validate(&self.sasl, super::asks_certificates(https.as_ref()))?;
        self.compactor
            .settings()
            .validate()
            .map_err(anyhow::Error::msg)
    }

    pub fn http_listener(&self) -> anyhow::Result<HttpListener> {
        HttpListener::parse(&self.http_listeners)
    }
}
