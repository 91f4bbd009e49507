//! Frames a client may send that are not requests the broker serves: unknown or unsupported
//! APIs and versions, truncated bodies, forged array lengths and decodes past their memory
//! budget are refused as Kafka does, never a panic or a large allocation.

use super::*;

#[test]
fn unknown_and_unsupported_requests_are_refused() {
    assert!(matches!(
        decode_request(Bytes::from_static(b"\x00\x12")),
        Err(DecodeError::Short(_))
    ));
    let unknown = frame(ApiKey::Produce, 3, 1, &ProduceRequest::default());
    let mut unknown = BytesMut::from(&unknown[..]);
    unknown[0..2].copy_from_slice(&9999i16.to_be_bytes());
    assert!(matches!(
        decode_request(unknown.freeze()),
        Err(DecodeError::UnknownApiKey(9999))
    ));
    // A known API we don't implement, and a version beyond what we advertise.
    let quotas = frame(
        ApiKey::DescribeClientQuotas,
        1,
        1,
        &DescribeClientQuotasRequest::default(),
    );
    assert!(matches!(
        decode_request(quotas),
        Err(DecodeError::Unsupported(..))
    ));
    let mut future =
        BytesMut::from(&frame(ApiKey::Metadata, 12, 1, &MetadataRequest::default())[..]);
    future[2..4].copy_from_slice(&99i16.to_be_bytes());
    assert!(matches!(
        decode_request(future.freeze()),
        Err(DecodeError::Unsupported(..))
    ));
    // A truncated body is malformed, not a panic.
    let whole = frame(
        ApiKey::Metadata,
        12,
        1,
        &MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(TopicName(StrBytes::from_static_str("t"))))])),
    );
    assert!(matches!(
        decode_request(whole.slice(..whole.len() - 3)),
        Err(DecodeError::Malformed(..))
    ));
}

#[test]
fn forged_array_lengths_are_malformed_not_allocated() {
    // Metadata v0 whose topic array claims 54 million entries in 5 bytes: with the upstream
    // decoder this asked for ~3.6 GiB up front and aborted the process.
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&[0, 3, 0, 0, 0, 0, 0, 1, 0, 0]);
    frame.extend_from_slice(&[0x03, 0x3c, 0x0c, 0x00, 0xb6]);
    assert!(matches!(
        decode_request(frame.freeze()),
        Err(DecodeError::Malformed(..))
    ));
    // The same with a compact (flexible) array: Metadata v12, header v2.
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&[0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0]);
    frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]);
    assert!(matches!(
        decode_request(frame.freeze()),
        Err(DecodeError::Malformed(..))
    ));
}

#[test]
fn api_versions_at_an_unknown_version_answers_v0_with_unsupported_version() {
    let mut request =
        BytesMut::from(&frame(ApiKey::ApiVersions, 3, 42, &ApiVersionsRequest::default())[..]);
    request[2..4].copy_from_slice(&77i16.to_be_bytes());
    let Ok(Decoded::Immediate(mut response)) = decode_request(request.freeze()) else {
        panic!("expected an immediate response")
    };
    assert_eq!(response.get_i32() as usize, response.len());
    assert_eq!(response.get_i32(), 42);
    let body = ApiVersionsResponse::decode(&mut response, 0).expect("v0 body");
    assert_eq!(body.error_code, ResponseError::UnsupportedVersion.code());
    assert_eq!(body.api_keys[0].api_key, ApiKey::ApiVersions as i16);
    assert!(response.is_empty());
}

#[test]
fn decoding_allocates_within_its_budget() {
    // Metadata v1 naming 500,000 empty topics: 1 MB on the wire, ~45 MB of structs decoded.
    let names = 500_000usize;
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&[0, 3, 0, 1, 0, 0, 0, 7, 0, 0]);
    frame.extend_from_slice(&(names as i32).to_be_bytes());
    frame.resize(frame.len() + 2 * names, 0);
    let frame = frame.freeze();
    let (refused, used) =
        decode_request_within(frame.clone(), crate::memory::DECODED_REQUEST_MAX_BYTES);
    assert!(
        matches!(refused, Err(DecodeError::Malformed(..))),
        "{refused:?}"
    );
    assert!(used <= crate::memory::DECODED_REQUEST_MAX_BYTES);
    let (decoded, used) = decode_request_within(frame, 1 << 30);
    assert!(decoded.is_ok());
    assert!(used > 20 * 2 * names, "{used}");
    // A real request uses a little.
    let (ok, used) = decode_request_within(
        super::frame(ApiKey::Fetch, 12, 1, &fetch_request("t", 0, 0)),
        1 << 20,
    );
    assert!(ok.is_ok());
    assert!(used < 4096, "{used}");
}
