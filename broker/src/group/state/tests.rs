use super::*;
use proptest::prelude::*;

fn settings() -> GroupSettings {
    GroupSettings {
        initial_rebalance_delay_ms: 100,
        min_session_timeout_ms: 10,
        max_session_timeout_ms: 100_000,
        max_size: 100,
    }
}

fn request(member_id: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 1_000,
        rebalance_timeout_ms: 500,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"md"))],
        require_known_member_id: false,
    }
}

fn join_new(group: &mut Group, id: &str, now: i64) -> String {
    let id = id.to_owned();
    match group
        .join(request(""), || id, &settings(), now)
        .expect("join")
    {
        Admission::Joined(id) => id,
        other => panic!("{other:?}"),
    }
}

/// Completes a new group's first join phase, whose members all joined before time 100: at the
/// delay (100) for one member; members joining after the first extend it once (to 200), as Kafka.
fn complete_initial(group: &mut Group) -> Vec<Joined> {
    assert!(group.try_complete_join(50).is_none(), "initial delay");
    if let Some(joined) = group.try_complete_join(100) {
        return joined;
    }
    assert!(
        group.try_complete_join(150).is_none(),
        "extended by one delay"
    );
    group
        .try_complete_join(200)
        .expect("complete after one extension")
}

/// Joins `ids` to an empty group and completes the first rebalance and sync.
fn stable_group(ids: &[&str]) -> Group {
    let mut group = Group::default();
    for id in ids {
        join_new(&mut group, id, 0);
    }
    let joined = complete_initial(&mut group);
    assert_eq!(joined.len(), ids.len());
    let leader = group.leader.clone().expect("leader");
    let assignments = ids
        .iter()
        .map(|id| (id.to_string(), Bytes::from(format!("a-{id}"))))
        .collect();
    assert!(matches!(
        group.sync(&leader, 1, assignments, 200),
        Ok(SyncOutcome::Completed(_))
    ));
    assert_eq!(group.phase, Phase::Stable);
    group
}

#[test]
fn first_rebalance_gathers_members_and_the_leader_assigns() {
    let mut group = Group::default();
    let a = join_new(&mut group, "a", 0);
    let b = join_new(&mut group, "b", 10);
    let joined = complete_initial(&mut group);
    assert_eq!(group.generation, 1);
    let leader = joined
        .iter()
        .find(|j| j.member_id == j.leader)
        .expect("leader");
    assert_eq!(leader.members.len(), 2, "the leader sees every member");
    let follower = joined
        .iter()
        .find(|j| j.member_id != j.leader)
        .expect("follower");
    assert!(follower.members.is_empty());
    assert_eq!(
        group.sync(&follower.member_id, 1, vec![], 100),
        Ok(SyncOutcome::Wait)
    );
    let outcome = group
        .sync(
            &leader.member_id,
            1,
            vec![
                (a.clone(), Bytes::from_static(b"A")),
                (b.clone(), Bytes::from_static(b"B")),
            ],
            100,
        )
        .expect("sync");
    assert!(matches!(outcome, SyncOutcome::Completed(ref all) if all.len() == 2));
    assert_eq!(
        group.sync(&a, 1, vec![], 101),
        Ok(SyncOutcome::Assigned(Bytes::from_static(b"A")))
    );
    assert_eq!(group.heartbeat(&b, 1, 102), Ok(()));
}

#[test]
fn fencing_errors_follow_kafka() {
    let mut group = stable_group(&["a", "b"]);
    assert_eq!(
        group.heartbeat("nobody", 1, 200),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        group.heartbeat("a", 0, 200),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(group.check_commit("a", 1), Ok(()));
    assert_eq!(group.check_commit("", -1), Err(GroupError::UnknownMemberId));
    // A third member arrives: the others learn of the rebalance from their heartbeat.
    join_new(&mut group, "c", 300);
    assert_eq!(group.phase, Phase::PreparingRebalance);
    assert_eq!(
        group.heartbeat("a", 1, 301),
        Err(GroupError::RebalanceInProgress)
    );
    assert_eq!(
        group.check_commit("a", 1),
        Ok(()),
        "commits on revocation are accepted"
    );
    // Concurrent rejoins during the rebalance are all accepted.
    group
        .join(request("a"), || unreachable!(), &settings(), 302)
        .expect("a rejoins");
    group
        .join(request("b"), || unreachable!(), &settings(), 303)
        .expect("b rejoins");
    let joined = group.try_complete_join(303).expect("everyone rejoined");
    assert_eq!(joined.len(), 3);
    assert_eq!(group.generation, 2);
    assert_eq!(
        group.join(request("zzz"), || unreachable!(), &settings(), 304),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn members_that_do_not_rejoin_are_dropped_at_the_deadline() {
    let mut group = stable_group(&["a", "b"]);
    join_new(&mut group, "c", 1_000);
    group
        .join(request("a"), || unreachable!(), &settings(), 1_001)
        .expect("a rejoins");
    assert!(
        group.try_complete_join(1_100).is_none(),
        "b may still rejoin"
    );
    let joined = group
        .try_complete_join(1_501)
        .expect("rebalance timeout passed");
    let ids: Vec<_> = joined.iter().map(|j| j.member_id.clone()).collect();
    assert_eq!(ids, ["a", "c"]);
    assert!(!group.members.contains_key("b"));
}

#[test]
fn expired_sessions_and_leaves_trigger_rebalances() {
    let mut group = stable_group(&["a", "b"]);
    group.heartbeat("a", 1, 900).expect("a is alive");
    assert!(
        group.expire(950).is_empty(),
        "b was last seen at 200 (when the join completed) with a 1 s session"
    );
    assert_eq!(group.expire(1_201), vec!["b".to_owned()]);
    assert_eq!(group.phase, Phase::PreparingRebalance);
    group
        .join(request("a"), || unreachable!(), &settings(), 1_202)
        .expect("rejoin");
    assert_eq!(group.try_complete_join(1_202).expect("complete").len(), 1);
    group
        .sync("a", 2, vec![("a".into(), Bytes::new())], 1_203)
        .expect("sync");
    group.leave("a", 1_300).expect("leave");
    assert_eq!(group.phase, Phase::Empty);
    assert!(group.members.is_empty());
    assert_eq!(
        group.check_commit("", -1),
        Ok(()),
        "standalone commits once empty"
    );
}

#[test]
fn static_members_take_their_old_place() {
    let mut group = Group::default();
    let mut static_join = request("");
    static_join.instance_id = Some("i-1".into());
    group
        .join(static_join.clone(), || "m1".into(), &settings(), 0)
        .expect("join");
    complete_initial(&mut group);
    group
        .join(static_join, || "m2".into(), &settings(), 200)
        .expect("rejoin after restart");
    assert_eq!(group.members.keys().collect::<Vec<_>>(), ["m2"]);
}

#[test]
fn one_protocol_must_be_common_to_all_members() {
    let mut group = Group::default();
    let with = |protocols: &[&str]| {
        let mut r = request("");
        r.protocols = protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::new()))
            .collect();
        r
    };
    group
        .join(
            with(&["range", "roundrobin"]),
            || "a".into(),
            &settings(),
            0,
        )
        .expect("a");
    group
        .join(with(&["range", "sticky"]), || "b".into(), &settings(), 0)
        .expect("b");
    // Overlaps with each member pairwise, but nothing is common to all three.
    assert_eq!(
        group.join(
            with(&["roundrobin", "sticky"]),
            || "c".into(),
            &settings(),
            0
        ),
        Err(GroupError::InconsistentGroupProtocol)
    );
    let joined = complete_initial(&mut group);
    assert!(joined.iter().all(|j| j.protocol == "range"));
}

#[test]
fn protocols_must_overlap() {
    let mut group = stable_group(&["a"]);
    let mut other = request("");
    other.protocols = vec![("roundrobin".into(), Bytes::new())];
    assert_eq!(
        group.join(other, || "x".into(), &settings(), 10),
        Err(GroupError::InconsistentGroupProtocol)
    );
    let mut short = request("");
    short.session_timeout_ms = 1;
    assert_eq!(
        group.join(short, || "y".into(), &settings(), 10),
        Err(GroupError::InvalidSessionTimeout)
    );
}

proptest! {
    /// Whatever the interleaving of joins, leaves, heartbeats and time, the group stays
    /// consistent: the generation never decreases, a stable group's leader is a member, and a
    /// completed join answers exactly the members that remain.
    #[test]
    fn invariants_hold_under_random_operations(ops in proptest::collection::vec((0u8..5, 0usize..4, 0i64..400), 1..80)) {
        let mut group = Group::default();
        let mut now = 0;
        let names = ["a", "b", "c", "d"];
        let mut last_generation = 0;
        for (op, who, dt) in ops {
            now += dt;
            let id = names[who];
            match op {
                0 => {
                    let known = group.members.contains_key(id);
                    let req = request(if known { id } else { "" });
                    let _ = group.join(req, || id.to_owned(), &settings(), now);
                }
                1 => { let _ = group.leave(id, now); }
                2 => { let _ = group.heartbeat(id, group.generation, now); }
                3 => { group.expire(now); }
                _ => {
                    if let Some(joined) = group.try_complete_join(now) {
                        let ids: Vec<_> = joined.iter().map(|j| j.member_id.clone()).collect();
                        let members: Vec<_> = group.members.keys().cloned().collect();
                        prop_assert_eq!(ids, members);
                        if let Some(leader) = group.leader.clone() {
                            let assignments = group.members.keys().map(|m| (m.clone(), Bytes::new())).collect();
                            let _ = group.sync(&leader, group.generation, assignments, now);
                        }
                    }
                }
            }
            prop_assert!(group.generation >= last_generation);
            last_generation = group.generation;
            if group.phase == Phase::Stable || group.phase == Phase::CompletingRebalance {
                let leader = group.leader.clone();
                prop_assert!(leader.is_some_and(|l| group.members.contains_key(&l)));
            }
            if group.phase == Phase::Empty {
                prop_assert!(group.members.is_empty());
            }
        }
    }
}

#[test]
fn a_static_member_rejoining_unchanged_keeps_its_assignment_without_a_rebalance() {
    let mut group = Group::default();
    let mut static_join = request("");
    static_join.instance_id = Some("pod-0".into());
    group
        .join(static_join.clone(), || "m1".into(), &settings(), 0)
        .expect("join");
    join_new(&mut group, "b", 0);
    complete_initial(&mut group);
    let leader = group.leader.clone().expect("leader");
    let assignments = vec![
        ("m1".to_owned(), Bytes::from_static(b"P0")),
        ("b".to_owned(), Bytes::from_static(b"P1")),
    ];
    group.sync(&leader, 1, assignments, 100).expect("sync");
    // The pod restarts: same instance id, new process, no member id.
    let joined = group
        .rejoin_static(&static_join, || "m2".into(), 200)
        .expect("immediate rejoin");
    assert_eq!((joined.member_id.as_str(), joined.generation), ("m2", 1));
    assert_eq!(group.phase, Phase::Stable, "no rebalance");
    assert_eq!(group.generation, 1);
    assert_eq!(
        group.sync("m2", 1, vec![], 201),
        Ok(SyncOutcome::Assigned(Bytes::from_static(b"P0")))
    );
    assert_eq!(
        group.heartbeat("b", 1, 201),
        Ok(()),
        "the other member is undisturbed"
    );
    // The old process, if it is still around, is fenced.
    assert_eq!(
        group.check_instance("m1", Some("pod-0")),
        Err(GroupError::FencedInstanceId)
    );
    assert_eq!(group.check_instance("m2", Some("pod-0")), Ok(()));
    // Changed protocols need a real rebalance.
    let mut changed = static_join.clone();
    changed.protocols = vec![("range".into(), Bytes::from_static(b"new subscription"))];
    assert!(group.rejoin_static(&changed, || "m3".into(), 300).is_none());
}

#[test]
fn v4_joins_without_an_id_get_one_first_and_unused_ids_lapse() {
    let mut group = Group::default();
    let mut first = request("");
    first.require_known_member_id = true;
    let id = match group.join(first.clone(), || "m-1".into(), &settings(), 0) {
        Ok(Admission::MemberIdRequired(id)) => id,
        other => panic!("{other:?}"),
    };
    assert!(
        group.members.is_empty(),
        "no member before it joins with its id"
    );
    assert_eq!(group.phase, Phase::Empty);
    // A retried first join (its answer was lost) gets another id; the first one never
    // becomes a member, so no ghost waits in the rebalance.
    assert!(matches!(
        group.join(first.clone(), || "m-2".into(), &settings(), 5),
        Ok(Admission::MemberIdRequired(_))
    ));
    let mut second = first.clone();
    second.member_id = id.clone();
    assert_eq!(
        group.join(second.clone(), unreachable_id, &settings(), 10),
        Ok(Admission::Joined(id.clone()))
    );
    assert_eq!(group.members.keys().collect::<Vec<_>>(), vec![&id]);
    // The unused id lapses after a session; joining with it then is UNKNOWN_MEMBER_ID.
    group.expire(2_000);
    let mut stale = first.clone();
    stale.member_id = "m-2".into();
    assert_eq!(
        group.join(stale, unreachable_id, &settings(), 2_000),
        Err(GroupError::UnknownMemberId)
    );
    // Static members skip the step.
    let mut fresh = Group::default();
    let mut static_member = first;
    static_member.instance_id = Some("i-1".into());
    assert_eq!(
        fresh.join(static_member, || "s-1".into(), &settings(), 0),
        Ok(Admission::Joined("s-1".into()))
    );
}

fn unreachable_id() -> String {
    panic!("a known member id needs no new one")
}

#[test]
fn members_waiting_for_the_leaders_assignment_do_not_expire() {
    let mut group = Group::default();
    let a = join_new(&mut group, "a", 0);
    let b = join_new(&mut group, "b", 0);
    complete_initial(&mut group);
    let leader = group.leader.clone().expect("leader");
    let follower = if leader == a { b } else { a };
    assert_eq!(group.sync(&follower, 1, vec![], 100), Ok(SyncOutcome::Wait));
    // The leader is slow but alive; the waiting follower cannot heartbeat meanwhile.
    group.heartbeat(&leader, 1, 900).expect("leader heartbeat");
    assert!(
        group.expire(1_500).is_empty(),
        "the waiting follower expired"
    );
    assert_eq!(group.phase, Phase::CompletingRebalance);
    // A leader that never syncs expires, and the follower is told to rejoin.
    assert_eq!(group.expire(2_000), vec![leader]);
    assert_eq!(group.phase, Phase::PreparingRebalance);
}

#[test]
fn a_full_group_refuses_new_members_but_keeps_its_own() {
    let limits = GroupSettings {
        max_size: 2,
        ..settings()
    };
    let mut group = Group::default();
    for id in ["a", "b"] {
        group
            .join(request(""), || id.into(), &limits, 0)
            .expect("join");
    }
    assert_eq!(
        group.join(request(""), || "c".into(), &limits, 0),
        Err(GroupError::GroupMaxSizeReached)
    );
    assert_eq!(
        group.join(request("a"), unreachable_id, &limits, 1),
        Ok(Admission::Joined("a".into()))
    );
}

#[test]
fn a_member_repeating_its_join_unchanged_gets_the_current_answer_without_a_rebalance() {
    let mut group = stable_group(&["a", "b"]);
    let leader = group.leader.clone().expect("leader");
    let follower = if leader == "a" { "b" } else { "a" };
    // A follower of a stable group that lost its JoinGroup answer.
    match group.join(request(follower), unreachable_id, &settings(), 200) {
        Ok(Admission::Current(joined)) => {
            assert_eq!(
                (joined.generation, joined.leader.as_str()),
                (1, leader.as_str())
            );
            assert!(joined.members.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(group.phase, Phase::Stable);
    // Changed protocols, or the leader's join, start a rebalance.
    let mut changed = request(follower);
    changed.protocols = vec![("range".into(), Bytes::from_static(b"other"))];
    assert_eq!(
        group.join(changed, unreachable_id, &settings(), 210),
        Ok(Admission::Joined(follower.into()))
    );
    assert_eq!(group.phase, Phase::PreparingRebalance);
    let mut group = stable_group(&["a", "b"]);
    let leader = group.leader.clone().expect("leader");
    assert_eq!(
        group.join(request(&leader), unreachable_id, &settings(), 200),
        Ok(Admission::Joined(leader.clone()))
    );
    assert_eq!(group.phase, Phase::PreparingRebalance);
    // While the leader's assignment is due, the leader asking again gets the roster again.
    group
        .join(
            request(follower_of(&leader)),
            unreachable_id,
            &settings(),
            210,
        )
        .expect("rejoin");
    group.try_complete_join(220).expect("complete");
    match group.join(request(&leader), unreachable_id, &settings(), 230) {
        Ok(Admission::Current(joined)) => assert_eq!(joined.members.len(), 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(group.phase, Phase::CompletingRebalance);
}

fn follower_of(leader: &str) -> &'static str {
    if leader == "a" {
        "b"
    } else {
        "a"
    }
}

#[test]
fn sync_v5_must_name_the_groups_protocol() {
    let group = stable_group(&["a"]);
    assert_eq!(group.sync_protocol(Some("consumer"), Some("range")), Ok(()));
    assert_eq!(
        group.sync_protocol(None, None),
        Ok(()),
        "older versions name nothing"
    );
    assert_eq!(
        group.sync_protocol(Some("connect"), Some("range")),
        Err(GroupError::InconsistentGroupProtocol)
    );
    assert_eq!(
        group.sync_protocol(Some("consumer"), Some("roundrobin")),
        Err(GroupError::InconsistentGroupProtocol)
    );
}

#[test]
fn a_member_leaving_with_only_a_handed_out_id_no_longer_holds_the_rebalance() {
    let mut group = stable_group(&["a"]);
    let mut first = request("");
    first.require_known_member_id = true;
    let pending = match group.join(first, || "p".into(), &settings(), 200) {
        Ok(Admission::MemberIdRequired(id)) => id,
        other => panic!("{other:?}"),
    };
    // "a" rejoins (say, new metadata): the join phase waits for the handed-out id...
    let mut changed = request("a");
    changed.protocols = vec![("range".into(), Bytes::from_static(b"new"))];
    group
        .join(changed, unreachable_id, &settings(), 210)
        .expect("rejoin");
    assert!(
        group.try_complete_join(220).is_none(),
        "waits for the pending member"
    );
    // ...until that client leaves without ever joining.
    assert_eq!(group.leave(&pending, 230), Ok(()));
    assert!(group.try_complete_join(240).is_some());
}

/// A librdkafka cooperative-sticky member: its subscription metadata carries what it owns.
fn cooperative(member_id: &str, owned: &'static [u8]) -> JoinRequest {
    JoinRequest {
        session_timeout_ms: 45_000,
        rebalance_timeout_ms: 300_000,
        protocols: vec![("cooperative-sticky".into(), Bytes::from_static(owned))],
        require_known_member_id: true,
        ..request(member_id)
    }
}

fn joined(admission: Result<Admission, GroupError>) -> String {
    match admission {
        Ok(Admission::Joined(id)) => id,
        other => panic!("expected a join that waits for the rebalance, got {other:?}"),
    }
}

/// The exact sequence two librdkafka cooperative-sticky members send when the second joins a
/// stable group (KIP-429): the first rebalance completes only once the first member rejoined
/// with what it owns, the newcomer gets what the leader gave it (nothing: the moved partition
/// is assigned to nobody until revoked), and the first member's rejoin after revoking runs a
/// second rebalance in which the newcomer gets the partition.
#[test]
fn a_cooperative_newcomer_waits_for_the_owner_to_rejoin_and_revoke() {
    let mut group = Group::default();
    let c1 = match group.join(
        cooperative("", b"owns nothing"),
        || "c1".into(),
        &settings(),
        0,
    ) {
        Ok(Admission::MemberIdRequired(id)) => id,
        other => panic!("{other:?}"),
    };
    joined(group.join(
        cooperative(&c1, b"owns nothing"),
        unreachable_id,
        &settings(),
        1,
    ));
    let first = group
        .try_complete_join(101)
        .expect("the initial delay passed");
    assert_eq!((first.len(), group.generation), (1, 1));
    let everything = Bytes::from_static(b"P0 P1");
    group
        .sync(&c1, 1, vec![(c1.clone(), everything.clone())], 102)
        .expect("sync");
    // The newcomer's first JoinGroup only gets an id: no rebalance yet, the owner is undisturbed.
    let c2 = match group.join(
        cooperative("", b"owns nothing"),
        || "c2".into(),
        &settings(),
        1_000,
    ) {
        Ok(Admission::MemberIdRequired(id)) => id,
        other => panic!("{other:?}"),
    };
    assert_eq!(group.phase, Phase::Stable);
    assert_eq!(group.heartbeat(&c1, 1, 1_001), Ok(()));
    // It joins with its id: the rebalance starts, and must wait for the owner.
    joined(group.join(
        cooperative(&c2, b"owns nothing"),
        unreachable_id,
        &settings(),
        1_002,
    ));
    assert_eq!(group.phase, Phase::PreparingRebalance);
    assert!(
        group.try_complete_join(1_003).is_none(),
        "completed without the first member"
    );
    assert!(
        group.try_complete_join(200_000).is_none(),
        "completed before the rebalance timeout"
    );
    // The owner learns of it from its heartbeat and rejoins with what it owns.
    assert_eq!(
        group.heartbeat(&c1, 1, 200_001),
        Err(GroupError::RebalanceInProgress)
    );
    joined(group.join(
        cooperative(&c1, b"owns P0 P1"),
        unreachable_id,
        &settings(),
        200_002,
    ));
    let second = group.try_complete_join(200_002).expect("everyone rejoined");
    assert_eq!(group.generation, 2);
    let leader = second
        .iter()
        .find(|j| j.member_id == c1)
        .expect("c1 answered");
    assert_eq!(leader.leader, c1, "the owner still leads");
    assert!(
        leader
            .members
            .iter()
            .any(|(id, _, md)| *id == c1 && md.as_ref() == b"owns P0 P1"),
        "the leader sees what it owns now: {:?}",
        leader.members
    );
    let newcomer = second
        .iter()
        .find(|j| j.member_id == c2)
        .expect("c2 answered");
    assert_eq!((newcomer.generation, newcomer.members.len()), (2, 0));
    // The newcomer syncs first and waits; the leader keeps P1 and gives P0 to nobody yet.
    assert_eq!(group.sync(&c2, 2, vec![], 200_003), Ok(SyncOutcome::Wait));
    let keep = Bytes::from_static(b"P1");
    let nothing = Bytes::from_static(b"no partitions");
    match group.sync(
        &c1,
        2,
        vec![(c1.clone(), keep.clone()), (c2.clone(), nothing.clone())],
        200_004,
    ) {
        Ok(SyncOutcome::Completed(all)) => assert_eq!(
            all,
            vec![(c1.clone(), keep.clone()), (c2.clone(), nothing.clone())],
            "assignments delivered as the leader computed them"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(group.phase, Phase::Stable);
    // The owner revokes P0 and rejoins: a second rebalance, in which the newcomer gets P0.
    joined(group.join(
        cooperative(&c1, b"owns P1"),
        unreachable_id,
        &settings(),
        200_100,
    ));
    assert_eq!(group.phase, Phase::PreparingRebalance);
    assert!(group.try_complete_join(200_101).is_none(), "waits for c2");
    assert_eq!(
        group.heartbeat(&c2, 2, 200_102),
        Err(GroupError::RebalanceInProgress)
    );
    joined(group.join(
        cooperative(&c2, b"owns nothing"),
        unreachable_id,
        &settings(),
        200_103,
    ));
    let third = group.try_complete_join(200_103).expect("everyone rejoined");
    assert_eq!((third.len(), group.generation), (2, 3));
    let moved = Bytes::from_static(b"P0");
    group
        .sync(
            &c1,
            3,
            vec![(c1.clone(), keep.clone()), (c2.clone(), moved.clone())],
            200_104,
        )
        .expect("leader sync");
    assert_eq!(
        group.sync(&c2, 3, vec![], 200_105),
        Ok(SyncOutcome::Assigned(moved))
    );
}

/// As Kafka's `group.initial.rebalance.delay.ms`: a new group's first join phase waits one
/// more delay each time a new member joined during the last one (members starting together
/// land in one generation instead of one rebalance each), but no longer than the rebalance
/// timeout; an id only handed out (MEMBER_ID_REQUIRED) does not extend it.
#[test]
fn new_members_extend_the_initial_delay_within_the_rebalance_timeout() {
    let mut group = Group::default();
    join_new(&mut group, "a", 0);
    let mut pending = request("");
    pending.require_known_member_id = true;
    assert!(matches!(
        group.join(pending, || "p".into(), &settings(), 10),
        Ok(Admission::MemberIdRequired(_))
    ));
    assert!(group.try_complete_join(99).is_none(), "the first delay");
    join_new(&mut group, "b", 99);
    assert!(group.try_complete_join(100).is_none(), "b extends it");
    join_new(&mut group, "c", 150);
    assert!(group.try_complete_join(200).is_none(), "c extends it again");
    let joined = group.try_complete_join(300).expect("nobody new since 200");
    assert_eq!(joined.len(), 3);
    assert_eq!(group.generation, 1);

    // Members arriving without end: the rebalance timeout (500) bounds the waits.
    let mut group = Group::default();
    join_new(&mut group, "m0", 0);
    let mut completed_at = None;
    for step in 1..20 {
        let now = step * 100;
        join_new(&mut group, &format!("m{step}"), now - 1);
        if group.try_complete_join(now).is_some() {
            completed_at = Some(now);
            break;
        }
    }
    assert_eq!(
        completed_at,
        Some(500),
        "the rebalance timeout bounds the waits"
    );
}
