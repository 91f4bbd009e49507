//! Runs the group state machine for the groups this broker coordinates: holds the members'
//! pending JoinGroup/SyncGroup answers and delivers them when the machine completes a phase,
//! and ticks time forward (session expiry, rebalance deadlines).
//!
//! Membership lives in memory: after a coordinator fails over, members rejoin the new one (as
//! with Kafka). Committed offsets are durable in the metadata store, not here.

use super::state::{
    Admission, Group, GroupError, GroupSettings, JoinRequest, Joined, Phase, SyncOutcome,
};
use bytes::Bytes;
use skiff_tiering::Clock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

type JoinReply = oneshot::Sender<Result<Joined, GroupError>>;
type SyncReply = oneshot::Sender<Result<Bytes, GroupError>>;
/// A SyncGroup answer: the assignment now, or the receiver it will arrive on.
type SyncAnswer = Result<Bytes, oneshot::Receiver<Result<Bytes, GroupError>>>;

/// Who sends a SyncGroup, and (v5) the protocol type and name it joined with.
#[derive(Debug, Clone, Copy)]
pub struct SyncMember<'a> {
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
    pub generation: i32,
    pub protocol_type: Option<&'a str>,
    pub protocol: Option<&'a str>,
}

#[derive(Default)]
struct Slot {
    group: Group,
    joins: HashMap<String, JoinReply>,
    syncs: HashMap<String, SyncReply>,
}

impl Slot {
    /// Delivers whatever the machine can answer now.
    fn drive(&mut self, now_ms: i64) {
        if let Some(joined) = self.group.try_complete_join(now_ms) {
            for answer in joined {
                if let Some(reply) = self.joins.remove(&answer.member_id) {
                    let _ = reply.send(Ok(answer));
                }
            }
            // Joiners that were dropped from the group meanwhile.
            for (_, reply) in self.joins.drain() {
                let _ = reply.send(Err(GroupError::UnknownMemberId));
            }
        }
        if self.group.phase == Phase::Empty {
            // Everyone left or expired while these joins waited.
            for (_, reply) in self.joins.drain() {
                let _ = reply.send(Err(GroupError::UnknownMemberId));
            }
        }
        // Syncs wait only while the leader's assignment is due; otherwise answer them now.
        if self.group.phase != Phase::CompletingRebalance {
            let error = if self.group.phase == Phase::Empty {
                GroupError::UnknownMemberId
            } else {
                GroupError::RebalanceInProgress
            };
            for (_, reply) in self.syncs.drain() {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// A summary for ListGroups/DescribeGroups and the admin API.
#[derive(Debug, Clone)]
pub struct GroupSummary {
    pub group_id: String,
    pub phase: Phase,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub members: Vec<MemberSummary>,
}

#[derive(Debug, Clone)]
pub struct MemberSummary {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The member's metadata for the group's protocol (a consumer's subscription).
    pub metadata: Bytes,
    pub assignment: Bytes,
}

pub struct Coordinator {
    groups: Mutex<HashMap<String, Slot>>,
    /// When each group last lost its last member here (for offsets retention).
    emptied_at: Mutex<HashMap<String, i64>>,
    settings: GroupSettings,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").finish_non_exhaustive()
    }
}

impl Coordinator {
    pub fn new(settings: GroupSettings, clock: Arc<dyn Clock>) -> Self {
        Self {
            groups: Mutex::new(HashMap::new()),
            emptied_at: Mutex::new(HashMap::new()),
            settings,
            clock,
        }
    }

    fn with_slot<T>(&self, group: &str, f: impl FnOnce(&mut Slot, i64) -> T) -> T {
        let now = self.clock.now_ms();
        let mut groups = self.groups.lock().expect("groups mutex poisoned");
        let slot = groups.entry(group.to_owned()).or_default();
        f(slot, now)
    }

    /// Runs `f` on a group that exists here; a group nobody joined answers UNKNOWN_MEMBER_ID
    /// (as Kafka) and is not created, so requests naming made-up groups cost no memory.
    fn with_existing_slot<T>(
        &self,
        group: &str,
        f: impl FnOnce(&mut Slot, i64) -> Result<T, GroupError>,
    ) -> Result<T, GroupError> {
        let now = self.clock.now_ms();
        let mut groups = self.groups.lock().expect("groups mutex poisoned");
        match groups.get_mut(group) {
            Some(slot) => f(slot, now),
            None => Err(GroupError::UnknownMemberId),
        }
    }

    /// JoinGroup: `Ok(Err(id))` asks the member to join again with `id` (MEMBER_ID_REQUIRED).
    pub async fn join(
        &self,
        group: &str,
        request: JoinRequest,
    ) -> Result<Result<Joined, String>, GroupError> {
        let client = request.client_id.clone();
        let settings = self.settings.clone();
        let immediate = self.with_slot(group, |slot, now| {
            slot.group.rejoin_static(
                &request,
                || format!("{client}-{}", uuid::Uuid::new_v4()),
                now,
            )
        });
        if let Some(joined) = immediate {
            return Ok(Ok(joined));
        }
        let receiver = self.with_slot(group, |slot, now| {
            let id = match slot.group.join(
                request,
                || format!("{client}-{}", uuid::Uuid::new_v4()),
                &settings,
                now,
            )? {
                Admission::Joined(id) => id,
                Admission::MemberIdRequired(id) => return Ok(Err(Err(id))),
                Admission::Current(joined) => return Ok(Err(Ok(joined))),
            };
            let (reply, receiver) = oneshot::channel();
            if let Some(previous) = slot.joins.insert(id, reply) {
                // The same member joined twice; the newer request is the one it waits for.
                let _ = previous.send(Err(GroupError::RebalanceInProgress));
            }
            slot.drive(now);
            Ok(Ok(receiver))
        })?;
        match receiver {
            Ok(receiver) => receiver
                .await
                .unwrap_or(Err(GroupError::RebalanceInProgress))
                .map(Ok),
            Err(answered) => Ok(answered),
        }
    }

    /// SyncGroup: the member's assignment, with the group's protocol type and name.
    pub async fn sync(
        &self,
        group: &str,
        member: SyncMember<'_>,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<(Bytes, String, String), GroupError> {
        let SyncMember {
            member_id,
            instance_id,
            generation,
            protocol_type,
            protocol,
        } = member;
        let (receiver, protocol_type, protocol) = self.with_existing_slot(group, |slot, now| {
            slot.group.check_instance(member_id, instance_id)?;
            // As Kafka: a stale member hears that first, not about protocols.
            slot.group.check_member(member_id, generation)?;
            slot.group.sync_protocol(protocol_type, protocol)?;
            let named = (
                slot.group.protocol_type.clone().unwrap_or_default(),
                slot.group.protocol.clone().unwrap_or_default(),
            );
            Self::sync_in(slot, member_id, generation, assignments, now)
                .map(|receiver| (receiver, named.0, named.1))
        })?;
        let assignment = match receiver {
            Ok(assignment) => assignment,
            Err(receiver) => receiver
                .await
                .unwrap_or(Err(GroupError::RebalanceInProgress))?,
        };
        Ok((assignment, protocol_type, protocol))
    }

    /// Runs SyncGroup on the machine: the assignment now, or where it will arrive.
    fn sync_in(
        slot: &mut Slot,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: i64,
    ) -> Result<SyncAnswer, GroupError> {
        match slot.group.sync(member_id, generation, assignments, now)? {
            SyncOutcome::Assigned(assignment) => Ok(Ok(assignment)),
            SyncOutcome::Wait => {
                let (reply, receiver) = oneshot::channel();
                slot.syncs.insert(member_id.to_owned(), reply);
                Ok(Err(receiver))
            }
            SyncOutcome::Completed(all) => {
                let mut own = Bytes::new();
                for (id, assignment) in all {
                    if id == member_id {
                        own = assignment;
                    } else if let Some(reply) = slot.syncs.remove(&id) {
                        let _ = reply.send(Ok(assignment));
                    }
                }
                Ok(Ok(own))
            }
        }
    }

    pub fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        self.with_existing_slot(group, |slot, now| {
            slot.group.check_instance(member_id, instance_id)?;
            slot.group.heartbeat(member_id, generation, now)
        })
    }

    pub fn leave(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        self.with_existing_slot(group, |slot, now| {
            slot.group.check_instance(member_id, instance_id)?;
            let result = slot.group.leave(member_id, now);
            slot.drive(now);
            result
        })
    }

    pub fn check_commit(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        let groups = self.groups.lock().expect("groups mutex poisoned");
        match groups.get(group) {
            Some(slot) => {
                slot.group.check_instance(member_id, instance_id)?;
                slot.group.check_commit(member_id, generation)
            }
            None if generation < 0 => Ok(()),
            None => Err(GroupError::IllegalGeneration),
        }
    }

    /// Moves time forward: expires sessions and completes due rebalances.
    pub fn tick(&self) {
        let now = self.clock.now_ms();
        let mut groups = self.groups.lock().expect("groups mutex poisoned");
        for (id, slot) in groups.iter_mut() {
            let expired = slot.group.expire(now);
            if !expired.is_empty() {
                tracing::info!(
                    group = id,
                    ?expired,
                    "members' sessions expired; rebalancing"
                );
            }
            slot.drive(now);
        }
        // Forget empty groups nobody waits on (their offsets stay in the metadata store),
        // noting when they emptied.
        let mut emptied_at = self.emptied_at.lock().expect("emptied mutex poisoned");
        groups.retain(|id, slot| {
            let keep = slot.group.phase != Phase::Empty
                || !slot.joins.is_empty()
                || !slot.syncs.is_empty()
                || slot.group.has_pending_members();
            if !keep {
                emptied_at.insert(id.clone(), now);
            }
            keep
        });
    }

    /// Forgets a group that has no members (DeleteGroups); false if it has members.
    pub fn forget_if_empty(&self, group: &str) -> bool {
        let mut groups = self.groups.lock().expect("groups mutex poisoned");
        match groups.get(group) {
            Some(slot) if !slot.group.members.is_empty() => false,
            Some(_) => {
                groups.remove(group);
                true
            }
            None => true,
        }
    }

    /// When `group` last lost its last member on this coordinator, if it did.
    pub fn emptied_at(&self, group: &str) -> Option<i64> {
        self.emptied_at
            .lock()
            .expect("emptied mutex poisoned")
            .get(group)
            .copied()
    }

    /// Forgets emptied-at times of groups the retention pass no longer tracks.
    pub fn retain_emptied(&self, keep: impl Fn(&str) -> bool) {
        self.emptied_at
            .lock()
            .expect("emptied mutex poisoned")
            .retain(|group, _| keep(group));
    }

    /// Whether `group` has members here (cheap; for the offsets retention pass).
    pub fn has_members(&self, group: &str) -> bool {
        self.groups
            .lock()
            .expect("groups mutex poisoned")
            .get(group)
            .is_some_and(|slot| !slot.group.members.is_empty() || slot.group.has_pending_members())
    }

    pub fn summary(&self, group: &str) -> Option<GroupSummary> {
        self.summaries().into_iter().find(|s| s.group_id == group)
    }

    pub fn summaries(&self) -> Vec<GroupSummary> {
        let groups = self.groups.lock().expect("groups mutex poisoned");
        groups
            .iter()
            .map(|(id, slot)| {
                let g = &slot.group;
                GroupSummary {
                    group_id: id.clone(),
                    phase: g.phase,
                    generation: g.generation,
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    protocol: g.protocol.clone().unwrap_or_default(),
                    leader: g.leader.clone().unwrap_or_default(),
                    members: g
                        .members
                        .values()
                        .map(|m| MemberSummary {
                            member_id: m.id.clone(),
                            instance_id: m.instance_id.clone(),
                            client_id: m.client_id.clone(),
                            client_host: m.client_host.clone(),
                            metadata: m
                                .protocols
                                .iter()
                                .find(|(n, _)| Some(n) == g.protocol.as_ref())
                                .map(|(_, md)| md.clone())
                                .unwrap_or_default(),
                            assignment: m.assignment.clone(),
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_tiering::clock::ManualClock;

    #[tokio::test]
    async fn an_id_handed_out_survives_ticks_until_the_member_joins_with_it() {
        let clock = Arc::new(ManualClock::new(0));
        let coordinator = Coordinator::new(
            GroupSettings {
                initial_rebalance_delay_ms: 0,
                min_session_timeout_ms: 10,
                max_session_timeout_ms: 60_000,
                max_size: 10,
            },
            clock.clone(),
        );
        let mut request = JoinRequest {
            member_id: String::new(),
            instance_id: None,
            client_id: "c".into(),
            client_host: String::new(),
            session_timeout_ms: 6_000,
            rebalance_timeout_ms: 6_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"md"))],
            require_known_member_id: true,
        };
        let id = match coordinator.join("g", request.clone()).await {
            Ok(Err(id)) => id,
            other => panic!("{other:?}"),
        };
        // The group has no member yet; ticks between the two joins must not forget the id.
        clock.advance_ms(500);
        coordinator.tick();
        coordinator.tick();
        request.member_id = id.clone();
        // No initial delay: the join completes as soon as the member joins with its id.
        let joined = coordinator
            .join("g", request)
            .await
            .expect("joined")
            .expect("not asked again");
        assert_eq!(joined.member_id, id);
        assert_eq!(joined.generation, 1);
        assert!(coordinator.has_members("g"));
        assert_eq!(coordinator.emptied_at("g"), None);
        // SyncGroup: a stale generation is told so before any protocol mismatch, as Kafka.
        let stale = SyncMember {
            member_id: &id,
            instance_id: None,
            generation: 0,
            protocol_type: Some("consumer"),
            protocol: Some("roundrobin"),
        };
        assert_eq!(
            coordinator.sync("g", stale, vec![]).await,
            Err(GroupError::IllegalGeneration)
        );
        let mismatched = SyncMember {
            generation: 1,
            ..stale
        };
        assert_eq!(
            coordinator.sync("g", mismatched, vec![]).await,
            Err(GroupError::InconsistentGroupProtocol)
        );
        // The member leaves; the next tick forgets the group and notes when it emptied.
        coordinator.leave("g", &id, None).expect("leave");
        clock.advance_ms(1_000);
        coordinator.tick();
        assert!(!coordinator.has_members("g"));
        assert_eq!(coordinator.emptied_at("g"), Some(1_500));
    }

    #[tokio::test]
    async fn requests_for_made_up_groups_create_nothing() {
        let coordinator = Coordinator::new(
            GroupSettings {
                initial_rebalance_delay_ms: 0,
                min_session_timeout_ms: 10,
                max_session_timeout_ms: 60_000,
                max_size: 10,
            },
            Arc::new(ManualClock::new(0)),
        );
        for i in 0..1_000 {
            let group = format!("made-up-{i}");
            assert_eq!(
                coordinator.heartbeat(&group, "m", None, 1),
                Err(GroupError::UnknownMemberId)
            );
            assert_eq!(
                coordinator.leave(&group, "m", None),
                Err(GroupError::UnknownMemberId)
            );
            let member = SyncMember {
                member_id: "m",
                instance_id: None,
                generation: 1,
                protocol_type: None,
                protocol: None,
            };
            assert_eq!(
                coordinator.sync(&group, member, vec![]).await,
                Err(GroupError::UnknownMemberId)
            );
        }
        coordinator.tick();
        assert!(coordinator.summaries().is_empty());
        assert_eq!(coordinator.emptied_at("made-up-1"), None);
    }
}
