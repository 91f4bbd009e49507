//! The records inside a Kafka v2 record batch: decompression (bounded), decoding, and encoding
//! of uncompressed batches.
//!
//! The write path never looks inside batches; the compactor does (to write Parquet and to keep
//! the latest record per key) and so does reading Parquet back (to rebuild batches). Record-level
//! coding lives here rather than in `kafka-protocol` because its `Record` keeps headers in a map —
//! Kafka allows repeated header keys and arbitrary key bytes, and a record must come back exactly
//! as produced — and its encoder cannot mark `LogAppendTime` nor keep a batch's base offset.

use crate::batch::{self, BatchHeader, HEADER_LEN};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io::Read;

/// Most bytes one batch may decompress to (a 1 MiB batch of repetitive JSON stays well below).
pub const DECOMPRESSED_BATCH_MAX_BYTES: usize = 64 * 1024 * 1024;

/// The xerial framing Java clients wrap snappy batches in.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// Kafka's compression codec ids (the low three attribute bits).
pub const CODEC_NONE: i16 = 0;
pub const CODEC_GZIP: i16 = 1;
pub const CODEC_SNAPPY: i16 = 2;
pub const CODEC_LZ4: i16 = 3;
pub const CODEC_ZSTD: i16 = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    #[error("undecodable records: {0}")]
    Corrupt(String),
    #[error("batch decompresses to more than {0} bytes")]
    TooLarge(usize),
}

/// One record header. Kafka allows the same key more than once, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// One record with its absolute offset and the timestamp a consumer sees (for `LogAppendTime`
/// batches, the batch's max timestamp).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

impl Record {
    /// The record with its bytes copied out of the buffer they slice (decoding is zero-copy),
    /// so holding it does not hold that whole buffer.
    pub fn detached(self) -> Self {
        let copy = |b: Bytes| Bytes::copy_from_slice(&b);
        Self {
            key: self.key.map(copy),
            value: self.value.map(copy),
            headers: self
                .headers
                .into_iter()
                .map(|h| Header {
                    key: copy(h.key),
                    value: h.value.map(copy),
                })
                .collect(),
            ..self
        }
    }
}

/// Decompresses a batch's records section (the bytes after the header), at most `cap` bytes.
pub fn decompress(codec: i16, input: Bytes, cap: usize) -> Result<Bytes, RecordsError> {
    let failed = |e: std::io::Error| RecordsError::Corrupt(format!("decompression failed: {e}"));
    match codec {
        CODEC_NONE => Ok(input),
        CODEC_GZIP => read_capped(flate2::read::GzDecoder::new(&input[..]), cap),
        CODEC_ZSTD => read_capped(
            zstd::stream::read::Decoder::new(&input[..]).map_err(failed)?,
            cap,
        ),
        CODEC_LZ4 => read_capped(lz4::Decoder::new(&input[..]).map_err(failed)?, cap),
        CODEC_SNAPPY => {
            let mut out = BytesMut::new();
            if input.len() >= XERIAL_HEADER_LEN && input.starts_with(XERIAL_MAGIC) {
                let mut blocks = input.slice(XERIAL_HEADER_LEN..);
                while blocks.has_remaining() {
                    if blocks.remaining() < 4 {
                        return Err(RecordsError::Corrupt(
                            "truncated snappy block length".into(),
                        ));
                    }
                    let len = blocks.get_u32() as usize;
                    if len > blocks.remaining() {
                        return Err(RecordsError::Corrupt("truncated snappy block".into()));
                    }
                    snappy_block(&blocks.split_to(len), cap, &mut out)?;
                }
            } else {
                snappy_block(&input, cap, &mut out)?;
            }
            Ok(out.freeze())
        }
        other => Err(RecordsError::Corrupt(format!(
            "unknown compression codec {other}"
        ))),
    }
}

fn read_capped(reader: impl Read, cap: usize) -> Result<Bytes, RecordsError> {
    let mut out = Vec::new();
    reader
        .take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| RecordsError::Corrupt(format!("decompression failed: {e}")))?;
    if out.len() > cap {
        return Err(RecordsError::TooLarge(cap));
    }
    Ok(out.into())
}

fn snappy_block(block: &[u8], cap: usize, out: &mut BytesMut) -> Result<(), RecordsError> {
    let corrupt = |e: snap::Error| RecordsError::Corrupt(format!("snappy: {e}"));
    let len = snap::raw::decompress_len(block).map_err(corrupt)?;
    if out.len() + len > cap {
        return Err(RecordsError::TooLarge(cap));
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(corrupt)?;
    Ok(())
}

/// Counts the records of a compressed batch by streaming its decompression and skipping each
/// record's body, so memory stays at a small buffer whatever the batch expands to; at most
/// [`DECOMPRESSED_BATCH_MAX_BYTES`] are decompressed (a "zip bomb" costs an error). Snappy
/// (block-framed) is decompressed block by block within the same cap.
pub fn count_compressed_records(header: &BatchHeader, batch: &Bytes) -> Result<i64, String> {
    let payload = batch.slice(HEADER_LEN..);
    let cap = DECOMPRESSED_BATCH_MAX_BYTES as u64 + 1;
    let stream = |reader: Box<dyn Read + '_>| {
        batch::count_records(std::io::BufReader::new(reader.take(cap))).map_err(|e| e.to_string())
    };
    match header.compression() {
        CODEC_GZIP => stream(Box::new(flate2::read::GzDecoder::new(&payload[..]))),
        CODEC_LZ4 => stream(Box::new(
            lz4::Decoder::new(&payload[..]).map_err(|e| e.to_string())?,
        )),
        CODEC_ZSTD => stream(Box::new(
            zstd::stream::read::Decoder::new(&payload[..]).map_err(|e| e.to_string())?,
        )),
        CODEC_SNAPPY => {
            let records = decompress(CODEC_SNAPPY, payload, DECOMPRESSED_BATCH_MAX_BYTES)
                .map_err(|e| e.to_string())?;
            batch::count_records(&records[..]).map_err(|e| e.to_string())
        }
        other => Err(format!("unknown compression codec {other}")),
    }
}

/// Decodes every record of one stored batch (decompressed within
/// [`DECOMPRESSED_BATCH_MAX_BYTES`]); keys, values and headers are slices of the records' bytes.
pub fn decode(header: &BatchHeader, batch: &Bytes) -> Result<Vec<Record>, RecordsError> {
    if batch.len() < header.size_bytes || header.size_bytes < HEADER_LEN {
        return Err(RecordsError::Corrupt(
            "batch shorter than its length".into(),
        ));
    }
    let payload = batch.slice(HEADER_LEN..header.size_bytes);
    let mut data = decompress(header.compression(), payload, DECOMPRESSED_BATCH_MAX_BYTES)?;
    let count = usize::try_from(header.records_count)
        .map_err(|_| RecordsError::Corrupt(format!("records count {}", header.records_count)))?;
    let log_append_time = header.is_log_append_time();
    let mut records = Vec::with_capacity(count.min(data.len()));
    for _ in 0..count {
        let length = usize::try_from(varint(&mut data)?)
            .map_err(|_| RecordsError::Corrupt("negative record length".into()))?;
        if length > data.len() {
            return Err(RecordsError::Corrupt("record runs past the batch".into()));
        }
        let mut body = data.split_to(length);
        let _attributes = take(&mut body, 1)?;
        let timestamp_delta = varlong(&mut body)?;
        let offset_delta = varint(&mut body)?;
        let key = nullable(&mut body)?;
        let value = nullable(&mut body)?;
        let header_count = usize::try_from(varint(&mut body)?)
            .map_err(|_| RecordsError::Corrupt("negative header count".into()))?;
        let mut headers = Vec::with_capacity(header_count.min(body.len()));
        for _ in 0..header_count {
            let key = nullable(&mut body)?
                .ok_or_else(|| RecordsError::Corrupt("null header key".into()))?;
            headers.push(Header {
                key,
                value: nullable(&mut body)?,
            });
        }
        let timestamp = if log_append_time {
            header.max_timestamp
        } else {
            header.base_timestamp.wrapping_add(timestamp_delta)
        };
        records.push(Record {
            offset: header.base_offset + offset_delta,
            timestamp,
            key,
            value,
            headers,
        });
    }
    if data.has_remaining() {
        return Err(RecordsError::Corrupt(format!(
            "{} bytes after the last of {count} records",
            data.len()
        )));
    }
    Ok(records)
}

/// What a rebuilt batch keeps of the batch it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchFields {
    pub base_offset: i64,
    pub last_offset: i64,
    pub partition_leader_epoch: i32,
    pub log_append_time: bool,
    pub transactional: bool,
    pub control: bool,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Sequence of the record at `base_offset` (-1 without a producer id).
    pub base_sequence: i32,
}

impl BatchFields {
    /// A batch of offsets `base_offset..=last_offset` from no producer in particular (no
    /// producer id, not transactional, creation times).
    pub fn plain(base_offset: i64, last_offset: i64) -> Self {
        BatchFields {
            base_offset,
            last_offset,
            partition_leader_epoch: -1,
            log_append_time: false,
            transactional: false,
            control: false,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }
}

/// A header to encode: (key, value).
pub type HeaderRef<'a> = (&'a [u8], Option<&'a [u8]>);

/// A record to encode, borrowing its bytes (from decoded records or straight from Parquet
/// columns, so encoding copies each byte once).
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// Headers as (key, value), in order.
    pub headers: &'a [HeaderRef<'a>],
}

/// Encodes an uncompressed v2 batch holding `records` (in offset order, within
/// `base_offset..=last_offset`), with a valid CRC.
pub fn encode(fields: &BatchFields, records: &[Record]) -> Bytes {
    let headers: Vec<Vec<HeaderRef<'_>>> = records
        .iter()
        .map(|r| {
            r.headers
                .iter()
                .map(|h| (&h.key[..], h.value.as_deref()))
                .collect()
        })
        .collect();
    let refs: Vec<RecordRef<'_>> = records
        .iter()
        .zip(&headers)
        .map(|(r, headers)| RecordRef {
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers,
        })
        .collect();
    encode_refs(fields, &refs)
}

/// A transaction marker as Kafka writes it: a control batch (transactional and control
/// attributes, base sequence -1) of one record whose key is (version 0, type: 0 abort, 1
/// commit) and whose value is (version 0, coordinator epoch). Its base offset is assigned when
/// it is flushed.
pub fn control_batch(marker: &crate::producers::Marker, timestamp_ms: i64) -> Bytes {
    let key: [u8; 4] = [0, 0, 0, u8::from(marker.commit)];
    // Skiff's coordinators are fenced through the metadata store, not by an epoch in markers.
    let value: [u8; 6] = [0; 6];
    encode_refs(
        &BatchFields {
            transactional: true,
            control: true,
            producer_id: marker.producer_id,
            producer_epoch: marker.epoch,
            ..BatchFields::plain(0, 0)
        },
        &[RecordRef {
            offset: 0,
            timestamp: timestamp_ms,
            key: Some(&key),
            value: Some(&value),
            headers: &[],
        }],
    )
}

fn varlong_len(value: i64) -> usize {
    let zigzag = ((value << 1) ^ (value >> 63)) as u64;
    (64 - zigzag.leading_zeros() as usize).max(1).div_ceil(7)
}

fn nullable_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => varlong_len(-1),
        Some(bytes) => varlong_len(bytes.len() as i64) + bytes.len(),
    }
}

/// [`encode`] over borrowed records: the batch is sized first and written in one buffer.
pub fn encode_refs(fields: &BatchFields, records: &[RecordRef<'_>]) -> Bytes {
    let mut out = BytesMut::new();
    encode_refs_into(&mut out, fields, records);
    out.freeze()
}

/// [`encode_refs`] appending the batch to `out` (so many batches share one allocation).
pub fn encode_refs_into(out: &mut BytesMut, fields: &BatchFields, records: &[RecordRef<'_>]) {
    let base_timestamp = if fields.log_append_time {
        records.iter().map(|r| r.timestamp).max().unwrap_or(-1)
    } else {
        records.iter().map(|r| r.timestamp).min().unwrap_or(-1)
    };
    let max_timestamp = records.iter().map(|r| r.timestamp).max().unwrap_or(-1);
    let delta = |record: &RecordRef<'_>| {
        if fields.log_append_time {
            0
        } else {
            record.timestamp.wrapping_sub(base_timestamp)
        }
    };
    let body_len = |record: &RecordRef<'_>| {
        1 + varlong_len(delta(record))
            + varlong_len(record.offset - fields.base_offset)
            + nullable_len(record.key)
            + nullable_len(record.value)
            + varlong_len(record.headers.len() as i64)
            + record
                .headers
                .iter()
                .map(|(k, v)| nullable_len(Some(k)) + nullable_len(*v))
                .sum::<usize>()
    };
    let records_len: usize = records
        .iter()
        .map(|r| {
            let len = body_len(r);
            varlong_len(len as i64) + len
        })
        .sum();
    let mut attributes: i16 = 0;
    if fields.log_append_time {
        attributes |= batch::TIMESTAMP_TYPE_LOG_APPEND;
    }
    if fields.transactional {
        attributes |= batch::ATTRIBUTE_TRANSACTIONAL;
    }
    if fields.control {
        attributes |= batch::ATTRIBUTE_CONTROL;
    }
    out.reserve(HEADER_LEN + records_len);
    let start = out.len();
    out.put_i64(fields.base_offset);
    out.put_i32(i32::try_from(HEADER_LEN - batch::LOG_OVERHEAD + records_len).unwrap_or(i32::MAX));
    out.put_i32(fields.partition_leader_epoch);
    out.put_i8(2);
    out.put_u32(0);
    out.put_i16(attributes);
    out.put_i32(i32::try_from(fields.last_offset - fields.base_offset).unwrap_or(i32::MAX));
    out.put_i64(base_timestamp);
    out.put_i64(max_timestamp);
    out.put_i64(fields.producer_id);
    out.put_i16(fields.producer_epoch);
    out.put_i32(fields.base_sequence);
    out.put_i32(i32::try_from(records.len()).unwrap_or(i32::MAX));
    for record in records {
        put_varlong(out, body_len(record) as i64);
        out.put_u8(0);
        put_varlong(out, delta(record));
        put_varlong(out, record.offset - fields.base_offset);
        put_nullable(out, record.key);
        put_nullable(out, record.value);
        put_varlong(out, record.headers.len() as i64);
        for (key, value) in record.headers {
            put_nullable(out, Some(key));
            put_nullable(out, *value);
        }
    }
    let written = &mut out[start..];
    debug_assert_eq!(written.len(), HEADER_LEN + records_len, "sized exactly");
    let crc = crc32c::crc32c(&written[batch::ATTRIBUTES_OFFSET..]);
    written[batch::CRC_OFFSET..batch::CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

fn take(buf: &mut Bytes, n: usize) -> Result<Bytes, RecordsError> {
    if buf.len() < n {
        return Err(RecordsError::Corrupt("record cut short".into()));
    }
    Ok(buf.split_to(n))
}

fn varlong(buf: &mut Bytes) -> Result<i64, RecordsError> {
    let mut raw: u64 = 0;
    for i in 0..10 {
        let byte = *buf
            .first()
            .ok_or_else(|| RecordsError::Corrupt("record cut short in a varint".into()))?;
        buf.advance(1);
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err(RecordsError::Corrupt("varint longer than 10 bytes".into()))
}

fn varint(buf: &mut Bytes) -> Result<i64, RecordsError> {
    let value = varlong(buf)?;
    if i32::try_from(value).is_err() {
        return Err(RecordsError::Corrupt(format!(
            "varint {value} out of range"
        )));
    }
    Ok(value)
}

fn nullable(buf: &mut Bytes) -> Result<Option<Bytes>, RecordsError> {
    let length = varint(buf)?;
    if length < 0 {
        return Ok(None);
    }
    take(buf, length as usize).map(Some)
}

fn put_varlong(buf: &mut BytesMut, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        buf.put_u8((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    buf.put_u8(zigzag as u8);
}

fn put_nullable(buf: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varlong(buf, -1),
        Some(bytes) => {
            put_varlong(buf, bytes.len() as i64);
            buf.put_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests;
