//! Settings every `skiff` process that touches the stores has: where they are, and logging.

use super::LogFormat;
use clap::Args;
use std::path::PathBuf;

/// Where a process keeps its data: the metadata store and the object store.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory for the embedded default: the object store (`<dir>/objects`) and the metadata
    /// store (`<dir>/meta`). Everything the broker keeps is here.
    #[arg(
        long,
        env = "SKIFF_DATA_DIR",
        default_value = "./skiff-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// etcd endpoints, comma-separated (`http://host:2379,...`): run in cluster mode with the
    /// metadata in etcd. Without it the broker uses the embedded store under `--data-dir`.
    #[arg(long, env = "SKIFF_ETCD_ENDPOINTS", value_name = "URLS")]
    pub etcd_endpoints: Option<String>,

    /// etcd user, when etcd's authentication is on (etcd's `--user`); the password comes from
    /// --etcd-password.
    #[arg(long, env = "SKIFF_ETCD_USER", value_name = "NAME")]
    pub etcd_user: Option<String>,

    /// Password of --etcd-user. Never logged.
    #[arg(
        long,
        env = "SKIFF_ETCD_PASSWORD",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub etcd_password: Option<Secret>,

    /// PEM file of the CA certificates etcd's server certificates chain to, for `https://`
    /// endpoints (etcd's `--cacert`); default: the system's roots.
    #[arg(long, env = "SKIFF_ETCD_CA_LOCATION", value_name = "FILE")]
    pub etcd_ca_location: Option<PathBuf>,

    /// PEM file with a client certificate for etcd's `--client-cert-auth` (etcd's `--cert`).
    #[arg(long, env = "SKIFF_ETCD_CERT_LOCATION", value_name = "FILE")]
    pub etcd_cert_location: Option<PathBuf>,

    /// PEM file with the private key of --etcd-cert-location (etcd's `--key`).
    #[arg(long, env = "SKIFF_ETCD_KEY_LOCATION", value_name = "FILE")]
    pub etcd_key_location: Option<PathBuf>,

    /// Deadline of each etcd request.
    #[arg(
        long,
        env = "SKIFF_ETCD_REQUEST_TIMEOUT_MS",
        default_value_t = 5_000,
        value_name = "MS"
    )]
    pub etcd_request_timeout_ms: u64,

    /// Where objects go: `s3://bucket/optional/prefix` for an S3-compatible bucket, or
    /// `file:///dir`. Default: `<data-dir>/objects`.
    #[arg(long, env = "SKIFF_OBJECT_STORE_URL", value_name = "URL")]
    pub object_store_url: Option<String>,

    /// S3 endpoint for S3-compatible servers (MinIO, ...); default AWS (or `AWS_ENDPOINT_URL`).
    #[arg(long, env = "SKIFF_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// S3 region.
    #[arg(long, env = "SKIFF_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// S3 access key id (default: `AWS_ACCESS_KEY_ID` or the usual AWS credential chain).
    #[arg(long, env = "SKIFF_S3_ACCESS_KEY_ID", value_name = "ID")]
    pub s3_access_key_id: Option<String>,

    /// S3 secret access key (default: `AWS_SECRET_ACCESS_KEY`). Never logged.
    #[arg(
        long,
        env = "SKIFF_S3_SECRET_ACCESS_KEY",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub s3_secret_access_key: Option<Secret>,

    /// Allow plain-HTTP S3 endpoints (local test servers).
    #[arg(long, env = "SKIFF_S3_ALLOW_HTTP", default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub s3_allow_http: bool,

    /// Sign S3 requests without a SHA-256 of their body (`UNSIGNED-PAYLOAD`), as AWS's SDKs do
    /// for S3 over HTTPS, where TLS protects the body in transit: hashing every object's bytes
    /// cost a third of the broker's produce CPU. Default: unsigned over HTTPS (AWS, or an
    /// https:// endpoint), signed over plain HTTP, where the signature is the body's only check
    /// in transit (`AWS_UNSIGNED_PAYLOAD`, when set, decides instead). Objects carry CRC32C
    /// checksums, checked after every read, either way.
    #[arg(long, env = "SKIFF_S3_UNSIGNED_PAYLOAD", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub s3_unsigned_payload: Option<bool>,

    /// Address buckets as `bucket.host` instead of `host/bucket` (path style, the default, is
    /// what most S3-compatible servers expect).
    #[arg(long, env = "SKIFF_S3_VIRTUAL_HOSTED_STYLE", default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub s3_virtual_hosted_style: bool,

    /// Deadline of one object-store request, and of its retries together.
    #[arg(
        long,
        env = "SKIFF_OBJECT_STORE_TIMEOUT_MS",
        default_value_t = 10_000,
        value_name = "MS"
    )]
    pub object_store_timeout_ms: u64,

    /// Retries of a failed object-store request before the produce or fetch fails (retriably).
    #[arg(long, env = "SKIFF_OBJECT_STORE_MAX_RETRIES", default_value_t = 3)]
    pub object_store_max_retries: usize,
}

/// How the process asks the operating system for memory.
#[derive(Debug, Clone, Args)]
pub struct ProcessArgs {
    /// Let Linux back this process's memory with transparent huge pages (where the system's
    /// THP setting allows them). Off by default, as for most databases: the broker allocates
    /// and frees large buffers (batches, row groups, responses) at a high rate, and a fresh
    /// huge page is zeroed whole (2 MiB) when first touched; with them, a catch-up read cost
    /// from 0.45 to 1.96 CPU-seconds per GiB from one run to the next, without them 0.63 to
    /// 0.73.
    #[arg(long, env = "SKIFF_TRANSPARENT_HUGE_PAGES", default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub transparent_huge_pages: bool,
}

/// Log output.
#[derive(Debug, Clone, Args)]
pub struct LoggingArgs {
    /// Log filter in `tracing` syntax, e.g. `info` or `skiff=debug,info`.
    #[arg(long, env = "SKIFF_LOG", default_value = "info")]
    pub log: String,

    /// Log line format.
    #[arg(long, env = "SKIFF_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// A setting that must never appear in logs or `Debug` output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}
