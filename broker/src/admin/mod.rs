//! The admin commands of the `skiff` binary — `skiff topic …`, `skiff group …`,
//! `skiff cluster …`, `skiff produce`, `skiff consume` — for operators used to `kafka-topics`, `kafka-consumer-groups`,
//! `kafka-configs` and `rpk`. They speak only the Kafka protocol (through [`client`]), so they
//! work against any Kafka-compatible cluster, Skiff or not.
//!
//! Output is a table for people or JSON (`--output json`) for scripts. The exit code is 0 when
//! everything asked for was done, 1 when anything failed (each failure is printed, in plain
//! words, on stderr), 2 for a command line that does not parse.

pub(crate) mod acl;
pub(crate) mod client;
mod cluster;
pub(crate) mod group;
mod offsets;
mod output;
mod records;
pub(crate) mod security;
pub(crate) mod topic;
pub(crate) mod user;

use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

pub use acl::AclCommand;
pub use group::GroupCommand;
pub use records::{browse, ConsumeCommand, ProduceCommand, Start};
pub use topic::TopicCommand;
pub use user::UserCommand;

/// How to reach the cluster: the settings every admin command shares.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// TOML config file; its keys are the settings below (e.g. `bootstrap-server =
    /// "broker-1:9092"`). Flags and environment variables override it.
    #[arg(long, env = "SKIFF_CONFIG", value_name = "FILE", global = true)]
    pub command_config: Option<PathBuf>,
    /// Brokers to connect to first, as comma-separated host:port; the rest of the cluster is
    /// found through their metadata (Kafka's `bootstrap.servers`).
    #[arg(
        long,
        env = "SKIFF_BOOTSTRAP_SERVER",
        default_value = "localhost:9092",
        global = true
    )]
    pub bootstrap_server: String,
    /// The client id sent with every request (Kafka's `client.id`); brokers log it.
    #[arg(
        long,
        env = "SKIFF_CLIENT_ID",
        default_value = "skiff-cli",
        global = true
    )]
    pub client_id: String,
    /// How long to wait for a connection or for each response (Kafka's `request.timeout.ms`).
    #[arg(
        long,
        env = "SKIFF_REQUEST_TIMEOUT_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub request_timeout_ms: u64,
    #[command(flatten)]
    pub security: security::SecurityArgs,
    /// `table` for people, `json` for scripts (one JSON document on stdout).
    #[arg(
        long,
        value_enum,
        env = "SKIFF_OUTPUT",
        default_value = "table",
        global = true
    )]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// `skiff cluster …`
#[derive(Debug, Args)]
pub struct ClusterCommand {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub action: ClusterAction,
}

#[derive(Debug, Subcommand)]
pub enum ClusterAction {
    /// The cluster id, the controller, and every broker with its address and rack.
    Info,
}

/// A command's outcome: `Err` for a failure that stopped it (exit 1 with the message), `Ok(false)`
/// when it finished but some of its items failed (already reported; exit 1).
pub type Outcome = anyhow::Result<bool>;

pub async fn cluster(command: ClusterCommand) -> Outcome {
    match command.action {
        ClusterAction::Info => cluster::info(&command.client).await,
    }
}

pub async fn topic(command: TopicCommand) -> Outcome {
    topic::run(command).await
}

pub async fn group(command: GroupCommand) -> Outcome {
    group::run(command).await
}

pub async fn produce(command: ProduceCommand) -> Outcome {
    records::produce(command).await
}

pub async fn consume(command: ConsumeCommand) -> Outcome {
    records::consume(command).await
}

/// Splits `key=value` (a config or a header); the value may hold `=`.
fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected key=value, got {text:?}")),
    }
}
