//! AlterConfigs and IncrementalAlterConfigs for topics.
//!
//! AlterConfigs replaces a topic's whole set of overrides (configs left out return to their
//! defaults), as Kafka does; IncrementalAlterConfigs applies SET, DELETE, APPEND and SUBTRACT
//! (the last two for list configs such as `cleanup.policy`) to the current overrides. Names and
//! values are checked against the definitions in [`super::configs`]. Changes are committed by
//! [`Catalog::update_configs`](skiff_tiering::catalog::Catalog::update_configs), a compare-and-swap
//! of the topic key re-applied on conflict, so two concurrent alters both land. The new record
//! goes straight into this broker's cached partitions (produce reads `max.message.bytes` and
//! `message.timestamp.type` from them); other brokers pick it up from their next controller
//! pass, which topic watches trigger.
//!
//! Broker settings are read once at start (flags, `SKIFF_*` env, config file), so a broker
//! resource with any config is refused as Kafka refuses configs it cannot change dynamically:
//! INVALID_REQUEST, "Cannot update these configs dynamically: [...]".

use super::configs::{self, TopicConfigs, RESOURCE_BROKER, RESOURCE_TOPIC};
use super::errors::catalog_error;
use super::Broker;
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use skiff_tiering::catalog::CatalogError;
use std::collections::{BTreeMap, BTreeSet};

/// IncrementalAlterConfigs operation codes (Kafka's `AlterConfigOp.OpType`).
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// One requested change to a topic's overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

impl Change {
    fn name(&self) -> &str {
        match self {
            Change::Set(name, _)
            | Change::Delete(name)
            | Change::Append(name, _)
            | Change::Subtract(name, _) => name,
        }
    }
}

type Refusal = (ResponseError, String);

/// What AlterConfigs carries: the whole new set. An absent value is refused, as in Kafka.
fn parse_replace<'a>(
    entries: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<Vec<Change>, Refusal> {
    let changes = entries
        .map(|(name, value)| match value {
            Some(value) => Ok(Change::Set(name.to_owned(), value.to_owned())),
            None => Err((
                ResponseError::InvalidRequest,
                format!("null value not supported for topic config: {name}"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_names(&changes)?;
    Ok(changes)
}

/// What IncrementalAlterConfigs carries: (name, operation, value) per config.
fn parse_incremental<'a>(
    entries: impl Iterator<Item = (&'a str, i8, Option<&'a str>)>,
) -> Result<Vec<Change>, Refusal> {
    let mut changes = Vec::new();
    for (name, op, value) in entries {
        let name = name.to_owned();
        let with_value = |value: Option<&str>| {
            value.map(str::to_owned).ok_or_else(|| {
                (
                    ResponseError::InvalidRequest,
                    format!("null value not supported for config: {name}"),
                )
            })
        };
        let change = match op {
            OP_SET => Change::Set(name.clone(), with_value(value)?),
            OP_DELETE => Change::Delete(name),
            OP_APPEND | OP_SUBTRACT => {
                if configs::is_known(&name) && !configs::is_list(&name) {
                    let verb = if op == OP_APPEND {
                        "append"
                    } else {
                        "subtract"
                    };
                    return Err((
                        ResponseError::InvalidConfig,
                        format!("config value {verb} is not allowed for config key: {name}"),
                    ));
                }
                let value = with_value(value)?;
                if op == OP_APPEND {
                    Change::Append(name, value)
                } else {
                    Change::Subtract(name, value)
                }
            }
            other => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("unknown config operation: operation={other} config={name}"),
                ))
            }
        };
        changes.push(change);
    }
    check_names(&changes)?;
    Ok(changes)
}

/// Kafka refuses a resource naming one config twice, and unknown topic configs.
fn check_names(changes: &[Change]) -> Result<(), Refusal> {
    let mut seen = BTreeSet::new();
    for change in changes {
        if !seen.insert(change.name()) {
            return Err((
                ResponseError::InvalidRequest,
                format!("duplicate config keys: {}", change.name()),
            ));
        }
        if !configs::is_known(change.name()) {
            return Err((
                ResponseError::InvalidConfig,
                format!("unknown topic config name: {}", change.name()),
            ));
        }
    }
    Ok(())
}

/// The overrides after `changes`; `effective` gives a config's current value (override or
/// default), which APPEND and SUBTRACT start from. Every resulting override is validated.
fn apply(
    current: &BTreeMap<String, String>,
    changes: &[Change],
    replace: bool,
    effective: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, CatalogError> {
    let mut next = if replace {
        BTreeMap::new()
    } else {
        current.clone()
    };
    for change in changes {
        match change {
            Change::Set(name, value) => {
                next.insert(name.clone(), value.clone());
            }
            Change::Delete(name) => {
                next.remove(name);
            }
            Change::Append(name, value) | Change::Subtract(name, value) => {
                let base = effective(name).unwrap_or_default();
                let mut items: Vec<String> = split_list(&base);
                for item in split_list(value) {
                    let present = items.contains(&item);
                    match change {
                        Change::Append(..) if !present => items.push(item),
                        Change::Subtract(..) => items.retain(|i| *i != item),
                        _ => {}
                    }
                }
                next.insert(name.clone(), items.join(","));
            }
        }
    }
    for change in changes {
        if let Some(value) = next.get(change.name()) {
            configs::validate(change.name(), value).map_err(CatalogError::InvalidConfig)?;
        }
    }
    Ok(next)
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Applies `changes` to one resource; `Ok` or Kafka's error code and message.
async fn alter_resource(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    changes: Result<Vec<Change>, Refusal>,
    replace: bool,
    validate_only: bool,
) -> Result<(), Refusal> {
    match resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => return alter_broker(broker, name, &changes.unwrap_or_default()),
        other => {
            return Err((
                ResponseError::InvalidRequest,
                format!("unsupported resource type: resource_type={other}"),
            ))
        }
    }
    let changes = changes?;
    let edit = |current: &BTreeMap<String, String>| {
        let configs = TopicConfigs::new(broker, current);
        apply(current, &changes, replace, &|name| configs.get(name))
    };
    let failed = |error: CatalogError| (catalog_error(&error), error.to_string());
    let catalog = broker.log.catalog();
    if validate_only {
        let topic = catalog
            .get(name)
            .await
            .map_err(failed)?
            .ok_or_else(|| failed(CatalogError::UnknownTopic(name.to_owned())))?;
        return edit(&topic.record.configs).map(drop).map_err(failed);
    }
    let topic = catalog.update_configs(name, edit).await.map_err(failed)?;
    broker.view.invalidate();
    broker.log.refresh_topic(&topic);
    tracing::info!(topic = name, configs = ?topic.record.configs, "altered topic configs");
    Ok(())
}

/// Skiff reads broker settings once at start; none can be changed through the protocol.
fn alter_broker(broker: &Broker, name: &str, changes: &[Change]) -> Result<(), Refusal> {
    if !name.is_empty() && name.parse::<i32>().is_err() {
        return Err((
            ResponseError::InvalidRequest,
            format!("broker resource name must be a broker id or empty: name={name:?}"),
        ));
    }
    if changes.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = changes.iter().map(Change::name).collect();
    Err((
        ResponseError::InvalidRequest,
        format!(
            "Cannot update these configs dynamically: [{}] (skiff reads broker settings once at \
             start: set them with flags, SKIFF_* environment variables or the config file; \
             node {} was asked)",
            names.join(", "),
            broker.node.node_id
        ),
    ))
}

/// Kafka's broker-resource parse is of names only, so unknown broker configs get the same answer.
fn parse_broker<'a>(names: impl Iterator<Item = &'a str>) -> Vec<Change> {
    names.map(|name| Change::Delete(name.to_owned())).collect()
}

fn message(refusal: &Option<Refusal>) -> (i16, Option<StrBytes>) {
    match refusal {
        None => (0, None),
        Some((code, message)) => (code.code(), Some(StrBytes::from_string(message.clone()))),
    }
}

pub async fn alter(broker: &Broker, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    for resource in request.resources {
        let name = resource.resource_name.as_str();
        let changes = if resource.resource_type == RESOURCE_BROKER {
            Ok(parse_broker(
                resource.configs.iter().map(|c| c.name.as_str()),
            ))
        } else {
            parse_replace(
                resource
                    .configs
                    .iter()
                    .map(|c| (c.name.as_str(), c.value.as_deref())),
            )
        };
        let outcome = alter_resource(
            broker,
            resource.resource_type,
            name,
            changes,
            true,
            request.validate_only,
        )
        .await;
        let (error_code, error_message) = message(&outcome.err());
        response.responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(error_code)
                .with_error_message(error_message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone()),
        );
    }
    response
}

pub async fn incremental_alter(
    broker: &Broker,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    for resource in request.resources {
        let name = resource.resource_name.as_str();
        let changes = if resource.resource_type == RESOURCE_BROKER {
            Ok(parse_broker(
                resource.configs.iter().map(|c| c.name.as_str()),
            ))
        } else {
            parse_incremental(
                resource
                    .configs
                    .iter()
                    .map(|c| (c.name.as_str(), c.config_operation, c.value.as_deref())),
            )
        };
        let outcome = alter_resource(
            broker,
            resource.resource_type,
            name,
            changes,
            false,
            request.validate_only,
        )
        .await;
        let (error_code, error_message) = message(&outcome.err());
        response.responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(error_code)
                .with_error_message(error_message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone()),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn default_of(name: &str) -> Option<String> {
        (name == "cleanup.policy").then(|| "delete".to_owned())
    }

    #[test]
    fn incremental_changes_apply_to_current_overrides() {
        let current = overrides(&[("retention.ms", "1000"), ("segment.ms", "5000")]);
        let changes = parse_incremental(
            [
                ("retention.ms", OP_SET, Some("2000")),
                ("segment.ms", OP_DELETE, None),
                ("cleanup.policy", OP_APPEND, Some("compact")),
            ]
            .into_iter(),
        )
        .expect("parses");
        let next = apply(&current, &changes, false, &default_of).expect("applies");
        assert_eq!(
            next,
            overrides(&[
                ("cleanup.policy", "delete,compact"),
                ("retention.ms", "2000")
            ])
        );

        let subtract =
            parse_incremental([("cleanup.policy", OP_SUBTRACT, Some("delete"))].into_iter())
                .expect("parses");
        let effective = |name: &str| next.get(name).cloned();
        let after = apply(&next, &subtract, false, &effective).expect("applies");
        assert_eq!(after["cleanup.policy"], "compact");
    }

    #[test]
    fn replace_drops_configs_left_out() {
        let current = overrides(&[("retention.ms", "1000"), ("segment.ms", "5000")]);
        let changes =
            parse_replace([("max.message.bytes", Some("2048"))].into_iter()).expect("parses");
        let next = apply(&current, &changes, true, &default_of).expect("applies");
        assert_eq!(next, overrides(&[("max.message.bytes", "2048")]));
    }

    #[test]
    fn bad_requests_get_kafka_codes() {
        let code = |r: Result<Vec<Change>, Refusal>| r.expect_err("refused").0;
        assert_eq!(
            code(parse_incremental(
                [("retention.ms", OP_APPEND, Some("1"))].into_iter()
            )),
            ResponseError::InvalidConfig
        );
        assert_eq!(
            code(parse_incremental(
                [("no.such", OP_SET, Some("1"))].into_iter()
            )),
            ResponseError::InvalidConfig
        );
        assert_eq!(
            code(parse_incremental(
                [("retention.ms", 9, Some("1"))].into_iter()
            )),
            ResponseError::InvalidRequest
        );
        assert_eq!(
            code(parse_incremental(
                [("retention.ms", OP_SET, None)].into_iter()
            )),
            ResponseError::InvalidRequest
        );
        assert_eq!(
            code(parse_replace(
                [("retention.ms", Some("1")), ("retention.ms", Some("2"))].into_iter()
            )),
            ResponseError::InvalidRequest
        );
        let changes =
            parse_incremental([("retention.ms", OP_SET, Some("soon"))].into_iter()).expect("ok");
        let refused = apply(&BTreeMap::new(), &changes, false, &default_of);
        assert!(matches!(refused, Err(CatalogError::InvalidConfig(m)) if m.contains("soon")));
        let emptied =
            parse_incremental([("cleanup.policy", OP_SUBTRACT, Some("delete"))].into_iter())
                .expect("ok");
        assert!(apply(&BTreeMap::new(), &emptied, false, &default_of).is_err());
    }
}
