//! `skiff group list|describe|reset-offsets|delete`, in the manner of
//! `kafka-consumer-groups`.

use super::client::{describe, error_name, name_of, Client};
use super::offsets::{list_offsets, Partition, EARLIEST, LATEST};
use super::output::{failed, or_dash, show, Table};
use super::topic::{report, ItemResult};
use super::{ClientArgs, Outcome};
use anyhow::{bail, Context};
use clap::{ArgGroup, Args, Subcommand};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// `skiff group …`
#[derive(Debug, Args)]
pub struct GroupCommand {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub action: GroupAction,
}

#[derive(Debug, Subcommand)]
pub enum GroupAction {
    /// List consumer groups with their states (asks every broker: each lists the groups it
    /// coordinates).
    List,
    /// A group's state and members, and per partition its committed offset, the log end
    /// offset and the lag.
    Describe {
        /// Consumer groups to describe.
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Move an inactive group's committed offsets. Prints the plan and changes nothing unless
    /// `--execute` is given (as `kafka-consumer-groups --reset-offsets`).
    #[command(group(ArgGroup::new("to").required(true).args([
        "to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"
    ])))]
    #[command(group(ArgGroup::new("scope").required(true).args(["topic", "all_topics"])))]
    ResetOffsets {
        /// The consumer group.
        group: String,
        /// A topic (all its partitions) or `topic:0,2` (those partitions); repeat for more.
        #[arg(long, value_name = "TOPIC[:PARTITIONS]")]
        topic: Vec<String>,
        /// Every topic the group has committed offsets for.
        #[arg(long)]
        all_topics: bool,
        /// To each partition's log start offset.
        #[arg(long)]
        to_earliest: bool,
        /// To each partition's log end offset.
        #[arg(long)]
        to_latest: bool,
        /// To this offset (kept within each partition's log start and end).
        #[arg(long, allow_negative_numbers = true)]
        to_offset: Option<i64>,
        /// To the first offset at or after a time: `2026-12-06T10:00:00` (UTC) or with an
        /// offset, `2026-12-06T10:00:00+01:00`.
        #[arg(long)]
        to_datetime: Option<String>,
        /// By this many offsets from the committed offset (negative: back), kept within the log.
        #[arg(long, allow_negative_numbers = true)]
        shift_by: Option<i64>,
        /// Commit the new offsets (without it, only print them).
        #[arg(long)]
        execute: bool,
    },
    /// Delete consumer groups and their committed offsets (a group must have no members).
    Delete {
        /// Consumer groups to delete.
        #[arg(required = true)]
        groups: Vec<String>,
    },
}

pub async fn run(command: GroupCommand) -> Outcome {
    let args = &command.client;
    let mut client = Client::connect(args).await?;
    match command.action {
        GroupAction::List => list(&mut client, args).await,
        GroupAction::Describe { groups } => describe_groups(&mut client, args, groups).await,
        GroupAction::ResetOffsets {
            group,
            topic,
            all_topics: _,
            to_earliest,
            to_latest,
            to_offset,
            to_datetime,
            shift_by,
            execute,
        } => {
            let target = match (to_earliest, to_latest, to_offset, to_datetime, shift_by) {
                (true, ..) => Target::Earliest,
                (_, true, ..) => Target::Latest,
                (_, _, Some(offset), ..) => Target::Offset(offset),
                (_, _, _, Some(time), _) => Target::Time(parse_datetime(&time)?),
                (.., Some(by)) => Target::Shift(by),
                _ => bail!("say where to: --to-earliest, --to-latest, --to-offset, --to-datetime or --shift-by"),
            };
            reset_offsets(&mut client, args, &group, &topic, target, execute).await
        }
        GroupAction::Delete { groups } => {
            let mut results = Vec::new();
            for group in groups {
                let error = match delete_group(&mut client, &group).await {
                    Ok(code) => (code != 0).then(|| describe(code, None)),
                    Err(error) => Some(format!("{error:#}")),
                };
                results.push(ItemResult::new(group, "deleted", error));
            }
            report(args, results)
        }
    }
}

#[derive(Serialize)]
struct ListedGroup {
    group: String,
    state: String,
    protocol_type: String,
    coordinator: i32,
}

async fn list(client: &mut Client, args: &ClientArgs) -> Outcome {
    let nodes: Vec<i32> = client.brokers().map(|b| b.node_id).collect();
    let mut groups = Vec::new();
    let mut ok = true;
    for node in nodes {
        let response = match client.node(node).await {
            Ok(connection) => connection.send(&ListGroupsRequest::default(), 4).await,
            Err(error) => Err(error),
        };
        match response {
            Ok(response) if response.error_code != 0 => {
                failed(
                    &format!("broker {node}"),
                    &describe(response.error_code, None),
                );
                ok = false;
            }
            Ok(response) => groups.extend(response.groups.into_iter().map(|g| ListedGroup {
                group: g.group_id.to_string(),
                state: g.group_state.to_string(),
                protocol_type: g.protocol_type.to_string(),
                coordinator: node,
            })),
            Err(error) => {
                failed(&format!("broker {node}"), &format!("{error:#}"));
                ok = false;
            }
        }
    }
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    // Brokers of one cluster may share a group table: list each group once.
    groups.dedup_by(|a, b| a.group == b.group);
    show(args.output, &groups, |groups| {
        let mut table = Table::new(&["GROUP", "STATE", "PROTOCOL-TYPE", "COORDINATOR"]);
        for g in groups {
            let state = if g.state.is_empty() { "-" } else { &g.state };
            table.row([
                &g.group,
                state,
                &g.protocol_type,
                &g.coordinator.to_string(),
            ]);
        }
        table.print();
    })?;
    Ok(ok)
}

#[derive(Serialize)]
struct GroupDescription {
    group: String,
    coordinator: i32,
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<Member>,
    offsets: Vec<PartitionLag>,
}

#[derive(Serialize)]
struct Member {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    host: String,
    assignment: Vec<(String, i32)>,
}

#[derive(Serialize)]
struct PartitionLag {
    topic: String,
    partition: i32,
    committed_offset: Option<i64>,
    log_end_offset: Option<i64>,
    lag: Option<i64>,
    member_id: Option<String>,
}

/// A group as its coordinator describes it: state and members.
struct Described {
    coordinator: i32,
    error_code: i16,
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<Member>,
}

async fn describe_group(client: &mut Client, group: &str) -> anyhow::Result<Described> {
    let coordinator = client.group_coordinator(group).await?;
    let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
    let response = client.node(coordinator).await?.send(&request, 5).await?;
    let described = response
        .groups
        .into_iter()
        .next()
        .context("the coordinator described no group")?;
    let members = described
        .members
        .into_iter()
        .map(|m| Member {
            member_id: m.member_id.to_string(),
            group_instance_id: m.group_instance_id.map(|i| i.to_string()),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignment: if described.protocol_type.as_str() == "consumer" {
                consumer_assignment(m.member_assignment)
            } else {
                Vec::new()
            },
        })
        .collect();
    Ok(Described {
        coordinator,
        error_code: described.error_code,
        state: described.group_state.to_string(),
        protocol_type: described.protocol_type.to_string(),
        protocol: described.protocol_data.to_string(),
        members,
    })
}

/// The partitions in a consumer's assignment (ConsumerProtocolAssignment, version first);
/// none for bytes that are not one.
fn consumer_assignment(mut bytes: bytes::Bytes) -> Vec<(String, i32)> {
    use bytes::Buf;
    if bytes.len() < 2 {
        return Vec::new();
    }
    let version = bytes.get_i16();
    let Ok(assignment) = ConsumerProtocolAssignment::decode(&mut bytes, version.clamp(0, 3)) else {
        return Vec::new();
    };
    assignment
        .assigned_partitions
        .into_iter()
        .flat_map(|t| {
            let topic = t.topic.to_string();
            t.partitions.into_iter().map(move |p| (topic.clone(), p))
        })
        .collect()
}

/// The group's committed offsets.
async fn committed(
    client: &mut Client,
    coordinator: i32,
    group: &str,
) -> anyhow::Result<BTreeMap<Partition, i64>> {
    let request = OffsetFetchRequest::default()
        .with_group_id(group_id(group))
        .with_topics(None);
    let response = client.node(coordinator).await?.send(&request, 7).await?;
    if response.error_code != 0 {
        bail!(
            "cannot fetch the committed offsets: {}",
            describe(response.error_code, None)
        );
    }
    let mut out = BTreeMap::new();
    for topic in response.topics {
        for p in topic.partitions {
            if p.error_code == 0 && p.committed_offset >= 0 {
                out.insert(
                    (topic.name.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(out)
}

async fn describe_groups(client: &mut Client, args: &ClientArgs, groups: Vec<String>) -> Outcome {
    let mut ok = true;
    let mut out = Vec::new();
    for group in groups {
        match describe_one(client, &group).await {
            Ok(description) => out.push(description),
            Err(error) => {
                failed(&group, &format!("{error:#}"));
                ok = false;
            }
        }
    }
    show(args.output, &out, |groups| {
        for (i, g) in groups.iter().enumerate() {
            if i > 0 {
                println!();
            }
            println!("GROUP        {}", g.group);
            println!("COORDINATOR  {}", g.coordinator);
            println!("STATE        {}", g.state);
            println!(
                "PROTOCOL     {}",
                format!("{} {}", g.protocol_type, g.protocol).trim_end()
            );
            println!("MEMBERS      {}", g.members.len());
            println!();
            let mut table = Table::new(&[
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "LAG",
                "MEMBER-ID",
            ]);
            for p in &g.offsets {
                table.row([
                    p.topic.clone(),
                    p.partition.to_string(),
                    or_dash(p.committed_offset),
                    or_dash(p.log_end_offset),
                    or_dash(p.lag),
                    or_dash(p.member_id.as_ref()),
                ]);
            }
            table.print();
        }
    })?;
    Ok(ok)
}

async fn describe_one(client: &mut Client, group: &str) -> anyhow::Result<GroupDescription> {
    let described = describe_group(client, group).await?;
    if described.error_code != 0 {
        bail!("{}", describe(described.error_code, None));
    }
    let committed = committed(client, described.coordinator, group).await?;
    let mut owners: BTreeMap<Partition, String> = BTreeMap::new();
    for m in &described.members {
        for p in &m.assignment {
            owners.insert(p.clone(), m.member_id.clone());
        }
    }
    let partitions: Vec<Partition> = committed
        .keys()
        .chain(owners.keys())
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let ends = list_offsets(client, &partitions, LATEST).await?;
    let offsets = partitions
        .into_iter()
        .map(|p| {
            let committed_offset = committed.get(&p).copied();
            let log_end_offset = ends.get(&p).and_then(|r| r.clone().ok());
            PartitionLag {
                lag: committed_offset
                    .zip(log_end_offset)
                    .map(|(c, e)| (e - c).max(0)),
                member_id: owners.get(&p).cloned(),
                topic: p.0,
                partition: p.1,
                committed_offset,
                log_end_offset,
            }
        })
        .collect();
    Ok(GroupDescription {
        group: group.to_owned(),
        coordinator: described.coordinator,
        state: described.state,
        protocol_type: described.protocol_type,
        protocol: described.protocol,
        members: described.members,
        offsets,
    })
}

/// Where `reset-offsets` moves a group's offsets.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Earliest,
    Latest,
    Offset(i64),
    Time(i64),
    Shift(i64),
}

/// `2026-12-06T10:00:00[.sss]` (UTC) or RFC 3339 with an offset, as milliseconds since the
/// epoch.
pub fn parse_datetime(text: &str) -> anyhow::Result<i64> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_millis());
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|t| t.and_utc().timestamp_millis())
        .with_context(|| {
            format!("--to-datetime {text:?}: expected 2026-12-06T10:00:00 (UTC) or 2026-12-06T10:00:00+01:00")
        })
}

#[derive(Serialize)]
pub struct PlannedOffset {
    pub topic: String,
    pub partition: i32,
    pub current_offset: Option<i64>,
    pub new_offset: i64,
}

#[derive(Serialize)]
struct ResetPlan {
    group: String,
    executed: bool,
    offsets: Vec<PlannedOffset>,
}

async fn reset_offsets(
    client: &mut Client,
    args: &ClientArgs,
    group: &str,
    topics: &[String],
    target: Target,
    execute: bool,
) -> Outcome {
    let (coordinator, plan) = plan_reset(client, group, topics, target).await?;
    let mut ok = true;
    if execute {
        let failures = commit(client, coordinator, group, &plan).await?;
        for (partition, why) in &failures {
            failed(partition, why);
        }
        ok = failures.is_empty();
    }
    let plan = ResetPlan {
        group: group.to_owned(),
        executed: execute,
        offsets: plan,
    };
    show(args.output, &plan, |plan| {
        let mut table = Table::new(&[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "NEW-OFFSET",
        ]);
        for o in &plan.offsets {
            table.row([
                plan.group.clone(),
                o.topic.clone(),
                o.partition.to_string(),
                or_dash(o.current_offset),
                o.new_offset.to_string(),
            ]);
        }
        table.print();
        if !plan.executed {
            println!();
            println!("(dry run: nothing changed; add --execute to commit these offsets)");
        }
    })?;
    Ok(ok)
}

/// Where an inactive group's offsets would go (`topics` as `--topic` takes them, none for every
/// partition it has committed offsets for): its coordinator and the plan. Nothing is changed.
pub async fn plan_reset(
    client: &mut Client,
    group: &str,
    topics: &[String],
    target: Target,
) -> anyhow::Result<(i32, Vec<PlannedOffset>)> {
    let described = describe_group(client, group).await?;
    // GROUP_ID_NOT_FOUND: a group that never had members; its offsets may still be set.
    if described.error_code != 0 && described.error_code != 69 {
        bail!(
            "cannot describe group {group:?}: {}",
            describe(described.error_code, None)
        );
    }
    if !matches!(described.state.as_str(), "Empty" | "Dead" | "") {
        bail!(
            "offsets can only be reset while group {group:?} is inactive (it is {}); stop its consumers first",
            described.state
        );
    }
    let committed = committed(client, described.coordinator, group).await?;
    let partitions = reset_scope(client, topics, &committed).await?;
    if partitions.is_empty() {
        bail!("no partitions to reset");
    }
    let earliest = list_offsets(client, &partitions, EARLIEST).await?;
    let latest = list_offsets(client, &partitions, LATEST).await?;
    let at_time = match target {
        Target::Time(ms) => Some(list_offsets(client, &partitions, ms).await?),
        _ => None,
    };
    let mut plan = Vec::new();
    for p in &partitions {
        let bounds = earliest
            .get(p)
            .cloned()
            .unwrap_or_else(|| Err("no answer".to_owned()))
            .and_then(|low| {
                let high = latest
                    .get(p)
                    .cloned()
                    .unwrap_or_else(|| Err("no answer".to_owned()))?;
                Ok((low, high))
            });
        let (low, high) = match bounds {
            Ok(bounds) => bounds,
            Err(error) => bail!("{}:{}: cannot read its offsets: {error}", p.0, p.1),
        };
        let current = committed.get(p).copied();
        let new_offset = match target {
            Target::Earliest => low,
            Target::Latest => high,
            Target::Offset(offset) => offset.clamp(low, high),
            Target::Shift(by) => match current {
                Some(current) => current.saturating_add(by).clamp(low, high),
                None => bail!(
                    "{}:{}: cannot shift: the group has no committed offset there",
                    p.0,
                    p.1
                ),
            },
            Target::Time(_) => match at_time.as_ref().and_then(|m| m.get(p)) {
                Some(Ok(offset)) => (*offset).clamp(low, high),
                Some(Err(error)) => bail!(
                    "{}:{}: cannot find the offset of that time: {error}",
                    p.0,
                    p.1
                ),
                None => bail!("{}:{}: no offset for that time", p.0, p.1),
            },
        };
        plan.push(PlannedOffset {
            topic: p.0.clone(),
            partition: p.1,
            current_offset: current,
            new_offset,
        });
    }
    Ok((described.coordinator, plan))
}

/// The partitions `--topic` names (all of a topic's, or those listed), or with `--all-topics`
/// (no `--topic`) those the group has committed offsets for.
async fn reset_scope(
    client: &mut Client,
    topics: &[String],
    committed: &BTreeMap<Partition, i64>,
) -> anyhow::Result<Vec<Partition>> {
    if topics.is_empty() {
        return Ok(committed.keys().cloned().collect());
    }
    let mut out = BTreeSet::new();
    let mut whole = Vec::new();
    for spec in topics {
        match spec.split_once(':') {
            Some((topic, list)) => {
                for p in list.split(',') {
                    let partition = p.trim().parse::<i32>().with_context(|| {
                        format!("--topic {spec:?}: {p:?} is not a partition number")
                    })?;
                    out.insert((topic.to_owned(), partition));
                }
            }
            None => whole.push(spec.clone()),
        }
    }
    if !whole.is_empty() {
        let metadata = client.metadata(Some(whole)).await?;
        for topic in metadata.topics {
            let name = name_of(&topic.name);
            if topic.error_code != 0 {
                bail!("topic {name:?}: {}", describe(topic.error_code, None));
            }
            out.extend(
                topic
                    .partitions
                    .iter()
                    .map(|p| (name.clone(), p.partition_index)),
            );
        }
    }
    Ok(out.into_iter().collect())
}

/// Commits the planned offsets as an admin would (no member, generation -1): the partitions
/// whose commit was refused, and why.
pub async fn commit(
    client: &mut Client,
    coordinator: i32,
    group: &str,
    plan: &[PlannedOffset],
) -> anyhow::Result<Vec<(String, String)>> {
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for o in plan {
        topics.entry(&o.topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(o.partition)
                .with_committed_offset(o.new_offset),
        );
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name.to_owned())))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response = client.node(coordinator).await?.send(&request, 7).await?;
    let mut failures = Vec::new();
    for topic in response.topics {
        for p in topic.partitions {
            if p.error_code != 0 {
                failures.push((
                    format!("{}:{}", topic.name.as_str(), p.partition_index),
                    format!("commit refused: {}", error_name(p.error_code)),
                ));
            }
        }
    }
    Ok(failures)
}

/// Deletes one group through its coordinator: its error code.
async fn delete_group(client: &mut Client, group: &str) -> anyhow::Result<i16> {
    let coordinator = client.group_coordinator(group).await?;
    let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
    let response = client.node(coordinator).await?.send(&request, 2).await?;
    Ok(response.results.first().map_or(0, |r| r.error_code))
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_owned()))
}
