//! Transactions across conversion and log compaction: aborts kept, markers cleaned as Kafka does.

use super::fixture::*;

/// Appends producer 9's transactional batch of one record (sequence `sequence`) and aborts it;
/// returns the aborted transaction.
async fn aborted_transaction(
    fx: &Fixture,
    tp: &TopicPartition,
    sequence: i32,
    key: Option<&str>,
    value: Option<&str>,
) -> AbortedTxn {
    transaction(fx, tp, sequence, (key, value), false).await
}

/// Appends producer 9's transactional batch of one record (sequence `sequence`) and its marker;
/// returns the transaction's first offset and its marker's offset.
async fn transaction(
    fx: &Fixture,
    tp: &TopicPartition,
    sequence: i32,
    (key, value): (Option<&str>, Option<&str>),
    commit: bool,
) -> AbortedTxn {
    let records = vec![Record {
        offset: 0,
        timestamp: fx.clock.now_ms(),
        key: key.map(|k| Bytes::from(k.to_string())),
        value: value.map(|v| Bytes::from(v.to_string())),
        headers: vec![],
    }];
    let fields = BatchFields {
        base_offset: 0,
        last_offset: 0,
        partition_leader_epoch: 0,
        log_append_time: false,
        transactional: true,
        control: false,
        producer_id: 9,
        producer_epoch: 0,
        base_sequence: sequence,
    };
    let bytes = records::encode(&fields, &records);
    let header = batch::parse_header(&bytes).expect("header");
    let first = fx
        .log
        .append(tp.clone(), vec![(header, bytes)], false)
        .await
        .expect("transactional append")
        .base_offset;
    let abort = Marker {
        producer_id: 9,
        epoch: 0,
        commit,
        revision: 0,
        end: 0,
    };
    let key = keys::marker_request(&tp.topic, tp.partition, "nine");
    let marker = fx
        .log
        .append_marker(tp.clone(), abort, key)
        .await
        .expect("marker")
        .base_offset;
    AbortedTxn {
        producer_id: 9,
        first_offset: first,
        last_offset: marker,
    }
}

#[tokio::test]
async fn log_compaction_cleans_transactions_as_kafka_does() {
    let fx = Fixture::new(100).await;
    fx.topic_with(
        "c",
        1,
        &[
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.1"),
            ("delete.retention.ms", "600000"),
        ],
    )
    .await;
    let tp = TopicPartition::new("c", 0);
    produce_keyed(&fx, &tp, &[("k", Some("committed")), ("j", Some("j1"))]).await;
    // Aborted: its value never replaces the committed one, and it is removed.
    let aborted = aborted_transaction(&fx, &tp, 0, Some("k"), Some("aborted")).await;
    // Aborted, with a key nothing else writes: removed all the same.
    let lost = aborted_transaction(&fx, &tp, 1, Some("x"), Some("lost")).await;
    // Committed: compacted like plain records (j1 goes).
    transaction(&fx, &tp, 2, (Some("j"), Some("j-txn")), true).await;
    // A committed tombstone (Kafka Streams changelogs have them): goes after
    // delete.retention.ms, and its marker with it.
    transaction(&fx, &tp, 3, (Some("t"), None), true).await;
    fx.compact().await;
    let marker = Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0]));
    let values = |records: &[Record]| -> Vec<Option<Bytes>> {
        records.iter().map(|r| r.value.clone()).collect()
    };
    // Within delete.retention.ms: the aborted transaction's marker stays (with its entry in
    // the aborted list), and so do the tombstone and every commit marker.
    let survivors = fx.consume_when(&tp, 0, |r| r.len() == 7).await;
    assert_eq!(
        values(&survivors),
        vec![
            Some(Bytes::from_static(b"committed")),
            marker.clone(),
            marker.clone(),
            Some(Bytes::from_static(b"j-txn")),
            marker.clone(),
            None,
            marker.clone(),
        ]
    );
    let layout = fx.layout("c", 0).await;
    let listed: Vec<AbortedTxn> = layout
        .files
        .iter()
        .flat_map(|f| f.aborted.clone())
        .collect();
    assert_eq!(listed, [aborted, lost]);
    assert!(layout.tombstones_expire_ms > 0, "a cleaning is due later");
    // Past it: the tombstone goes, and the markers of transactions left empty; the commit
    // marker of j's transaction stays with its record.
    fx.clock.advance_ms(600_000);
    fx.compact().await;
    let survivors = fx.consume_when(&tp, 0, |r| r.len() == 3).await;
    assert_eq!(
        values(&survivors),
        vec![
            Some(Bytes::from_static(b"committed")),
            Some(Bytes::from_static(b"j-txn")),
            marker,
        ]
    );
    let layout = fx.layout("c", 0).await;
    assert!(layout.files.iter().all(|f| f.aborted.is_empty()));
    assert_eq!(layout.tombstones_expire_ms, 0, "no cleaning is due");
}

#[tokio::test]
async fn aborted_transactions_survive_conversion_to_parquet() {
    let fx = Fixture::new(100).await;
    fx.topic("t", 1).await;
    let tp = TopicPartition::new("t", 0);
    let mut expected = Vec::new();
    for k in 0..4i32 {
        // Producer 9's transaction k, aborted, then plain data.
        expected.push(aborted_transaction(&fx, &tp, k, None, Some(&format!("txn-{k}"))).await);
        fx.produce(&tp, 3, &format!("plain{k}")).await;
    }
    fx.compact().await;
    let layout = fx.layout("t", 0).await;
    assert!(
        layout.parquet_end > expected[3].last_offset,
        "all in Parquet"
    );
    fx.delete_wal_objects().await;
    let end = fx.log.offsets(&tp).await.expect("offsets").1;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let read = loop {
        // The broker learns of the swap through its layout watch: wait for its reload.
        let read = fx
            .log
            .read(&tp, 0, 1 << 20, Isolation::ReadCommitted)
            .await
            .expect("read");
        if read.batches.len() > 1 || tokio::time::Instant::now() > deadline {
            break read;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(read.last_stable_offset, end);
    assert_eq!(
        read.aborted, expected,
        "every abort found in the Parquet files"
    );
}
