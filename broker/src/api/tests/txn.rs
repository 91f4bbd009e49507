//! The transaction APIs: helpers for the version round trips, and bad input.

use super::*;

/// InitProducerId for a new transactional id: (producer id, epoch).
pub(super) async fn init_transactional(broker: &Broker, id: &str) -> (i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(id.to_owned()))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let r: InitProducerIdResponse = call(broker, ApiKey::InitProducerId, 4, &request).await;
    assert_eq!(r.error_code, 0, "init {id}");
    (r.producer_id.0, r.producer_epoch)
}

pub(super) async fn add_partitions(
    broker: &Broker,
    (id, topic): (&str, &str),
    (pid, epoch): (i64, i16),
    version: i16,
) -> AddPartitionsToTxnResponse {
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(id.to_owned())))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![
            add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![0]),
        ]);
    call(broker, ApiKey::AddPartitionsToTxn, version, &request).await
}

pub(super) async fn add_offsets(
    broker: &Broker,
    id: &str,
    (pid, epoch): (i64, i16),
    group: &str,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let request = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_owned())))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_group_id(GroupId(StrBytes::from_string(group.to_owned())));
    call(broker, ApiKey::AddOffsetsToTxn, version, &request).await
}

#[tokio::test]
async fn bad_transactional_requests_get_kafka_error_codes_and_store_nothing() {
    let fx = fixture().await;
    let broker = &fx.broker;
    let topic = "txn-bad";
    let _: CreateTopicsResponse = call(
        broker,
        ApiKey::CreateTopics,
        5,
        &CreateTopicsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_num_partitions(2)
                .with_replication_factor(1)]),
    )
    .await;
    broker
        .wait_for_leaders(
            &[broker
                .log
                .catalog()
                .get(topic)
                .await
                .expect("get")
                .expect("topic")],
            std::time::Duration::from_secs(5),
        )
        .await;
    let id = "bad-txn";
    let producer = init_transactional(broker, id).await;
    let produce = |partition: i32, producer: (i64, i16)| {
        produce_request(
            topic,
            partition,
            encode_batch(&["x"], Compression::None, Some((producer, 0))),
            -1,
        )
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str(id))))
    };
    let error_of = |r: &ProduceResponse| r.responses[0].partition_responses[0].error_code;
    // A partition the producer never added to a transaction.
    let r: ProduceResponse = call(broker, ApiKey::Produce, 9, &produce(0, producer)).await;
    assert_eq!(error_of(&r), ResponseError::InvalidTxnState.code());
    // A transactional batch without its transactional id.
    let bare = produce_request(
        topic,
        0,
        encode_batch(&["x"], Compression::None, Some((producer, 0))),
        -1,
    );
    let r: ProduceResponse = call(broker, ApiKey::Produce, 9, &bare).await;
    assert_eq!(error_of(&r), ResponseError::InvalidTxnState.code());
    // Added, then fenced by a new instance: the old epoch's batches and EndTxn are refused.
    let added = add_partitions(broker, (id, topic), producer, 3).await;
    assert_eq!(
        added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
    let fresh = init_transactional_expecting(broker, id).await;
    assert!(fresh.1 > producer.1);
    let r: ProduceResponse = call(broker, ApiKey::Produce, 9, &produce(0, producer)).await;
    assert_eq!(error_of(&r), ResponseError::InvalidProducerEpoch.code());
    for (version, expected) in [
        (1, ResponseError::InvalidProducerEpoch),
        (3, ResponseError::ProducerFenced),
    ] {
        let end = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str(id)))
            .with_producer_id(ProducerId(producer.0))
            .with_producer_epoch(producer.1)
            .with_committed(true);
        let r: EndTxnResponse = call(broker, ApiKey::EndTxn, version, &end).await;
        assert_eq!(r.error_code, expected.code(), "EndTxn v{version}");
    }
    // TxnOffsetCommit for a group the transaction did not add, then as a member nobody knows.
    let commit = |generation: i32, member: &'static str| {
        TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str(id)))
            .with_group_id(GroupId(StrBytes::from_static_str("txn-bad-group")))
            .with_producer_id(ProducerId(fresh.0))
            .with_producer_epoch(fresh.1)
            .with_generation_id(generation)
            .with_member_id(StrBytes::from_static_str(member))
            .with_topics(vec![
                txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(topic)))
                    .with_partitions(vec![
                        txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(5),
                    ]),
            ])
    };
    let error_of = |r: &TxnOffsetCommitResponse| r.topics[0].partitions[0].error_code;
    let r: TxnOffsetCommitResponse =
        call(broker, ApiKey::TxnOffsetCommit, 3, &commit(-1, "")).await;
    assert_eq!(error_of(&r), ResponseError::InvalidTxnState.code());
    add_offsets(broker, id, fresh, "txn-bad-group", 3).await;
    let r: TxnOffsetCommitResponse =
        call(broker, ApiKey::TxnOffsetCommit, 3, &commit(4, "ghost")).await;
    assert_ne!(error_of(&r), 0, "an unknown member's offsets are refused");
    assert!(
        [
            ResponseError::UnknownMemberId.code(),
            ResponseError::IllegalGeneration.code()
        ]
        .contains(&error_of(&r)),
        "{}",
        error_of(&r)
    );
    // Nothing stored: no record (only the marker that aborted the fenced transaction), no
    // staged offsets.
    let tp = skiff_tiering::log::TopicPartition::new(topic, 0);
    let read = broker
        .log
        .read(
            &tp,
            0,
            1 << 20,
            skiff_tiering::log::Isolation::ReadUncommitted,
        )
        .await
        .expect("read");
    let headers: Vec<_> = read
        .batches
        .iter()
        .map(|b| skiff_tiering::batch::parse_header(b).expect("header"))
        .collect();
    assert!(
        headers.iter().all(|h| h.is_control()),
        "only markers: {headers:?}"
    );
    assert!(
        crate::txn::offsets::pending(&*broker.store, "txn-bad-group")
            .await
            .expect("pending")
            .is_empty()
    );
    // A transaction timeout over the maximum.
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("too-long"))))
        .with_transaction_timeout_ms(900_001)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let r: InitProducerIdResponse = call(broker, ApiKey::InitProducerId, 4, &request).await;
    assert_eq!(
        r.error_code,
        ResponseError::InvalidTransactionTimeout.code()
    );
    broker.log.shutdown().await;
}

/// InitProducerId for an id that may have an open transaction: retried while the coordinator
/// aborts it (CONCURRENT_TRANSACTIONS), as clients do.
async fn init_transactional_expecting(broker: &Broker, id: &str) -> (i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(id.to_owned()))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    for _ in 0..200 {
        let r: InitProducerIdResponse = call(broker, ApiKey::InitProducerId, 4, &request).await;
        if r.error_code == 0 {
            return (r.producer_id.0, r.producer_epoch);
        }
        assert_eq!(r.error_code, ResponseError::ConcurrentTransactions.code());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the fenced transaction was never aborted");
}
