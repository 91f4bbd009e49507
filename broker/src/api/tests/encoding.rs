//! Responses are encoded into a buffer allocated once at their full size, and a request's task
//! stays small.

use super::*;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::FetchResponse;

#[test]
fn a_fetch_response_fits_the_buffer_sized_for_it() {
    let records = Bytes::from(vec![7u8; 3 * 1024 * 1024 + 17]);
    for version in [4i16, 11, 12, 13, 16] {
        let topic = FetchableTopicResponse::default()
            .with_topic(kafka_protocol::messages::TopicName::from(
                kafka_protocol::protocol::StrBytes::from_static_str("t"),
            ))
            .with_partitions(vec![
                PartitionData::default().with_records(Some(records.clone())),
                PartitionData::default().with_partition_index(1),
            ]);
        let response = ResponseKind::Fetch(FetchResponse::default().with_responses(vec![topic]));
        let hint = body_size_hint(&response, version);
        let encoded = encode_response(ApiKey::Fetch, version, 7, &response).expect("encodes");
        assert!(hint > records.len(), "v{version}: hint {hint}");
        assert!(
            encoded.len() <= RESPONSE_HEADER_BYTES_MAX + hint,
            "v{version}: {} bytes encoded, {} allocated",
            encoded.len(),
            RESPONSE_HEADER_BYTES_MAX + hint
        );
    }
}

#[test]
fn a_fetch_response_is_written_from_its_records_buffers() {
    let records = Bytes::from(vec![7u8; 3 * 1024 * 1024 + 17]);
    let small = Bytes::from_static(b"a small batch");
    for version in [4i16, 11, 12, 13, 16] {
        let topic = FetchableTopicResponse::default()
            .with_topic(kafka_protocol::messages::TopicName::from(
                kafka_protocol::protocol::StrBytes::from_static_str("t"),
            ))
            .with_partitions(vec![
                PartitionData::default().with_records(Some(records.clone())),
                PartitionData::default()
                    .with_partition_index(1)
                    .with_records(Some(small.clone())),
                PartitionData::default().with_partition_index(2),
            ]);
        let fetch = FetchResponse::default().with_responses(vec![topic]);
        let parts = encode_fetch_response(version, 7, &fetch).expect("encodes");
        let copied = encode_response(ApiKey::Fetch, version, 7, &ResponseKind::Fetch(fetch))
            .expect("encodes");
        assert_eq!(parts.concat(), copied.to_vec(), "v{version}: same bytes");
        assert!(
            parts.iter().any(|p| p.as_ptr() == records.as_ptr()),
            "v{version}: the large records are not copied"
        );
        assert!(
            !parts.iter().any(|p| p.as_ptr() == small.as_ptr()),
            "v{version}: small records are copied"
        );
    }
}

#[test]
fn records_in_several_parts_encode_as_joined_and_stay_shared() {
    let first = Bytes::from(vec![1u8; 64 * 1024]);
    let second = Bytes::from(vec![2u8; 100]);
    let third = Bytes::from(vec![3u8; 5 * 1024 * 1024]);
    let joined = Bytes::from([&first[..], &second[..], &third[..]].concat());
    for version in [4i16, 11, 12, 13, 16] {
        let response = |partition: PartitionData| {
            FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic(kafka_protocol::messages::TopicName::from(
                    kafka_protocol::protocol::StrBytes::from_static_str("t"),
                ))
                .with_partitions(vec![partition])])
        };
        let parted = response(
            PartitionData::default()
                .with_records(Some(first.clone()))
                .with_records_continued(vec![second.clone(), third.clone()]),
        );
        assert_eq!(
            parted.responses[0].partitions[0].records_len(),
            joined.len()
        );
        let whole = response(PartitionData::default().with_records(Some(joined.clone())));
        assert_eq!(
            parted.compute_size(version).expect("sized"),
            whole.compute_size(version).expect("sized"),
            "v{version}"
        );
        let parts = encode_fetch_response(version, 7, &parted).expect("encodes");
        let expected = encode_fetch_response(version, 7, &whole).expect("encodes");
        assert_eq!(
            parts.concat(),
            expected.concat(),
            "v{version}: the same bytes"
        );
        for shared in [&first, &third] {
            assert!(
                parts.iter().any(|p| p.as_ptr() == shared.as_ptr()),
                "v{version}: a large part is sent from its buffer"
            );
        }
        // What a client decodes: one byte string.
        let mut frame = Bytes::from(parts.concat()).slice(4..);
        kafka_protocol::messages::ResponseHeader::decode(
            &mut frame,
            ApiKey::Fetch.response_header_version(version),
        )
        .expect("header");
        let decoded = FetchResponse::decode(&mut frame, version).expect("decodes");
        let partition = &decoded.responses[0].partitions[0];
        assert_eq!(partition.records.as_ref(), Some(&joined));
        assert!(partition.records_continued.is_empty());
    }
}

#[tokio::test]
async fn the_task_of_a_request_stays_small() {
    // Each produce request is its own task holding this future: every API's handler state
    // inside it (3.8 KB before it was boxed) was allocated and freed thousands of times a second.
    let f = super::fixture().await;
    let request = Box::new(Request {
        header: kafka_protocol::messages::RequestHeader::default(),
        api_key: ApiKey::ApiVersions,
        body: RequestKind::ApiVersions(Default::default()),
    });
    let session = test_session(crate::config::SecurityProtocol::Plaintext);
    let staged = stage(&f.broker, request, &session).await;
    let connection = f.broker.budgets.connection();
    let task = complete(&f.broker, staged, &connection, &session);
    let bytes = std::mem::size_of_val(&task);
    assert!(bytes <= 1024, "complete()'s future takes {bytes} bytes");
}
