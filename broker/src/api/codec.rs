//! The wire side of requests and responses: frames decoded into requests (refused outside
//! [`super::SUPPORTED`], ApiVersions answered at a version we speak) and responses encoded into
//! frames, Fetch's with its records kept as the buffers they were read into. Every codec comes
//! from the `kafka-protocol` crate.

use super::{api_versions, supported_range};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// A request taken off the wire.
#[derive(Debug)]
pub struct Request {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub body: RequestKind,
}

#[derive(Debug)]
pub enum Decoded {
    /// A response ready to send without handling (ApiVersions at an unsupported version).
    Immediate(Bytes),
    Request(Box<Request>),
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame too short for a request header: len={0}")]
    Short(usize),
    #[error("unknown api key: {0}")]
    UnknownApiKey(i16),
    #[error("unsupported api: key={0:?} version={1}")]
    Unsupported(ApiKey, i16),
    #[error("malformed request: key={0:?} version={1}: {2}")]
    Malformed(ApiKey, i16, String),
}

/// Decodes a request allocating at most `budget_bytes` for its structures (see
/// `crate::memory`); returns the result and the bytes decoding used. Over the budget the
/// request is malformed.
pub fn decode_request_within(
    frame: Bytes,
    budget_bytes: usize,
) -> (Result<Decoded, DecodeError>, usize) {
    kafka_protocol::protocol::decode_budget::with_budget(budget_bytes, || decode_request(frame))
}

pub fn decode_request(mut frame: Bytes) -> Result<Decoded, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::Short(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| DecodeError::UnknownApiKey(raw_key))?;
    let Some((min, max)) = supported_range(api_key) else {
        return Err(DecodeError::Unsupported(api_key, version));
    };
    if version < min || version > max {
        if api_key == ApiKey::ApiVersions {
            return Ok(Decoded::Immediate(
                api_versions::unsupported_version_response(correlation_id),
            ));
        }
        return Err(DecodeError::Unsupported(api_key, version));
    }
    let malformed = |e: anyhow::Error| DecodeError::Malformed(api_key, version, e.to_string());
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(malformed)?;
    let body = RequestKind::decode(api_key, &mut frame, version).map_err(malformed)?;
    Ok(Decoded::Request(Box::new(Request {
        header,
        api_key,
        body,
    })))
}

/// Encodes a response frame: length prefix, response header, body.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> anyhow::Result<Bytes> {
    let mut buf =
        BytesMut::with_capacity(RESPONSE_HEADER_BYTES_MAX + body_size_hint(response, version));
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, api_key.response_header_version(version))?;
    response.encode(&mut buf, version)?;
    let length = i32::try_from(buf.len() - 4)?;
    buf[0..4].copy_from_slice(&length.to_be_bytes());
    Ok(buf.freeze())
}

/// Records at least this long are written from the buffers they were read into (cached
/// sections, recent objects, rebuilt row groups) instead of being copied into the response;
/// smaller ones cost less to copy than a part of their own.
const SHARED_RECORDS_MIN_BYTES: usize = 4096;

/// [`encode_response`] for a Fetch response: its records stay the shared buffers they were read
/// into, and the frame is the concatenation of the parts returned (written with vectored
/// writes). The length prefix is computed first, since the parts cannot be patched afterwards.
pub fn encode_fetch_response(
    version: i16,
    correlation_id: i32,
    response: &kafka_protocol::messages::FetchResponse,
) -> anyhow::Result<Vec<Bytes>> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = ApiKey::Fetch.response_header_version(version);
    let length = header.compute_size(header_version)? + response.compute_size(version)?;
    let shared: usize = response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .flat_map(|p| p.records.iter().chain(&p.records_continued))
        .map(Bytes::len)
        .filter(|&n| n >= SHARED_RECORDS_MIN_BYTES)
        .sum();
    let mut buf = kafka_protocol::protocol::buf::SharedBuf::new(
        (4 + length).saturating_sub(shared),
        SHARED_RECORDS_MIN_BYTES,
    );
    buf.put_i32(i32::try_from(length)?);
    header.encode(&mut buf, header_version)?;
    response.encode(&mut buf, version)?;
    let written = kafka_protocol::protocol::buf::ByteBufMut::offset(&buf);
    anyhow::ensure!(
        written == 4 + length,
        "fetch response encoded to {written} bytes, sized {}",
        4 + length
    );
    Ok(buf.into_parts())
}

/// Length prefix, correlation id and a tagged-field section: what a response header takes.
pub(super) const RESPONSE_HEADER_BYTES_MAX: usize = 16;

/// The encoded size of the responses that can be large (Fetch carries megabytes of records,
/// Metadata one entry per topic), so their buffer is allocated once instead of doubling from a
/// few bytes (each doubling copied everything encoded so far into fresh memory). Others are small.
pub(super) fn body_size_hint(response: &ResponseKind, version: i16) -> usize {
    let size = match response {
        ResponseKind::Fetch(fetch) => fetch.compute_size(version),
        ResponseKind::Metadata(metadata) => metadata.compute_size(version),
        _ => return 64,
    };
    // An encoding error shows in `encode` itself, with its context.
    size.unwrap_or(64)
}
