//! Which brokers serve consumers' reads (Kafka's fetch from follower, KIP-392): this broker's
//! rack, the replica selector, and the replica views that serve partitions other brokers lead.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ReplicaArgs {
    /// This broker's rack or availability zone (Kafka's `broker.rack`), reported in Metadata.
    /// With `--replica-selector-class rack-aware`, a consumer that names its rack
    /// (`client.rack`) reads from a broker in that rack, saving cross-zone traffic.
    #[arg(long, env = "SKIFF_BROKER_RACK", value_name = "RACK")]
    pub broker_rack: Option<String>,

    /// Which broker a partition's leader sends a consumer to for its reads (Kafka's
    /// `replica.selector.class`, KIP-392). Every broker reads the same bucket, so any can
    /// serve any partition: `leader` keeps consumers on the leader (Kafka's default);
    /// `rack-aware` makes this broker serve consumers' reads of partitions it does not lead
    /// (Metadata then lists it as a replica of every partition) and, as a leader, send a
    /// consumer that names its rack (`client.rack`) to a broker in that rack that does the
    /// same (itself if it is in that rack). Set it on every broker. Kafka's class names
    /// (`org.apache.kafka.common.replica.RackAwareReplicaSelector`) are accepted too.
    #[arg(
        long,
        env = "SKIFF_REPLICA_SELECTOR_CLASS",
        default_value = "leader",
        value_parser = parse_replica_selector,
        value_name = "SELECTOR"
    )]
    pub replica_selector_class: ReplicaSelector,

    /// How far behind the leader a broker's view of a partition it does not lead may be when
    /// it serves a consumer reading at the end of the log (fetch from follower): it reloads the
    /// view at most this often, and only when its watch of the topic saw the partition change
    /// (a fetch's due views together, sixteen to a metadata-store request).
    #[arg(
        long,
        env = "SKIFF_REPLICA_VIEW_REFRESH_MS",
        default_value_t = skiff_tiering::log::REPLICA_VIEW_REFRESH_MS,
        value_name = "MS"
    )]
    pub replica_view_refresh_ms: u64,

    /// Partitions another broker leads that this broker keeps a view of for consumers' reads
    /// (each holds its index tail: tens of KB); the least recently read is dropped first, but
    /// not one read within the last refresh interval (reads beyond the bound load each time).
    #[arg(
        long,
        env = "SKIFF_REPLICA_VIEWS_MAX",
        default_value_t = skiff_tiering::log::REPLICA_VIEWS_MAX,
        value_name = "PARTITIONS"
    )]
    pub replica_views_max: usize,
}

/// Where a partition's leader sends consumers' reads (`--replica-selector-class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaSelector {
    /// Consumers read from the leader.
    Leader,
    /// A consumer that names its rack reads from a broker in it.
    RackAware,
}

impl ReplicaSelector {
    /// The Kafka class that does the same (DescribeConfigs reports it).
    pub fn kafka_class(self) -> &'static str {
        match self {
            Self::Leader => "org.apache.kafka.common.replica.LeaderSelector",
            Self::RackAware => "org.apache.kafka.common.replica.RackAwareReplicaSelector",
        }
    }
}

fn parse_replica_selector(value: &str) -> Result<ReplicaSelector, String> {
    match value.trim() {
        "" | "leader" | "org.apache.kafka.common.replica.LeaderSelector" => {
            Ok(ReplicaSelector::Leader)
        }
        "rack-aware" | "org.apache.kafka.common.replica.RackAwareReplicaSelector" => {
            Ok(ReplicaSelector::RackAware)
        }
        other => Err(format!(
            "unknown replica selector {other:?}: use leader or rack-aware"
        )),
    }
}
