//! Kafka record batches (magic v2) as the log stores them: verbatim bytes with a parsed header.
//!
//! The log never decompresses or re-encodes records. It checks each incoming batch (length,
//! magic, CRC32C, offset arithmetic), rewrites the base offset (outside the CRC) when offsets are
//! assigned, and rewrites the timestamp fields (recomputing the CRC) for `LogAppendTime` topics.

use bytes::Bytes;

/// Bytes before the records: baseOffset .. recordsCount.
pub const HEADER_LEN: usize = 61;
/// baseOffset (8) + batchLength (4): the part of the header outside `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
const MAGIC_OFFSET: usize = 16;
pub(crate) const CRC_OFFSET: usize = 17;
pub(crate) const ATTRIBUTES_OFFSET: usize = 21;
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const BASE_TIMESTAMP_OFFSET: usize = 27;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const PRODUCER_ID_OFFSET: usize = 43;
const PRODUCER_EPOCH_OFFSET: usize = 51;
const BASE_SEQUENCE_OFFSET: usize = 53;
const RECORDS_COUNT_OFFSET: usize = 57;
pub(crate) const TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
pub(crate) const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;
pub(crate) const ATTRIBUTE_CONTROL: i16 = 0x20;
const ATTRIBUTE_COMPRESSION: i16 = 0x07;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Whole batch size in bytes, header included.
    pub size_bytes: usize,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    /// -1 unless the batch comes from an idempotent producer.
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Sequence number of the first record (-1 without a producer id).
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTRIBUTE_TRANSACTIONAL != 0
    }

    /// Whether the batch carries an idempotent producer's id and sequence numbers.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_LOG_APPEND != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & ATTRIBUTE_COMPRESSION
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Damaged bytes: bad length, truncated batch or CRC mismatch (Kafka: CORRUPT_MESSAGE).
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// Well-formed bytes Kafka would refuse (Kafka: INVALID_RECORD).
    #[error("invalid record batch: {0}")]
    Invalid(String),
    /// A batch over the size limit (Kafka: MESSAGE_TOO_LARGE).
    #[error("record batch too large: size={size} max={max}")]
    TooLarge { size: usize, max: usize },
}

fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn read_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("4-byte slice"))
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("8-byte slice"))
}

/// Parses the header at the start of `buf` without checking the CRC.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    if buf.len() < HEADER_LEN {
        return Err(BatchError::Corrupt(format!(
            "truncated header: len={}",
            buf.len()
        )));
    }
    let batch_length = read_i32(buf, 8);
    let size_bytes = usize::try_from(batch_length)
        .ok()
        .map(|l| l + LOG_OVERHEAD)
        .filter(|size| *size >= HEADER_LEN)
        .ok_or_else(|| BatchError::Corrupt(format!("bad batch length: {batch_length}")))?;
    Ok(BatchHeader {
        base_offset: read_i64(buf, 0),
        size_bytes,
        partition_leader_epoch: read_i32(buf, LOG_OVERHEAD),
        magic: buf[MAGIC_OFFSET] as i8,
        crc: u32::from_be_bytes(buf[CRC_OFFSET..CRC_OFFSET + 4].try_into().expect("4 bytes")),
        attributes: read_i16(buf, ATTRIBUTES_OFFSET),
        last_offset_delta: read_i32(buf, LAST_OFFSET_DELTA_OFFSET),
        base_timestamp: read_i64(buf, BASE_TIMESTAMP_OFFSET),
        max_timestamp: read_i64(buf, MAX_TIMESTAMP_OFFSET),
        producer_id: read_i64(buf, PRODUCER_ID_OFFSET),
        producer_epoch: read_i16(buf, PRODUCER_EPOCH_OFFSET),
        base_sequence: read_i32(buf, BASE_SEQUENCE_OFFSET),
        records_count: read_i32(buf, RECORDS_COUNT_OFFSET),
    })
}

/// Checks one complete batch: magic 2, CRC32C over attributes..end, sane offset arithmetic.
pub fn validate(header: &BatchHeader, batch: &[u8]) -> Result<(), BatchError> {
    if header.magic != 2 {
        return Err(BatchError::Invalid(format!(
            "unsupported magic: {} (only v2 record batches)",
            header.magic
        )));
    }
    if batch.len() != header.size_bytes {
        return Err(BatchError::Corrupt(format!(
            "length mismatch: header={} actual={}",
            header.size_bytes,
            batch.len()
        )));
    }
    verify_crc(header, batch)?;
    if header.records_count < 1 || header.last_offset_delta != header.records_count - 1 {
        return Err(BatchError::Invalid(format!(
            "records_count={} does not match last_offset_delta={}",
            header.records_count, header.last_offset_delta
        )));
    }
    Ok(())
}

/// Checks a batch's CRC32C (over attributes..end). Batches compaction left gaps in are valid
/// with it, though [`validate`] (for what clients send) refuses them.
pub fn verify_crc(header: &BatchHeader, batch: &[u8]) -> Result<(), BatchError> {
    if batch.len() != header.size_bytes || batch.len() < ATTRIBUTES_OFFSET {
        return Err(BatchError::Corrupt(format!(
            "length mismatch: header={} actual={}",
            header.size_bytes,
            batch.len()
        )));
    }
    let computed = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    if computed != header.crc {
        return Err(BatchError::Corrupt(format!(
            "crc mismatch: stored={:#010x} computed={computed:#010x}",
            header.crc
        )));
    }
    Ok(())
}

/// Checks what only the broker may write and what a forged header could claim: clients may not
/// send control batches, and an uncompressed batch must hold exactly `records_count` records
/// (their length prefixes must tile the batch). Compressed batches are checked by the caller,
/// which can decompress them and count with [`count_records`].
pub fn validate_client_batch(header: &BatchHeader, batch: &[u8]) -> Result<(), BatchError> {
    if header.is_control() {
        return Err(BatchError::Invalid(
            "clients are not allowed to write control records".into(),
        ));
    }
    if header.is_transactional() && !header.is_idempotent() {
        return Err(BatchError::Invalid(
            "transactional batch without a producer id".into(),
        ));
    }
    if header.is_idempotent() && (header.producer_epoch < 0 || header.base_sequence < 0) {
        return Err(BatchError::Invalid(format!(
            "idempotent batch with producer_id={} but epoch={} base_sequence={}",
            header.producer_id, header.producer_epoch, header.base_sequence
        )));
    }
    if header.compression() != 0 {
        return Ok(());
    }
    check_records_count(header, &batch[HEADER_LEN..])
}

/// Checks that `records` (a batch's records, uncompressed) holds exactly the records the header
/// claims: their length prefixes must tile it. A forged count would consume offsets without
/// records (Kafka: CORRUPT_MESSAGE).
pub fn check_records_count(header: &BatchHeader, records: &[u8]) -> Result<(), BatchError> {
    let count = count_records(records)?;
    if count != i64::from(header.records_count) {
        return Err(BatchError::Corrupt(format!(
            "batch claims {} records but holds {count}",
            header.records_count
        )));
    }
    Ok(())
}

/// The records in a stream of Kafka records (each a zigzag varint length, then that many bytes),
/// skipping their bodies: a slice is walked in place, a decompressing reader is streamed through
/// its buffer (so a batch that expands a lot costs a buffer, not its size). An error if the
/// stream ends inside a record.
pub fn count_records(mut records: impl std::io::BufRead) -> Result<i64, BatchError> {
    let io = |e: std::io::Error| BatchError::Corrupt(format!("unreadable records: {e}"));
    let mut count = 0i64;
    while !records.fill_buf().map_err(io)?.is_empty() {
        let length = read_varint(&mut records).map_err(io)?;
        let mut left = u64::try_from(length)
            .map_err(|_| BatchError::Corrupt(format!("negative record length {length}")))?;
        while left > 0 {
            let available = records.fill_buf().map_err(io)?.len();
            if available == 0 {
                return Err(BatchError::Corrupt(format!(
                    "record {count} runs past the end of the batch"
                )));
            }
            let skip = available.min(usize::try_from(left).unwrap_or(usize::MAX));
            records.consume(skip);
            left -= skip as u64;
        }
        count += 1;
    }
    Ok(count)
}

/// A zigzag-encoded varint of at most 5 bytes (Kafka's record fields).
fn read_varint(reader: &mut impl std::io::BufRead) -> std::io::Result<i64> {
    let mut raw: u64 = 0;
    for i in 0..5 {
        let byte = match reader.fill_buf()?.first() {
            Some(byte) => *byte,
            None => return Err(std::io::ErrorKind::UnexpectedEof.into()),
        };
        reader.consume(1);
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "record length varint longer than 5 bytes",
    ))
}

/// Splits produce data into validated batches (zero-copy slices of `records`).
pub fn split_and_validate(
    records: &Bytes,
    max_batch_bytes: usize,
) -> Result<Vec<(BatchHeader, Bytes)>, BatchError> {
    let mut batches = Vec::new();
    let mut position = 0;
    while position < records.len() {
        let header = parse_header(&records[position..])?;
        if header.size_bytes > max_batch_bytes {
            return Err(BatchError::TooLarge {
                size: header.size_bytes,
                max: max_batch_bytes,
            });
        }
        let end = position + header.size_bytes;
        if end > records.len() {
            return Err(BatchError::Corrupt(format!(
                "truncated batch: need={} have={}",
                header.size_bytes,
                records.len() - position
            )));
        }
        let batch = records.slice(position..end);
        validate(&header, &batch)?;
        validate_client_batch(&header, &batch)?;
        batches.push((header, batch));
        position = end;
    }
    if batches.is_empty() {
        return Err(BatchError::Corrupt("no record batch".into()));
    }
    if batches.len() > 1 && batches.iter().any(|(h, _)| h.is_idempotent()) {
        // As Kafka: sequence numbers are checked per batch, and a retry must match one batch.
        return Err(BatchError::Invalid(format!(
            "an idempotent producer must send one batch per partition, not {}",
            batches.len()
        )));
    }
    Ok(batches)
}

/// Iterates the headers of consecutive stored batches; stops at the first damaged one.
pub fn headers(mut buf: &[u8]) -> impl Iterator<Item = (usize, BatchHeader)> + '_ {
    let mut position = 0;
    std::iter::from_fn(move || {
        let header = parse_header(buf).ok()?;
        if header.size_bytes > buf.len() {
            return None;
        }
        let start = position;
        position += header.size_bytes;
        buf = &buf[header.size_bytes..];
        Some((start, header))
    })
}

/// Writes a batch's base offset (not covered by the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Marks a batch `LogAppendTime` with `timestamp_ms` as its max timestamp and recomputes the CRC,
/// as Kafka does for topics with `message.timestamp.type=LogAppendTime`.
pub fn set_log_append_time(batch: &mut [u8], timestamp_ms: i64) {
    let attributes = read_i16(batch, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_LOG_APPEND;
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&timestamp_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid v2 batch with `count` empty-ish records (record bodies are opaque here).
    pub(crate) fn sample_batch(count: i32, max_timestamp: i64, body_len: usize) -> Vec<u8> {
        let mut batch = vec![0u8; HEADER_LEN + body_len];
        let batch_length = (batch.len() - LOG_OVERHEAD) as i32;
        batch[8..12].copy_from_slice(&batch_length.to_be_bytes());
        batch[MAGIC_OFFSET] = 2;
        batch[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4]
            .copy_from_slice(&(count - 1).to_be_bytes());
        batch[BASE_TIMESTAMP_OFFSET..BASE_TIMESTAMP_OFFSET + 8]
            .copy_from_slice(&max_timestamp.to_be_bytes());
        batch[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
            .copy_from_slice(&max_timestamp.to_be_bytes());
        batch[PRODUCER_ID_OFFSET..PRODUCER_ID_OFFSET + 8].copy_from_slice(&(-1i64).to_be_bytes());
        batch[RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4].copy_from_slice(&count.to_be_bytes());
        // `count` records tiling the body: a varint length byte, then that many bytes.
        let per_record = body_len / count as usize;
        assert!(
            (1..=64).contains(&per_record),
            "sample records need 1..=64 bytes each"
        );
        for (i, record) in batch[HEADER_LEN..HEADER_LEN + per_record * count as usize]
            .chunks_mut(per_record)
            .enumerate()
        {
            record[0] = ((per_record - 1) * 2) as u8; // zigzag varint of the body length
            for (j, byte) in record[1..].iter_mut().enumerate() {
                *byte = (i + j) as u8;
            }
        }
        let used = HEADER_LEN + per_record * count as usize;
        batch.truncate(used);
        let batch_length = (batch.len() - LOG_OVERHEAD) as i32;
        batch[8..12].copy_from_slice(&batch_length.to_be_bytes());
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    /// A sample batch from an idempotent producer.
    pub(crate) fn sample_idempotent_batch(
        count: i32,
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
    ) -> Vec<u8> {
        let mut batch = sample_batch(count, 1, 32);
        batch[PRODUCER_ID_OFFSET..PRODUCER_ID_OFFSET + 8]
            .copy_from_slice(&producer_id.to_be_bytes());
        batch[PRODUCER_EPOCH_OFFSET..PRODUCER_EPOCH_OFFSET + 2]
            .copy_from_slice(&epoch.to_be_bytes());
        batch[BASE_SEQUENCE_OFFSET..BASE_SEQUENCE_OFFSET + 4]
            .copy_from_slice(&base_sequence.to_be_bytes());
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    #[test]
    fn idempotent_batches_come_alone_and_transactional_ones_need_a_producer() {
        let one = sample_idempotent_batch(2, 7, 0, 0);
        let batches = split_and_validate(&Bytes::from(one.clone()), 1 << 20).expect("valid");
        assert_eq!(
            (
                batches[0].0.producer_id,
                batches[0].0.producer_epoch,
                batches[0].0.base_sequence
            ),
            (7, 0, 0)
        );
        let mut two = one.clone();
        two.extend(sample_idempotent_batch(2, 7, 0, 2));
        assert!(matches!(
            split_and_validate(&Bytes::from(two), 1 << 20),
            Err(BatchError::Invalid(_))
        ));
        let with_attribute = |mut batch: Vec<u8>| {
            batch[ATTRIBUTES_OFFSET + 1] |= ATTRIBUTE_TRANSACTIONAL as u8;
            let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
            batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
            Bytes::from(batch)
        };
        let transactional = split_and_validate(&with_attribute(one), 1 << 20).expect("valid");
        assert!(transactional[0].0.is_transactional());
        assert!(matches!(
            split_and_validate(&with_attribute(sample_batch(2, 5, 8)), 1 << 20),
            Err(BatchError::Invalid(_))
        ));
    }

    #[test]
    fn accepts_valid_batches_back_to_back() {
        let mut data = sample_batch(3, 100, 20);
        data.extend(sample_batch(1, 200, 5));
        let batches = split_and_validate(&Bytes::from(data), 1 << 20).expect("valid");
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].0.records_count, 3);
        assert_eq!(batches[1].0.max_timestamp, 200);
    }

    #[test]
    fn rejects_crc_mismatch_as_corrupt() {
        let mut data = sample_batch(1, 1, 10);
        data[HEADER_LEN + 3] ^= 0xff;
        let error = split_and_validate(&Bytes::from(data), 1 << 20).expect_err("corrupt");
        assert!(matches!(error, BatchError::Corrupt(m) if m.contains("crc")));
    }

    #[test]
    fn rejects_old_magic_truncation_and_size() {
        let mut old = sample_batch(1, 1, 10);
        old[MAGIC_OFFSET] = 1;
        assert!(matches!(
            split_and_validate(&Bytes::from(old), 1 << 20),
            Err(BatchError::Invalid(_))
        ));
        let whole = sample_batch(1, 1, 10);
        let cut = Bytes::copy_from_slice(&whole[..whole.len() - 1]);
        assert!(matches!(
            split_and_validate(&cut, 1 << 20),
            Err(BatchError::Corrupt(_))
        ));
        assert!(matches!(
            split_and_validate(&Bytes::from(whole), 40),
            Err(BatchError::TooLarge { .. })
        ));
        assert!(split_and_validate(&Bytes::from_static(&[0u8; 7]), 1 << 20).is_err());
        let mut negative = sample_batch(1, 1, 1);
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(split_and_validate(&Bytes::from(negative), 1 << 20).is_err());
    }

    #[test]
    fn rejects_forged_counts_and_control_batches() {
        let mut forged = sample_batch(2, 1, 10);
        // Claim 3 records (and a matching offset delta) while holding 2; fix up the CRC.
        forged[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4]
            .copy_from_slice(&2i32.to_be_bytes());
        forged[RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4].copy_from_slice(&3i32.to_be_bytes());
        let crc = crc32c::crc32c(&forged[ATTRIBUTES_OFFSET..]);
        forged[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            split_and_validate(&Bytes::from(forged), 1 << 20),
            Err(BatchError::Corrupt(m)) if m.contains("holds 2")
        ));
        let mut control = sample_batch(1, 1, 10);
        control[ATTRIBUTES_OFFSET + 1] |= ATTRIBUTE_CONTROL as u8;
        let crc = crc32c::crc32c(&control[ATTRIBUTES_OFFSET..]);
        control[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            split_and_validate(&Bytes::from(control), 1 << 20),
            Err(BatchError::Invalid(_))
        ));
    }

    #[test]
    fn rewrites_keep_the_batch_valid() {
        let mut batch = sample_batch(2, 5, 8);
        set_base_offset(&mut batch, 42);
        set_log_append_time(&mut batch, 777);
        let header = parse_header(&batch).expect("header");
        validate(&header, &batch).expect("still valid");
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.last_offset(), 43);
        assert_eq!(header.max_timestamp, 777);
        assert_eq!(
            header.attributes & TIMESTAMP_TYPE_LOG_APPEND,
            TIMESTAMP_TYPE_LOG_APPEND
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = split_and_validate(&Bytes::from(data.clone()), 1 << 20);
            let _ = headers(&data).count();
        }
    }
}
