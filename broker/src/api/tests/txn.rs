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

/// Creates `topic` and waits until this broker leads its partitions.
async fn create_led_topic(broker: &Broker, topic: &str, partitions: i32) {
    let _: CreateTopicsResponse = call(
        broker,
        ApiKey::CreateTopics,
        5,
        &CreateTopicsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_num_partitions(partitions)
                .with_replication_factor(1)]),
    )
    .await;
    let created = broker.log.catalog().get(topic).await.expect("get");
    broker
        .wait_for_leaders(
            &[created.expect("topic")],
            std::time::Duration::from_secs(5),
        )
        .await;
}

#[tokio::test]
async fn bad_transactional_requests_get_kafka_error_codes_and_store_nothing() {
    let fx = fixture().await;
    let broker = &fx.broker;
    let topic = "txn-bad";
    create_led_topic(broker, topic, 2).await;
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

fn list_transactions(
    states: &[&'static str],
    producer_ids: &[i64],
    duration_ms: i64,
    pattern: Option<&'static str>,
) -> ListTransactionsRequest {
    ListTransactionsRequest::default()
        .with_state_filters(
            states
                .iter()
                .map(|s| StrBytes::from_static_str(s))
                .collect(),
        )
        .with_producer_id_filters(producer_ids.iter().map(|p| ProducerId(*p)).collect())
        .with_duration_filter(duration_ms)
        .with_transactional_id_pattern(pattern.map(StrBytes::from_static_str))
}

/// The transactional ids a ListTransactions answer names, and its error code.
async fn listed(broker: &Broker, version: i16, request: &ListTransactionsRequest) -> Vec<String> {
    let r: ListTransactionsResponse =
        call(broker, ApiKey::ListTransactions, version, request).await;
    assert_eq!(r.error_code, 0);
    r.transaction_states
        .iter()
        .map(|t| format!("{}:{}", t.transactional_id.0, t.transaction_state))
        .collect()
}

#[tokio::test]
async fn hanging_transaction_tools_show_the_coordinator_and_the_partitions() {
    let fx = fixture().await;
    let broker = &fx.broker;
    let topic = "txn-admin";
    create_led_topic(broker, topic, 2).await;
    let open = init_transactional(broker, "admin-open").await;
    let idle = init_transactional(broker, "admin-idle").await;
    let added = add_partitions(broker, ("admin-open", topic), open, 3).await;
    assert_eq!(
        added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
    let batch = encode_batch(&["a", "b"], Compression::None, Some((open, 0)));
    let request = produce_request(topic, 0, batch, -1).with_transactional_id(Some(
        TransactionalId(StrBytes::from_static_str("admin-open")),
    ));
    let r: ProduceResponse = call(broker, ApiKey::Produce, 9, &request).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);

    // ListTransactions, with each filter.
    let mut all = listed(broker, 0, &list_transactions(&[], &[], -1, None)).await;
    all.sort();
    assert_eq!(all, ["admin-idle:Empty", "admin-open:Ongoing"]);
    let ongoing = list_transactions(&["Ongoing"], &[], -1, None);
    assert_eq!(listed(broker, 0, &ongoing).await, ["admin-open:Ongoing"]);
    let by_producer = list_transactions(&[], &[idle.0], -1, None);
    assert_eq!(listed(broker, 0, &by_producer).await, ["admin-idle:Empty"]);
    // Running longer than an hour: only the idle id (outside a transaction it has no start
    // time, which Kafka's filter counts as long ago); 10 ms later, longer than 5 ms: both.
    let hour = list_transactions(&[], &[], 3_600_000, None);
    assert_eq!(listed(broker, 1, &hour).await, ["admin-idle:Empty"]);
    fx.clock.advance_ms(10);
    let mut five = listed(broker, 1, &list_transactions(&[], &[], 5, None)).await;
    five.sort();
    assert_eq!(five, ["admin-idle:Empty", "admin-open:Ongoing"]);
    // The pattern matches the whole id.
    let pattern = list_transactions(&[], &[], -1, Some("admin-o.*"));
    assert_eq!(listed(broker, 2, &pattern).await, ["admin-open:Ongoing"]);
    let prefix_only = list_transactions(&[], &[], -1, Some("admin"));
    assert!(listed(broker, 2, &prefix_only).await.is_empty());
    // A state that does not exist is named back and matches nothing; a bad pattern is refused.
    let r: ListTransactionsResponse = call(
        broker,
        ApiKey::ListTransactions,
        0,
        &list_transactions(&["Bogus"], &[], -1, None),
    )
    .await;
    assert_eq!(
        r.unknown_state_filters,
        [StrBytes::from_static_str("Bogus")]
    );
    assert!(r.transaction_states.is_empty());
    let r: ListTransactionsResponse = call(
        broker,
        ApiKey::ListTransactions,
        2,
        &list_transactions(&[], &[], -1, Some("(")),
    )
    .await;
    assert_eq!(r.error_code, ResponseError::InvalidRegularExpression.code());

    // DescribeTransactions: the open one's partitions; an unknown id.
    let request = DescribeTransactionsRequest::default().with_transactional_ids(vec![
        TransactionalId(StrBytes::from_static_str("admin-open")),
        TransactionalId(StrBytes::from_static_str("nobody")),
    ]);
    let r: DescribeTransactionsResponse =
        call(broker, ApiKey::DescribeTransactions, 0, &request).await;
    let [described, unknown] = &r.transaction_states[..] else {
        panic!("two answers: {r:?}")
    };
    assert_eq!(described.error_code, 0);
    assert_eq!(described.transaction_state.as_str(), "Ongoing");
    assert_eq!((described.producer_id.0, described.producer_epoch), open);
    assert_eq!(described.transaction_timeout_ms, 60_000);
    assert_eq!(described.transaction_start_time_ms, 1_700_000_000_000);
    assert_eq!(described.topics.len(), 1);
    assert_eq!(described.topics[0].topic.0.as_str(), topic);
    assert_eq!(described.topics[0].partitions, [0]);
    assert_eq!(
        unknown.error_code,
        ResponseError::TransactionalIdNotFound.code()
    );

    // DescribeProducers: partition 0 holds the open transaction from offset 0; partition 1
    // knows nobody; a partition that does not exist is an error.
    let request = DescribeProducersRequest::default().with_topics(vec![
        describe_producers_request::TopicRequest::default()
            .with_name(TopicName(StrBytes::from_static_str(topic)))
            .with_partition_indexes(vec![0, 1, 7]),
    ]);
    let r: DescribeProducersResponse = call(broker, ApiKey::DescribeProducers, 0, &request).await;
    let [p0, p1, p7] = &r.topics[0].partitions[..] else {
        panic!("three partitions: {r:?}")
    };
    assert_eq!(p0.error_code, 0);
    let [producer] = &p0.active_producers[..] else {
        panic!("one producer: {p0:?}")
    };
    assert_eq!(producer.producer_id.0, open.0);
    assert_eq!(producer.producer_epoch, i32::from(open.1));
    assert_eq!(producer.last_sequence, 1);
    assert_eq!(producer.current_txn_start_offset, 0);
    assert!(
        p1.error_code == 0 && p1.active_producers.is_empty(),
        "{p1:?}"
    );
    assert_ne!(p7.error_code, 0, "{p7:?}");
    broker.log.shutdown().await;
}

/// AddPartitionsToTxn v4+: two transactions in one request, one added, one only verified.
pub(super) async fn batched_add_partitions_and_verification(broker: &Broker, version: i16) {
    use add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
    let added = format!("apt-batch-{version}");
    let checked = format!("apt-verify-{version}");
    let added_producer = init_transactional(broker, &added).await;
    let checked_producer = init_transactional(broker, &checked).await;
    // The verified one has partition 0 in its transaction, not partition 1.
    add_partitions(broker, (&checked, "versions"), checked_producer, 3).await;
    let topic = |partitions: Vec<i32>| {
        vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("versions")))
            .with_partitions(partitions)]
    };
    let transaction = |id: &str, (pid, epoch): (i64, i16), verify_only, partitions| {
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_owned())))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_verify_only(verify_only)
            .with_topics(topic(partitions))
    };
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        transaction(&added, added_producer, false, vec![0]),
        transaction(&checked, checked_producer, true, vec![0, 1]),
    ]);
    let r: AddPartitionsToTxnResponse =
        call(broker, ApiKey::AddPartitionsToTxn, version, &request).await;
    assert_eq!(r.error_code, 0);
    let codes: Vec<Vec<i16>> = r
        .results_by_transaction
        .iter()
        .map(|t| {
            t.topic_results[0]
                .results_by_partition
                .iter()
                .map(|p| p.partition_error_code)
                .collect()
        })
        .collect();
    assert_eq!(
        codes,
        [vec![0], vec![0, ResponseError::InvalidTxnState.code()]],
        "v{version}"
    );
    // The added one is in its transaction now; verifying never adds.
    let (record, _) = broker.txn.load(&added).await.expect("load");
    assert!(record.expect("record").contains("versions", 0));
    let (record, _) = broker.txn.load(&checked).await.expect("load");
    assert!(!record.expect("record").contains("versions", 1));
}
