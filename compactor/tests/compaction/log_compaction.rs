//! Kafka log compaction over the Parquet part: the latest value per key, at its offset.

use super::fixture::*;

#[tokio::test]
async fn log_compaction_keeps_the_latest_value_per_key_at_its_offset() {
    let fx = Fixture::new(100).await;
    fx.topic_with(
        "c",
        1,
        &[
            ("cleanup.policy", "compact"),
            ("delete.retention.ms", "300000"),
            ("min.cleanable.dirty.ratio", "0.1"),
        ],
    )
    .await;
    let tp = TopicPartition::new("c", 0);
    let mut all = Vec::new();
    all.extend(
        produce_keyed(
            &fx,
            &tp,
            &[("a", Some("a1")), ("b", Some("b1")), ("c", Some("c1"))],
        )
        .await,
    );
    all.extend(
        produce_keyed(
            &fx,
            &tp,
            &[("a", Some("a2")), ("b", None), ("d", Some("d1"))],
        )
        .await,
    );
    all.extend(produce_keyed(&fx, &tp, &[("a", Some("a3")), ("c", None)]).await);
    fx.compact().await;
    let survivors = fx.consume_when(&tp, 0, |r| r.len() == 4).await;
    let seen: Vec<(i64, Option<Bytes>)> = survivors
        .iter()
        .map(|r| (r.offset, r.value.clone()))
        .collect();
    // The tombstones are still within delete.retention.ms: they stay, the values they deleted go.
    assert_eq!(
        seen,
        vec![
            (4, None), // b deleted
            (5, Some(Bytes::from_static(b"d1"))),
            (6, Some(Bytes::from_static(b"a3"))),
            (7, None), // c deleted
        ]
    );
    for r in &survivors {
        assert_eq!(r, &all[r.offset as usize], "offsets and records unchanged");
    }
    assert_eq!(fx.log.offsets(&tp).await.expect("offsets"), (0, 8));
    // A later update dirties the range again; past delete.retention.ms the tombstones go too.
    all.extend(produce_keyed(&fx, &tp, &[("d", Some("d2"))]).await);
    fx.clock.advance_ms(300_000);
    fx.compact().await;
    let values: Vec<(i64, Option<Bytes>)> = fx
        .consume_when(&tp, 0, |r| r.len() == 2)
        .await
        .iter()
        .map(|r| (r.offset, r.value.clone()))
        .collect();
    assert_eq!(
        values,
        vec![
            (6, Some(Bytes::from_static(b"a3"))),
            (8, Some(Bytes::from_static(b"d2")))
        ]
    );
}
