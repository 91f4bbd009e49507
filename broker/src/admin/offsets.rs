//! Partition offsets through ListOffsets, asked of each partition's leader: the earliest and
//! latest offsets and the offset of a time, which `topic describe` and the `group` commands use.

use super::client::{describe, name_of, Client};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;

/// ListOffsets' special timestamps.
pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;

/// A topic partition.
pub type Partition = (String, i32);

/// The offset of `timestamp` (or [`EARLIEST`] / [`LATEST`]) for each partition, or why it
/// could not be had. For a time after every record's, the latest offset (as Kafka's tools do).
pub async fn list_offsets(
    client: &mut Client,
    partitions: &[Partition],
    timestamp: i64,
) -> anyhow::Result<BTreeMap<Partition, Result<i64, String>>> {
    let mut out = BTreeMap::new();
    if partitions.is_empty() {
        return Ok(out);
    }
    let mut topics: Vec<String> = partitions.iter().map(|(t, _)| t.clone()).collect();
    topics.sort();
    topics.dedup();
    let metadata = client.metadata(Some(topics)).await?;
    let mut leaders = BTreeMap::new();
    for topic in &metadata.topics {
        let name = name_of(&topic.name);
        for p in &topic.partitions {
            leaders.insert((name.clone(), p.partition_index), p.leader_id.0);
        }
    }
    let mut by_leader: BTreeMap<i32, Vec<&Partition>> = BTreeMap::new();
    for partition in partitions {
        match leaders.get(partition) {
            Some(leader) if *leader >= 0 => by_leader.entry(*leader).or_default().push(partition),
            Some(_) => {
                out.insert(
                    partition.clone(),
                    Err("the partition has no leader".to_owned()),
                );
            }
            None => {
                out.insert(partition.clone(), Err("no such topic partition".to_owned()));
            }
        }
    }
    for (leader, partitions) in by_leader {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in &partitions {
            topics.entry(topic).or_default().push(*partition);
        }
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(
                topics
                    .into_iter()
                    .map(|(name, indexes)| {
                        ListOffsetsTopic::default()
                            .with_name(TopicName(StrBytes::from_string(name.to_owned())))
                            .with_partitions(
                                indexes
                                    .into_iter()
                                    .map(|index| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(index)
                                            .with_timestamp(timestamp)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let response = match client.node(leader).await {
            Ok(connection) => connection.send(&request, 7).await,
            Err(error) => Err(error),
        };
        match response {
            Ok(response) => {
                for topic in response.topics {
                    for p in topic.partitions {
                        let result = if p.error_code != 0 {
                            Err(describe(p.error_code, None))
                        } else {
                            Ok(p.offset)
                        };
                        out.insert((topic.name.to_string(), p.partition_index), result);
                    }
                }
            }
            Err(error) => {
                for partition in partitions {
                    out.insert(partition.clone(), Err(format!("{error:#}")));
                }
            }
        }
    }
    // A time after the last record: no offset (-1); Kafka's tools take the latest then.
    let beyond: Vec<Partition> = out
        .iter()
        .filter(|(_, r)| timestamp >= 0 && matches!(r, Ok(-1)))
        .map(|(p, _)| p.clone())
        .collect();
    if !beyond.is_empty() {
        let latest = Box::pin(list_offsets(client, &beyond, LATEST)).await?;
        out.extend(latest);
    }
    Ok(out)
}
