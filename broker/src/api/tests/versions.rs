//! Every API version ApiVersions advertises, round-tripped through decode, handle and encode
//! with a request that does something.

use super::*;

#[tokio::test]
async fn every_advertised_version_round_trips() {
    let fx = fixture().await;
    let broker = &fx.broker;
    for (api_key, min, max) in SUPPORTED {
        for version in *min..=*max {
            match api_key {
                ApiKey::ApiVersions => {
                    let r: ApiVersionsResponse =
                        call(broker, *api_key, version, &ApiVersionsRequest::default()).await;
                    assert_eq!(r.error_code, 0);
                    assert_eq!(r.api_keys.len(), SUPPORTED.len());
                }
                ApiKey::Metadata => {
                    let request = MetadataRequest::default()
                        .with_allow_auto_topic_creation(true)
                        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                        )
                        .with_name(Some(TopicName(StrBytes::from_static_str("versions"))))]));
                    let r: MetadataResponse = call(broker, *api_key, version, &request).await;
                    assert_eq!(r.topics[0].error_code, 0, "v{version}");
                    assert_eq!(r.topics[0].partitions.len(), 2);
                    assert_eq!(r.brokers[0].port, 9092);
                }
                ApiKey::Produce => {
                    let mut request =
                        produce_request("versions", 0, records(&["a", "b"], Compression::None), -1);
                    // v13 names the topic by id (the first, v3, auto-created it).
                    if version >= 13 {
                        request.topic_data[0].topic_id = versions_topic_id(broker).await;
                        request.topic_data[0].name = TopicName::default();
                    }
                    let r: ProduceResponse = call(broker, *api_key, version, &request).await;
                    let p = &r.responses[0].partition_responses[0];
                    assert_eq!(p.error_code, 0, "produce v{version}: {:?}", p.error_message);
                }
                ApiKey::Fetch => {
                    let mut request = fetch_request("versions", 0, 0);
                    let id = versions_topic_id(broker).await;
                    if version >= 13 {
                        request.topics[0].topic_id = id;
                        request.topics[0].topic = TopicName::default();
                    }
                    let r: FetchResponse = call(broker, *api_key, version, &request).await;
                    let p = &r.responses[0].partitions[0];
                    assert_eq!(p.error_code, 0, "fetch v{version}");
                    assert!(p.records.as_ref().is_some_and(|r| !r.is_empty()));
                    if version >= 13 {
                        assert_eq!(r.responses[0].topic_id, id, "fetch v{version}");
                    }
                }
                ApiKey::ListOffsets => {
                    let request =
                        ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default(
                        )
                        .with_name(TopicName(StrBytes::from_static_str("versions")))
                        .with_partitions(vec![ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(-1)])]);
                    let r: ListOffsetsResponse = call(broker, *api_key, version, &request).await;
                    let p = &r.topics[0].partitions[0];
                    assert_eq!(p.error_code, 0, "list offsets v{version}");
                    assert!(p.offset >= 2);
                }
                ApiKey::CreateTopics => {
                    let request =
                        CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                            .with_name(TopicName(StrBytes::from_string(format!(
                                "created-{version}"
                            ))))
                            .with_num_partitions(3)
                            .with_replication_factor(1)]);
                    let r: CreateTopicsResponse = call(broker, *api_key, version, &request).await;
                    assert_eq!(r.topics[0].error_code, 0, "create v{version}");
                }
                ApiKey::DeleteTopics => {
                    let name = TopicName(StrBytes::from_string(format!("created-{}", version + 1)));
                    let request = if version >= 6 {
                        DeleteTopicsRequest::default()
                            .with_topics(vec![delete_topics_request::DeleteTopicState::default()
                                .with_name(Some(name))])
                    } else {
                        DeleteTopicsRequest::default().with_topic_names(vec![name])
                    };
                    let r: DeleteTopicsResponse = call(broker, *api_key, version, &request).await;
                    assert_eq!(r.responses[0].error_code, 0, "delete v{version}");
                }
                ApiKey::CreatePartitions => {
                    let request = CreatePartitionsRequest::default().with_topics(vec![
                        create_partitions_request::CreatePartitionsTopic::default()
                            .with_name(TopicName(StrBytes::from_static_str("versions")))
                            .with_count(3 + i32::from(version)),
                    ]);
                    let r: CreatePartitionsResponse =
                        call(broker, *api_key, version, &request).await;
                    assert_eq!(r.results[0].error_code, 0, "create partitions v{version}");
                }
                ApiKey::DescribeConfigs => {
                    let request = DescribeConfigsRequest::default().with_resources(vec![
                        describe_configs_request::DescribeConfigsResource::default()
                            .with_resource_type(configs::RESOURCE_TOPIC)
                            .with_resource_name(StrBytes::from_static_str("versions")),
                    ]);
                    let r: DescribeConfigsResponse =
                        call(broker, *api_key, version, &request).await;
                    assert_eq!(r.results[0].error_code, 0);
                    assert!(r.results[0]
                        .configs
                        .iter()
                        .any(|c| c.name.as_str() == "retention.ms"));
                }
                ApiKey::InitProducerId => {
                    let request = InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1);
                    let r: InitProducerIdResponse = call(broker, *api_key, version, &request).await;
                    assert_eq!(r.error_code, 0);
                    assert!(r.producer_id.0 >= 0);
                }
                ApiKey::FindCoordinator => {
                    let request = if version >= 4 {
                        FindCoordinatorRequest::default()
                            .with_coordinator_keys(vec![StrBytes::from_static_str("g")])
                    } else {
                        FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"))
                    };
                    let r: FindCoordinatorResponse =
                        call(broker, *api_key, version, &request).await;
                    let node = if version >= 4 {
                        r.coordinators[0].node_id
                    } else {
                        r.node_id
                    };
                    assert_eq!(node.0, 1, "find coordinator v{version}");
                }
                ApiKey::OffsetCommit => {
                    let request = OffsetCommitRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("g")))
                        .with_generation_id_or_member_epoch(-1)
                        .with_topics(vec![
                            offset_commit_request::OffsetCommitRequestTopic::default()
                                .with_name(TopicName(StrBytes::from_static_str("versions")))
                                .with_partitions(vec![
                                    offset_commit_request::OffsetCommitRequestPartition::default()
                                        .with_partition_index(0)
                                        .with_committed_offset(100 + i64::from(version))
                                        .with_committed_metadata(Some(StrBytes::from_static_str(
                                            "meta",
                                        ))),
                                ]),
                        ]);
                    let r: OffsetCommitResponse = call(broker, *api_key, version, &request).await;
                    assert_eq!(r.topics[0].partitions[0].error_code, 0, "commit v{version}");
                }
                ApiKey::OffsetFetch => {
                    let (offset, metadata) = if version >= 8 {
                        let request = OffsetFetchRequest::default().with_groups(vec![
                            offset_fetch_request::OffsetFetchRequestGroup::default()
                                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                                .with_topics(Some(vec![
                                    offset_fetch_request::OffsetFetchRequestTopics::default()
                                        .with_name(TopicName(StrBytes::from_static_str("versions")))
                                        .with_partition_indexes(vec![0, 1]),
                                ])),
                        ]);
                        let r: OffsetFetchResponse =
                            call(broker, *api_key, version, &request).await;
                        let ps = &r.groups[0].topics[0].partitions;
                        assert_eq!(
                            ps[1].committed_offset, -1,
                            "nothing committed for partition 1"
                        );
                        (ps[0].committed_offset, ps[0].metadata.clone())
                    } else {
                        let request = OffsetFetchRequest::default()
                            .with_group_id(GroupId(StrBytes::from_static_str("g")))
                            .with_topics(Some(vec![
                                offset_fetch_request::OffsetFetchRequestTopic::default()
                                    .with_name(TopicName(StrBytes::from_static_str("versions")))
                                    .with_partition_indexes(vec![0, 1]),
                            ]));
                        let r: OffsetFetchResponse =
                            call(broker, *api_key, version, &request).await;
                        let ps = &r.topics[0].partitions;
                        assert_eq!(
                            ps[1].committed_offset, -1,
                            "nothing committed for partition 1"
                        );
                        (ps[0].committed_offset, ps[0].metadata.clone())
                    };
                    // OffsetCommit ran before at every version; its last value was 100 + its max.
                    let (_, commit_max) =
                        supported_range(ApiKey::OffsetCommit).expect("commit supported");
                    assert_eq!(offset, 100 + i64::from(commit_max), "fetch v{version}");
                    assert_eq!(metadata.as_deref(), Some("meta"));
                }
                ApiKey::JoinGroup => {
                    let (member, generation) =
                        join_fresh(broker, &format!("join-{version}"), version).await;
                    assert!(!member.is_empty() && generation == 1, "join v{version}");
                }
                ApiKey::SyncGroup => {
                    let group = format!("sync-{version}");
                    let (member, generation) = join_fresh(broker, &group, 5).await;
                    let request = SyncGroupRequest::default()
                        .with_group_id(GroupId(StrBytes::from_string(group)))
                        .with_generation_id(generation)
                        .with_member_id(StrBytes::from_string(member.clone()))
                        .with_assignments(vec![
                            sync_group_request::SyncGroupRequestAssignment::default()
                                .with_member_id(StrBytes::from_string(member))
                                .with_assignment(Bytes::from_static(b"mine")),
                        ]);
                    let request = if version >= 5 {
                        request
                            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                            .with_protocol_name(Some(StrBytes::from_static_str("range")))
                    } else {
                        request
                    };
                    let r: SyncGroupResponse = call(broker, *api_key, version, &request).await;
                    assert_eq!(
                        (r.error_code, r.assignment.as_ref()),
                        (0, &b"mine"[..]),
                        "sync v{version}"
                    );
                }
                ApiKey::Heartbeat => {
                    let group = format!("heartbeat-{version}");
                    let (member, generation) = join_fresh(broker, &group, 5).await;
                    let request = HeartbeatRequest::default()
                        .with_group_id(GroupId(StrBytes::from_string(group)))
                        .with_generation_id(generation + 1)
                        .with_member_id(StrBytes::from_string(member));
                    let r: HeartbeatResponse = call(broker, *api_key, version, &request).await;
                    assert_eq!(
                        r.error_code,
                        ResponseError::IllegalGeneration.code(),
                        "heartbeat v{version}"
                    );
                }
                ApiKey::LeaveGroup => {
                    let group = format!("leave-{version}");
                    let (member, _) = join_fresh(broker, &group, 5).await;
                    let request = if version >= 3 {
                        LeaveGroupRequest::default()
                            .with_group_id(GroupId(StrBytes::from_string(group)))
                            .with_members(vec![leave_group_request::MemberIdentity::default()
                                .with_member_id(StrBytes::from_string(member))])
                    } else {
                        LeaveGroupRequest::default()
                            .with_group_id(GroupId(StrBytes::from_string(group)))
                            .with_member_id(StrBytes::from_string(member))
                    };
                    let r: LeaveGroupResponse = call(broker, *api_key, version, &request).await;
                    let code = if version >= 3 {
                        r.members[0].error_code
                    } else {
                        r.error_code
                    };
                    assert_eq!(code, 0, "leave v{version}");
                }
                ApiKey::ListGroups => {
                    let r: ListGroupsResponse =
                        call(broker, *api_key, version, &ListGroupsRequest::default()).await;
                    assert_eq!(r.error_code, 0);
                    // "g" has committed offsets (OffsetCommit ran) and this broker coordinates it.
                    assert!(
                        r.groups.iter().any(|g| g.group_id.as_str() == "g"),
                        "list v{version}"
                    );
                }
                ApiKey::DescribeGroups => {
                    let group = format!("describe-{version}");
                    let (member, _) = join_fresh(broker, &group, 5).await;
                    let request = DescribeGroupsRequest::default()
                        .with_groups(vec![GroupId(StrBytes::from_string(group))]);
                    let r: DescribeGroupsResponse = call(broker, *api_key, version, &request).await;
                    let g = &r.groups[0];
                    assert_eq!(
                        (g.error_code, g.group_state.as_str()),
                        (0, "CompletingRebalance")
                    );
                    assert_eq!(g.members[0].member_id.as_str(), member);
                    assert_eq!(g.members[0].member_metadata.as_ref(), b"subscription");
                }
                ApiKey::DeleteGroups => {
                    let busy = format!("busy-{version}");
                    join_fresh(broker, &busy, 5).await;
                    let request = DeleteGroupsRequest::default().with_groups_names(vec![
                        GroupId(StrBytes::from_string(busy)),
                        GroupId(StrBytes::from_static_str("never-existed")),
                    ]);
                    let r: DeleteGroupsResponse = call(broker, *api_key, version, &request).await;
                    assert_eq!(r.results[0].error_code, ResponseError::NonEmptyGroup.code());
                    assert_eq!(
                        r.results[1].error_code,
                        ResponseError::GroupIdNotFound.code()
                    );
                }
                ApiKey::OffsetDelete => {
                    let request = OffsetDeleteRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("g")))
                        .with_topics(vec![
                            offset_delete_request::OffsetDeleteRequestTopic::default()
                                .with_name(TopicName(StrBytes::from_static_str("versions")))
                                .with_partitions(vec![
                                    offset_delete_request::OffsetDeleteRequestPartition::default()
                                        .with_partition_index(0),
                                ]),
                        ]);
                    let r: OffsetDeleteResponse = call(broker, *api_key, version, &request).await;
                    assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, 0));
                    let gone = skiff_tiering::group_offsets::fetch_all(&*broker.store, "g")
                        .await
                        .expect("fetch");
                    assert!(gone.get("versions").is_none_or(|p| !p.contains_key(&0)));
                }
                ApiKey::AlterConfigs => {
                    let request = AlterConfigsRequest::default().with_resources(vec![
                        alter_configs_request::AlterConfigsResource::default()
                            .with_resource_type(configs::RESOURCE_TOPIC)
                            .with_resource_name(StrBytes::from_static_str("versions"))
                            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                                .with_name(StrBytes::from_static_str("retention.ms"))
                                .with_value(Some(StrBytes::from_string(format!(
                                    "{}",
                                    1_000 + version
                                ))))]),
                    ]);
                    let r: AlterConfigsResponse = call(broker, *api_key, version, &request).await;
                    assert_eq!(r.responses[0].error_code, 0, "alter configs v{version}");
                }
                ApiKey::IncrementalAlterConfigs => {
                    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
                        incremental_alter_configs_request::AlterConfigsResource::default()
                            .with_resource_type(configs::RESOURCE_TOPIC)
                            .with_resource_name(StrBytes::from_static_str("versions"))
                            .with_configs(vec![
                                incremental_alter_configs_request::AlterableConfig::default()
                                    .with_name(StrBytes::from_static_str("segment.ms"))
                                    .with_config_operation(0)
                                    .with_value(Some(StrBytes::from_static_str("60000"))),
                            ]),
                    ]);
                    let r: IncrementalAlterConfigsResponse =
                        call(broker, *api_key, version, &request).await;
                    assert_eq!(r.responses[0].error_code, 0, "incremental v{version}");
                }
                ApiKey::ElectLeaders => {
                    let request = ElectLeadersRequest::default().with_topic_partitions(Some(vec![
                        elect_leaders_request::TopicPartitions::default()
                            .with_topic(TopicName(StrBytes::from_static_str("versions")))
                            .with_partitions(vec![0, 99]),
                    ]));
                    let r: ElectLeadersResponse = call(broker, *api_key, version, &request).await;
                    let codes: Vec<i16> = r.replica_election_results[0]
                        .partition_result
                        .iter()
                        .map(|p| p.error_code)
                        .collect();
                    assert_eq!(
                        codes,
                        [
                            ResponseError::ElectionNotNeeded.code(),
                            ResponseError::UnknownTopicOrPartition.code()
                        ],
                        "elect v{version}"
                    );
                }
                ApiKey::DescribeLogDirs => {
                    let r: DescribeLogDirsResponse = call(
                        broker,
                        *api_key,
                        version,
                        &DescribeLogDirsRequest::default().with_topics(None),
                    )
                    .await;
                    let dir = &r.results[0];
                    assert_eq!(dir.log_dir.as_str(), replicas::VIRTUAL_LOG_DIR);
                    let topic = dir
                        .topics
                        .iter()
                        .find(|t| t.name.as_str() == "versions")
                        .expect("led topic listed");
                    let p0 = topic
                        .partitions
                        .iter()
                        .find(|p| p.partition_index == 0)
                        .expect("partition 0");
                    assert!(p0.partition_size > 0, "log dirs v{version}: {p0:?}");
                    assert_eq!(p0.offset_lag, 0);
                }
                ApiKey::AlterReplicaLogDirs => {
                    let request = AlterReplicaLogDirsRequest::default().with_dirs(vec![
                        alter_replica_log_dirs_request::AlterReplicaLogDir::default()
                            .with_path(StrBytes::from_static_str("/data"))
                            .with_topics(vec![
                                alter_replica_log_dirs_request::AlterReplicaLogDirTopic::default()
                                    .with_name(TopicName(StrBytes::from_static_str("versions")))
                                    .with_partitions(vec![0]),
                            ]),
                    ]);
                    let r: AlterReplicaLogDirsResponse =
                        call(broker, *api_key, version, &request).await;
                    assert_eq!(
                        r.results[0].partitions[0].error_code,
                        ResponseError::LogDirNotFound.code()
                    );
                }
                ApiKey::ListPartitionReassignments => {
                    let request = ListPartitionReassignmentsRequest::default().with_topics(None);
                    let r: ListPartitionReassignmentsResponse =
                        call(broker, *api_key, version, &request).await;
                    assert_eq!((r.error_code, r.topics.len()), (0, 0));
                }
                ApiKey::AlterPartitionReassignments => {
                    let request = AlterPartitionReassignmentsRequest::default().with_topics(vec![
                        alter_partition_reassignments_request::ReassignableTopic::default()
                            .with_name(TopicName(StrBytes::from_static_str("versions")))
                            .with_partitions(vec![
                                alter_partition_reassignments_request::ReassignablePartition::default()
                                    .with_partition_index(0)
                                    .with_replicas(Some(vec![BrokerId(2)])),
                                alter_partition_reassignments_request::ReassignablePartition::default()
                                    .with_partition_index(1)
                                    .with_replicas(None),
                            ]),
                    ]);
                    let r: AlterPartitionReassignmentsResponse =
                        call(broker, *api_key, version, &request).await;
                    let codes: Vec<i16> = r.responses[0]
                        .partitions
                        .iter()
                        .map(|p| p.error_code)
                        .collect();
                    assert_eq!(
                        codes,
                        [
                            ResponseError::InvalidReplicaAssignment.code(),
                            ResponseError::NoReassignmentInProgress.code()
                        ]
                    );
                }
                ApiKey::DeleteRecords => {
                    // "versions" partition 1 holds nothing; partition 0 holds every produce
                    // above: move its start by one per version, then ask for the unknown.
                    let request = DeleteRecordsRequest::default().with_topics(vec![
                        delete_records_request::DeleteRecordsTopic::default()
                            .with_name(TopicName(StrBytes::from_static_str("versions")))
                            .with_partitions(vec![
                                delete_records_request::DeleteRecordsPartition::default()
                                    .with_partition_index(0)
                                    .with_offset(i64::from(version) + 1),
                                delete_records_request::DeleteRecordsPartition::default()
                                    .with_partition_index(1)
                                    .with_offset(5),
                                delete_records_request::DeleteRecordsPartition::default()
                                    .with_partition_index(9)
                                    .with_offset(0),
                            ]),
                    ]);
                    let r: DeleteRecordsResponse = call(broker, *api_key, version, &request).await;
                    let ps = &r.topics[0].partitions;
                    assert_eq!(
                        (ps[0].error_code, ps[0].low_watermark),
                        (0, i64::from(version) + 1),
                        "delete records v{version}"
                    );
                    assert_eq!(ps[1].error_code, ResponseError::OffsetOutOfRange.code());
                    assert_eq!(
                        ps[2].error_code,
                        ResponseError::UnknownTopicOrPartition.code()
                    );
                    let tp = skiff_tiering::log::TopicPartition::new("versions", 0);
                    let (start, _) = broker.log.offsets(&tp).await.expect("offsets");
                    assert_eq!(start, i64::from(version) + 1);
                }
                ApiKey::AddPartitionsToTxn if version <= 3 => {
                    let id = format!("apt-{version}");
                    let (pid, epoch) = init_transactional(broker, &id).await;
                    let r = add_partitions(broker, (&id, "versions"), (pid, epoch), version).await;
                    assert_eq!(
                        r.results_by_topic_v3_and_below[0].results_by_partition[0]
                            .partition_error_code,
                        0,
                        "add partitions v{version}"
                    );
                }
                ApiKey::AddPartitionsToTxn => {
                    txn::batched_add_partitions_and_verification(broker, version).await;
                }
                ApiKey::AddOffsetsToTxn => {
                    let id = format!("aot-{version}");
                    let (pid, epoch) = init_transactional(broker, &id).await;
                    let r = add_offsets(broker, &id, (pid, epoch), "gtx", version).await;
                    assert_eq!(r.error_code, 0, "add offsets v{version}");
                }
                ApiKey::EndTxn => {
                    let id = format!("end-{version}");
                    let (pid, epoch) = init_transactional(broker, &id).await;
                    add_partitions(broker, (&id, "versions"), (pid, epoch), 3).await;
                    let request = EndTxnRequest::default()
                        .with_transactional_id(TransactionalId(StrBytes::from_string(id)))
                        .with_producer_id(ProducerId(pid))
                        .with_producer_epoch(epoch)
                        .with_committed(false);
                    let r: EndTxnResponse = call(broker, *api_key, version, &request).await;
                    assert_eq!(r.error_code, 0, "end txn v{version}");
                }
                ApiKey::TxnOffsetCommit => {
                    let id = format!("toc-{version}");
                    let (pid, epoch) = init_transactional(broker, &id).await;
                    add_offsets(broker, &id, (pid, epoch), "gtx", 3).await;
                    let request = TxnOffsetCommitRequest::default()
                        .with_transactional_id(TransactionalId(StrBytes::from_string(id)))
                        .with_group_id(GroupId(StrBytes::from_static_str("gtx")))
                        .with_producer_id(ProducerId(pid))
                        .with_producer_epoch(epoch)
                        .with_generation_id(-1)
                        .with_topics(vec![
                            txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                                .with_name(TopicName(StrBytes::from_static_str("versions")))
                                .with_partitions(vec![
                                    txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                                        .with_partition_index(0)
                                        .with_committed_offset(1),
                                ]),
                        ]);
                    let r: TxnOffsetCommitResponse =
                        call(broker, *api_key, version, &request).await;
                    assert_eq!(
                        r.topics[0].partitions[0].error_code, 0,
                        "txn offset commit v{version}"
                    );
                }
                ApiKey::ListTransactions => {
                    let id = format!("lt-{version}");
                    init_transactional(broker, &id).await;
                    let request = ListTransactionsRequest::default()
                        .with_duration_filter(if version >= 1 { 0 } else { -1 })
                        .with_transactional_id_pattern(
                            (version >= 2).then(|| StrBytes::from_string(id.clone())),
                        );
                    let r: ListTransactionsResponse =
                        call(broker, *api_key, version, &request).await;
                    assert_eq!(r.error_code, 0, "list transactions v{version}");
                    let ids: Vec<&str> = r
                        .transaction_states
                        .iter()
                        .map(|t| t.transactional_id.0.as_str())
                        .collect();
                    assert!(ids.contains(&id.as_str()), "v{version}: {ids:?}");
                }
                ApiKey::DescribeTransactions => {
                    let id = format!("dt-{version}");
                    let (pid, _) = init_transactional(broker, &id).await;
                    let request = DescribeTransactionsRequest::default()
                        .with_transactional_ids(vec![TransactionalId(StrBytes::from_string(id))]);
                    let r: DescribeTransactionsResponse =
                        call(broker, *api_key, version, &request).await;
                    let state = &r.transaction_states[0];
                    assert_eq!((state.error_code, state.producer_id.0), (0, pid));
                    assert_eq!(state.transaction_state.as_str(), "Empty");
                }
                ApiKey::DescribeProducers => {
                    let request = DescribeProducersRequest::default().with_topics(vec![
                        describe_producers_request::TopicRequest::default()
                            .with_name(TopicName(StrBytes::from_static_str("versions")))
                            .with_partition_indexes(vec![1]),
                    ]);
                    let r: DescribeProducersResponse =
                        call(broker, *api_key, version, &request).await;
                    assert_eq!(r.topics[0].partitions[0].error_code, 0);
                }
                ApiKey::SaslHandshake => {
                    // Through the broker's dispatch: a listener without SASL.
                    let request = SaslHandshakeRequest::default()
                        .with_mechanism(StrBytes::from_static_str("PLAIN"));
                    let r: SaslHandshakeResponse = call(broker, *api_key, version, &request).await;
                    assert_eq!(r.error_code, ResponseError::IllegalSaslState.code());
                }
                ApiKey::SaslAuthenticate => {
                    let r: SaslAuthenticateResponse = call(
                        broker,
                        *api_key,
                        version,
                        &SaslAuthenticateRequest::default(),
                    )
                    .await;
                    assert_eq!(r.error_code, ResponseError::IllegalSaslState.code());
                }
                ApiKey::DescribeUserScramCredentials => {
                    let r: DescribeUserScramCredentialsResponse = call(
                        broker,
                        *api_key,
                        version,
                        &DescribeUserScramCredentialsRequest::default(),
                    )
                    .await;
                    assert_eq!(r.error_code, 0);
                }
                ApiKey::AlterUserScramCredentials => {
                    let request = AlterUserScramCredentialsRequest::default().with_deletions(vec![
                        alter_user_scram_credentials_request::ScramCredentialDeletion::default()
                            .with_name(StrBytes::from_static_str("nobody"))
                            .with_mechanism(1),
                    ]);
                    let r: AlterUserScramCredentialsResponse =
                        call(broker, *api_key, version, &request).await;
                    assert_eq!(
                        r.results[0].error_code,
                        ResponseError::ResourceNotFound.code()
                    );
                }
                ApiKey::CreateAcls => {
                    let request = CreateAclsRequest::default().with_creations(vec![
                        create_acls_request::AclCreation::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_string(format!("acl-{version}")))
                            .with_resource_pattern_type(3)
                            .with_principal(StrBytes::from_static_str("User:alice"))
                            .with_host(StrBytes::from_static_str("*"))
                            .with_operation(3)
                            .with_permission_type(3),
                    ]);
                    let r: CreateAclsResponse = call(broker, *api_key, version, &request).await;
                    assert_eq!(r.results[0].error_code, 0);
                }
                ApiKey::DescribeAcls => {
                    let request = DescribeAclsRequest::default()
                        .with_resource_type_filter(2)
                        .with_resource_name_filter(Some(StrBytes::from_string(format!(
                            "acl-{version}"
                        ))))
                        .with_pattern_type_filter(3)
                        .with_host_filter(None)
                        .with_principal_filter(None)
                        .with_operation(1)
                        .with_permission_type(1);
                    let r: DescribeAclsResponse = call(broker, *api_key, version, &request).await;
                    assert_eq!(r.error_code, 0);
                    assert_eq!(r.resources.len(), 1, "created by CreateAcls v{version}");
                    assert_eq!(r.resources[0].acls[0].principal.as_str(), "User:alice");
                }
                ApiKey::DeleteAcls => {
                    let request = DeleteAclsRequest::default().with_filters(vec![
                        delete_acls_request::DeleteAclsFilter::default()
                            .with_resource_type_filter(2)
                            .with_resource_name_filter(Some(StrBytes::from_string(format!(
                                "acl-{version}"
                            ))))
                            .with_pattern_type_filter(1)
                            .with_host_filter(None)
                            .with_principal_filter(None)
                            .with_operation(1)
                            .with_permission_type(1),
                    ]);
                    let r: DeleteAclsResponse = call(broker, *api_key, version, &request).await;
                    assert_eq!(r.filter_results[0].error_code, 0);
                    assert_eq!(r.filter_results[0].matching_acls.len(), 1);
                }
                other => panic!("advertised {other:?} without a test"),
            }
        }
    }
    broker.log.shutdown().await;
}
