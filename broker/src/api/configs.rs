//! Topic configs: the ones Skiff knows (Kafka's names and defaults), their validation, and
//! DescribeConfigs for topics and brokers.
//!
//! `retention.*` are enforced by the leaders (the log start) and the compactor (the bucket);
//! `cleanup.policy`, `delete.retention.ms`, `min.compaction.lag.ms` and
//! `min.cleanable.dirty.ratio` by the compactor; the others take effect on produce.

use super::Broker;
use crate::config::TimestampType;
use bytes::Bytes;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use skiff_tiering::batch::BatchHeader;
use skiff_tiering::catalog::CleanupPolicy;
use std::collections::BTreeMap;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_LIST: i8 = 7;
const TYPE_CLASS: i8 = 8;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Long {
        min: i64,
    },
    Int {
        min: i64,
    },
    /// A number from 0 to 1.
    Ratio,
    OneOf(&'static [&'static str]),
    /// Comma-separated subset of the listed values.
    ListOf(&'static [&'static str]),
}

/// Where a topic config's default comes from.
#[derive(Debug, Clone, Copy)]
enum DefaultValue {
    Fixed(&'static str),
    /// The broker's `message.max.bytes`.
    MessageMaxBytes,
    /// The broker's `log.message.timestamp.type`.
    TimestampType,
    /// The broker's `log.retention.ms`.
    RetentionMs,
    /// The broker's `log.retention.bytes`.
    RetentionBytes,
}

struct TopicConfigDef {
    name: &'static str,
    kind: Kind,
    default: DefaultValue,
}

const TIMESTAMP_TYPES: &[&str] = &["CreateTime", "LogAppendTime"];

const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        kind: Kind::ListOf(&["delete", "compact"]),
        default: DefaultValue::Fixed("delete"),
    },
    TopicConfigDef {
        name: "compression.type",
        kind: Kind::OneOf(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
        default: DefaultValue::Fixed("producer"),
    },
    TopicConfigDef {
        name: "delete.retention.ms",
        kind: Kind::Long { min: 0 },
        default: DefaultValue::Fixed("86400000"),
    },
    TopicConfigDef {
        name: "max.message.bytes",
        kind: Kind::Int { min: 0 },
        default: DefaultValue::MessageMaxBytes,
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        kind: Kind::OneOf(TIMESTAMP_TYPES),
        default: DefaultValue::TimestampType,
    },
    TopicConfigDef {
        name: "min.cleanable.dirty.ratio",
        kind: Kind::Ratio,
        default: DefaultValue::Fixed("0.5"),
    },
    TopicConfigDef {
        name: "min.compaction.lag.ms",
        kind: Kind::Long { min: 0 },
        default: DefaultValue::Fixed("0"),
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        kind: Kind::Int { min: 1 },
        default: DefaultValue::Fixed("1"),
    },
    TopicConfigDef {
        name: "parquet.value.format",
        kind: Kind::OneOf(&["binary", "json"]),
        default: DefaultValue::Fixed("binary"),
    },
    TopicConfigDef {
        name: "retention.bytes",
        kind: Kind::Long { min: -1 },
        default: DefaultValue::RetentionBytes,
    },
    TopicConfigDef {
        name: "retention.ms",
        kind: Kind::Long { min: -1 },
        default: DefaultValue::RetentionMs,
    },
    TopicConfigDef {
        name: "segment.bytes",
        kind: Kind::Int { min: 14 },
        default: DefaultValue::Fixed("1073741824"),
    },
    TopicConfigDef {
        name: "segment.ms",
        kind: Kind::Long { min: 1 },
        default: DefaultValue::Fixed("604800000"),
    },
];

fn definition(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|def| def.name == name)
}

/// Whether `name` is a topic config Skiff knows.
pub fn is_known(name: &str) -> bool {
    definition(name).is_some()
}

/// Whether `name` is a list config (comma-separated), which APPEND and SUBTRACT may change.
pub fn is_list(name: &str) -> bool {
    definition(name).is_some_and(|def| matches!(def.kind, Kind::ListOf(_)))
}

/// Checks one topic config override; the error says what is wrong.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let def = definition(name).ok_or_else(|| format!("unknown topic config {name:?}"))?;
    let ok = match def.kind {
        Kind::Long { min } | Kind::Int { min } => {
            let max = if matches!(def.kind, Kind::Int { .. }) {
                i64::from(i32::MAX)
            } else {
                i64::MAX
            };
            value.parse::<i64>().is_ok_and(|v| v >= min && v <= max)
        }
        Kind::Ratio => value.parse::<f64>().is_ok_and(|v| (0.0..=1.0).contains(&v)),
        Kind::OneOf(values) => values.contains(&value),
        Kind::ListOf(values) => value.split(',').all(|item| values.contains(&item.trim())),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid value {value:?} for topic config {name:?}"))
    }
}

/// A topic's effective configs: its overrides over the broker's defaults.
pub struct TopicConfigs<'a> {
    broker: &'a Broker,
    overrides: &'a BTreeMap<String, String>,
}

impl<'a> TopicConfigs<'a> {
    pub fn new(broker: &'a Broker, overrides: &'a BTreeMap<String, String>) -> Self {
        Self { broker, overrides }
    }

    fn default_of(&self, def: &TopicConfigDef) -> String {
        match def.default {
            DefaultValue::Fixed(value) => value.to_owned(),
            DefaultValue::MessageMaxBytes => self.broker.limits.message_max_bytes.to_string(),
            DefaultValue::TimestampType => {
                timestamp_type_name(self.broker.topic_defaults.message_timestamp_type).to_owned()
            }
            DefaultValue::RetentionMs => self.broker.topic_defaults.retention.ms.to_string(),
            DefaultValue::RetentionBytes => self.broker.topic_defaults.retention.bytes.to_string(),
        }
    }

    /// (name, value, is an override) for every known config.
    pub fn describe_all(&self) -> impl Iterator<Item = (&'static str, String, bool)> + '_ {
        TOPIC_CONFIGS
            .iter()
            .map(|def| match self.overrides.get(def.name) {
                Some(value) => (def.name, value.clone(), true),
                None => (def.name, self.default_of(def), false),
            })
    }

    /// The effective value of a known config (its override, else its default).
    pub fn get(&self, name: &str) -> Option<String> {
        let def = definition(name)?;
        Some(
            self.overrides
                .get(name)
                .cloned()
                .unwrap_or_else(|| self.default_of(def)),
        )
    }

    pub fn max_message_bytes(&self) -> usize {
        self.get("max.message.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.broker.limits.message_max_bytes)
    }

    pub fn timestamp_type(&self) -> TimestampType {
        match self.get("message.timestamp.type").as_deref() {
            Some("LogAppendTime") => TimestampType::LogAppendTime,
            _ => TimestampType::CreateTime,
        }
    }

    pub fn is_compacted(&self) -> bool {
        CleanupPolicy::of(self.overrides).compact
    }
}

/// Kafka refuses records without a key on compacted topics (INVALID_RECORD).
pub fn check_keys_for_compaction(batches: &[(BatchHeader, Bytes)]) -> Result<(), String> {
    for (_, batch) in batches {
        let set = super::records::decode_batch(batch)?;
        if set.records.iter().any(|record| record.key.is_none()) {
            return Err("compacted topic cannot accept message without key".to_owned());
        }
    }
    Ok(())
}

fn config_type(name: &str) -> i8 {
    match definition(name).map(|d| d.kind) {
        Some(Kind::Long { .. }) => TYPE_LONG,
        Some(Kind::Int { .. }) => TYPE_INT,
        Some(Kind::Ratio) => TYPE_DOUBLE,
        Some(Kind::ListOf(_)) => TYPE_LIST,
        _ => TYPE_STRING,
    }
}

/// One described config. Topic configs can be altered (read_only=false); broker settings are
/// read once at start, so they are read-only.
fn entry(
    name: &str,
    value: Option<String>,
    source: i8,
    kind: i8,
    read_only: bool,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(name.to_owned()))
        .with_value(value.map(StrBytes::from_string))
        .with_read_only(read_only)
        .with_config_source(source)
        .with_config_type(kind)
}

pub async fn describe(broker: &Broker, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let wanted = |name: &str| {
            resource
                .configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.is_empty() || keys.iter().any(|k| k.as_str() == name))
        };
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        match resource.resource_type {
            RESOURCE_TOPIC => match broker.log.catalog().get(&resource.resource_name).await {
                Ok(Some(topic)) => {
                    let configs = TopicConfigs::new(broker, &topic.record.configs);
                    result.configs = configs
                        .describe_all()
                        .filter(|(name, _, _)| wanted(name))
                        .map(|(name, value, overridden)| {
                            let source = if overridden {
                                SOURCE_DYNAMIC_TOPIC
                            } else {
                                SOURCE_DEFAULT
                            };
                            entry(name, Some(value), source, config_type(name), false)
                        })
                        .collect();
                }
                Ok(None) => {
                    result.error_code = ResponseError::UnknownTopicOrPartition.code();
                    result.error_message = Some(StrBytes::from_string(format!(
                        "unknown topic {}",
                        resource.resource_name.as_str()
                    )));
                }
                Err(error) => {
                    result.error_code = ResponseError::KafkaStorageError.code();
                    result.error_message = Some(StrBytes::from_string(error.to_string()));
                }
            },
            RESOURCE_BROKER
                if resource.resource_name.is_empty()
                    || resource.resource_name.as_str() == broker.node.node_id.to_string() =>
            {
                result.configs = broker_configs(broker)
                    .into_iter()
                    .filter(|(name, _, _)| wanted(name))
                    .map(|(name, value, kind)| entry(name, value, SOURCE_STATIC_BROKER, kind, true))
                    .collect();
            }
            _ => {
                result.error_code = ResponseError::InvalidRequest.code();
                result.error_message = Some(StrBytes::from_static_str(
                    "only topic and broker resources are supported",
                ));
            }
        }
        response.results.push(result);
    }
    response
}

fn timestamp_type_name(timestamp_type: TimestampType) -> &'static str {
    match timestamp_type {
        TimestampType::CreateTime => "CreateTime",
        TimestampType::LogAppendTime => "LogAppendTime",
    }
}

/// Broker settings DescribeConfigs reports (Kafka's names) that request handling does not
/// otherwise keep, fixed at start (None: unset, reported as null as Kafka does). All are
/// static: Skiff reads its settings once.
#[derive(Debug, Clone, Default)]
pub struct StaticBrokerConfigs(Vec<(&'static str, Option<String>, i8)>);

impl StaticBrokerConfigs {
    /// `listeners` are the bound Kafka listeners, `advertised` what clients are told, both as
    /// Kafka writes them (`NAME://HOST:PORT,...`).
    pub fn new(args: &crate::config::ServeArgs, listeners: String, advertised: String) -> Self {
        let retention_ms = args.log_retention_ms;
        let long = |v: u64| (v.to_string(), TYPE_LONG);
        let int = |v: usize| (v.to_string(), TYPE_INT);
        let entries: Vec<(&'static str, (String, i8))> = vec![
            ("listeners", (listeners, TYPE_LIST)),
            ("advertised.listeners", (advertised, TYPE_LIST)),
            (
                "listener.security.protocol.map",
                (args.listener_security_protocol_map.clone(), TYPE_LIST),
            ),
            (
                "sasl.enabled.mechanisms",
                (
                    args.sasl
                        .sasl_enabled_mechanisms
                        .iter()
                        .map(|m| m.name())
                        .collect::<Vec<_>>()
                        .join(","),
                    TYPE_LIST,
                ),
            ),
            ("log.retention.ms", (retention_ms.to_string(), TYPE_LONG)),
            (
                "log.retention.hours",
                // Unlimited (-1) stays -1, not 0 hours.
                (
                    if retention_ms < 0 {
                        -1
                    } else {
                        retention_ms / 3_600_000
                    }
                    .to_string(),
                    TYPE_INT,
                ),
            ),
            (
                "log.retention.bytes",
                (args.log_retention_bytes.to_string(), TYPE_LONG),
            ),
            (
                "replica.selector.class",
                (
                    args.replicas
                        .replica_selector_class
                        .kafka_class()
                        .to_owned(),
                    TYPE_CLASS,
                ),
            ),
            ("log.cleanup.policy", ("delete".to_owned(), TYPE_LIST)),
            ("log.segment.bytes", ("1073741824".to_owned(), TYPE_INT)),
            ("compression.type", ("producer".to_owned(), TYPE_STRING)),
            ("default.replication.factor", ("1".to_owned(), TYPE_INT)),
            ("min.insync.replicas", ("1".to_owned(), TYPE_INT)),
            ("fetch.max.bytes", int(args.fetch_max_bytes)),
            (
                "connections.max.idle.ms",
                long(args.connections_max_idle_ms),
            ),
            (
                "broker.session.timeout.ms",
                long(args.broker_session_timeout_ms),
            ),
            (
                "group.initial.rebalance.delay.ms",
                long(args.group_initial_rebalance_delay_ms),
            ),
            (
                "group.min.session.timeout.ms",
                long(args.group_min_session_timeout_ms),
            ),
            (
                "group.max.session.timeout.ms",
                long(args.group_max_session_timeout_ms),
            ),
            ("group.max.size", int(args.group_max_size)),
            (
                "offsets.retention.minutes",
                long(args.offsets_retention_minutes),
            ),
            (
                "offsets.retention.check.interval.ms",
                long(args.offsets_retention_check_interval_ms),
            ),
            (
                "producer.id.expiration.ms",
                (args.producer_id_expiration_ms.to_string(), TYPE_LONG),
            ),
        ];
        let rack = args.replicas.broker_rack.clone().filter(|r| !r.is_empty());
        Self(
            entries
                .into_iter()
                .map(|(name, (value, kind))| (name, Some(value), kind))
                .chain([("broker.rack", rack, TYPE_STRING)])
                .collect(),
        )
    }
}

/// A topic's `retention.ms` and `retention.bytes`, else the broker's `log.retention.ms` (7
/// days) and `log.retention.bytes` (none); -1 is unlimited.
pub fn retention(
    configs: &BTreeMap<String, String>,
    defaults: skiff_tiering::log::Retention,
) -> skiff_tiering::log::Retention {
    // As Kafka: time and size retention apply only with the "delete" policy (a topic that is
    // only compacted keeps the latest value of every key forever).
    if !CleanupPolicy::of(configs).delete {
        return skiff_tiering::log::Retention {
            ms: skiff_tiering::log::RETENTION_UNLIMITED,
            bytes: skiff_tiering::log::RETENTION_UNLIMITED,
        };
    }
    let get = |name: &str, default: i64| {
        configs
            .get(name)
            .map_or(Some(default), |v| v.parse().ok())
            .unwrap_or(skiff_tiering::log::RETENTION_UNLIMITED)
    };
    skiff_tiering::log::Retention {
        ms: get("retention.ms", defaults.ms),
        bytes: get("retention.bytes", defaults.bytes),
    }
}

fn broker_configs(broker: &Broker) -> Vec<(&'static str, Option<String>, i8)> {
    let timestamp_type = timestamp_type_name(broker.topic_defaults.message_timestamp_type);
    let node_id = broker.node.node_id.to_string();
    let configs = vec![
        ("node.id", node_id.clone(), TYPE_INT),
        ("broker.id", node_id, TYPE_INT),
        (
            "auto.create.topics.enable",
            broker.topic_defaults.auto_create_topics_enable.to_string(),
            TYPE_BOOLEAN,
        ),
        (
            "num.partitions",
            broker.topic_defaults.num_partitions.to_string(),
            TYPE_INT,
        ),
        (
            "message.max.bytes",
            broker.limits.message_max_bytes.to_string(),
            TYPE_INT,
        ),
        (
            "socket.request.max.bytes",
            broker.limits.socket_request_max_bytes.to_string(),
            TYPE_INT,
        ),
        (
            "fetch.max.bytes",
            broker.limits.fetch_max_bytes.to_string(),
            TYPE_INT,
        ),
        (
            "max.connections",
            broker.limits.max_connections.to_string(),
            TYPE_INT,
        ),
        (
            "log.message.timestamp.type",
            timestamp_type.to_owned(),
            TYPE_STRING,
        ),
    ];
    let mut configs: Vec<_> = configs
        .into_iter()
        .map(|(name, value, kind)| (name, Some(value), kind))
        .collect();
    for (name, value, kind) in &broker.static_configs.0 {
        if !configs.iter().any(|(known, _, _)| known == name) {
            configs.push((name, value.clone(), *kind));
        }
    }
    configs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_known_configs() {
        validate("retention.ms", "1000").expect("valid");
        validate("retention.ms", "-1").expect("valid");
        validate("cleanup.policy", "compact,delete").expect("valid");
        validate("message.timestamp.type", "LogAppendTime").expect("valid");
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("max.message.bytes", "99999999999").is_err());
        assert!(validate("cleanup.policy", "shred").is_err());
        assert!(validate("no.such.config", "1").is_err());
    }
}
