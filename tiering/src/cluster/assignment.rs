//! Which broker should lead each partition, and what this broker should do about it.
//!
//! Pure functions, no I/O. The preferred leader of a partition is chosen by rendezvous hashing
//! over the live brokers: every broker computes the same answer from the same membership, and
//! when a broker joins or leaves only the partitions it gains or loses move.

/// The live broker that should lead `partition` of `topic`, if any broker is live.
pub fn preferred_leader(topic: &str, partition: i32, live: &[i32]) -> Option<i32> {
    live.iter()
        .copied()
        .max_by_key(|broker| (score(topic, partition, *broker), *broker))
}

/// A hash that is the same on every broker and every build: FNV-1a over the inputs, then the
/// splitmix64 finalizer to spread the bits.
fn score(topic: &str, partition: i32, broker: i32) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = topic
        .bytes()
        .chain([0xff])
        .chain(partition.to_be_bytes())
        .chain(broker.to_be_bytes());
    let mut hash = bytes.fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    });
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// What this broker should do for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do.
    Keep,
    /// Take leadership: the partition has no live leader and this broker is preferred.
    Claim,
    /// Give leadership up: this broker leads but another live broker is preferred.
    Release,
}

/// Decides for one partition: `leader` is the leader recorded in its state (-1: none).
pub fn decide(me: i32, leader: i32, preferred: Option<i32>, live: &[i32]) -> Action {
    let leader_live = leader >= 0 && live.contains(&leader);
    match preferred {
        Some(p) if p == me && leader != me && !leader_live => Action::Claim,
        Some(p) if p != me && leader == me => Action::Release,
        // This broker leads but is not registered as live (its session lapsed): it keeps the
        // partition until someone else claims it, which fences it.
        _ => Action::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decisions() {
        let live = [1, 2, 3];
        assert_eq!(decide(1, -1, Some(1), &live), Action::Claim);
        assert_eq!(decide(1, 7, Some(1), &live), Action::Claim, "dead leader");
        assert_eq!(
            decide(1, 2, Some(1), &live),
            Action::Keep,
            "live leader hands over first"
        );
        assert_eq!(decide(2, 2, Some(1), &live), Action::Release);
        assert_eq!(decide(1, 1, Some(1), &live), Action::Keep);
        assert_eq!(decide(3, -1, Some(1), &live), Action::Keep);
        assert_eq!(decide(1, -1, None, &[]), Action::Keep);
    }

    #[test]
    fn spreads_partitions_over_brokers() {
        let live = [1, 2, 3];
        let mut counts = [0; 4];
        for p in 0..300 {
            counts[preferred_leader("topic", p, &live).expect("live") as usize] += 1;
        }
        assert!(
            counts[1..].iter().all(|c| (60..=140).contains(c)),
            "{counts:?}"
        );
    }

    proptest! {
        #[test]
        fn preferred_is_live_and_moves_only_what_it_must(
            partitions in 1i32..200,
            brokers in proptest::collection::btree_set(0i32..50, 1..8),
            joiner in 50i32..60,
        ) {
            let live: Vec<i32> = brokers.into_iter().collect();
            let mut with_joiner = live.clone();
            with_joiner.push(joiner);
            for p in 0..partitions {
                let before = preferred_leader("t", p, &live).expect("someone is live");
                prop_assert!(live.contains(&before));
                let after = preferred_leader("t", p, &with_joiner).expect("someone is live");
                // A join moves a partition only to the joiner.
                prop_assert!(after == before || after == joiner);
                // Order of the live list does not matter.
                let mut reversed = live.clone();
                reversed.reverse();
                prop_assert_eq!(preferred_leader("t", p, &reversed), Some(before));
            }
        }
    }
}
