//! Topic and broker configs: IncrementalAlterConfigs and AlterConfigs changes described back
//! and enforced on produce, and the broker resource's settings clients look for.

use super::*;

fn incremental(
    topic: &str,
    changes: &[(&str, i8, Option<&str>)],
) -> IncrementalAlterConfigsRequest {
    IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(configs::RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.into()))
            .with_configs(
                changes
                    .iter()
                    .map(|(name, op, value)| {
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(StrBytes::from_string(name.to_string()))
                            .with_config_operation(*op)
                            .with_value(value.map(|v| StrBytes::from_string(v.into())))
                    })
                    .collect(),
            ),
    ])
}

async fn describe_topic(broker: &Broker, topic: &str) -> Vec<(String, String, bool, i8)> {
    let request = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(configs::RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.into())),
    ]);
    let r: DescribeConfigsResponse = call(broker, ApiKey::DescribeConfigs, 4, &request).await;
    assert_eq!(r.results[0].error_code, 0);
    r.results[0]
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_deref().unwrap_or("").to_owned(),
                c.read_only,
                c.config_source,
            )
        })
        .collect()
}

#[tokio::test]
async fn altered_topic_configs_are_described_and_enforced_on_produce() {
    let fx = fixture().await;
    let broker = &fx.broker;
    let produce = |data: Bytes| async move {
        let r: ProduceResponse = call(
            broker,
            ApiKey::Produce,
            9,
            &produce_request("alt", 0, data, -1),
        )
        .await;
        r.responses[0].partition_responses[0].clone()
    };
    let big = "x".repeat(4_000);
    let first = produce(records(&[&big], Compression::None)).await;
    assert_eq!((first.error_code, first.log_append_time_ms), (0, -1));
    // Defaults: not read-only, source DEFAULT.
    let described = describe_topic(broker, "alt").await;
    assert!(described.iter().all(|(_, _, read_only, _)| !read_only));
    assert!(described
        .iter()
        .any(|(n, v, _, s)| n == "max.message.bytes" && v == "1048588" && *s == 5));

    // The partition is cached (it was just produced to); the change must reach it at once.
    let r: IncrementalAlterConfigsResponse = call(
        broker,
        ApiKey::IncrementalAlterConfigs,
        1,
        &incremental(
            "alt",
            &[
                ("max.message.bytes", 0, Some("1000")),
                ("message.timestamp.type", 0, Some("LogAppendTime")),
                ("cleanup.policy", 2, Some("compact")),
            ],
        ),
    )
    .await;
    assert_eq!(
        r.responses[0].error_code, 0,
        "{:?}",
        r.responses[0].error_message
    );
    let described = describe_topic(broker, "alt").await;
    let get = |name: &str| {
        described
            .iter()
            .find(|(n, ..)| n == name)
            .map(|(_, v, _, s)| (v.clone(), *s))
            .expect("described")
    };
    assert_eq!(get("max.message.bytes"), ("1000".into(), 1));
    assert_eq!(get("cleanup.policy"), ("delete,compact".into(), 1));
    assert_eq!(get("retention.ms").1, 5);
    let too_big = produce(records(&[&big], Compression::None)).await;
    assert_eq!(too_big.error_code, ResponseError::MessageTooLarge.code());
    let appended = produce(records(&["small"], Compression::None)).await;
    assert_eq!(appended.error_code, 0, "{:?}", appended.error_message);
    assert!(appended.log_append_time_ms > 0, "LogAppendTime now applies");

    // validate_only changes nothing; bad values and unknown topics get Kafka's codes.
    let request = incremental("alt", &[("max.message.bytes", 1, None)]).with_validate_only(true);
    let r: IncrementalAlterConfigsResponse =
        call(broker, ApiKey::IncrementalAlterConfigs, 1, &request).await;
    assert_eq!(r.responses[0].error_code, 0);
    assert_eq!(get("max.message.bytes").0, "1000");
    let r: IncrementalAlterConfigsResponse = call(
        broker,
        ApiKey::IncrementalAlterConfigs,
        1,
        &incremental("alt", &[("retention.ms", 0, Some("soon"))]),
    )
    .await;
    assert_eq!(
        r.responses[0].error_code,
        ResponseError::InvalidConfig.code()
    );
    assert!(r.responses[0]
        .error_message
        .as_deref()
        .is_some_and(|m| m.contains("soon")));
    let r: IncrementalAlterConfigsResponse = call(
        broker,
        ApiKey::IncrementalAlterConfigs,
        1,
        &incremental("no-such-topic", &[("retention.ms", 0, Some("1"))]),
    )
    .await;
    assert_eq!(
        r.responses[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );

    // AlterConfigs replaces the whole set: everything left out returns to its default.
    let request = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(configs::RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_static_str("alt"))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(Some(StrBytes::from_static_str("5000")))]),
    ]);
    let r: AlterConfigsResponse = call(broker, ApiKey::AlterConfigs, 2, &request).await;
    assert_eq!(r.responses[0].error_code, 0);
    let described = describe_topic(broker, "alt").await;
    let overridden: Vec<&str> = described
        .iter()
        .filter(|(.., source)| *source == 1)
        .map(|(n, ..)| n.as_str())
        .collect();
    assert_eq!(overridden, ["retention.ms"]);
    let again = produce(records(&[&big], Compression::None)).await;
    assert_eq!((again.error_code, again.log_append_time_ms), (0, -1));

    // Broker settings cannot change at run time: a clear refusal, not a dropped connection.
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(configs::RESOURCE_BROKER)
            .with_resource_name(StrBytes::from_static_str("1"))
            .with_configs(vec![
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("log.retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("1"))),
            ]),
    ]);
    let r: IncrementalAlterConfigsResponse =
        call(broker, ApiKey::IncrementalAlterConfigs, 1, &request).await;
    assert_eq!(
        r.responses[0].error_code,
        ResponseError::InvalidRequest.code()
    );
    assert!(
        r.responses[0].error_message.as_deref().is_some_and(
            |m| m.contains("Cannot update these configs dynamically: [log.retention.ms]")
        )
    );
    broker.log.shutdown().await;
}

#[tokio::test]
async fn broker_resource_describes_the_settings_clients_look_for() {
    let fx = fixture().await;
    let request = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(configs::RESOURCE_BROKER)
            .with_resource_name(StrBytes::from_static_str("1")),
    ]);
    let r: DescribeConfigsResponse = call(&fx.broker, ApiKey::DescribeConfigs, 4, &request).await;
    let names: Vec<&str> = r.results[0]
        .configs
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for wanted in [
        "broker.id",
        "node.id",
        "num.partitions",
        "auto.create.topics.enable",
        "message.max.bytes",
        "socket.request.max.bytes",
        "fetch.max.bytes",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }
    assert!(r.results[0].configs.iter().all(|c| c.read_only));
    fx.broker.log.shutdown().await;
}
