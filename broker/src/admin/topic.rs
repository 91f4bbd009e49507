//! `skiff topic create|list|describe|alter-config|add-partitions|delete`, in the manner of
//! `kafka-topics` and `kafka-configs --entity-type topics`.

use super::client::{describe, name_of, Client};
use super::offsets::{list_offsets, Partition, EARLIEST, LATEST};
use super::output::{failed, or_dash, show, Table};
use super::{key_value, ClientArgs, Outcome};
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

/// DescribeConfigs' and IncrementalAlterConfigs' resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;
/// DescribeConfigs' config source of a value nobody set.
const DEFAULT_CONFIG_SOURCE: i8 = 5;

/// `skiff topic …`
#[derive(Debug, Args)]
pub struct TopicCommand {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub action: TopicAction,
}

#[derive(Debug, Subcommand)]
pub enum TopicAction {
    /// Create topics.
    Create {
        /// Names of the topics to create.
        #[arg(required = true)]
        topics: Vec<String>,
        /// Partitions of each topic (the broker's `num.partitions` if not given).
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// Replication factor (the broker's default if not given; Skiff keeps one copy in the
        /// bucket whatever this says).
        #[arg(long, short = 'r')]
        replication_factor: Option<i16>,
        /// A topic config, `name=value` (e.g. `retention.ms=86400000`); repeat for more.
        #[arg(long = "config", short = 'c', value_name = "NAME=VALUE", value_parser = key_value)]
        configs: Vec<(String, String)>,
        /// Succeed for a topic that already exists.
        #[arg(long)]
        if_not_exists: bool,
        /// Ask the broker to validate the request without creating anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// List topics with their partition counts.
    List,
    /// Partitions (leader, log start and end offsets) and configs of topics.
    Describe {
        /// Topics to describe.
        #[arg(required = true)]
        topics: Vec<String>,
        /// Show every config, not only those set on the topic or the broker.
        #[arg(long)]
        all_configs: bool,
    },
    /// Set or remove topic configs (IncrementalAlterConfigs).
    AlterConfig {
        /// Topics to change.
        #[arg(required = true)]
        topics: Vec<String>,
        /// Set a config, `name=value`; repeat for more.
        #[arg(long, value_name = "NAME=VALUE", value_parser = key_value)]
        set: Vec<(String, String)>,
        /// Remove a config (back to the broker's default); repeat for more.
        #[arg(long, value_name = "NAME")]
        delete: Vec<String>,
        /// Ask the broker to validate the change without making it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Grow topics to a number of partitions (a topic's partitions can only grow).
    AddPartitions {
        /// Topics to grow.
        #[arg(required = true)]
        topics: Vec<String>,
        /// The total number of partitions each topic should have.
        #[arg(long, short = 'p')]
        partitions: i32,
        /// Ask the broker to validate the change without making it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete topics and all their records.
    Delete {
        /// Topics to delete.
        #[arg(required = true)]
        topics: Vec<String>,
    },
}

pub async fn run(command: TopicCommand) -> Outcome {
    let args = &command.client;
    let mut client = Client::connect(args).await?;
    let timeout_ms = i32::try_from(args.request_timeout_ms).unwrap_or(i32::MAX);
    match command.action {
        TopicAction::Create {
            topics,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
            dry_run,
        } => {
            let spec = CreateSpec {
                topics,
                partitions,
                replication_factor,
                configs,
                if_not_exists,
                dry_run,
            };
            let results = create_topics(&mut client, &spec, timeout_ms).await?;
            report(args, results)
        }
        TopicAction::List => {
            let metadata = client.metadata(None).await?;
            let mut topics: Vec<TopicSummary> = metadata
                .topics
                .iter()
                .map(|t| TopicSummary {
                    name: name_of(&t.name),
                    topic_id: t.topic_id.to_string(),
                    partitions: t.partitions.len(),
                    replicas: t.partitions.first().map_or(0, |p| p.replica_nodes.len()),
                    internal: t.is_internal,
                })
                .collect();
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            show(args.output, &topics, |topics| {
                let mut table = Table::new(&["NAME", "PARTITIONS", "REPLICAS"]);
                for t in topics {
                    table.row([
                        t.name.clone(),
                        t.partitions.to_string(),
                        t.replicas.to_string(),
                    ]);
                }
                table.print();
            })?;
            Ok(true)
        }
        TopicAction::Describe {
            topics,
            all_configs,
        } => describe_topics(&mut client, args, topics, all_configs).await,
        TopicAction::AlterConfig {
            topics,
            set,
            delete,
            dry_run,
        } => {
            if set.is_empty() && delete.is_empty() {
                anyhow::bail!("nothing to change: give --set name=value or --delete name");
            }
            let results = alter_configs(&mut client, &topics, &set, &delete, dry_run).await?;
            report(args, results)
        }
        TopicAction::AddPartitions {
            topics,
            partitions,
            dry_run,
        } => {
            let request = CreatePartitionsRequest::default()
                .with_topics(
                    topics
                        .iter()
                        .map(|name| {
                            CreatePartitionsTopic::default()
                                .with_name(topic_name(name))
                                .with_count(partitions)
                        })
                        .collect(),
                )
                .with_timeout_ms(timeout_ms)
                .with_validate_only(dry_run);
            let response = client.bootstrap().send(&request, 3).await?;
            let ok = if dry_run { "valid" } else { "grown" };
            let results = response
                .results
                .iter()
                .map(|r| {
                    outcome(
                        r.name.to_string(),
                        ok,
                        r.error_code,
                        r.error_message.as_ref(),
                    )
                })
                .collect();
            report(args, results)
        }
        TopicAction::Delete { topics } => {
            let results = delete_topics(&mut client, &topics, timeout_ms).await?;
            report(args, results)
        }
    }
}

/// What `topic create` (and the console) asks for.
pub struct CreateSpec {
    pub topics: Vec<String>,
    pub partitions: Option<i32>,
    pub replication_factor: Option<i16>,
    pub configs: Vec<(String, String)>,
    pub if_not_exists: bool,
    pub dry_run: bool,
}

/// CreateTopics: each topic's outcome.
pub async fn create_topics(
    client: &mut Client,
    spec: &CreateSpec,
    timeout_ms: i32,
) -> anyhow::Result<Vec<ItemResult>> {
    let CreateSpec {
        topics,
        partitions,
        replication_factor,
        configs,
        if_not_exists,
        dry_run,
    } = spec;
    let (if_not_exists, dry_run) = (*if_not_exists, *dry_run);
    let request = CreateTopicsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|name| {
                    CreatableTopic::default()
                        .with_name(topic_name(name))
                        .with_num_partitions(partitions.unwrap_or(-1))
                        .with_replication_factor(replication_factor.unwrap_or(-1))
                        .with_configs(
                            configs
                                .iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfig::default()
                                        .with_name(StrBytes::from_string(k.clone()))
                                        .with_value(Some(StrBytes::from_string(v.clone())))
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
        .with_timeout_ms(timeout_ms)
        .with_validate_only(dry_run);
    let response = client.bootstrap().send(&request, 7).await?;
    let results = response
        .topics
        .iter()
        .map(|t| {
            let exists = t.error_code == 36; // TOPIC_ALREADY_EXISTS
            let error = (t.error_code != 0 && !(exists && if_not_exists))
                .then(|| describe(t.error_code, t.error_message.as_ref()));
            let status = match (&error, exists, dry_run) {
                (Some(_), _, _) => "failed",
                (None, true, _) => "exists",
                (None, false, true) => "valid",
                (None, false, false) => "created",
            };
            ItemResult::new(t.name.to_string(), status, error)
        })
        .collect();
    Ok(results)
}

/// IncrementalAlterConfigs on topics: set and delete configs; each topic's outcome.
pub async fn alter_configs(
    client: &mut Client,
    topics: &[String],
    set: &[(String, String)],
    delete: &[String],
    dry_run: bool,
) -> anyhow::Result<Vec<ItemResult>> {
    let configs: Vec<AlterableConfig> = set
        .iter()
        .map(|(k, v)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(0) // SET
                .with_value(Some(StrBytes::from_string(v.clone())))
        })
        .chain(delete.iter().map(|k| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(1) // DELETE
        }))
        .collect();
    let request = IncrementalAlterConfigsRequest::default()
        .with_resources(
            topics
                .iter()
                .map(|name| {
                    AlterConfigsResource::default()
                        .with_resource_type(TOPIC_RESOURCE)
                        .with_resource_name(StrBytes::from_string(name.clone()))
                        .with_configs(configs.clone())
                })
                .collect(),
        )
        .with_validate_only(dry_run);
    let response = client.bootstrap().send(&request, 1).await?;
    let ok = if dry_run { "valid" } else { "altered" };
    let results = response
        .responses
        .iter()
        .map(|r| {
            outcome(
                r.resource_name.to_string(),
                ok,
                r.error_code,
                r.error_message.as_ref(),
            )
        })
        .collect();
    Ok(results)
}

/// DeleteTopics: each topic's outcome.
pub async fn delete_topics(
    client: &mut Client,
    topics: &[String],
    timeout_ms: i32,
) -> anyhow::Result<Vec<ItemResult>> {
    let request = DeleteTopicsRequest::default()
        .with_topic_names(topics.iter().map(|t| topic_name(t)).collect())
        .with_timeout_ms(timeout_ms);
    let response = client.bootstrap().send(&request, 5).await?;
    let results = response
        .responses
        .iter()
        .map(|r| {
            let name = name_of(&r.name);
            outcome(name, "deleted", r.error_code, r.error_message.as_ref())
        })
        .collect();
    Ok(results)
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

#[derive(Serialize)]
struct TopicSummary {
    name: String,
    topic_id: String,
    partitions: usize,
    replicas: usize,
    internal: bool,
}

/// One item's outcome in a command that acts on several (topics, groups).
#[derive(Serialize)]
pub struct ItemResult {
    pub name: String,
    pub status: &'static str,
    pub error: Option<String>,
}

impl ItemResult {
    pub fn new(name: String, ok: &'static str, error: Option<String>) -> ItemResult {
        let status = if error.is_some() { "failed" } else { ok };
        ItemResult {
            name,
            status,
            error,
        }
    }
}

/// An item's outcome from its Kafka error code and message.
fn outcome(name: String, ok: &'static str, code: i16, message: Option<&StrBytes>) -> ItemResult {
    ItemResult::new(name, ok, (code != 0).then(|| describe(code, message)))
}

/// Prints per-item outcomes; the command succeeded if every item did.
pub fn report(args: &ClientArgs, results: Vec<ItemResult>) -> Outcome {
    let all_ok = results.iter().all(|r| r.error.is_none());
    for r in &results {
        if let Some(error) = &r.error {
            failed(&r.name, error);
        }
    }
    show(args.output, &results, |results| {
        let mut table = Table::new(&["NAME", "STATUS"]);
        for r in results {
            table.row([r.name.as_str(), r.status]);
        }
        table.print();
    })?;
    Ok(all_ok)
}

#[derive(Serialize)]
struct TopicDescription {
    name: String,
    topic_id: String,
    internal: bool,
    partitions: Vec<PartitionDescription>,
    configs: Vec<ConfigEntry>,
}

#[derive(Serialize)]
struct PartitionDescription {
    partition: i32,
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    in_sync_replicas: Vec<i32>,
    log_start_offset: Option<i64>,
    high_watermark: Option<i64>,
}

#[derive(Serialize)]
struct ConfigEntry {
    name: String,
    value: Option<String>,
    source: &'static str,
    read_only: bool,
    sensitive: bool,
}

async fn describe_topics(
    client: &mut Client,
    args: &ClientArgs,
    topics: Vec<String>,
    all_configs: bool,
) -> Outcome {
    let metadata = client.metadata(Some(topics.clone())).await?;
    let configs = client
        .bootstrap()
        .send(
            &DescribeConfigsRequest::default().with_resources(
                topics
                    .iter()
                    .map(|t| {
                        DescribeConfigsResource::default()
                            .with_resource_type(TOPIC_RESOURCE)
                            .with_resource_name(StrBytes::from_string(t.clone()))
                    })
                    .collect(),
            ),
            4,
        )
        .await?;
    let partitions: Vec<Partition> = metadata
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .flat_map(|t| {
            let name = name_of(&t.name);
            t.partitions
                .iter()
                .map(move |p| (name.clone(), p.partition_index))
        })
        .collect();
    let earliest = list_offsets(client, &partitions, EARLIEST).await?;
    let latest = list_offsets(client, &partitions, LATEST).await?;

    let mut ok = true;
    let mut out = Vec::new();
    for topic in &metadata.topics {
        let name = name_of(&topic.name);
        if topic.error_code != 0 {
            failed(&name, &describe(topic.error_code, None));
            ok = false;
            continue;
        }
        let mut partitions: Vec<PartitionDescription> = topic
            .partitions
            .iter()
            .map(|p| {
                let key = (name.clone(), p.partition_index);
                PartitionDescription {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|n| n.0).collect(),
                    in_sync_replicas: p.isr_nodes.iter().map(|n| n.0).collect(),
                    log_start_offset: earliest.get(&key).and_then(|r| r.clone().ok()),
                    high_watermark: latest.get(&key).and_then(|r| r.clone().ok()),
                }
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        let mut entries = Vec::new();
        match configs
            .results
            .iter()
            .find(|r| r.resource_name.as_str() == name)
        {
            Some(result) if result.error_code != 0 => {
                failed(
                    &name,
                    &format!(
                        "cannot describe its configs: {}",
                        describe(result.error_code, result.error_message.as_ref())
                    ),
                );
                ok = false;
            }
            Some(result) => {
                for c in &result.configs {
                    if !all_configs && c.config_source == DEFAULT_CONFIG_SOURCE {
                        continue;
                    }
                    entries.push(ConfigEntry {
                        name: c.name.to_string(),
                        value: if c.is_sensitive {
                            None
                        } else {
                            c.value.as_ref().map(|v| v.to_string())
                        },
                        source: config_source(c.config_source),
                        read_only: c.read_only,
                        sensitive: c.is_sensitive,
                    });
                }
                entries.sort_by(|a, b| a.name.cmp(&b.name));
            }
            None => {}
        }
        out.push(TopicDescription {
            name,
            topic_id: topic.topic_id.to_string(),
            internal: topic.is_internal,
            partitions,
            configs: entries,
        });
    }
    show(args.output, &out, |topics| {
        for (i, t) in topics.iter().enumerate() {
            if i > 0 {
                println!();
            }
            println!("TOPIC       {}", t.name);
            println!("TOPIC-ID    {}", t.topic_id);
            println!("PARTITIONS  {}", t.partitions.len());
            println!();
            let mut table = Table::new(&[
                "PARTITION",
                "LEADER",
                "EPOCH",
                "REPLICAS",
                "LOG-START-OFFSET",
                "HIGH-WATERMARK",
            ]);
            for p in &t.partitions {
                table.row([
                    p.partition.to_string(),
                    p.leader.to_string(),
                    p.leader_epoch.to_string(),
                    format!("{:?}", p.replicas),
                    or_dash(p.log_start_offset),
                    or_dash(p.high_watermark),
                ]);
            }
            table.print();
            if !t.configs.is_empty() {
                println!();
                let mut table = Table::new(&["CONFIG", "VALUE", "SOURCE"]);
                for c in &t.configs {
                    let value = if c.sensitive {
                        "(sensitive)".to_owned()
                    } else {
                        or_dash(c.value.as_ref())
                    };
                    table.row([c.name.clone(), value, c.source.to_owned()]);
                }
                table.print();
            }
        }
    })?;
    Ok(ok)
}

/// Kafka's name of a DescribeConfigs config source.
fn config_source(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        _ => "UNKNOWN",
    }
}
