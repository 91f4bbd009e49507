use super::*;
use proptest::prelude::*;

const MAX_TIMEOUT_MS: i32 = 900_000;

fn init(timeout_ms: i32, expected: Option<ProducerIdEpoch>) -> InitProducerId {
    InitProducerId {
        timeout_ms,
        expected,
    }
}

fn ready(outcome: Result<InitOutcome, TxnError>) -> TransactionRecord {
    match outcome {
        Ok(InitOutcome::Ready(record)) => record,
        other => panic!("expected Ready, got {other:?}"),
    }
}

fn partitions(list: &[(&str, i32)]) -> Addition {
    Addition::Partitions(list.iter().map(|(t, p)| (t.to_string(), *p)).collect())
}

fn ongoing() -> TransactionRecord {
    let empty = ready(init_producer_id(
        None,
        &init(60_000, None),
        MAX_TIMEOUT_MS,
        7,
        0,
    ));
    add(&empty, (7, 0), &partitions(&[("a", 0), ("b", 1)]), 10)
        .expect("add")
        .expect("changed")
}

#[test]
fn a_new_id_starts_empty_at_epoch_zero_and_each_init_bumps() {
    let first = ready(init_producer_id(
        None,
        &init(60_000, None),
        MAX_TIMEOUT_MS,
        7,
        1,
    ));
    assert_eq!(
        (first.producer_id, first.producer_epoch, first.state),
        (7, 0, TxnState::Empty)
    );
    let second = ready(init_producer_id(
        Some(&first),
        &init(30_000, None),
        MAX_TIMEOUT_MS,
        8,
        2,
    ));
    assert_eq!((second.producer_id, second.producer_epoch), (7, 1));
    assert_eq!(second.timeout_ms, 30_000);
    for timeout_ms in [0, -1, MAX_TIMEOUT_MS + 1] {
        assert_eq!(
            init_producer_id(Some(&second), &init(timeout_ms, None), MAX_TIMEOUT_MS, 9, 3),
            Err(TxnError::InvalidTransactionTimeout)
        );
    }
}

#[test]
fn init_during_an_open_transaction_aborts_it_under_a_bumped_epoch() {
    let open = ongoing();
    let Ok(InitOutcome::Fencing(fencing)) =
        init_producer_id(Some(&open), &init(60_000, None), MAX_TIMEOUT_MS, 99, 20)
    else {
        panic!("expected fencing");
    };
    assert_eq!(fencing.state, TxnState::PrepareAbort);
    assert_eq!((fencing.producer_id, fencing.producer_epoch), (7, 1));
    assert_eq!(fencing.partition_list(), open.partition_list());
    // The old instance can no longer end it, and the new one waits for the markers.
    assert_eq!(
        end(&fencing, (7, 0), true, 21),
        Err(TxnError::ProducerFenced)
    );
    assert_eq!(
        init_producer_id(Some(&fencing), &init(60_000, None), MAX_TIMEOUT_MS, 99, 22),
        Err(TxnError::ConcurrentTransactions)
    );
    let aborted = complete(&fencing, 23).expect("complete");
    assert_eq!(aborted.state, TxnState::CompleteAbort);
    assert!(aborted.partitions.is_empty());
    let fresh = ready(init_producer_id(
        Some(&aborted),
        &init(60_000, None),
        MAX_TIMEOUT_MS,
        99,
        24,
    ));
    assert_eq!((fresh.producer_id, fresh.producer_epoch), (7, 2));
}

#[test]
fn kip_360_recovery_bumps_once_and_a_retry_gets_the_same_answer() {
    let empty = ready(init_producer_id(
        None,
        &init(60_000, None),
        MAX_TIMEOUT_MS,
        7,
        0,
    ));
    let bumped = ready(init_producer_id(
        Some(&empty),
        &init(60_000, Some((7, 0))),
        MAX_TIMEOUT_MS,
        8,
        1,
    ));
    assert_eq!((bumped.producer_epoch, bumped.last_producer_epoch), (1, 0));
    // The answer was lost; the same request again.
    let retried = ready(init_producer_id(
        Some(&bumped),
        &init(60_000, Some((7, 0))),
        MAX_TIMEOUT_MS,
        9,
        2,
    ));
    assert_eq!(retried, bumped);
    // Another producer id, or an epoch that is neither current nor the last: fenced.
    assert_eq!(
        init_producer_id(
            Some(&bumped),
            &init(60_000, Some((6, 1))),
            MAX_TIMEOUT_MS,
            9,
            2
        ),
        Err(TxnError::ProducerFenced)
    );
    assert_eq!(
        init_producer_id(
            Some(&bumped),
            &init(60_000, Some((7, 5))),
            MAX_TIMEOUT_MS,
            9,
            2
        ),
        Err(TxnError::ProducerFenced)
    );
}

#[test]
fn exhausted_epochs_rotate_to_a_fresh_producer_id() {
    let mut record = ready(init_producer_id(
        None,
        &init(60_000, None),
        MAX_TIMEOUT_MS,
        7,
        0,
    ));
    record.producer_epoch = EPOCH_EXHAUSTED;
    let rotated = ready(init_producer_id(
        Some(&record),
        &init(60_000, Some((7, EPOCH_EXHAUSTED))),
        MAX_TIMEOUT_MS,
        50,
        1,
    ));
    assert_eq!((rotated.producer_id, rotated.producer_epoch), (50, 0));
    assert_eq!(rotated.previous_producer_id, 7);
    // A retry of that request is recognised after the rotation.
    let retried = ready(init_producer_id(
        Some(&rotated),
        &init(60_000, Some((7, EPOCH_EXHAUSTED))),
        MAX_TIMEOUT_MS,
        51,
        2,
    ));
    assert_eq!(retried, rotated);
}

#[test]
fn add_partitions_checks_the_producer_and_writes_only_news() {
    let open = ongoing();
    assert_eq!(open.started_ms, 10);
    assert_eq!(add(&open, (7, 0), &partitions(&[("a", 0)]), 11), Ok(None));
    let more = add(&open, (7, 0), &partitions(&[("c", 2)]), 12)
        .expect("add")
        .expect("changed");
    assert_eq!(more.partition_list().len(), 3);
    assert_eq!(
        more.started_ms, 10,
        "the transaction began at its first add"
    );
    assert_eq!(
        add(&open, (8, 0), &partitions(&[("c", 2)]), 12),
        Err(TxnError::InvalidProducerIdMapping)
    );
    assert_eq!(
        add(&open, (7, 1), &partitions(&[("c", 2)]), 12),
        Err(TxnError::ProducerFenced)
    );
    let group = add(&open, (7, 0), &Addition::Group("g".into()), 13)
        .expect("add")
        .expect("changed");
    assert!(group.groups.contains("g"));
    let Ok(EndOutcome::Prepared(committing)) = end(&group, (7, 0), true, 14) else {
        panic!("prepared");
    };
    assert_eq!(
        add(&committing, (7, 0), &partitions(&[("a", 0)]), 15),
        Err(TxnError::ConcurrentTransactions)
    );
}

#[test]
fn verification_accepts_only_partitions_of_the_open_transaction() {
    let open = ongoing();
    assert_eq!(verify(&open, (7, 0), "a", 0), Ok(()));
    assert_eq!(
        verify(&open, (7, 0), "a", 1),
        Err(TxnError::InvalidTxnState)
    );
    assert_eq!(verify(&open, (7, 1), "a", 0), Err(TxnError::ProducerFenced));
    let Ok(EndOutcome::Prepared(committing)) = end(&open, (7, 0), true, 14) else {
        panic!("prepared");
    };
    assert_eq!(
        verify(&committing, (7, 0), "a", 0),
        Err(TxnError::ConcurrentTransactions)
    );
    let done = complete(&committing, 15).expect("complete");
    assert_eq!(
        verify(&done, (7, 0), "a", 0),
        Err(TxnError::InvalidTxnState)
    );
}

#[test]
fn offsets_commit_only_for_groups_added_to_the_open_transaction() {
    let open = ongoing();
    assert_eq!(
        verify_group(&open, (7, 0), "g"),
        Err(TxnError::InvalidTxnState)
    );
    let with_group = add(&open, (7, 0), &Addition::Group("g".into()), 11)
        .expect("add")
        .expect("changed");
    assert_eq!(verify_group(&with_group, (7, 0), "g"), Ok(()));
    assert_eq!(
        verify_group(&with_group, (7, 1), "g"),
        Err(TxnError::ProducerFenced)
    );
}

#[test]
fn end_txn_answers_as_kafka_in_every_state() {
    use TxnState::*;
    let open = ongoing();
    let prepared = |commit| match end(&open, (7, 0), commit, 20) {
        Ok(EndOutcome::Prepared(r)) => r,
        other => panic!("{other:?}"),
    };
    let prepare_commit = prepared(true);
    let prepare_abort = prepared(false);
    assert_eq!(prepare_commit.state, PrepareCommit);
    let complete_commit = complete(&prepare_commit, 21).expect("complete");
    let complete_abort = complete(&prepare_abort, 21).expect("complete");
    let empty = ready(init_producer_id(
        None,
        &init(60_000, None),
        MAX_TIMEOUT_MS,
        7,
        0,
    ));
    let cases: [(&TransactionRecord, bool, Result<EndOutcome, TxnError>); 10] = [
        (&complete_commit, true, Ok(EndOutcome::AlreadyDone)),
        (&complete_commit, false, Err(TxnError::InvalidTxnState)),
        (&complete_abort, false, Ok(EndOutcome::AlreadyDone)),
        (&complete_abort, true, Err(TxnError::InvalidTxnState)),
        (&prepare_commit, true, Err(TxnError::ConcurrentTransactions)),
        (&prepare_commit, false, Err(TxnError::InvalidTxnState)),
        (&prepare_abort, false, Err(TxnError::ConcurrentTransactions)),
        (&prepare_abort, true, Err(TxnError::InvalidTxnState)),
        (&empty, true, Err(TxnError::InvalidTxnState)),
        (&empty, false, Err(TxnError::InvalidTxnState)),
    ];
    for (record, commit, expected) in cases {
        assert_eq!(
            end(record, (7, 0), commit, 30),
            expected,
            "{:?} commit={commit}",
            record.state
        );
    }
    assert_eq!(end(&open, (7, 3), true, 30), Err(TxnError::ProducerFenced));
    assert_eq!(complete(&open, 30), None);
}

#[test]
fn every_way_to_prepare_an_ending_counts_it() {
    let open = ongoing();
    assert_eq!(open.ends, 0);
    let Ok(EndOutcome::Prepared(committing)) = end(&open, (7, 0), true, 20) else {
        panic!("EndTxn prepares")
    };
    assert_eq!(committing.ends, 1);
    let done = complete(&committing, 30).expect("complete");
    assert_eq!(done.ends, 1, "completing is no new ending");
    let reopened = add(&done, (7, 0), &partitions(&[("a", 0)]), 40)
        .expect("add")
        .expect("changed");
    assert_eq!(
        abort_timed_out(&reopened, 40 + 60_001).expect("due").ends,
        2
    );
    let fenced = init_producer_id(Some(&reopened), &init(60_000, None), MAX_TIMEOUT_MS, 9, 50);
    let Ok(InitOutcome::Fencing(fencing)) = fenced else {
        panic!("a new instance fences the open transaction")
    };
    assert_eq!(fencing.ends, 2);
}

#[test]
fn timed_out_transactions_are_aborted_and_their_producer_fenced() {
    let open = ongoing();
    assert_eq!(abort_timed_out(&open, 10 + 60_000), None);
    let aborting = abort_timed_out(&open, 10 + 60_001).expect("due");
    assert_eq!(aborting.state, TxnState::PrepareAbort);
    assert_eq!(aborting.producer_epoch, 1);
    assert_eq!(
        end(&aborting, (7, 0), true, 60_100),
        Err(TxnError::ProducerFenced)
    );
}

#[test]
fn only_idle_ids_expire() {
    let open = ongoing();
    assert!(!open.expired(i64::MAX, 1));
    let empty = ready(init_producer_id(
        None,
        &init(60_000, None),
        MAX_TIMEOUT_MS,
        7,
        100,
    ));
    assert!(!empty.expired(150, 100));
    assert!(empty.expired(200, 100));
}

#[test]
fn the_record_round_trips_through_json() {
    let record = add(&ongoing(), (7, 0), &Addition::Group("g/1".into()), 11)
        .expect("add")
        .expect("changed");
    let encoded = serde_json::to_vec(&record).expect("encode");
    let decoded: TransactionRecord = serde_json::from_slice(&encoded).expect("decode");
    assert_eq!(decoded, record);
}

/// What a client instance may do in the property test below.
#[derive(Debug, Clone)]
enum Op {
    /// InitProducerId; with `recover`, KIP-360 style with the instance's own id and epoch.
    Init {
        instance: usize,
        recover: bool,
    },
    Add {
        instance: usize,
        partition: i32,
    },
    End {
        instance: usize,
        commit: bool,
    },
    /// The coordinator finishes the markers of a prepared transaction.
    Complete,
    /// Time passes; timed-out transactions are aborted.
    Tick {
        ms: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..2, any::<bool>()).prop_map(|(instance, recover)| Op::Init { instance, recover }),
        (0usize..2, 0i32..3).prop_map(|(instance, partition)| Op::Add {
            instance,
            partition
        }),
        (0usize..2, any::<bool>()).prop_map(|(instance, commit)| Op::End { instance, commit }),
        Just(Op::Complete),
        (1i64..40_000).prop_map(|ms| Op::Tick { ms }),
    ]
}

proptest! {
    /// Two instances of one transactional id against the coordinator's rules: every stored
    /// change follows a valid edge; epochs of a producer id never go back; a (producer id,
    /// epoch) is handed to one instance only; an instance that is not current can change
    /// nothing; a commit is prepared only by the current instance's EndTxn(commit); prepared
    /// states name their partitions and finished ones none.
    #[test]
    fn coordinator_transitions_keep_kafkas_promises(
        start_epoch in prop_oneof![Just(0i16), (EPOCH_EXHAUSTED - 3)..=EPOCH_EXHAUSTED],
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut now = 1_000i64;
        let mut next_fresh_id = 100i64;
        let mut record: Option<TransactionRecord> = None;
        let mut held: [Option<ProducerIdEpoch>; 2] = [None, None];
        let mut handed_out: Vec<ProducerIdEpoch> = Vec::new();
        // Pairs an InitProducerId made stale (every pair handed out before it).
        let mut retired: Vec<ProducerIdEpoch> = Vec::new();
        let mut seeded = false;
        for op in ops {
            let before = record.clone();
            let mut commit_by_current = false;
            match op {
                Op::Init { instance, recover } => {
                    let expected = if recover { held[instance] } else { None };
                    let fresh = next_fresh_id;
                    next_fresh_id += 1;
                    match init_producer_id(record.as_ref(), &init(30_000, expected), MAX_TIMEOUT_MS, fresh, now) {
                        Ok(InitOutcome::Ready(mut next)) => {
                            if !seeded {
                                next.producer_epoch = start_epoch;
                                seeded = true;
                            }
                            let pair = (next.producer_id, next.producer_epoch);
                            let retry = record.as_ref() == Some(&next);
                            if !retry {
                                prop_assert!(!handed_out.contains(&pair), "{:?} handed out twice", pair);
                                retired.extend(handed_out.iter().copied());
                                handed_out.push(pair);
                            }
                            held[instance] = Some(pair);
                            record = Some(next);
                        }
                        Ok(InitOutcome::Fencing(next)) => {
                            prop_assert_eq!(next.state, TxnState::PrepareAbort);
                            retired.extend(handed_out.iter().copied());
                            record = Some(next);
                        }
                        Err(_) => {}
                    }
                }
                Op::Add { instance, partition } => {
                    if let (Some(current), Some(producer)) = (&record, held[instance]) {
                        let result = add(current, producer, &Addition::Partitions(vec![("t".into(), partition)]), now);
                        if let Ok(Some(next)) = result {
                            prop_assert_eq!((next.producer_id, next.producer_epoch), producer);
                            record = Some(next);
                        }
                    }
                }
                Op::End { instance, commit } => {
                    if let (Some(current), Some(producer)) = (&record, held[instance]) {
                        if let Ok(EndOutcome::Prepared(next)) = end(current, producer, commit, now) {
                            prop_assert_eq!((next.producer_id, next.producer_epoch), producer);
                            commit_by_current = commit;
                            record = Some(next);
                        }
                    }
                }
                Op::Complete => {
                    if let Some(next) = record.as_ref().and_then(|r| complete(r, now)) {
                        record = Some(next);
                    }
                }
                Op::Tick { ms } => {
                    now += ms;
                    if let Some(next) = record.as_ref().and_then(|r| abort_timed_out(r, now)) {
                        record = Some(next);
                    }
                }
            }
            if let Some(after) = &record {
                for pair in &retired {
                    prop_assert!(
                        add(after, *pair, &Addition::Group("g".into()), now).is_err(),
                        "{:?} was fenced by a later InitProducerId", pair
                    );
                    prop_assert!(end(after, *pair, true, now).is_err());
                    prop_assert!(end(after, *pair, false, now).is_err());
                }
            }
            let (Some(before), Some(after)) = (&before, &record) else { continue };
            if before == after {
                continue;
            }
            prop_assert!(
                before.state.may_become(after.state) || (before.state == TxnState::Ongoing && after.state == TxnState::Ongoing),
                "{:?} -> {:?}", before.state, after.state
            );
            if after.producer_id == before.producer_id {
                prop_assert!(after.producer_epoch >= before.producer_epoch);
            } else {
                prop_assert_eq!(after.previous_producer_id, before.producer_id);
            }
            if after.state == TxnState::PrepareCommit {
                prop_assert!(commit_by_current, "a commit prepared without EndTxn(commit)");
            }
            if after.state.is_prepared() || after.state == TxnState::Ongoing {
                prop_assert!(!after.partitions.is_empty() || !after.groups.is_empty());
            } else {
                prop_assert!(after.partitions.is_empty() && after.groups.is_empty());
            }
            // Only the instance holding the current pair moved it, unless the coordinator did
            // (markers, timeouts, fencing).
            for (i, pair) in held.iter().enumerate() {
                if let Some(pair) = pair {
                    let current = (after.producer_id, after.producer_epoch);
                    if *pair != current {
                        // A stale instance cannot add to or end the transaction.
                        prop_assert!(add(after, *pair, &Addition::Group("g".into()), now).is_err(), "instance {} is stale", i);
                        prop_assert!(end(after, *pair, true, now).is_err());
                    }
                }
            }
        }
    }
}
