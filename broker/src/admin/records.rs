//! `skiff produce` and `skiff consume`: quick checks of a topic from a shell, in the manner of
//! `kcat -P` / `kcat -C` and `rpk topic produce|consume` (no consumer group; for applications use
//! a Kafka client library).
//!
//! Batches are encoded and decoded by `skiff_tiering`'s record code (uncompressed v2 batches with
//! a valid CRC out; any codec in, every CRC checked, repeated header keys kept).

use super::client::{describe, Client};
use super::offsets::{list_offsets, Partition, EARLIEST, LATEST};
use super::output::{show, Table};
use super::{key_value, ClientArgs, Outcome};
use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;
use skiff_tiering::batch;
use skiff_tiering::records::{self, BatchFields, HeaderRef, RecordRef};
use skiff_tiering::{Clock, SystemClock};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};

/// Records per produced batch, and bytes of records per batch (well under Kafka's 1 MiB
/// default `max.message.bytes`).
const BATCH_RECORDS_MAX: usize = 1_000;
const BATCH_BYTES_MAX: usize = 512 << 10;
/// Bytes a Fetch may return per partition and per response.
const FETCH_PARTITION_MAX_BYTES: i32 = 1 << 20;
const FETCH_MAX_BYTES: i32 = 8 << 20;

/// `skiff produce`
#[derive(Debug, Args)]
pub struct ProduceCommand {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The topic to write to.
    pub topic: String,
    /// One record with this value; without it, each line of stdin is a record.
    #[arg(long, short = 'v')]
    pub value: Option<String>,
    /// The key of every record (Kafka's partitioner, murmur2, picks the partition from it).
    #[arg(long, short = 'k')]
    pub key: Option<String>,
    /// Split each stdin line at the first SEPARATOR into key and value (like kcat's `-K`).
    #[arg(long, short = 'K', value_name = "SEPARATOR", conflicts_with = "key")]
    pub key_separator: Option<String>,
    /// A header of every record, `name=value`; repeat for more (the same name may repeat).
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE", value_parser = key_value)]
    pub headers: Vec<(String, String)>,
    /// The partition to write to (by default the key's partition, or one chosen at random for
    /// records without a key).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Acknowledgement to wait for: `all` (every in-sync replica; in Skiff, the object and its
    /// commit) or `1` (the leader). Kafka's `acks`.
    #[arg(long, default_value = "all", value_parser = ["all", "-1", "1"])]
    pub acks: String,
}

/// `skiff consume`
#[derive(Debug, Args)]
pub struct ConsumeCommand {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The topic to read.
    pub topic: String,
    /// Only these partitions (repeat for more; all by default).
    #[arg(long = "partition", short = 'p')]
    pub partitions: Vec<i32>,
    /// Where to start in each partition: `earliest`, `latest`, an offset, or `-N` for the last
    /// N records.
    #[arg(
        long,
        short = 'o',
        default_value = "earliest",
        allow_hyphen_values = true
    )]
    pub offset: String,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Keep waiting for new records instead of stopping at the end of each partition.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// `json`: one object per record (topic, partition, offset, timestamp, key, value,
    /// headers); `text`: each value on its own line.
    #[arg(long, value_enum, default_value = "json")]
    pub format: RecordFormat,
    /// How keys, values and header values are written in `json`: as text (invalid UTF-8
    /// replaced) or as hex.
    #[arg(long, value_enum, default_value = "text")]
    pub bytes_as: BytesAs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BytesAs {
    Text,
    Hex,
}

/// The partition Kafka's default partitioner (Java's, librdkafka's `murmur2_random`) gives a
/// key.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    let hash = murmur2::murmur2(key, murmur2::KAFKA_SEED) & 0x7fff_ffff;
    i32::try_from(hash % u32::try_from(partitions.max(1)).unwrap_or(1)).unwrap_or(0)
}

struct Input {
    key: Option<Bytes>,
    value: Bytes,
}

#[derive(Serialize)]
struct Produced {
    partition: i32,
    base_offset: i64,
    records: usize,
}

pub async fn produce(command: ProduceCommand) -> Outcome {
    let args = &command.client;
    let inputs = read_inputs(&command)?;
    if inputs.is_empty() {
        bail!("nothing to produce: give --value or lines on stdin");
    }
    let mut client = Client::connect(args).await?;
    let leaders = leaders(&mut client, &command.topic).await?;
    let partitions = i32::try_from(leaders.len()).context("too many partitions")?;
    let sticky = {
        use std::hash::BuildHasher;
        let hash = std::collections::hash_map::RandomState::new().hash_one(command.topic.as_str());
        i32::try_from(hash % u64::try_from(partitions).unwrap_or(1)).unwrap_or(0)
    };
    let mut by_partition: BTreeMap<i32, Vec<Input>> = BTreeMap::new();
    for input in inputs {
        let partition = match (command.partition, &input.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => sticky,
        };
        if !leaders.contains_key(&partition) {
            bail!("topic {:?} has no partition {partition}", command.topic);
        }
        by_partition.entry(partition).or_default().push(input);
    }
    let headers: Vec<HeaderRef<'_>> = command
        .headers
        .iter()
        .map(|(k, v)| (k.as_bytes(), Some(v.as_bytes())))
        .collect();
    let acks: i16 = if command.acks == "1" { 1 } else { -1 };
    let timeout_ms = i32::try_from(args.request_timeout_ms).unwrap_or(i32::MAX);
    let now_ms = SystemClock.now_ms();
    let mut produced = Vec::new();
    let mut ok = true;
    for (partition, inputs) in &by_partition {
        for chunk in chunks(inputs) {
            let refs: Vec<RecordRef<'_>> = chunk
                .iter()
                .zip(0..)
                .map(|(input, offset)| RecordRef {
                    offset,
                    timestamp: now_ms,
                    key: input.key.as_deref(),
                    value: Some(&input.value),
                    headers: &headers,
                })
                .collect();
            let count = i64::try_from(refs.len()).expect("a chunk holds at most 1000 records");
            let batch = records::encode_refs(&BatchFields::plain(0, count - 1), &refs);
            let request = ProduceRequest::default()
                .with_acks(acks)
                .with_timeout_ms(timeout_ms)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(command.topic.clone())))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(*partition)
                        .with_records(Some(batch))])]);
            let leader = leaders[partition];
            let response = client.node(leader).await?.send(&request, 9).await?;
            let answer = response
                .responses
                .iter()
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == *partition)
                .ok_or_else(|| anyhow!("the leader did not answer for partition {partition}"))?;
            if answer.error_code != 0 {
                super::output::failed(
                    &format!("{}:{partition}", command.topic),
                    &describe(answer.error_code, answer.error_message.as_ref()),
                );
                ok = false;
                break;
            }
            produced.push(Produced {
                partition: *partition,
                base_offset: answer.base_offset,
                records: chunk.len(),
            });
        }
    }
    show(args.output, &produced, |produced| {
        let mut table = Table::new(&["PARTITION", "OFFSET", "RECORDS"]);
        for p in produced {
            table.row([
                p.partition.to_string(),
                p.base_offset.to_string(),
                p.records.to_string(),
            ]);
        }
        table.print();
    })?;
    Ok(ok)
}

fn read_inputs(command: &ProduceCommand) -> anyhow::Result<Vec<Input>> {
    let key = command.key.as_ref().map(|k| Bytes::from(k.clone()));
    if let Some(value) = &command.value {
        return Ok(vec![Input {
            key,
            value: Bytes::from(value.clone()),
        }]);
    }
    let mut inputs = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.context("cannot read stdin")?;
        let input = match &command.key_separator {
            Some(separator) => match line.split_once(separator.as_str()) {
                Some((k, v)) => Input {
                    key: Some(Bytes::from(k.to_owned())),
                    value: Bytes::from(v.to_owned()),
                },
                None => bail!("line {line:?} has no key separator {separator:?}"),
            },
            None => Input {
                key: key.clone(),
                value: Bytes::from(line),
            },
        };
        inputs.push(input);
    }
    Ok(inputs)
}

/// Consecutive runs of inputs within the batch limits.
fn chunks(inputs: &[Input]) -> Vec<&[Input]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, input) in inputs.iter().enumerate() {
        let size = input.value.len() + input.key.as_ref().map_or(0, Bytes::len);
        if i > start && (i - start >= BATCH_RECORDS_MAX || bytes + size > BATCH_BYTES_MAX) {
            out.push(&inputs[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < inputs.len() {
        out.push(&inputs[start..]);
    }
    out
}

/// partition → leader of `topic`.
async fn leaders(client: &mut Client, topic: &str) -> anyhow::Result<BTreeMap<i32, i32>> {
    let metadata = client.metadata(Some(vec![topic.to_owned()])).await?;
    let found = metadata
        .topics
        .first()
        .ok_or_else(|| anyhow!("no metadata for topic {topic:?}"))?;
    if found.error_code != 0 {
        bail!("topic {topic:?}: {}", describe(found.error_code, None));
    }
    Ok(found
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect())
}

#[derive(Serialize)]
struct Consumed<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Option<String>,
    value: Option<String>,
    headers: Vec<(String, Option<String>)>,
}

pub async fn consume(command: ConsumeCommand) -> Outcome {
    let args = &command.client;
    let topic = command.topic.as_str();
    let mut client = Client::connect(args).await?;
    let mut leaders = leaders(&mut client, topic).await?;
    let chosen: Vec<i32> = if command.partitions.is_empty() {
        leaders.keys().copied().collect()
    } else {
        for p in &command.partitions {
            if !leaders.contains_key(p) {
                bail!("topic {topic:?} has no partition {p}");
            }
        }
        command.partitions.clone()
    };
    let partitions: Vec<Partition> = chosen.iter().map(|p| (topic.to_owned(), *p)).collect();
    let starts = start_offsets(&mut client, &partitions, &command.offset).await?;
    // Without --follow, each partition is read up to its end as it is now.
    let ends = if command.follow {
        None
    } else {
        Some(offsets_or_fail(
            list_offsets(&mut client, &partitions, LATEST).await?,
        )?)
    };
    let mut positions: BTreeMap<i32, i64> = starts.into_iter().map(|((_, p), o)| (p, o)).collect();
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    loop {
        let open: Vec<i32> = positions
            .iter()
            .filter(|(p, position)| {
                ends.as_ref()
                    .is_none_or(|ends| **position < ends[&(topic.to_owned(), **p)])
            })
            .map(|(p, _)| *p)
            .collect();
        if open.is_empty() || command.count.is_some_and(|n| printed >= n) {
            break;
        }
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in open {
            by_leader.entry(leaders[&p]).or_default().push(p);
        }
        let mut stale_metadata = false;
        for (leader, partitions) in by_leader {
            let asked: Vec<(i32, i64)> = partitions.iter().map(|p| (*p, positions[p])).collect();
            let fetched = fetch_once(&mut client, leader, topic, &asked).await?;
            stale_metadata |= fetched.stale_metadata;
            for (partition, records, next) in fetched.partitions {
                for record in &records {
                    if command.count.is_some_and(|n| printed >= n)
                        || ends.as_ref().is_some_and(|ends| {
                            record.offset >= ends[&(topic.to_owned(), partition)]
                        })
                    {
                        break;
                    }
                    write_record(&mut out, &command, topic, partition, record)?;
                    printed += 1;
                }
                positions.insert(partition, next);
            }
        }
        out.flush()?;
        if stale_metadata {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            leaders = self::leaders(&mut client, topic).await?;
        }
    }
    out.flush()?;
    Ok(true)
}

/// What one Fetch returned: per partition its records at or after the position asked for and
/// the next position; whether leadership moved for any (ask Metadata again).
pub struct Fetched {
    pub partitions: Vec<(i32, Vec<records::Record>, i64)>,
    pub stale_metadata: bool,
}

/// One Fetch of `partitions` (partition, position) of `topic` from their leader; every CRC
/// checked, control batches skipped.
pub async fn fetch_once(
    client: &mut Client,
    leader: i32,
    topic: &str,
    partitions: &[(i32, i64)],
) -> anyhow::Result<Fetched> {
    let request = FetchRequest::default()
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partitions(
                partitions
                    .iter()
                    .map(|(p, position)| {
                        FetchPartition::default()
                            .with_partition(*p)
                            .with_fetch_offset(*position)
                            .with_partition_max_bytes(FETCH_PARTITION_MAX_BYTES)
                    })
                    .collect(),
            )]);
    let response = client.node(leader).await?.send(&request, 12).await?;
    if response.error_code != 0 {
        bail!("Fetch failed: {}", describe(response.error_code, None));
    }
    let mut fetched = Fetched {
        partitions: Vec::new(),
        stale_metadata: false,
    };
    for data in response.responses.iter().flat_map(|t| t.partitions.iter()) {
        let partition = data.partition_index;
        match data.error_code {
            0 => {}
            // NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE, FENCED_LEADER_EPOCH,
            // UNKNOWN_LEADER_EPOCH: leadership moved; ask again.
            6 | 5 | 74 | 76 => {
                fetched.stale_metadata = true;
                continue;
            }
            code => bail!("{topic}:{partition}: {}", describe(code, None)),
        }
        let Some(&(_, mut position)) = partitions.iter().find(|(p, _)| *p == partition) else {
            continue;
        };
        let mut out = Vec::new();
        if let Some(bytes) = &data.records {
            for (start, header) in batch::headers(bytes) {
                let raw = bytes.slice(start..start + header.size_bytes);
                let at = |e: &dyn std::fmt::Display| {
                    anyhow!("{topic}:{partition} at offset {}: {e}", header.base_offset)
                };
                batch::verify_crc(&header, &raw).map_err(|e| at(&e))?;
                if header.last_offset() < position {
                    continue;
                }
                if !header.is_control() {
                    let decoded = records::decode(&header, &raw).map_err(|e| at(&e))?;
                    out.extend(decoded.into_iter().filter(|r| r.offset >= position));
                }
                position = header.last_offset() + 1;
            }
        }
        fetched.partitions.push((partition, out, position));
    }
    Ok(fetched)
}

/// Where the console's message browser starts reading a partition.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    Earliest,
    Offset(i64),
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// The console's message browser: up to `limit` records of one partition, read as a Kafka
/// client of the cluster at `bootstrap`; the offset it started at.
pub async fn browse(
    args: &ClientArgs,
    topic: &str,
    partition: i32,
    start: Start,
    limit: usize,
) -> anyhow::Result<(i64, Vec<records::Record>)> {
    let mut client = Client::connect(args).await?;
    let Some(&leader) = leaders(&mut client, topic).await?.get(&partition) else {
        bail!("topic {topic:?} has no partition {partition}");
    };
    let tp = vec![(topic.to_owned(), partition)];
    let offset = match start {
        Start::Offset(offset) => offset,
        Start::Earliest => {
            offsets_or_fail(list_offsets(&mut client, &tp, EARLIEST).await?)?[&tp[0]]
        }
        Start::Timestamp(ms) => offsets_or_fail(list_offsets(&mut client, &tp, ms).await?)?[&tp[0]],
    };
    let records = read_partition(&mut client, topic, partition, leader, offset, limit).await?;
    Ok((offset, records))
}

/// Up to `limit` records of one partition from `start`, up to the partition's end as it was
/// when asked (the console's message browser); `leader` is asked again only when it moved.
async fn read_partition(
    client: &mut Client,
    topic: &str,
    partition: i32,
    mut leader: i32,
    start: i64,
    limit: usize,
) -> anyhow::Result<Vec<records::Record>> {
    let tp = vec![(topic.to_owned(), partition)];
    let end = offsets_or_fail(list_offsets(client, &tp, LATEST).await?)?[&tp[0]];
    let mut position = start;
    let mut out = Vec::new();
    let mut stalls = 0;
    while out.len() < limit && position < end {
        let fetched = fetch_once(client, leader, topic, &[(partition, position)]).await?;
        if fetched.stale_metadata {
            leader = *leaders(client, topic)
                .await?
                .get(&partition)
                .ok_or_else(|| anyhow!("topic {topic:?} has no partition {partition}"))?;
        }
        let before = position;
        for (_, records, next) in fetched.partitions {
            out.extend(records.into_iter().filter(|r| r.offset < end));
            position = next;
        }
        // Leadership moving, or nothing returned: a few more tries, then say so.
        if position == before {
            stalls += 1;
            if stalls > 10 {
                bail!("{topic}:{partition}: no records could be read at offset {position}");
            }
        }
    }
    out.truncate(limit);
    Ok(out)
}

fn write_record(
    out: &mut impl Write,
    command: &ConsumeCommand,
    topic: &str,
    partition: i32,
    record: &records::Record,
) -> anyhow::Result<()> {
    let text = |b: &Bytes| match command.bytes_as {
        BytesAs::Text => String::from_utf8_lossy(b).into_owned(),
        BytesAs::Hex => b.iter().map(|x| format!("{x:02x}")).collect(),
    };
    match command.format {
        RecordFormat::Text => {
            out.write_all(record.value.as_deref().unwrap_or_default())?;
            out.write_all(b"\n")?;
        }
        RecordFormat::Json => {
            let consumed = Consumed {
                topic,
                partition,
                offset: record.offset,
                timestamp: record.timestamp,
                key: record.key.as_ref().map(text),
                value: record.value.as_ref().map(text),
                headers: record
                    .headers
                    .iter()
                    .map(|h| (text(&h.key), h.value.as_ref().map(text)))
                    .collect(),
            };
            serde_json::to_writer(&mut *out, &consumed)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

/// Each partition's first offset to read for `--offset`.
async fn start_offsets(
    client: &mut Client,
    partitions: &[Partition],
    spec: &str,
) -> anyhow::Result<BTreeMap<Partition, i64>> {
    match spec {
        "earliest" | "beginning" => {
            offsets_or_fail(list_offsets(client, partitions, EARLIEST).await?)
        }
        "latest" | "end" => offsets_or_fail(list_offsets(client, partitions, LATEST).await?),
        _ => {
            let n: i64 = spec.parse().map_err(|_| {
                anyhow!("--offset {spec:?}: expected earliest, latest, an offset or -N")
            })?;
            if n >= 0 {
                return Ok(partitions.iter().map(|p| (p.clone(), n)).collect());
            }
            let low = offsets_or_fail(list_offsets(client, partitions, EARLIEST).await?)?;
            let high = offsets_or_fail(list_offsets(client, partitions, LATEST).await?)?;
            Ok(high
                .into_iter()
                .map(|(p, end)| {
                    let start = (end + n).max(low[&p]);
                    (p, start)
                })
                .collect())
        }
    }
}

fn offsets_or_fail(
    offsets: BTreeMap<Partition, Result<i64, String>>,
) -> anyhow::Result<BTreeMap<Partition, i64>> {
    offsets
        .into_iter()
        .map(|(p, r)| {
            r.map(|o| (p.clone(), o))
                .map_err(|e| anyhow!("{}:{}: cannot read its offsets: {e}", p.0, p.1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_cut_into_batches_within_the_limits() {
        let input = |n: usize| Input {
            key: None,
            value: Bytes::from(vec![b'x'; n]),
        };
        let many: Vec<Input> = (0..2_500).map(|_| input(10)).collect();
        let sizes: Vec<usize> = chunks(&many).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![1_000, 1_000, 500]);
        let big: Vec<Input> = (0..3).map(|_| input(BATCH_BYTES_MAX)).collect();
        assert_eq!(chunks(&big).len(), 3, "an oversized record travels alone");
        assert!(chunks(&[]).is_empty());
    }
}
