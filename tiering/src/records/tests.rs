use super::*;
use crate::batch::parse_header;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record as KRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};
use proptest::prelude::*;
use std::io::Write;

fn reference_batch(compression: Compression, n: usize, producer: Option<(i64, i16, i32)>) -> Bytes {
    let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
    let records: Vec<KRecord> = (0..n)
        .map(|i| {
            let mut headers = indexmap::IndexMap::new();
            headers.insert(
                StrBytes::from_static_str("h"),
                Some(Bytes::from(format!("v{i}"))),
            );
            KRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 7,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: 40 + i as i64,
                sequence: if producer.is_some() {
                    base_sequence + i as i32
                } else {
                    -1 + i as i32
                },
                timestamp: 1_000 + 3 * i as i64,
                key: (i % 2 == 0).then(|| Bytes::from(format!("key-{i}"))),
                value: (i % 3 != 2).then(|| Bytes::from(vec![b'x'; i * 10])),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("reference encoder");
    buf.freeze()
}

/// The CRC and length a client checks (gaps between offsets are valid in stored batches, as
/// after Kafka's log compaction, so `batch::validate`, which checks client input, does not apply).
fn assert_crc(batch: &Bytes) {
    let header = parse_header(batch).expect("header");
    assert_eq!(header.size_bytes, batch.len());
    assert_eq!(
        crc32c::crc32c(&batch[crate::batch::ATTRIBUTES_OFFSET..]),
        header.crc
    );
}

#[test]
fn decodes_what_the_reference_encoder_writes_with_every_codec() {
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let batch = reference_batch(compression, 9, None);
        let header = parse_header(&batch).expect("header");
        let records = decode(&header, &batch).expect("decode");
        assert_eq!(records.len(), 9, "{compression:?}");
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.offset, 40 + i as i64);
            assert_eq!(record.timestamp, 1_000 + 3 * i as i64);
            assert_eq!(record.key.is_some(), i % 2 == 0);
            assert_eq!(
                record.value.as_deref().map(<[u8]>::len),
                (i % 3 != 2).then_some(i * 10)
            );
            assert_eq!(record.headers.len(), 1);
            assert_eq!(&record.headers[0].key[..], b"h");
        }
    }
}

#[test]
fn encoded_batches_read_back_in_the_reference_decoder() {
    let batch = reference_batch(Compression::Zstd, 5, Some((12, 3, 100)));
    let header = parse_header(&batch).expect("header");
    let records = decode(&header, &batch).expect("decode");
    let fields = BatchFields {
        base_offset: header.base_offset,
        last_offset: header.last_offset(),
        partition_leader_epoch: 7,
        log_append_time: false,
        transactional: false,
        control: false,
        producer_id: header.producer_id,
        producer_epoch: header.producer_epoch,
        base_sequence: header.base_sequence,
    };
    let rebuilt = encode(&fields, &records);
    let rebuilt_header = parse_header(&rebuilt).expect("header");
    crate::batch::validate(&rebuilt_header, &rebuilt).expect("valid CRC and offsets");
    assert_eq!(rebuilt_header.base_sequence, 100);
    let mut buf = rebuilt.clone();
    let set = RecordBatchDecoder::decode(&mut buf).expect("reference decoder");
    assert_eq!(set.records.len(), 5);
    for (ours, theirs) in records.iter().zip(&set.records) {
        assert_eq!(theirs.offset, ours.offset);
        assert_eq!(theirs.timestamp, ours.timestamp);
        assert_eq!(theirs.key, ours.key);
        assert_eq!(theirs.value, ours.value);
        assert_eq!(theirs.producer_id, 12);
        assert_eq!(theirs.sequence, 100 + (ours.offset - 40) as i32);
    }
    assert_eq!(
        decode(&rebuilt_header, &rebuilt).expect("ours again"),
        records
    );
}

#[test]
fn log_append_time_survives_a_rebuild() {
    let records = vec![Record {
        offset: 5,
        timestamp: 77_000,
        key: None,
        value: Some(Bytes::from_static(b"v")),
        headers: vec![],
    }];
    let fields = BatchFields {
        base_offset: 3,
        last_offset: 6,
        partition_leader_epoch: 0,
        log_append_time: true,
        transactional: false,
        control: false,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
    let batch = encode(&fields, &records);
    let header = parse_header(&batch).expect("header");
    assert_crc(&batch);
    assert!(header.is_log_append_time());
    assert_eq!((header.base_offset, header.last_offset()), (3, 6));
    assert_eq!(header.max_timestamp, 77_000);
    assert_eq!(decode(&header, &batch).expect("decode"), records);
}

type Row = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(Vec<u8>, Option<Vec<u8>>)>,
    i64,
);

fn arb_record() -> impl Strategy<Value = Row> {
    (
        proptest::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(prop::collection::vec(any::<u8>(), 0..200)),
        prop::collection::vec(
            (
                prop::collection::vec(any::<u8>(), 0..8),
                proptest::option::of(prop::collection::vec(any::<u8>(), 0..8)),
            ),
            0..4,
        ),
        -5_000i64..5_000,
    )
}

proptest! {
    /// Any records — repeated header keys, empty and null keys and values, timestamps out of
    /// order, gaps between offsets — come back exactly.
    #[test]
    fn encode_then_decode_is_identity(
        rows in prop::collection::vec(arb_record(), 1..20),
        gaps in prop::collection::vec(1i64..4, 20),
        base in 0i64..1 << 40,
    ) {
        let mut offset = base;
        let records: Vec<Record> = rows.into_iter().enumerate().map(|(i, (key, value, headers, ts))| {
            offset += if i == 0 { 0 } else { gaps[i] };
            Record {
                offset,
                timestamp: 1_700_000_000_000 + ts,
                key: key.map(Bytes::from),
                value: value.map(Bytes::from),
                headers: headers.into_iter().map(|(k, v)| Header { key: k.into(), value: v.map(Bytes::from) }).collect(),
            }
        }).collect();
        let fields = BatchFields {
            base_offset: base,
            last_offset: offset + 1,
            partition_leader_epoch: 4,
            log_append_time: false,
            transactional: true,
            control: false,
            producer_id: 9,
            producer_epoch: 1,
            base_sequence: 17,
        };
        let batch = encode(&fields, &records);
        let header = parse_header(&batch).expect("header");
        assert_crc(&batch);
        prop_assert!(header.is_transactional());
        prop_assert_eq!(header.last_offset(), offset + 1);
        prop_assert_eq!(decode(&header, &batch).expect("decode"), records);
    }
}

#[test]
fn damaged_records_are_errors_not_panics() {
    let batch = reference_batch(Compression::None, 3, None);
    let header = parse_header(&batch).expect("header");
    for cut in HEADER_LEN..batch.len() {
        let mut short = BytesMut::from(&batch[..cut]);
        short.resize(batch.len(), 0xff);
        let _ = decode(&header, &short.freeze());
    }
    let mut claims_more = header;
    claims_more.records_count = 4;
    assert!(decode(&claims_more, &batch).is_err());
}

#[test]
fn caps_every_codec() {
    let big = vec![b'a'; 1 << 20];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&big).expect("gzip");
    let gz = Bytes::from(gz.finish().expect("gzip"));
    let zst = Bytes::from(zstd::encode_all(&big[..], 1).expect("zstd"));
    let mut lz = lz4::EncoderBuilder::new().build(Vec::new()).expect("lz4");
    lz.write_all(&big).expect("lz4");
    let lz = Bytes::from(lz.finish().0);
    let raw_snappy = Bytes::from(
        snap::raw::Encoder::new()
            .compress_vec(&big)
            .expect("snappy"),
    );
    for (codec, data) in [
        (CODEC_GZIP, gz),
        (CODEC_ZSTD, zst),
        (CODEC_LZ4, lz),
        (CODEC_SNAPPY, raw_snappy),
    ] {
        let out = decompress(codec, data.clone(), 2 << 20).expect("under the cap");
        assert_eq!(out.len(), big.len(), "{codec}");
        let refused = decompress(codec, data, 1000);
        assert_eq!(refused, Err(RecordsError::TooLarge(1000)), "{codec}");
    }
}

#[test]
fn counting_streams_and_stops_at_the_cap() {
    // One "record" that claims 100 MiB of zeros: zstd makes it a few KB on the wire.
    let mut payload = vec![0u8; 0];
    let length = 100u64 << 20;
    let mut zigzag = length << 1;
    while zigzag >= 0x80 {
        payload.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    payload.push(zigzag as u8);
    payload.resize(payload.len() + (100 << 20), 0);
    let bomb = zstd::encode_all(&payload[..], 3).expect("zstd");
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    let error = crate::batch::count_records(std::io::BufReader::new(
        zstd::stream::read::Decoder::new(&bomb[..])
            .expect("decoder")
            .take(DECOMPRESSED_BATCH_MAX_BYTES as u64 + 1),
    ))
    .expect_err("over the cap")
    .to_string();
    assert!(error.contains("runs past"), "{error}");
    let records = [&[2u8, 0][..], &[4, 0, 0], &[0]].concat();
    assert_eq!(
        crate::batch::count_records(&records[..]).expect("counted"),
        3
    );
    assert!(
        crate::batch::count_records(&[6u8, 0][..]).is_err(),
        "cut short"
    );
}

#[test]
fn garbage_is_an_error() {
    for codec in [CODEC_GZIP, CODEC_ZSTD, CODEC_LZ4, CODEC_SNAPPY, 6] {
        let junk = Bytes::from_static(b"\x82SNAPPY\x00not really compressed at all");
        assert!(decompress(codec, junk, 1 << 20).is_err(), "{codec}");
    }
}

proptest::proptest! {
    #[test]
    fn varint_sizes_match_what_is_written(value in proptest::prelude::any::<i64>()) {
        let mut buf = BytesMut::new();
        put_varlong(&mut buf, value);
        proptest::prop_assert_eq!(buf.len(), varlong_len(value));
    }
}
