//! Fuzzing what the broker decodes from the network, on the stable toolchain: proptest mutates
//! the seeds kept in `broker/fuzz/corpus/` (real requests and record batches of every codec)
//! and each target must answer with an error, never a panic or an unbounded allocation.
//!
//! `cargo test -p skiff-broker fuzz` runs a short pass (CI); `SKIFF_FUZZ_CASES=100000` runs a
//! long one. `cargo test -p skiff-broker write_fuzz_corpus -- --ignored` rewrites the seeds.
//! A failing case is kept by proptest in `broker/proptest-regressions/` and replayed first.

use super::records;
use super::tests::{frame, records as record_batch};
use super::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn corpus_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(kind)
}

fn seeds(kind: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("corpus file"))
        .collect();
    assert!(!seeds.is_empty(), "empty corpus {}", dir.display());
    seeds
}

fn cases() -> u32 {
    std::env::var("SKIFF_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// One edit of a seed; positions wrap around its length.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
    /// Overwrites four bytes with a length-like value: where most decoders go wrong.
    Length(usize, i32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let lengths = prop_oneof![
        Just(-1i32),
        Just(0),
        Just(1),
        Just(0x7fff_ffff),
        Just(0x0001_0000),
        any::<i32>()
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Set(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), lengths).prop_map(|(p, v)| Mutation::Length(p, v)),
    ]
}

fn mutate(mut data: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = data.len().max(1);
        match *m {
            Mutation::Set(p, b) if !data.is_empty() => data[p % len] = b,
            Mutation::Insert(p, b) => data.insert(p % (data.len() + 1), b),
            Mutation::Remove(p) if !data.is_empty() => {
                data.remove(p % len);
            }
            Mutation::Truncate(p) => data.truncate(p % (data.len() + 1)),
            Mutation::Length(p, v) if data.len() >= 4 => {
                let at = p % (data.len() - 3);
                data[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
            _ => {}
        }
    }
    data
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn fuzz_request_decoder(
        seed in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let seeds = seeds("requests");
        let data = mutate(seeds[seed.index(seeds.len())].clone(), &mutations);
        // Any answer but a panic (or an abort from a huge allocation) is fine.
        let _ = decode_request(Bytes::from(data));
    }

    #[test]
    fn fuzz_record_batch_validation(
        seed in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
        fix_crc in any::<bool>(),
    ) {
        let seeds = seeds("batches");
        let mut data = mutate(seeds[seed.index(seeds.len())].clone(), &mutations);
        // With the CRC made right again, the mutation reaches the checks behind it.
        if fix_crc && data.len() > 21 {
            let crc = crc32c::crc32c(&data[21..]);
            data[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        let data = Bytes::from(data);
        if let Ok(batches) = skiff_tiering::batch::split_and_validate(&data, 1 << 20) {
            for (header, batch) in &batches {
                if header.compression() != 0 {
                    let _ = records::count_compressed_records(header, batch);
                }
                let _ = records::decode_batch(batch);
            }
        }
    }
}

/// The seeds: one request of each API clients send most, at the versions they use, and batches
/// of every codec.
#[test]
#[ignore = "rewrites broker/fuzz/corpus; run by hand"]
fn write_fuzz_corpus() {
    let name = |s: &'static str| TopicName(StrBytes::from_static_str(s));
    let group = || GroupId(StrBytes::from_static_str("g"));
    let batch = record_batch(&["a", "bb", "ccc"], Compression::Gzip);
    let requests: Vec<(&str, Bytes)> = vec![
        (
            "api_versions_v3",
            frame(
                ApiKey::ApiVersions,
                3,
                1,
                &ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("fuzz"))
                    .with_client_software_version(StrBytes::from_static_str("1")),
            ),
        ),
        (
            "metadata_v12",
            frame(
                ApiKey::Metadata,
                12,
                2,
                &MetadataRequest::default().with_topics(Some(vec![
                    metadata_request::MetadataRequestTopic::default().with_name(Some(name("t"))),
                    metadata_request::MetadataRequestTopic::default().with_name(Some(name("u"))),
                ])),
            ),
        ),
        (
            "metadata_v1",
            frame(
                ApiKey::Metadata,
                1,
                3,
                &MetadataRequest::default().with_topics(Some(vec![
                    metadata_request::MetadataRequestTopic::default().with_name(Some(name("t"))),
                ])),
            ),
        ),
        (
            "produce_v9",
            frame(
                ApiKey::Produce,
                9,
                4,
                &super::tests::produce_request("t", 0, batch.clone(), -1),
            ),
        ),
        (
            "produce_v3",
            frame(
                ApiKey::Produce,
                3,
                5,
                &super::tests::produce_request("t", 0, batch.clone(), 1),
            ),
        ),
        (
            "fetch_v12",
            frame(
                ApiKey::Fetch,
                12,
                6,
                &super::tests::fetch_request("t", 0, 0),
            ),
        ),
        (
            "fetch_v4",
            frame(ApiKey::Fetch, 4, 7, &super::tests::fetch_request("t", 0, 5)),
        ),
        (
            "list_offsets_v7",
            frame(
                ApiKey::ListOffsets,
                7,
                8,
                &ListOffsetsRequest::default().with_topics(vec![
                    list_offsets_request::ListOffsetsTopic::default()
                        .with_name(name("t"))
                        .with_partitions(vec![
                            list_offsets_request::ListOffsetsPartition::default()
                                .with_timestamp(-1),
                        ]),
                ]),
            ),
        ),
        (
            "offset_commit_v8",
            frame(
                ApiKey::OffsetCommit,
                8,
                9,
                &OffsetCommitRequest::default()
                    .with_group_id(group())
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(vec![
                        offset_commit_request::OffsetCommitRequestTopic::default()
                            .with_name(name("t"))
                            .with_partitions(vec![
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_committed_offset(3)
                                    .with_committed_metadata(Some(StrBytes::from_static_str("m"))),
                            ]),
                    ]),
            ),
        ),
        (
            "offset_fetch_v8",
            frame(
                ApiKey::OffsetFetch,
                8,
                10,
                &OffsetFetchRequest::default().with_groups(vec![
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(group())
                        .with_topics(Some(vec![
                            offset_fetch_request::OffsetFetchRequestTopics::default()
                                .with_name(name("t"))
                                .with_partition_indexes(vec![0, 1]),
                        ])),
                ]),
            ),
        ),
        (
            "join_group_v7",
            frame(
                ApiKey::JoinGroup,
                7,
                11,
                &JoinGroupRequest::default()
                    .with_group_id(group())
                    .with_session_timeout_ms(10_000)
                    .with_rebalance_timeout_ms(10_000)
                    .with_protocol_type(StrBytes::from_static_str("consumer"))
                    .with_protocols(
                        [join_group_request::JoinGroupRequestProtocol::default()
                            .with_name(StrBytes::from_static_str("range"))
                            .with_metadata(Bytes::from_static(
                                b"\0\x01\0\0\0\x01\0\x01t\xff\xff\xff\xff",
                            ))]
                        .into_iter()
                        .collect(),
                    ),
            ),
        ),
        (
            "sync_group_v5",
            frame(
                ApiKey::SyncGroup,
                5,
                12,
                &SyncGroupRequest::default()
                    .with_group_id(group())
                    .with_generation_id(1)
                    .with_member_id(StrBytes::from_static_str("m"))
                    .with_assignments(vec![
                        sync_group_request::SyncGroupRequestAssignment::default()
                            .with_member_id(StrBytes::from_static_str("m"))
                            .with_assignment(Bytes::from_static(
                                b"\0\x01\0\0\0\x01\0\x01t\0\0\0\x01\0\0\0\0",
                            )),
                    ]),
            ),
        ),
        (
            "heartbeat_v4",
            frame(
                ApiKey::Heartbeat,
                4,
                13,
                &HeartbeatRequest::default()
                    .with_group_id(group())
                    .with_generation_id(1)
                    .with_member_id(StrBytes::from_static_str("m")),
            ),
        ),
        (
            "create_topics_v7",
            frame(
                ApiKey::CreateTopics,
                7,
                14,
                &CreateTopicsRequest::default().with_topics(vec![
                    create_topics_request::CreatableTopic::default()
                        .with_name(name("t"))
                        .with_num_partitions(3)
                        .with_replication_factor(1)
                        .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                            .with_name(StrBytes::from_static_str("cleanup.policy"))
                            .with_value(Some(StrBytes::from_static_str("compact")))]),
                ]),
            ),
        ),
        (
            "describe_configs_v4",
            frame(
                ApiKey::DescribeConfigs,
                4,
                15,
                &DescribeConfigsRequest::default().with_resources(vec![
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_static_str("t")),
                ]),
            ),
        ),
        (
            "find_coordinator_v4",
            frame(
                ApiKey::FindCoordinator,
                4,
                16,
                &FindCoordinatorRequest::default()
                    .with_coordinator_keys(vec![StrBytes::from_static_str("g")]),
            ),
        ),
        (
            "init_producer_id_v4",
            frame(
                ApiKey::InitProducerId,
                4,
                17,
                &InitProducerIdRequest::default()
                    .with_transaction_timeout_ms(60_000)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            ),
        ),
    ];
    let dir = corpus_dir("requests");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (file, bytes) in &requests {
        std::fs::write(dir.join(format!("{file}.bin")), bytes).expect("write seed");
    }
    let dir = corpus_dir("batches");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (file, codec) in [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        let batch = record_batch(&["a", "bb", "ccc", "dddd"], codec);
        std::fs::write(dir.join(format!("{file}.bin")), &batch).expect("write seed");
    }
}
