//! ApiVersions: the table in [`super::SUPPORTED`], and Kafka's reply to a version we don't speak.

use super::SUPPORTED;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

pub fn handle(_request: &ApiVersionsRequest, _version: i16) -> ApiVersionsResponse {
    // No features and no tagged fields: librdkafka <= 2.1.1 (Debian's kcat) misreads tags here.
    ApiVersionsResponse::default()
        .with_error_code(0)
        .with_api_keys(
            SUPPORTED
                .iter()
                .map(|(key, min, max)| {
                    ApiVersion::default()
                        .with_api_key(*key as i16)
                        .with_min_version(*min)
                        .with_max_version(*max)
                })
                .collect(),
        )
        .with_finalized_features_epoch(-1)
}

/// Kafka's answer to ApiVersions at a version it does not support: a v0 body (header v0) with
/// UNSUPPORTED_VERSION and only the ApiVersions entry, so the client retries at a version we know.
pub fn unsupported_version_response(correlation_id: i32) -> Bytes {
    let (_, min, max) = SUPPORTED
        .iter()
        .find(|(key, _, _)| *key == ApiKey::ApiVersions)
        .expect("ApiVersions is supported");
    let mut buf = BytesMut::with_capacity(20);
    let body_len = 4 + 2 + 4 + 6;
    buf.put_i32(body_len);
    buf.put_i32(correlation_id);
    buf.put_i16(ResponseError::UnsupportedVersion.code());
    buf.put_i32(1);
    buf.put_i16(ApiKey::ApiVersions as i16);
    buf.put_i16(*min);
    buf.put_i16(*max);
    buf.freeze()
}
