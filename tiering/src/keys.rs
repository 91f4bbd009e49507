//! The metadata key schema: every key Skiff writes, its layout and its value encoding.
//!
//! ```text
//! /skiff/topics/<topic>                                  TopicRecord (JSON)
//! /skiff/partitions/<topic>/<partition:010>              PartitionState (JSON)
//! /skiff/index/<topic>/<partition:010>/<base_offset:020> IndexEntry (JSON): the index tail
//! /skiff/rollups/<topic>/<partition:010>/<base_offset:020> RollupEntry (JSON): older ranges
//! /skiff/layouts/<topic>/<partition:010>                 Layout (JSON): the Parquet part
//! /skiff/producers/<topic>/<partition:010>               ProducerStates (JSON): idempotence
//! /skiff/compactor/jobs/<topic>/<partition:010>          CompactorJob (JSON), on a compactor's lease
//! /skiff/compactor/errors/<topic>/<partition:010>        CompactorError (JSON): the last failure
//! /skiff/compactor/gc                                    CompactorJob (JSON), on a compactor's lease
//! /skiff/producer-ids                                    ProducerIdBlock (JSON)
//! /skiff/brokers/<node_id:010>                           BrokerRecord (JSON), on the broker's lease
//! /skiff/broker-ids                                      NodeIdCounter (JSON)
//! /skiff/groups/<group, escaped>/offsets/<topic>/<partition:010>  CommittedOffset (JSON)
//! /skiff/groups/<group, escaped>/txn-offsets/<transactional id, escaped>/<topic>/<partition:010>
//!                                                        CommittedOffset (JSON), until the
//!                                                        transaction ends
//! /skiff/transactions/<transactional id, escaped>        transactions::TransactionRecord (JSON)
//! /skiff/txn-markers/<topic>/<partition:010>/<transactional id, escaped>  MarkerRequest (JSON)
//! /skiff/users/<user, escaped>/scram/<mechanism>        credentials::ScramCredential (JSON)
//! /skiff/acls/<resource type>/<pattern type>/<name, escaped>  acls::AclRecord (JSON)
//! ```
//! Kafka topic names only contain `[a-zA-Z0-9._-]`, so `/` separates fields unambiguously, and the
//! zero-padded numbers make key order equal numeric order, so a prefix range reads a partition's
//! index in offset order. Values are JSON so `etcdctl get` is readable by operators.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const ROOT: &str = "/skiff";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    /// Kafka topic id (UUID), as 32 lowercase hex digits.
    pub id: String,
    pub partitions: i32,
    /// Topic-level config overrides (Kafka names, e.g. `retention.ms`).
    pub configs: BTreeMap<String, String>,
    pub created_ms: i64,
}

/// A partition's committed log state. Absent means: nothing committed yet (all fields default).
///
/// Every log commit compares this key's `mod_revision`, so any other change to it — a new leader
/// bumping `leader_epoch`, another writer's commit — makes a stale writer's commit fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The broker that may commit to this partition; -1: none (released or never claimed).
    #[serde(default = "no_leader")]
    pub leader: i32,
    /// Increased by every claim of leadership.
    pub leader_epoch: i32,
    /// The first offset still in the log.
    pub log_start_offset: i64,
    /// One past the last committed offset: the high watermark.
    pub next_offset: i64,
}

impl Default for PartitionState {
    fn default() -> Self {
        Self {
            leader: no_leader(),
            leader_epoch: 0,
            log_start_offset: 0,
            next_offset: 0,
        }
    }
}

fn no_leader() -> i32 {
    -1
}

/// A live broker: where clients reach it. Written on the broker's lease, so it disappears
/// when the broker stops renewing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub node_id: i32,
    /// The first listener's advertised address (what brokers before named listeners wrote).
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Unique per broker process (set at registration): tells this process's own registration
    /// from another process that took the same node id.
    #[serde(default)]
    pub incarnation: String,
    /// Every listener's advertised address, by listener name (Kafka's `advertised.listeners`):
    /// a client is told the addresses of the listener it connected to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerEndpoint>,
    /// Serves consumers' reads of partitions it does not lead (fetch from follower, KIP-392):
    /// Metadata lists it as a replica of every partition, and leaders may send consumers to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follower_reads: bool,
}

/// One advertised listener of a broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerEndpoint {
    /// The listener's name (`PLAINTEXT`, `SASL_SSL`, `INTERNAL`, ...).
    pub name: String,
    pub host: String,
    pub port: i32,
    /// `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`.
    pub security_protocol: String,
}

impl BrokerRecord {
    /// Where a client of listener `name` reaches this broker; `None` when this broker has no
    /// such listener (Kafka leaves such brokers out). A record without listeners (written
    /// before they had names) has its one address for every listener.
    pub fn endpoint(&self, name: &str) -> Option<(&str, i32)> {
        if self.listeners.is_empty() {
            return Some((&self.host, self.port));
        }
        self.listeners
            .iter()
            .find(|l| l.name == name)
            .map(|l| (l.host.as_str(), l.port))
    }
}

/// The next node id no broker has taken (for brokers started without `--node-id`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdCounter {
    pub next_node_id: i32,
}

pub fn brokers_prefix() -> String {
    format!("{ROOT}/brokers/")
}

pub fn broker(node_id: i32) -> String {
    format!("{ROOT}/brokers/{node_id:010}")
}

pub fn broker_ids() -> String {
    format!("{ROOT}/broker-ids")
}

/// Where the committed batches of one offset range live: a section of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// Object key (see `paths`).
    pub object: String,
    /// Byte range of the section within the object.
    pub position: u64,
    pub length: u64,
    /// CRC32C of the section's bytes, checked after every read.
    pub crc32c: u32,
    /// Transactions whose abort marker is in this section (what `read_committed` Fetch
    /// reports, Kafka's transaction index); almost always empty, and then not stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aborted: Vec<crate::producers::AbortedTxn>,
}

/// The next producer id no broker has reserved yet; brokers reserve blocks of ids from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdBlock {
    pub next_producer_id: i64,
}

pub fn producer_ids() -> String {
    format!("{ROOT}/producer-ids")
}

/// The idempotent producers a partition remembers (`producers::ProducerStates`), written in
/// the same transaction as the partition state whenever a flush stores their batches.
pub fn producers(topic: &str, partition: i32) -> String {
    format!("{ROOT}/producers/{topic}/{partition:010}")
}

pub fn all_producers_prefix() -> String {
    format!("{ROOT}/producers/")
}

pub fn topic_producers_prefix(topic: &str) -> String {
    format!("{ROOT}/producers/{topic}/")
}

pub fn topics_prefix() -> String {
    format!("{ROOT}/topics/")
}

pub fn topic(name: &str) -> String {
    format!("{ROOT}/topics/{name}")
}

pub fn all_partitions_prefix() -> String {
    format!("{ROOT}/partitions/")
}

pub fn partitions_prefix(topic: &str) -> String {
    format!("{ROOT}/partitions/{topic}/")
}

pub fn partition(topic: &str, partition: i32) -> String {
    format!("{ROOT}/partitions/{topic}/{partition:010}")
}

/// Every partition's index tail.
pub fn all_index_prefix() -> String {
    format!("{ROOT}/index/")
}

pub fn topic_index_prefix(topic: &str) -> String {
    format!("{ROOT}/index/{topic}/")
}

pub fn index_prefix(topic: &str, partition: i32) -> String {
    format!("{ROOT}/index/{topic}/{partition:010}/")
}

pub fn index_entry(topic: &str, partition: i32, base_offset: i64) -> String {
    format!("{ROOT}/index/{topic}/{partition:010}/{base_offset:020}")
}

/// A range of older index entries moved out of the metadata store into an index object.
///
/// The leader rolls up its oldest tail entries once the tail grows past a bound, and rolls up
/// its oldest rollups the same way, so each partition keeps a bounded number of keys however
/// long its log: a tree with a fan-out of `log::ROLLUP_FANOUT`, whose leaves are sections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollupEntry {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// Index object key (see `paths`).
    pub object: String,
    /// CRC32C of the index object, checked after every read.
    pub crc32c: u32,
    /// Bytes of the leaves below (sections' or files' lengths); 0 in rollups written before
    /// this was recorded.
    #[serde(default)]
    pub bytes: u64,
    /// The smallest first offset of the aborted transactions recorded below (None: none), so
    /// a `read_committed` Fetch descends only where one may overlap what it returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_first: Option<i64>,
}

/// The content of an index object: leaves (sections or Parquet files) or more rollups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RollupBody {
    Sections(Vec<IndexEntry>),
    Rollups(Vec<RollupEntry>),
    Files(Vec<ParquetFile>),
}

/// A Parquet file holding one partition's records of `[base_offset, last_offset]` (the
/// compactor's output, see `columnar`): a leaf of the index, like a section. Rows may leave
/// gaps (log compaction, records below the log start), never reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParquetFile {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Largest record timestamp in the file (-1 for a file without rows).
    pub max_timestamp: i64,
    /// Object key (see `paths::new_parquet_file`).
    pub object: String,
    /// Size of the file (its footer is read from the end).
    pub bytes: u64,
    pub rows: u64,
    /// CRC32C of the whole file, checked when the compactor reads it whole.
    pub crc32c: u32,
    /// Transactions whose abort marker is in the file (carried over from its sections).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aborted: Vec<crate::producers::AbortedTxn>,
}

/// A partition's Parquet part: every offset below `parquet_end` (and at or above the log start)
/// is in a file reachable from here, every offset from it on in the flush-object index (tail
/// and rollups). Only the compactor writes it; every change of the index other than a leader's
/// append or roll-up is a transaction that compares and rewrites this key, and the leader's
/// roll-ups compare it too, so the two never cross (ARCHITECTURE.md, "Compaction").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// The first offset not in Parquet (0: nothing converted yet).
    pub parquet_end: i64,
    /// Older files rolled up into index objects (`RollupBody::Files` or `Rollups`), oldest
    /// first; all before `files`.
    pub rollups: Vec<RollupEntry>,
    /// The newest files, oldest first (at most `layout::FILES_INLINE_MAX`).
    pub files: Vec<ParquetFile>,
    /// When the compactor last changed the layout (0: never).
    pub compacted_ms: i64,
    /// Log compaction cleaned the Parquet part up to here (what is after is "dirty").
    #[serde(default)]
    pub cleaned_end: i64,
    /// When the first tombstone the last cleaning kept may go (its timestamp plus
    /// `delete.retention.ms`; 0: none kept): a cleaning is due then, new data or not.
    #[serde(default)]
    pub tombstones_expire_ms: i64,
}

pub fn layouts_prefix() -> String {
    format!("{ROOT}/layouts/")
}

pub fn topic_layouts_prefix(topic: &str) -> String {
    format!("{ROOT}/layouts/{topic}/")
}

pub fn layout(topic: &str, partition: i32) -> String {
    format!("{ROOT}/layouts/{topic}/{partition:010}")
}

/// Who works on a partition (or on garbage collection): written on the compactor's lease, so
/// it disappears when that compactor dies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactorJob {
    /// The compactor process (a ULID chosen at its start).
    pub owner: String,
    pub started_ms: i64,
}

/// A partition's last compaction failure, deleted by its next success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactorError {
    pub error: String,
    pub at_ms: i64,
    /// Failures in a row.
    pub failures: u32,
}

pub fn compactor_jobs_prefix() -> String {
    format!("{ROOT}/compactor/jobs/")
}

pub fn compactor_job(topic: &str, partition: i32) -> String {
    format!("{ROOT}/compactor/jobs/{topic}/{partition:010}")
}

pub fn compactor_errors_prefix() -> String {
    format!("{ROOT}/compactor/errors/")
}

pub fn topic_compactor_errors_prefix(topic: &str) -> String {
    format!("{ROOT}/compactor/errors/{topic}/")
}

pub fn compactor_error(topic: &str, partition: i32) -> String {
    format!("{ROOT}/compactor/errors/{topic}/{partition:010}")
}

pub fn compactor_gc() -> String {
    format!("{ROOT}/compactor/gc")
}

/// Every partition's rollups.
pub fn all_rollups_prefix() -> String {
    format!("{ROOT}/rollups/")
}

pub fn topic_rollup_prefix(topic: &str) -> String {
    format!("{ROOT}/rollups/{topic}/")
}

pub fn rollup_prefix(topic: &str, partition: i32) -> String {
    format!("{ROOT}/rollups/{topic}/{partition:010}/")
}

pub fn rollup(topic: &str, partition: i32, base_offset: i64) -> String {
    format!("{ROOT}/rollups/{topic}/{partition:010}/{base_offset:020}")
}

/// A transaction marker the coordinator asks a partition's leader to append (ARCHITECTURE.md,
/// "Transactions"). The leader appends it like any batch and deletes this key in the same
/// commit, so "the marker is durable" and "the request is gone" are one event; the
/// coordinator completes the transaction once none of its requests is left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerRequest {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub requested_ms: i64,
    /// The transaction record's `ends` when it was prepared (0 in requests from before it).
    #[serde(default)]
    pub end: u64,
}

pub fn transactions_prefix() -> String {
    format!("{ROOT}/transactions/")
}

/// Transactional ids are arbitrary strings, escaped as group ids are.
pub fn transaction(transactional_id: &str) -> String {
    format!("{ROOT}/transactions/{}", escape_group(transactional_id))
}

pub fn all_marker_requests_prefix() -> String {
    format!("{ROOT}/txn-markers/")
}

pub fn topic_marker_requests_prefix(topic: &str) -> String {
    format!("{ROOT}/txn-markers/{topic}/")
}

pub fn partition_marker_requests_prefix(topic: &str, partition: i32) -> String {
    format!("{ROOT}/txn-markers/{topic}/{partition:010}/")
}

pub fn marker_request(topic: &str, partition: i32, transactional_id: &str) -> String {
    format!(
        "{}{}",
        partition_marker_requests_prefix(topic, partition),
        escape_group(transactional_id)
    )
}

/// A consumer group's committed offset for one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

/// Group ids are arbitrary strings: everything but `[A-Za-z0-9._-]` is percent-escaped, so a
/// group's keys never run into another's.
pub fn escape_group(group: &str) -> String {
    let mut out = String::with_capacity(group.len());
    for byte in group.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The inverse of [`escape_group`]; `None` for a malformed name.
pub fn unescape_group(escaped: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut iter = escaped.bytes();
    while let Some(b) = iter.next() {
        if b == b'%' {
            let hex = [iter.next()?, iter.next()?];
            bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

pub fn groups_prefix() -> String {
    format!("{ROOT}/groups/")
}

pub fn group_prefix(group: &str) -> String {
    format!("{ROOT}/groups/{}/", escape_group(group))
}

pub fn group_offsets_prefix(group: &str) -> String {
    format!("{}offsets/", group_prefix(group))
}

pub fn group_offset(group: &str, topic: &str, partition: i32) -> String {
    format!("{}{topic}/{partition:010}", group_offsets_prefix(group))
}

/// Offsets a transaction commits for a group (TxnOffsetCommit), kept aside until it ends:
/// `<group prefix>txn-offsets/<transactional id, escaped>/<topic>/<partition:010>`, each a
/// [`CommittedOffset`]. A commit moves them into the group's offsets, an abort drops them.
pub fn group_txn_offsets_prefix(group: &str) -> String {
    format!("{}txn-offsets/", group_prefix(group))
}

pub fn group_txn_offsets(group: &str, transactional_id: &str) -> String {
    format!(
        "{}{}/",
        group_txn_offsets_prefix(group),
        escape_group(transactional_id)
    )
}

pub fn group_txn_offset(
    group: &str,
    transactional_id: &str,
    topic: &str,
    partition: i32,
) -> String {
    format!(
        "{}{topic}/{partition:010}",
        group_txn_offsets(group, transactional_id)
    )
}

/// (topic, partition) of a per-partition key `<prefix><topic>/<partition:010>[/...]`.
pub fn topic_partition_of(prefix: &str, key: &str) -> Option<(String, i32)> {
    let mut parts = key.strip_prefix(prefix)?.split('/');
    let topic = parts.next()?.to_owned();
    let partition = parts.next()?.parse().ok()?;
    Some((topic, partition))
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("metadata values are plain data and always serialize")
}

pub fn decode<T: for<'de> Deserialize<'de>>(key: &str, raw: &[u8]) -> Result<T, String> {
    serde_json::from_slice(raw).map_err(|e| format!("undecodable value key={key}: {e}"))
}

pub fn users_prefix() -> String {
    format!("{ROOT}/users/")
}

/// A SASL user's salted SCRAM credential for one mechanism (`SCRAM-SHA-256`, `SCRAM-SHA-512`);
/// user names are arbitrary strings, escaped as group ids are.
pub fn scram_credential(user: &str, mechanism: &str) -> String {
    format!("{ROOT}/users/{}/scram/{mechanism}", escape_group(user))
}

pub fn acls_prefix() -> String {
    format!("{ROOT}/acls/")
}

/// The ACLs of one resource pattern (`TOPIC`, `LITERAL`, the name escaped as group ids are).
pub fn acl(resource_type: &str, pattern_type: &str, name: &str) -> String {
    format!(
        "{ROOT}/acls/{resource_type}/{pattern_type}/{}",
        escape_group(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn index_keys_sort_like_offsets(a in 0i64..i64::MAX, b in 0i64..i64::MAX) {
            let (ka, kb) = (index_entry("t", 3, a), index_entry("t", 3, b));
            prop_assert_eq!(a.cmp(&b), ka.cmp(&kb));
            prop_assert!(ka.starts_with(&index_prefix("t", 3)));
        }

        #[test]
        fn values_round_trip(base in 0i64..1 << 50, len in 0u64..1 << 30, ts in any::<i64>(), crc in any::<u32>()) {
            let entry = IndexEntry {
                base_offset: base, last_offset: base + 9, max_timestamp: ts,
                object: "wal/x".into(), position: 8, length: len, crc32c: crc,
                aborted: Vec::new(),
            };
            prop_assert_eq!(decode::<IndexEntry>("k", &encode(&entry)).expect("decode"), entry);
            let state = PartitionState { leader: 2, leader_epoch: 3, log_start_offset: base, next_offset: base + 10 };
            prop_assert_eq!(decode::<PartitionState>("k", &encode(&state)).expect("decode"), state);
        }
    }

    #[test]
    fn states_written_before_leadership_existed_have_no_leader() {
        let old = br#"{"leader_epoch":0,"log_start_offset":0,"next_offset":5}"#;
        let state: PartitionState = decode("k", old).expect("decode");
        assert_eq!(state.leader, -1);
        assert_eq!(state.next_offset, 5);
    }

    proptest! {
        #[test]
        fn group_names_round_trip(name in ".{0,40}") {
            let escaped = escape_group(&name);
            prop_assert!(!escaped.contains('/'));
            prop_assert_eq!(unescape_group(&escaped), Some(name));
        }
    }

    #[test]
    fn per_partition_keys_name_their_partition() {
        assert_eq!(
            topic_partition_of(&layouts_prefix(), &layout("orders.v1", 12)),
            Some(("orders.v1".to_owned(), 12))
        );
        assert_eq!(
            topic_partition_of(&all_index_prefix(), &index_entry("t", 3, 77)),
            Some(("t".to_owned(), 3))
        );
        assert_eq!(
            topic_partition_of(&layouts_prefix(), "/skiff/layouts/orders"),
            None
        );
        assert_eq!(
            topic_partition_of(&layouts_prefix(), &partition("t", 1)),
            None
        );
    }

    #[test]
    fn partition_prefix_does_not_cover_longer_partition_numbers() {
        assert!(!index_entry("t", 10, 0).starts_with(&index_prefix("t", 1)));
        assert!(!partition("topic-a", 0).starts_with(&partitions_prefix("topic")));
    }
}
