use super::*;
use proptest::prelude::*;

fn seq(producer_id: i64, epoch: i16, first: i32, count: i32) -> Sequenced {
    Sequenced::new(producer_id, epoch, first, count - 1)
}

#[test]
fn unknown_producer_may_start_anywhere_unless_a_failure_is_awaited() {
    let states = ProducerStates::default();
    assert_eq!(states.check(&seq(7, 0, 0, 3), None), Verdict::Append);
    assert_eq!(states.check(&seq(7, 0, 42, 3), None), Verdict::Append);
    assert!(matches!(
        states.check(&seq(7, 0, 10, 3), Some((0, 0))),
        Verdict::AwaitingEarlier(_)
    ));
    assert_eq!(
        states.check(&seq(7, 0, 0, 3), Some((0, 0))),
        Verdict::Append
    );
    // A failure under an older epoch does not hold back a bumped producer.
    assert_eq!(
        states.check(&seq(7, 1, 10, 3), Some((0, 0))),
        Verdict::Append
    );
}

#[test]
fn retries_are_duplicates_and_gaps_are_out_of_order() {
    let mut states = ProducerStates::default();
    let mut offset = 100;
    for first in [0, 3, 6] {
        let b = seq(7, 0, first, 3);
        assert_eq!(states.check(&b, None), Verdict::Append);
        states.record(&b, offset, offset + 2, 1);
        offset += 3;
    }
    assert_eq!(
        states.check(&seq(7, 0, 3, 3), None),
        Verdict::Duplicate { base_offset: 103 }
    );
    assert!(matches!(
        states.check(&seq(7, 0, 10, 3), None),
        Verdict::OutOfOrder(_)
    ));
    // Same first sequence, different length: not the same batch.
    assert!(matches!(
        states.check(&seq(7, 0, 3, 2), None),
        Verdict::OutOfOrder(_)
    ));
    assert_eq!(states.check(&seq(7, 0, 9, 1), None), Verdict::Append);
    assert!(matches!(
        states.check(&seq(7, 1, 9, 1), None),
        Verdict::OutOfOrder(_)
    ));
    assert_eq!(states.check(&seq(7, 1, 0, 1), None), Verdict::Append);
    states.record(&seq(7, 1, 0, 1), 200, 200, 2);
    assert_eq!(states.producers[&7].batches.len(), 1);
    assert!(matches!(
        states.check(&seq(7, 0, 9, 1), None),
        Verdict::InvalidEpoch(_)
    ));
}

#[test]
fn only_the_last_five_batches_are_remembered() {
    let mut states = ProducerStates::default();
    for i in 0..7 {
        states.record(&seq(1, 0, i, 1), i64::from(i), i64::from(i), 0);
    }
    assert_eq!(states.producers[&1].batches.len(), BATCHES_REMEMBERED);
    assert!(matches!(
        states.check(&seq(1, 0, 1, 1), None),
        Verdict::OutOfOrder(_)
    ));
    assert_eq!(
        states.check(&seq(1, 0, 2, 1), None),
        Verdict::Duplicate { base_offset: 2 }
    );
}

#[test]
fn sequences_wrap_at_i32_max() {
    assert_eq!(increment(i32::MAX, 1), 0);
    assert_eq!(increment(i32::MAX - 1, 3), 1);
    let mut states = ProducerStates::default();
    let last = seq(1, 0, i32::MAX - 1, 2);
    assert_eq!(last.last_sequence, i32::MAX);
    states.record(&last, 0, 1, 0);
    assert_eq!(states.check(&seq(1, 0, 0, 5), None), Verdict::Append);
}

#[test]
fn expiry_by_age_then_by_count() {
    let mut states = ProducerStates::default();
    for id in 0..10 {
        states.record(&seq(id, 0, 0, 1), 0, 0, id * 100);
    }
    states.expire(1_000, 500, 100);
    assert_eq!(
        states.producers.keys().copied().collect::<Vec<_>>(),
        vec![6, 7, 8, 9]
    );
    states.expire(1_000, 500, 2);
    assert_eq!(
        states.producers.keys().copied().collect::<Vec<_>>(),
        vec![8, 9]
    );
}

#[test]
fn a_transaction_opens_at_its_first_batch_and_closes_at_its_marker() {
    let mut states = ProducerStates::default();
    let t = |first, count| seq(5, 0, first, count).transactional();
    assert_eq!(states.check(&t(0, 2), None), Verdict::Append);
    states.record(&t(0, 2), 10, 11, 1);
    states.record(&t(2, 2), 14, 15, 1);
    assert_eq!(states.producers[&5].txn_first_offset, Some(10));
    assert_eq!(states.last_stable_offset(20), 10);
    // A plain batch while the transaction is open is refused, as Kafka does.
    assert!(matches!(
        states.check(&seq(5, 0, 4, 1), None),
        Verdict::InvalidTxnState(_)
    ));
    let aborted = states
        .apply_marker(
            &Marker {
                producer_id: 5,
                epoch: 0,
                commit: false,
                revision: 0,
                end: 0,
            },
            16,
            2,
        )
        .expect("marker");
    assert_eq!(
        aborted,
        Some(AbortedTxn {
            producer_id: 5,
            first_offset: 10,
            last_offset: 16
        })
    );
    assert_eq!(states.last_stable_offset(20), 20);
    // The next transaction continues the sequence.
    assert_eq!(states.check(&t(4, 1), None), Verdict::Append);
    states.record(&t(4, 1), 17, 17, 3);
    assert_eq!(states.last_stable_offset(20), 17);
    assert_eq!(
        states.apply_marker(
            &Marker {
                producer_id: 5,
                epoch: 0,
                commit: true,
                revision: 0,
                end: 0,
            },
            18,
            4
        ),
        Ok(None)
    );
}

#[test]
fn a_marker_with_a_bumped_epoch_fences_the_old_producer() {
    let mut states = ProducerStates::default();
    let b = seq(5, 3, 0, 2).transactional();
    states.record(&b, 0, 1, 1);
    // The coordinator aborts on timeout under epoch 4.
    states
        .apply_marker(
            &Marker {
                producer_id: 5,
                epoch: 4,
                commit: false,
                revision: 0,
                end: 0,
            },
            2,
            2,
        )
        .expect("marker");
    assert!(matches!(
        states.check(&seq(5, 3, 2, 1).transactional(), None),
        Verdict::InvalidEpoch(_)
    ));
    // The new instance (epoch 4 from InitProducerId, or 5 after its own bump) starts at 0.
    assert_eq!(
        states.check(&seq(5, 4, 0, 1).transactional(), None),
        Verdict::Append
    );
    assert_eq!(
        states.check(&seq(5, 5, 0, 1).transactional(), None),
        Verdict::Append
    );
    // A marker older than the producer's epoch cannot be the coordinator's.
    assert!(states
        .apply_marker(
            &Marker {
                producer_id: 5,
                epoch: 3,
                commit: true,
                revision: 0,
                end: 0,
            },
            3,
            3
        )
        .is_err());
}

#[test]
fn a_late_batch_of_an_ended_transaction_cannot_open_a_new_one() {
    let mut states = ProducerStates::default();
    states.record(&seq(5, 0, 0, 1).transactional(), 0, 0, 1);
    let commit = Marker {
        producer_id: 5,
        epoch: 0,
        commit: true,
        revision: 100,
        end: 0,
    };
    states.apply_marker(&commit, 1, 2).expect("marker");
    // Verified before the coordinator prepared that commit: it belonged to the ended one.
    let late = seq(5, 0, 1, 1).transactional().verified_at(Some(90));
    assert!(matches!(
        states.check(&late, None),
        Verdict::InvalidTxnState(_)
    ));
    // Verified against the coordinator's state after it: the next transaction.
    let next = seq(5, 0, 1, 1).transactional().verified_at(Some(110));
    assert_eq!(states.check(&next, None), Verdict::Append);
    states.record(&next, 2, 2, 3);
    // Once open, later batches of it need no verification.
    let more = seq(5, 0, 2, 1).transactional().verified_at(Some(90));
    assert_eq!(states.check(&more, None), Verdict::Append);
}

#[test]
fn a_batch_queued_unverified_into_an_open_transaction_is_refused_once_it_closed() {
    let mut states = ProducerStates::default();
    states.record(
        &seq(5, 0, 0, 1).transactional().verified_at(Some(10)),
        0,
        0,
        1,
    );
    assert!(states.has_open_transaction((5, 0)));
    assert!(!states.has_open_transaction((5, 1)), "another epoch");
    assert!(!states.has_open_transaction((6, 0)), "another producer");
    // Queued while open: committed while still open, it joins the transaction.
    let continuing = seq(5, 0, 1, 1)
        .transactional()
        .verified_at(Some(CONTINUES_OPEN_TRANSACTION));
    assert_eq!(states.check(&continuing, None), Verdict::Append);
    // A marker closes the transaction before the commit: the batch would open a new one that
    // nobody verified.
    let abort = Marker {
        producer_id: 5,
        epoch: 0,
        commit: false,
        revision: 1,
        end: 0,
    };
    states.apply_marker(&abort, 1, 2).expect("marker");
    assert!(!states.has_open_transaction((5, 0)));
    assert!(matches!(
        states.check(&continuing, None),
        Verdict::InvalidTxnState(_)
    ));
}

#[test]
fn producers_with_open_transactions_are_never_expired() {
    let mut states = ProducerStates::default();
    states.record(&seq(1, 0, 0, 1).transactional(), 0, 0, 0);
    for id in 2..10 {
        states.record(&seq(id, 0, 0, 1), id, id, 0);
    }
    states.expire(1_000_000, 10, 0);
    assert_eq!(
        states.producers.keys().copied().collect::<Vec<_>>(),
        vec![1]
    );
    let encoded = states.encode_pruned(2_000_000, 10);
    let decoded: ProducerStates = serde_json::from_slice(&encoded).expect("decode");
    assert_eq!(decoded.last_stable_offset(50), 0);
}

/// One step of a partition's log in the model below.
#[derive(Debug, Clone)]
enum Step {
    Plain { producer: i64, records: i64 },
    Transactional { producer: i64, records: i64 },
    Marker { producer: i64, commit: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0i64..4, 1i64..4).prop_map(|(producer, records)| Step::Plain { producer, records }),
        (0i64..4, 1i64..4)
            .prop_map(|(producer, records)| Step::Transactional { producer, records }),
        (0i64..4, any::<bool>()).prop_map(|(producer, commit)| Step::Marker { producer, commit }),
    ]
}

proptest! {
    /// What a read_committed consumer keeps — records below the LSO, minus those of the
    /// aborted transactions it is told about — is exactly the committed records of a model
    /// that knows every record's transaction and its outcome.
    #[test]
    fn lso_and_aborted_list_give_exactly_the_committed_records(
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let mut states = ProducerStates::default();
        let mut sequences = [0i32; 4];
        let mut offset = 0i64;
        let mut aborted = Vec::new();
        // The model: per offset, its producer, its transaction number (None = plain or
        // marker) and whether it is a marker, and per transaction number its outcome once
        // known.
        let mut records: Vec<(i64, Option<usize>, bool)> = Vec::new();
        let mut open: [Option<usize>; 4] = [None; 4];
        let mut outcomes: Vec<Option<bool>> = Vec::new();
        for step in steps {
            match step {
                Step::Plain { producer, records: n } | Step::Transactional { producer, records: n } => {
                    let transactional = matches!(step, Step::Transactional { .. });
                    let p = producer as usize;
                    let mut batch = Sequenced::new(producer, 0, sequences[p], (n - 1) as i32);
                    if transactional {
                        batch = batch.transactional();
                    }
                    match states.check(&batch, None) {
                        Verdict::Append => {}
                        Verdict::InvalidTxnState(_) => {
                            prop_assert!(!transactional && open[p].is_some());
                            continue;
                        }
                        other => prop_assert!(false, "unexpected verdict {:?}", other),
                    }
                    prop_assert!(transactional || open[p].is_none());
                    states.record(&batch, offset, offset + n - 1, 0);
                    sequences[p] = increment(batch.last_sequence, 1);
                    let txn = transactional.then(|| {
                        *open[p].get_or_insert_with(|| {
                            outcomes.push(None);
                            outcomes.len() - 1
                        })
                    });
                    for _ in 0..n {
                        records.push((producer, txn, false));
                    }
                    offset += n;
                }
                Step::Marker { producer, commit } => {
                    let marker = Marker { producer_id: producer, epoch: 0, commit, revision: 0, end: 0 };
                    if let Some(found) = states.apply_marker(&marker, offset, 0).expect("marker") {
                        aborted.push(found);
                    }
                    if let Some(txn) = open[producer as usize].take() {
                        outcomes[txn] = Some(commit);
                    }
                    records.push((producer, None, true));
                    offset += 1;
                }
            }
        }
        let lso = states.last_stable_offset(offset);
        let expected_lso = records
            .iter()
            .position(|(_, txn, _)| txn.is_some_and(|t| outcomes[t].is_none()))
            .map_or(offset, |i| i as i64);
        prop_assert_eq!(lso, expected_lso);
        for (at, (producer, txn, marker)) in records.iter().enumerate().take(lso as usize) {
            // Markers are control records: consumers skip them whatever the list says.
            if *marker {
                continue;
            }
            let at = at as i64;
            let dropped = aborted.iter().any(|a| {
                a.producer_id == *producer && (a.first_offset..=a.last_offset).contains(&at)
            });
            let committed = match txn {
                None => true,
                Some(t) => outcomes[*t] == Some(true),
            };
            prop_assert_eq!(!dropped, committed, "offset {}", at);
        }
    }
}

proptest! {
    /// Any retry of any of the last five batches, in any order, is recognised with its
    /// original offset; anything else is never called a duplicate.
    #[test]
    fn retries_of_recent_batches_are_always_recognised(
        sizes in proptest::collection::vec(1i32..50, 1..20),
        retry in any::<proptest::sample::Index>(),
        start in 0i32..i32::MAX,
    ) {
        let mut states = ProducerStates::default();
        let mut sent = Vec::new();
        let mut next_seq = start;
        let mut offset = 0i64;
        for size in &sizes {
            let b = Sequenced::new(9, 3, next_seq, size - 1);
            prop_assert_eq!(states.check(&b, None), Verdict::Append);
            states.record(&b, offset, offset + i64::from(*size) - 1, 0);
            sent.push((b, offset));
            offset += i64::from(*size);
            next_seq = increment(b.last_sequence, 1);
        }
        let (b, base_offset) = sent[retry.index(sent.len())];
        let recent = sent.len() - sent.iter().position(|(s, _)| *s == b).expect("sent") <= BATCHES_REMEMBERED;
        let verdict = states.check(&b, None);
        if recent {
            prop_assert_eq!(verdict, Verdict::Duplicate { base_offset });
        } else {
            prop_assert!(matches!(verdict, Verdict::OutOfOrder(_)));
        }
        let encoded = serde_json::to_vec(&states).expect("encode");
        let decoded: ProducerStates = serde_json::from_slice(&encoded).expect("decode");
        prop_assert_eq!(decoded, states);
    }
}

#[test]
fn state_in_the_first_builds_longer_form_still_decodes() {
    let old = br#"{"producers":{"7":{"epoch":1,"last_seen_ms":5,"batches":[{"first_sequence":0,"last_sequence":2,"base_offset":10,"last_offset":12}]}}}"#;
    let states: ProducerStates = serde_json::from_slice(old).expect("decode");
    assert_eq!(
        states.check(&Sequenced::new(7, 1, 0, 2), None),
        Verdict::Duplicate { base_offset: 10 }
    );
}

#[test]
fn the_encoded_state_stays_bounded() {
    let mut states = ProducerStates::default();
    for id in 0..5_000i64 {
        for i in 0..5 {
            let b = Sequenced::new(id + 1_000_000_000, 0, i * 100, 99);
            states.record(&b, 1 << 40, (1 << 40) + 99, 1_700_000_000_000 + id);
        }
    }
    let encoded = states.encode_pruned(1_700_000_010_000, 86_400_000);
    assert!(encoded.len() <= ENCODED_BYTES_MAX, "{}", encoded.len());
    assert!(states.producers.len() <= PRODUCERS_PER_PARTITION_MAX);
    // The most recently seen survive.
    assert!(states.producers.contains_key(&(1_000_000_000 + 4_999)));
    let per_producer = encoded.len() / states.producers.len();
    assert!(per_producer < 256, "{per_producer} bytes per producer");
    let decoded: ProducerStates = serde_json::from_slice(&encoded).expect("decode");
    assert_eq!(decoded, states);
}

#[test]
fn each_transaction_ending_applies_once() {
    let mut states = ProducerStates::default();
    states.record(&seq(5, 0, 0, 1).transactional(), 0, 0, 1);
    let first = Marker {
        producer_id: 5,
        epoch: 0,
        commit: true,
        revision: 10,
        end: 1,
    };
    states.apply_marker(&first, 1, 2).expect("first ending");
    states.record(
        &seq(5, 0, 1, 1).transactional().verified_at(Some(20)),
        2,
        2,
        3,
    );
    // The first ending again (its request put again): refused, the next transaction stays open.
    assert!(states
        .apply_marker(
            &Marker {
                revision: 30,
                ..first
            },
            3,
            4
        )
        .is_err());
    assert!(states.has_open_transaction((5, 0)));
    // Requests from before endings were counted (0) still apply.
    let unnumbered = Marker { end: 0, ..first };
    assert!(states
        .apply_marker(&unnumbered, 3, 4)
        .expect("applies")
        .is_none());
    assert!(!states.has_open_transaction((5, 0)));
}
