use super::*;
use crate::batch::parse_header;
use crate::records::{self, BatchFields, Header, Record};
use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

fn sample(
    base: i64,
    n: usize,
    value_len: usize,
    log_append_time: bool,
) -> (BatchFields, Vec<Record>) {
    let records = (0..n)
        .map(|i| Record {
            offset: base + i as i64,
            timestamp: if log_append_time {
                9_000
            } else {
                1_000 + i as i64
            },
            key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![b'a' + (i % 26) as u8; value_len])),
            headers: vec![
                Header {
                    key: Bytes::from_static(b"trace"),
                    value: Some(Bytes::from(format!("t{i}"))),
                },
                Header {
                    key: Bytes::from_static(b"trace"),
                    value: None,
                },
            ],
        })
        .collect();
    let fields = BatchFields {
        base_offset: base,
        last_offset: base + n as i64 - 1,
        partition_leader_epoch: 3,
        log_append_time,
        transactional: false,
        control: false,
        producer_id: 77,
        producer_epoch: 2,
        base_sequence: 10,
    };
    (fields, records)
}

/// A file holding `batches`, written the compactor's way.
fn write_file(batches: &[Bytes]) -> (Bytes, FileSummary) {
    let mut writer = FileWriter::new("orders", 4).expect("writer");
    for batch in batches {
        let header = parse_header(batch).expect("header");
        writer
            .push(&header, &records::decode(&header, batch).expect("decode"))
            .expect("push");
    }
    writer.finish().expect("finish")
}

async fn write_and_read(batches: &[Bytes]) -> (Vec<Bytes>, FileSummary, Vec<RowGroupInfo>) {
    let (bytes, summary) = write_file(batches);
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    store
        .put(&Path::from("p/file.parquet"), bytes.into())
        .await
        .expect("put");
    let reader = ColumnarReader::new(store, 1 << 30);
    let groups = reader
        .row_groups("p/file.parquet", summary.bytes)
        .await
        .expect("footer");
    let mut out = Vec::new();
    for i in 0..groups.len() {
        out.extend(
            reader
                .row_group("p/file.parquet", summary.bytes, i)
                .await
                .expect("group")
                .batches(),
        );
    }
    (out, summary, groups)
}

#[tokio::test]
async fn batches_come_back_with_their_records_offsets_and_producer_fields() {
    let originals: Vec<Bytes> = [(0, 5, false), (5, 1, true), (6, 30, false)]
        .into_iter()
        .map(|(base, n, lat)| {
            let (fields, records) = sample(base, n, 20, lat);
            records::encode(&fields, &records)
        })
        .collect();
    let (rebuilt, summary, groups) = write_and_read(&originals).await;
    assert_eq!(summary.rows, 36);
    assert_eq!(
        (summary.first_offset, summary.last_offset),
        (Some(0), Some(35))
    );
    assert_eq!(groups.len(), 1);
    assert_eq!(
        rebuilt, originals,
        "uncompressed batches rebuild byte for byte"
    );
}

#[tokio::test]
async fn compressed_batches_rebuild_with_the_same_records() {
    use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};
    let (_, ours) = sample(100, 12, 300, false);
    let theirs: Vec<kafka_protocol::records::Record> = ours
        .iter()
        .map(|r| kafka_protocol::records::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset: r.offset,
            sequence: (r.offset - 101) as i32,
            timestamp: r.timestamp,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &theirs,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::Lz4,
        },
    )
    .expect("encode");
    let original = buf.freeze();
    let (rebuilt, _, _) = write_and_read(std::slice::from_ref(&original)).await;
    assert_eq!(rebuilt.len(), 1);
    let header = parse_header(&rebuilt[0]).expect("header");
    assert_eq!(header.compression(), 0);
    assert_eq!(header.base_sequence, -1);
    let before = records::decode(&parse_header(&original).expect("h"), &original).expect("decode");
    let after = records::decode(&header, &rebuilt[0]).expect("decode");
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (b.offset, b.timestamp, &b.key, &b.value),
            (a.offset, a.timestamp, &a.key, &a.value)
        );
    }
}

#[tokio::test]
async fn row_groups_close_at_batch_boundaries_by_bytes() {
    // 12 batches of 1 MiB: row groups of about ROW_GROUP_TARGET_BYTES, none splitting a batch.
    let originals: Vec<Bytes> = (0..12)
        .map(|b| {
            let (fields, records) = sample(b * 8, 8, 128 * 1024, false);
            records::encode(&fields, &records)
        })
        .collect();
    let (rebuilt, _, groups) = write_and_read(&originals).await;
    assert!(groups.len() >= 3, "{groups:?}");
    assert_eq!(rebuilt, originals);
    let lasts: Vec<i64> = groups.iter().map(|g| g.last_offset).collect();
    assert!(lasts.windows(2).all(|w| w[0] < w[1]), "{lasts:?}");
    assert!(
        lasts.iter().all(|l| (l + 1) % 8 == 0),
        "row groups end with a batch: {lasts:?}"
    );
}

#[tokio::test]
async fn a_missing_file_is_told_apart_from_a_damaged_one() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let reader = ColumnarReader::new(store.clone(), 1 << 20);
    let missing = reader
        .row_groups("p/gone.parquet", 100)
        .await
        .expect_err("missing");
    assert!(matches!(missing, ColumnarError::Missing(_)), "{missing:?}");
    store
        .put(
            &Path::from("p/junk.parquet"),
            Bytes::from(vec![7u8; 100]).into(),
        )
        .await
        .expect("put");
    let junk = reader
        .row_groups("p/junk.parquet", 100)
        .await
        .expect_err("junk");
    assert!(matches!(junk, ColumnarError::Corrupt(_)), "{junk:?}");
}

#[tokio::test]
async fn nulls_empties_and_header_counts_rebuild_byte_for_byte_across_pages() {
    // Rows without headers, with several, null and empty keys, values and header values, over
    // enough rows that every column spans several data pages; read by row group and whole.
    let originals: Vec<Bytes> = (0..40)
        .map(|b| {
            let records: Vec<Record> = (0..100)
                .map(|i| {
                    let n = b * 100 + i;
                    let bytes = |len: usize| Bytes::from(vec![b'a' + (n % 26) as u8; len]);
                    Record {
                        offset: n as i64,
                        timestamp: 5_000 + n as i64,
                        key: match n % 3 {
                            0 => None,
                            1 => Some(Bytes::new()),
                            _ => Some(bytes(n % 17)),
                        },
                        value: match n % 5 {
                            0 => None,
                            1 => Some(Bytes::new()),
                            _ => Some(bytes(n % 300)),
                        },
                        headers: (0..n % 4)
                            .map(|h| Header {
                                key: if h == 0 { Bytes::new() } else { bytes(h) },
                                value: (h % 2 == 1).then(|| bytes(n % 9)),
                            })
                            .collect(),
                    }
                })
                .collect();
            let fields = BatchFields {
                base_offset: b as i64 * 100,
                last_offset: b as i64 * 100 + 99,
                partition_leader_epoch: 1,
                log_append_time: false,
                transactional: b % 2 == 0,
                control: false,
                producer_id: if b % 3 == 0 { -1 } else { 9 },
                producer_epoch: if b % 3 == 0 { -1 } else { 4 },
                base_sequence: if b % 3 == 0 { -1 } else { b as i32 * 100 },
            };
            records::encode(&fields, &records)
        })
        .collect();
    let (rebuilt, summary, _) = write_and_read(&originals).await;
    assert_eq!(summary.rows, 4000);
    assert_eq!(rebuilt, originals);

    let (bytes, _) = write_file(&originals);
    assert_eq!(
        decode_file("p/file.parquet", bytes).expect("decode"),
        originals
    );
}

#[tokio::test]
async fn a_row_group_is_read_once_for_concurrent_fetches_and_a_vanished_file_is_missing() {
    let originals: Vec<Bytes> = (0..4)
        .map(|b| {
            let (fields, records) = sample(b * 10, 10, 100, false);
            records::encode(&fields, &records)
        })
        .collect();
    let (bytes, summary) = write_file(&originals);
    let metered = crate::metered::MeteredStore::new(Arc::new(InMemory::new()));
    let counts = metered.counts();
    let store: Arc<dyn ObjectStore> = Arc::new(metered);
    let path = Path::from("p/file.parquet");
    store.put(&path, bytes.into()).await.expect("put");
    let reader = ColumnarReader::new(store.clone(), 1 << 20);
    reader
        .row_groups("p/file.parquet", summary.bytes)
        .await
        .expect("footer");
    let gets = || counts.gets.load(std::sync::atomic::Ordering::Relaxed);
    let before = gets();
    let reads: Vec<_> = (0..4)
        .map(|_| reader.row_group("p/file.parquet", summary.bytes, 0))
        .collect();
    for read in futures::future::join_all(reads).await {
        let batches: Vec<Bytes> = read.expect("row group").batches().collect();
        assert_eq!(batches, originals);
    }
    assert_eq!(
        gets() - before,
        1,
        "one ranged read for four concurrent fetches"
    );

    // Cached or not, a file gone from the bucket is told apart from a damaged one.
    let uncached = ColumnarReader::new(store.clone(), 0);
    let cached = ColumnarReader::new(store.clone(), 1 << 20);
    for reader in [&uncached, &cached] {
        reader
            .row_groups("p/file.parquet", summary.bytes)
            .await
            .expect("footer");
    }
    store.delete(&path).await.expect("delete");
    let gone = uncached
        .row_group("p/file.parquet", summary.bytes, 0)
        .await
        .expect_err("gone");
    assert!(matches!(gone, ColumnarError::Missing(_)), "{gone:?}");
    let gone = cached
        .row_group("p/file.parquet", summary.bytes, 0)
        .await
        .expect_err("gone");
    assert!(matches!(gone, ColumnarError::Missing(_)), "{gone:?}");
}

#[test]
fn only_byte_columns_are_compressed_and_offsets_are_deltas() {
    use parquet::basic::{Compression, Encoding};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let (fields, records) = sample(100, 500, 300, false);
    let (file, _) = write_file(&[records::encode(&fields, &records)]);
    let reader = SerializedFileReader::new(file).expect("parquet file");
    let group = reader.metadata().row_group(0);
    let mut zstd = Vec::new();
    for column in group.columns() {
        let path = column.column_path().string();
        if matches!(column.compression(), Compression::ZSTD(_)) {
            zstd.push(path.clone());
        } else {
            assert_eq!(column.compression(), Compression::UNCOMPRESSED, "{path}");
        }
        if ["offset", "timestamp", "sequence"].contains(&path.as_str()) {
            assert!(
                column
                    .encodings()
                    .any(|e| e == Encoding::DELTA_BINARY_PACKED),
                "{path} is not delta-encoded"
            );
        }
    }
    assert_eq!(
        zstd,
        [
            "key",
            "value",
            "headers.list.item.key",
            "headers.list.item.value"
        ]
    );
}
