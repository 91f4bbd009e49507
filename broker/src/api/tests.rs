//! Handler tests through the real decode → handle → encode path, against the embedded metadata
//! store and an in-memory object store.

use super::*;
use bytes::BytesMut;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType as RecordTimestampType,
};
use skiff_tiering::clock::ManualClock;
use skiff_tiering::cluster::controller::Controller;
use skiff_tiering::cluster::membership::Membership;
use skiff_tiering::keys::BrokerRecord;
use skiff_tiering::metadata::embedded::EmbeddedStore;
use skiff_tiering::metadata::MetadataStore;
use skiff_tiering::LogConfig;
use std::sync::Arc;
use txn::{add_offsets, add_partitions, init_transactional};

mod decoding;
mod encoding;
mod sasl;
mod topic_configs;
mod txn;
mod versions;

struct Fixture {
    _dir: tempfile::TempDir,
    broker: Broker,
    clock: Arc<ManualClock>,
    /// Keeps the controller (which gives node 1 leadership of every partition) running.
    _stop_controller: tokio::sync::watch::Sender<bool>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store: Arc<dyn MetadataStore> = Arc::new(
        EmbeddedStore::open(&dir.path().join("meta.redb"), clock.clone())
            .await
            .expect("store"),
    );
    let log = Log::open(
        store.clone(),
        Arc::new(object_store::memory::InMemory::new()),
        clock.clone(),
        LogConfig {
            flush_linger_ms: 1,
            ..LogConfig::default()
        },
    );
    let membership = Arc::new(
        Membership::register(
            store.clone(),
            BrokerRecord {
                node_id: 1,
                host: "127.0.0.1".into(),
                port: 9092,
                rack: None,
                incarnation: String::new(),
                listeners: Vec::new(),
                follower_reads: false,
            },
            60_000,
            std::time::Duration::ZERO,
        )
        .await
        .expect("register"),
    );
    let (stop_controller, stopped) = tokio::sync::watch::channel(false);
    let view = skiff_tiering::cluster::view::ViewCell::default();
    // Markers the transaction coordinator asks of the partitions this broker leads.
    tokio::spawn(skiff_tiering::log::markers::run(
        log.clone(),
        stopped.clone(),
    ));
    tokio::spawn(
        Controller::new(store.clone(), log.clone(), membership, view.clone()).run(stopped),
    );
    let groups = Arc::new(crate::group::coordinator::Coordinator::new(
        crate::group::state::GroupSettings {
            initial_rebalance_delay_ms: 0,
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 60_000,
            max_size: 1_000,
        },
        log.clock().clone(),
    ));
    let producer_ids = Arc::new(ProducerIds::new(store.clone()));
    let manual_clock = clock;
    let clock = log.clock().clone();
    let broker = Broker {
        groups,
        log,
        store: store.clone(),
        node: Node {
            node_id: 1,
            replica_selector: crate::config::ReplicaSelector::Leader,
        },
        cluster_id: "test".into(),
        limits: Limits {
            max_connections: 10,
            connection_max_inflight_requests: 4,
            socket_request_max_bytes: 1 << 20,
            message_max_bytes: 1_048_588,
            fetch_max_bytes: 57_671_680,
            connections_max_idle: std::time::Duration::from_secs(60),
            connection_write_timeout: std::time::Duration::from_secs(60),
            offset_metadata_max_bytes: 4096,
        },
        budgets: Arc::new(crate::memory::Budgets::new(crate::memory::BudgetSettings {
            queued_max_request_bytes: 1 << 30,
            non_produce_request_max_bytes: 1 << 20,
            fetch_buffer_max_bytes: 256 << 20,
            connection_fetch_buffer_max_bytes: 64 << 20,
        })),
        topic_defaults: TopicDefaults {
            auto_create_topics_enable: true,
            num_partitions: 2,
            message_timestamp_type: TimestampType::CreateTime,
            retention: skiff_tiering::log::Retention {
                ms: 604_800_000,
                bytes: -1,
            },
        },
        static_configs: StaticBrokerConfigs::default(),
        producer_ids: producer_ids.clone(),
        txn: crate::txn::Coordinator::new(
            store.clone(),
            clock.clone(),
            producer_ids,
            crate::txn::TxnSettings {
                max_timeout_ms: 900_000,
                id_expiration_ms: 604_800_000,
                id_max_count: 1_000,
                check_interval: std::time::Duration::from_secs(10),
            },
        ),
        view,
        object_store_counts: Default::default(),
        metadata_counts: Default::default(),
        windows: Default::default(),
        flush_window_min_bytes: 2 << 20,
        metrics: crate::metrics::Metrics::new(true),
        compactor: None,
        sasl: Arc::new(
            crate::security::sasl::Authenticator::new(
                store.clone(),
                &crate::config::SaslArgs {
                    sasl_enabled_mechanisms: vec![
                        crate::config::SaslMechanism::Plain,
                        crate::config::SaslMechanism::ScramSha256,
                        crate::config::SaslMechanism::ScramSha512,
                    ],
                    connections_max_reauth_ms: 60_000,
                    connection_failed_authentication_delay_ms: 100,
                    sasl_login_timeout_ms: 30_000,
                    oauthbearer: crate::config::OauthBearerArgs {
                        sasl_oauthbearer_jwks_endpoint_url: None,
                        sasl_oauthbearer_jwks_endpoint_refresh_ms: 3_600_000,
                        sasl_oauthbearer_expected_audience: vec![],
                        sasl_oauthbearer_expected_issuer: None,
                        sasl_oauthbearer_sub_claim_name: "sub".to_owned(),
                        sasl_oauthbearer_clock_skew_seconds: 30,
                    },
                },
                clock,
            )
            .expect("SASL settings"),
        ),
        // Enabled, with the tests' principal a super user: every request goes through the
        // authorization rules (an API without one would be refused) and is allowed.
        authorizer: crate::security::authorizer::Authorizer::new(
            store.clone(),
            crate::security::authorizer::AuthorizerSettings {
                enabled: true,
                super_users: vec!["User:ANONYMOUS".into()],
                allow_everyone_if_no_acl_found: false,
            },
        ),
    };
    Fixture {
        _dir: dir,
        broker,
        clock: manual_clock,
        _stop_controller: stop_controller,
    }
}

pub(super) fn frame<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Bytes {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("test")))
        .encode(&mut buf, api_key.request_header_version(version))
        .expect("header");
    body.encode(&mut buf, version).expect("body");
    buf.freeze()
}

/// Sends one request through decode → handle and decodes the response body.
async fn call<T: Encodable, R: Decodable>(
    broker: &Broker,
    api_key: ApiKey,
    version: i16,
    body: &T,
) -> R {
    let decoded = decode_request(frame(api_key, version, 7, body)).expect("decodes");
    let Decoded::Request(request) = decoded else {
        panic!("expected a request")
    };
    let Reply::Respond(parts, _) = handle(broker, request).await else {
        panic!("expected a response for {api_key:?} v{version}")
    };
    let mut bytes = Bytes::from(parts.concat());
    let length = bytes.get_i32() as usize;
    assert_eq!(length, bytes.len());
    let header = ResponseHeader::decode(&mut bytes, api_key.response_header_version(version))
        .expect("response header");
    assert_eq!(header.correlation_id, 7);
    R::decode(&mut bytes, version).expect("response body")
}

use bytes::Buf;
use kafka_protocol::ResponseError;

pub(super) fn records(values: &[&str], compression: Compression) -> Bytes {
    encode_batch(values, compression, None)
}

/// A batch of `values` (keys k0, k1, ...), from a transactional producer (id, epoch) starting
/// at a sequence when `transactional` says so.
fn encode_batch(
    values: &[&str],
    compression: Compression,
    transactional: Option<((i64, i16), i32)>,
) -> Bytes {
    let ((producer_id, producer_epoch), first_sequence) = transactional.unwrap_or(((-1, -1), -1));
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: transactional.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: RecordTimestampType::Creation,
            offset: i as i64,
            sequence: if transactional.is_some() {
                first_sequence + i as i32
            } else {
                -1
            },
            timestamp: 1_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(v.to_string())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode records");
    buf.freeze()
}

pub(super) fn produce_request(
    topic: &str,
    partition: i32,
    data: Bytes,
    acks: i16,
) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(data))])])
}

pub(super) fn fetch_request(topic: &str, partition: i32, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

/// The id of the topic the version round trips write to.
async fn versions_topic_id(broker: &Broker) -> uuid::Uuid {
    let topic = broker
        .log
        .catalog()
        .get("versions")
        .await
        .expect("catalog")
        .expect("created by the first produce");
    topic_uuid(&topic)
}

/// Joins a new member to a new group (no initial delay in tests): (member id, generation).
async fn join_fresh(broker: &Broker, group: &str, version: i16) -> (String, i32) {
    let request = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(StrBytes::from_static_str("range"))
        .with_metadata(Bytes::from_static(b"subscription"))]);
    let mut r: JoinGroupResponse = call(broker, ApiKey::JoinGroup, version, &request).await;
    if version >= 4 {
        // v4+: the first join without an id only hands out the id to join with.
        assert_eq!(
            r.error_code,
            ResponseError::MemberIdRequired.code(),
            "join v{version}"
        );
        assert!(!r.member_id.is_empty());
        let request = request.with_member_id(r.member_id.clone());
        r = call(broker, ApiKey::JoinGroup, version, &request).await;
    }
    assert_eq!(r.error_code, 0, "join v{version}");
    assert_eq!(r.leader, r.member_id, "a lone member leads");
    assert_eq!(r.members.len(), 1);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    (r.member_id.to_string(), r.generation_id)
}

#[tokio::test]
async fn produce_and_fetch_preserve_records_for_every_codec() {
    let fx = fixture().await;
    let broker = &fx.broker;
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    for (i, codec) in codecs.into_iter().enumerate() {
        let request = produce_request("codecs", 1, records(&["x", "y", "z"], codec), 1);
        let r: ProduceResponse = call(broker, ApiKey::Produce, 9, &request).await;
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(
            (p.error_code, p.base_offset),
            (0, 3 * i as i64),
            "{codec:?}"
        );
    }
    let r: FetchResponse = call(broker, ApiKey::Fetch, 12, &fetch_request("codecs", 1, 4)).await;
    let mut data = r.responses[0].partitions[0]
        .records
        .clone()
        .expect("records");
    assert_eq!(r.responses[0].partitions[0].high_watermark, 15);
    let sets = RecordBatchDecoder::decode_all(&mut data).expect("decode");
    let records: Vec<_> = sets.iter().flat_map(|s| s.records.iter()).collect();
    let first = records[0].offset;
    assert!(
        (3..=4).contains(&first),
        "starts at the batch holding offset 4, got {first}"
    );
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.offset, first + i as i64, "contiguous offsets");
        let expected = ["x", "y", "z"][(record.offset % 3) as usize];
        assert_eq!(record.value.as_deref(), Some(expected.as_bytes()));
    }
    assert_eq!(records.last().expect("records").offset, 14);
    broker.log.shutdown().await;
}

#[tokio::test]
async fn bad_produce_data_gets_kafka_error_codes_and_stores_nothing() {
    let fx = fixture().await;
    let broker = &fx.broker;
    let good = records(&["ok"], Compression::None);
    let mut corrupt = BytesMut::from(&good[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let cases = [
        (
            produce_request("bad", 0, corrupt.freeze(), -1),
            ResponseError::CorruptMessage,
        ),
        (
            produce_request("bad", 9, good.clone(), -1),
            ResponseError::UnknownTopicOrPartition,
        ),
        (
            produce_request("bad", 0, Bytes::from_static(b"garbage"), -1),
            ResponseError::CorruptMessage,
        ),
        (
            produce_request("bad", 0, good.clone(), 7),
            ResponseError::InvalidRequiredAcks,
        ),
        (
            produce_request("bad name!", 0, good.clone(), -1),
            ResponseError::InvalidTopicException,
        ),
    ];
    for (request, expected) in cases {
        let r: ProduceResponse = call(broker, ApiKey::Produce, 9, &request).await;
        assert_eq!(
            r.responses[0].partition_responses[0].error_code,
            expected.code()
        );
    }
    let mut old_magic = BytesMut::from(&good[..]);
    old_magic[16] = 1;
    let r: ProduceResponse = call(
        broker,
        ApiKey::Produce,
        9,
        &produce_request("bad", 0, old_magic.freeze(), -1),
    )
    .await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::InvalidRecord.code()
    );
    // Compressed batches claiming more (or fewer) records than they hold, with a valid CRC:
    // they would consume offsets without records.
    for (codec, claimed) in [
        (Compression::Gzip, 5),
        (Compression::Zstd, 2),
        (Compression::Lz4, 40),
        (Compression::Snappy, 4),
    ] {
        let mut forged = BytesMut::from(&records(&["a", "b", "c"], codec)[..]);
        forged[23..27].copy_from_slice(&(claimed - 1i32).to_be_bytes()); // last offset delta
        forged[57..61].copy_from_slice(&claimed.to_be_bytes()); // records count
        let crc = crc32c::crc32c(&forged[21..]);
        forged[17..21].copy_from_slice(&crc.to_be_bytes());
        let r: ProduceResponse = call(
            broker,
            ApiKey::Produce,
            9,
            &produce_request("bad", 0, forged.freeze(), -1),
        )
        .await;
        assert_eq!(
            r.responses[0].partition_responses[0].error_code,
            ResponseError::CorruptMessage.code(),
            "{codec:?} claiming {claimed}"
        );
    }
    let tp = skiff_tiering::log::TopicPartition::new("bad", 0);
    assert_eq!(broker.log.offsets(&tp).await.expect("offsets"), (0, 0));
    broker.log.shutdown().await;
}

#[tokio::test]
async fn fetch_and_list_offsets_edges() {
    let fx = fixture().await;
    let broker = &fx.broker;
    let _: ProduceResponse = call(
        broker,
        ApiKey::Produce,
        9,
        &produce_request("edges", 0, records(&["a", "b"], Compression::None), -1),
    )
    .await;
    let beyond: FetchResponse =
        call(broker, ApiKey::Fetch, 12, &fetch_request("edges", 0, 3)).await;
    assert_eq!(
        beyond.responses[0].partitions[0].error_code,
        ResponseError::OffsetOutOfRange.code()
    );
    let at_end: FetchResponse =
        call(broker, ApiKey::Fetch, 12, &fetch_request("edges", 0, 2)).await;
    assert_eq!(at_end.responses[0].partitions[0].error_code, 0);
    assert!(at_end.responses[0].partitions[0]
        .records
        .as_ref()
        .is_some_and(|r| r.is_empty()));
    let by_time = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("edges")))
        .with_partitions(vec![
            ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(1_001),
            ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-2),
            ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-3),
            ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(9_999),
        ])]);
    let r: ListOffsetsResponse = call(broker, ApiKey::ListOffsets, 7, &by_time).await;
    let got: Vec<(i64, i64)> = r.topics[0]
        .partitions
        .iter()
        .map(|p| (p.offset, p.timestamp))
        .collect();
    assert_eq!(got, vec![(1, 1_001), (0, -1), (1, 1_001), (-1, -1)]);
    broker.log.shutdown().await;
}

#[tokio::test]
async fn fetch_max_bytes_is_kept_past_the_first_batch() {
    let fx = fixture().await;
    let broker = &fx.broker;
    // The fixture's topics have 2 partitions; one ~900 KB batch in each.
    let big = "x".repeat(900_000);
    for partition in 0..2 {
        let r: ProduceResponse = call(
            broker,
            ApiKey::Produce,
            9,
            &produce_request("big", partition, records(&[&big], Compression::None), -1),
        )
        .await;
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    let partition = |p: i32| {
        FetchPartition::default()
            .with_partition(p)
            .with_fetch_offset(0)
            .with_partition_max_bytes(20_000_000)
    };
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1_000_000)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("big")))
            .with_partitions(vec![partition(0), partition(1)])]);
    let r: FetchResponse = call(broker, ApiKey::Fetch, 12, &request).await;
    let sizes: Vec<usize> = r.responses[0]
        .partitions
        .iter()
        .map(|p| p.records.as_ref().map_or(0, Bytes::len))
        .collect();
    // KIP-74: the first batch whole, over the limit; nothing more.
    assert!(sizes[0] > 900_000, "{sizes:?}");
    assert_eq!(sizes[1], 0, "{sizes:?}");
    broker.log.shutdown().await;
}

#[tokio::test]
async fn oversized_offset_metadata_is_refused_and_not_stored() {
    let fx = fixture().await;
    let broker = &fx.broker;
    let _: ProduceResponse = call(
        broker,
        ApiKey::Produce,
        9,
        &produce_request("meta", 0, records(&["a"], Compression::None), -1),
    )
    .await;
    let commit = |metadata: String| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("meta")))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(1)
                            .with_committed_metadata(Some(StrBytes::from_string(metadata))),
                    ]),
            ])
    };
    let r: OffsetCommitResponse =
        call(broker, ApiKey::OffsetCommit, 8, &commit("m".repeat(4097))).await;
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ResponseError::OffsetMetadataTooLarge.code()
    );
    let stored = skiff_tiering::group_offsets::fetch_all(&*broker.store, "g")
        .await
        .expect("read offsets");
    assert!(stored.is_empty(), "{stored:?}");
    let r: OffsetCommitResponse =
        call(broker, ApiKey::OffsetCommit, 8, &commit("m".repeat(4096))).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    broker.log.shutdown().await;
}

#[tokio::test]
async fn kafka_4_versions_answer_their_new_queries() {
    let fx = fixture().await;
    let broker = &fx.broker;
    let r: ProduceResponse = call(
        broker,
        ApiKey::Produce,
        12,
        &produce_request("four", 0, records(&["a", "b"], Compression::None), -1),
    )
    .await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    let list = |timestamp: i64| {
        ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("four")))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])])
    };
    // Earliest local is the log start; nothing is tiered in Kafka's sense.
    let r: ListOffsetsResponse = call(broker, ApiKey::ListOffsets, 10, &list(-4)).await;
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.offset), (0, 0));
    let r: ListOffsetsResponse = call(broker, ApiKey::ListOffsets, 10, &list(-5)).await;
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.offset), (0, -1));

    // KIP-1043: DescribeGroups v6 reports an unknown group as an error, v5 as Dead.
    let request = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_static_str("nobody"))]);
    let r: DescribeGroupsResponse = call(broker, ApiKey::DescribeGroups, 6, &request).await;
    assert_eq!(
        r.groups[0].error_code,
        ResponseError::GroupIdNotFound.code()
    );
    let r: DescribeGroupsResponse = call(broker, ApiKey::DescribeGroups, 5, &request).await;
    assert_eq!(
        (r.groups[0].error_code, r.groups[0].group_state.as_str()),
        (0, "Dead")
    );

    // ListGroups v5: every group is classic.
    join_fresh(broker, "typed", 9).await;
    let typed = |types: &[&'static str]| {
        ListGroupsRequest::default()
            .with_types_filter(types.iter().map(|t| StrBytes::from_static_str(t)).collect())
    };
    let r: ListGroupsResponse = call(broker, ApiKey::ListGroups, 5, &typed(&["Classic"])).await;
    let group = r.groups.iter().find(|g| g.group_id.as_str() == "typed");
    assert_eq!(group.map(|g| g.group_type.as_str()), Some("classic"));
    let r: ListGroupsResponse = call(broker, ApiKey::ListGroups, 5, &typed(&["consumer"])).await;
    assert!(r.groups.is_empty());
    broker.log.shutdown().await;
}

#[tokio::test]
async fn unknown_topic_ids_are_answered_unknown_topic_id() {
    let fx = fixture().await;
    let broker = &fx.broker;
    let stranger = uuid::Uuid::from_u128(0x5eed);
    let mut fetch = fetch_request("", 0, 0);
    fetch.topics[0].topic_id = stranger;
    let r: FetchResponse = call(broker, ApiKey::Fetch, 13, &fetch).await;
    assert_eq!(r.responses[0].topic_id, stranger);
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        ResponseError::UnknownTopicId.code()
    );
    let mut produce = produce_request("", 0, records(&["a"], Compression::None), -1);
    produce.topic_data[0].topic_id = stranger;
    let r: ProduceResponse = call(broker, ApiKey::Produce, 13, &produce).await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::UnknownTopicId.code()
    );
    broker.log.shutdown().await;
}
