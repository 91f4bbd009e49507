//! The classic consumer-group protocol as a pure state machine: no I/O, no timers, no Kafka
//! types. The coordinator shell feeds it requests and the time, and delivers what it answers.
//!
//! Phases follow Kafka's group coordinator: Empty → PreparingRebalance (members (re)join until
//! all known members have, or the deadline passes) → CompletingRebalance (the leader's
//! SyncGroup carries the assignment) → Stable. A join, a leave or an expired session starts
//! the next rebalance; every completed join bumps the generation.

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupError {
    UnknownMemberId,
    /// Another process now holds this static member's `group.instance.id`.
    FencedInstanceId,
    IllegalGeneration,
    RebalanceInProgress,
    InconsistentGroupProtocol,
    InvalidSessionTimeout,
    /// The group has `group.max.size` members; a new one may not join.
    GroupMaxSizeReached,
}

/// What a join leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The member (with this id) joined the rebalance.
    Joined(String),
    /// JoinGroup v4+ without a member id: the member must join again with this id (Kafka's
    /// MEMBER_ID_REQUIRED), so a join retried after a lost answer cannot leave a ghost member.
    MemberIdRequired(String),
    /// A member that already joined this generation asked again with unchanged protocols (it
    /// lost the answer): the same answer, now, and no new rebalance (as Kafka).
    Current(Joined),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i64,
    pub rebalance_timeout_ms: i64,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_seen_ms: i64,
}

/// What a join asks for.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i64,
    pub rebalance_timeout_ms: i64,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a member without an id is given one to join with (MEMBER_ID_REQUIRED).
    pub require_known_member_id: bool,
}

/// A completed join, as told to one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub member_id: String,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    /// Only the leader gets the members and their metadata for its chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// How long a new group waits for more members before its first rebalance completes
    /// (Kafka's `group.initial.rebalance.delay.ms`).
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i64,
    pub max_session_timeout_ms: i64,
    /// Members a group may have (Kafka's `group.max.size`).
    pub max_size: usize,
}

/// Kafka's initial rebalance (`group.initial.rebalance.delay.ms`): a new group waits one delay
/// for its first members, and one more each time a new member joined during the last wait,
/// until the rebalance timeout is used up.
#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    /// The configured delay: the length of every further wait.
    delay_ms: i64,
    /// The length of the wait under way.
    wait_ms: i64,
    /// Of the rebalance timeout, what further waits may still use.
    remaining_ms: i64,
    /// A new member joined during the wait under way.
    new_member_added: bool,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub phase: Phase,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Members that joined in the rebalance under way.
    joined: BTreeSet<String>,
    /// When the rebalance under way completes even if members are missing.
    rebalance_deadline_ms: i64,
    /// The rebalance under way started from an empty group: it waits out the initial delay,
    /// extended while new members keep arriving.
    initial_delay: Option<InitialDelay>,
    /// Ids handed out with MEMBER_ID_REQUIRED, not joined yet: id → when the offer lapses.
    pending_members: BTreeMap<String, i64>,
    /// Members whose SyncGroup waits for the leader's assignment (they cannot heartbeat).
    awaiting_sync: BTreeSet<String>,
}

impl Default for Group {
    fn default() -> Self {
        Self {
            phase: Phase::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            joined: BTreeSet::new(),
            rebalance_deadline_ms: 0,
            initial_delay: None,
            pending_members: BTreeMap::new(),
            awaiting_sync: BTreeSet::new(),
        }
    }
}

impl Group {
    /// A static member (`group.instance.id`) coming back to a stable group with the same
    /// protocols takes its old place and assignment under a new member id, with no rebalance
    /// (KIP-345): the answer is immediate. `None`: the ordinary join applies.
    pub fn rejoin_static(
        &mut self,
        request: &JoinRequest,
        new_member_id: impl FnOnce() -> String,
        now_ms: i64,
    ) -> Option<Joined> {
        let instance = request.instance_id.as_ref()?;
        if !request.member_id.is_empty() || self.phase != Phase::Stable {
            return None;
        }
        let old = self
            .members
            .values()
            .find(|m| m.instance_id.as_ref() == Some(instance))?
            .clone();
        if old.protocols != request.protocols {
            return None;
        }
        let id = new_member_id();
        self.members.remove(&old.id);
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                last_seen_ms: now_ms,
                ..old.clone()
            },
        );
        if self.leader.as_ref() == Some(&old.id) {
            self.leader = Some(id.clone());
        }
        Some(Joined {
            member_id: id,
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: self.protocol.clone().unwrap_or_default(),
            leader: self.leader.clone().unwrap_or_default(),
            // Nothing to assign: the group keeps its assignment.
            members: Vec::new(),
        })
    }

    /// A request naming a static member's instance id must come from its current member id;
    /// the previous holder of the id is fenced (FENCED_INSTANCE_ID), as in Kafka.
    pub fn check_instance(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        let Some(instance) = instance_id else {
            return Ok(());
        };
        match self
            .members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance))
        {
            Some(current) if current.id != member_id => Err(GroupError::FencedInstanceId),
            _ => Ok(()),
        }
    }

    /// Adds or refreshes a member and starts (or joins) a rebalance.
    pub fn join(
        &mut self,
        request: JoinRequest,
        new_member_id: impl FnOnce() -> String,
        settings: &GroupSettings,
        now_ms: i64,
    ) -> Result<Admission, GroupError> {
        if request.session_timeout_ms < settings.min_session_timeout_ms
            || request.session_timeout_ms > settings.max_session_timeout_ms
        {
            return Err(GroupError::InvalidSessionTimeout);
        }
        // One protocol must be supported by every member, this one included (Kafka's
        // candidate protocols), or no assignment could ever be agreed.
        let common = request.protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .filter(|m| m.id != request.member_id)
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        });
        if !common
            || self
                .protocol_type
                .as_ref()
                .is_some_and(|t| !self.members.is_empty() && *t != request.protocol_type)
        {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let mut member_id = request.member_id.clone();
        let replaces_static = request.instance_id.as_ref().is_some_and(|instance| {
            self.members
                .values()
                .any(|m| m.instance_id.as_ref() == Some(instance))
        });
        // Ids handed out and not used yet count too, so join retries cannot grow the group's
        // memory past the limit either.
        if member_id.is_empty()
            && !replaces_static
            && self.members.len() + self.pending_members.len() >= settings.max_size
        {
            return Err(GroupError::GroupMaxSizeReached);
        }
        if member_id.is_empty() && request.require_known_member_id && request.instance_id.is_none()
        {
            let id = new_member_id();
            self.pending_members
                .insert(id.clone(), now_ms + request.session_timeout_ms);
            return Ok(Admission::MemberIdRequired(id));
        }
        if member_id.is_empty() {
            // A static member coming back takes its old place.
            let previous = request.instance_id.as_ref().and_then(|instance| {
                self.members
                    .values()
                    .find(|m| m.instance_id.as_ref() == Some(instance))
                    .map(|m| m.id.clone())
            });
            if let Some(previous) = previous {
                self.members.remove(&previous);
                self.joined.remove(&previous);
                if self.leader.as_ref() == Some(&previous) {
                    self.leader = None;
                }
            }
            member_id = new_member_id();
        } else if let Some(existing) = self.members.get_mut(&member_id) {
            let unchanged = existing.protocols == request.protocols;
            let is_leader = self.leader.as_ref() == Some(&member_id);
            // A follower of a stable group, or anyone once the join phase is over, asking
            // again unchanged gets the current answer. A leader's join in a stable group
            // starts a rebalance: that is how it asks for one (say, for new partitions).
            if unchanged
                && (self.phase == Phase::CompletingRebalance
                    || (self.phase == Phase::Stable && !is_leader))
            {
                existing.last_seen_ms = now_ms;
                return Ok(Admission::Current(self.answer(&member_id)));
            }
        } else if self.pending_members.remove(&member_id).is_none() {
            return Err(GroupError::UnknownMemberId);
        }
        if !self.members.contains_key(&member_id) {
            if let Some(initial) = self.initial_delay.as_mut() {
                initial.new_member_added = true;
            }
        }
        let assignment = self
            .members
            .get(&member_id)
            .map(|m| m.assignment.clone())
            .unwrap_or_default();
        self.protocol_type = Some(request.protocol_type.clone());
        self.members.insert(
            member_id.clone(),
            Member {
                id: member_id.clone(),
                instance_id: request.instance_id,
                client_id: request.client_id,
                client_host: request.client_host,
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                protocols: request.protocols,
                assignment,
                last_seen_ms: now_ms,
            },
        );
        self.joined.insert(member_id.clone());
        if self.phase == Phase::Empty {
            let delay_ms = settings.initial_rebalance_delay_ms;
            self.start_rebalance(now_ms + delay_ms);
            self.initial_delay = Some(InitialDelay {
                delay_ms,
                wait_ms: delay_ms,
                remaining_ms: (self.max_rebalance_timeout_ms() - delay_ms).max(0),
                new_member_added: false,
            });
        } else if self.phase != Phase::PreparingRebalance {
            self.start_rebalance(now_ms + self.max_rebalance_timeout_ms());
        }
        Ok(Admission::Joined(member_id))
    }

    fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    fn start_rebalance(&mut self, deadline_ms: i64) {
        self.phase = Phase::PreparingRebalance;
        self.awaiting_sync.clear();
        self.rebalance_deadline_ms = deadline_ms;
        self.initial_delay = None;
    }

    /// Completes the join phase if every member joined, or the deadline passed. Returns the
    /// answers for the members that joined.
    pub fn try_complete_join(&mut self, now_ms: i64) -> Option<Vec<Joined>> {
        if self.phase != Phase::PreparingRebalance {
            return None;
        }
        // Members handed an id (MEMBER_ID_REQUIRED) are about to join: wait for them too, as
        // Kafka does (their offers lapse after a session).
        let everyone = self.members.keys().all(|id| self.joined.contains(id))
            && self.pending_members.is_empty();
        let due = now_ms >= self.rebalance_deadline_ms;
        if let Some(initial) = self.initial_delay.as_mut() {
            // A brand-new group waits out the initial delay to gather its first members, and
            // waits again while they keep coming (as Kafka), within the rebalance timeout.
            if !due {
                return None;
            }
            if initial.new_member_added && initial.remaining_ms > 0 {
                let wait_ms = initial.delay_ms.min(initial.remaining_ms);
                initial.remaining_ms = (initial.remaining_ms - initial.wait_ms).max(0);
                initial.wait_ms = wait_ms;
                initial.new_member_added = false;
                self.rebalance_deadline_ms = now_ms + wait_ms;
                return None;
            }
        } else if !due && !everyone {
            return None;
        }
        self.initial_delay = None;
        self.members.retain(|id, _| self.joined.contains(id));
        self.joined.clear();
        self.generation += 1;
        // Every member gets a full session to send its SyncGroup.
        for member in self.members.values_mut() {
            member.last_seen_ms = now_ms;
        }
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            self.leader = None;
            self.protocol = None;
            return Some(Vec::new());
        }
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let leader = self.leader.clone().expect("a member leads");
        // The leader's most preferred protocol that every member supports.
        let protocol = self.members[&leader]
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .find(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
            // Join admits only members sharing a protocol with all others; should that ever
            // fail, the leader's own first choice is used rather than failing the group.
            .or_else(|| {
                self.members[&leader]
                    .protocols
                    .first()
                    .map(|(n, _)| n.clone())
            })
            .unwrap_or_default();
        self.protocol = Some(protocol);
        self.phase = Phase::CompletingRebalance;
        Some(self.members.keys().map(|id| self.answer(id)).collect())
    }

    /// The current generation's JoinGroup answer for one member; only the leader gets the
    /// members and their metadata for the chosen protocol.
    fn answer(&self, member_id: &str) -> Joined {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if member_id == leader {
            self.members
                .values()
                .map(|m| {
                    let metadata = m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, md)| md.clone())
                        .unwrap_or_default();
                    (m.id.clone(), m.instance_id.clone(), metadata)
                })
                .collect()
        } else {
            Vec::new()
        };
        Joined {
            member_id: member_id.to_owned(),
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol,
            leader,
            members,
        }
    }

    pub fn check_member(&self, member_id: &str, generation: i32) -> Result<(), GroupError> {
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    /// SyncGroup. `Ok(Some(assignment))`: answer now; `Ok(None)`: wait for the leader's sync.
    /// When the leader syncs, the returned map holds every waiting member's assignment.
    pub fn sync(
        &mut self,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now_ms: i64,
    ) -> Result<SyncOutcome, GroupError> {
        self.check_member(member_id, generation)?;
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_seen_ms = now_ms;
        }
        match self.phase {
            Phase::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            Phase::Stable => Ok(SyncOutcome::Assigned(
                self.members[member_id].assignment.clone(),
            )),
            Phase::CompletingRebalance if self.leader.as_deref() == Some(member_id) => {
                let mut given: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                for member in self.members.values_mut() {
                    member.assignment = given.remove(&member.id).unwrap_or_default();
                }
                self.phase = Phase::Stable;
                self.awaiting_sync.clear();
                Ok(SyncOutcome::Completed(
                    self.members
                        .values()
                        .map(|m| (m.id.clone(), m.assignment.clone()))
                        .collect(),
                ))
            }
            Phase::CompletingRebalance => {
                self.awaiting_sync.insert(member_id.to_owned());
                Ok(SyncOutcome::Wait)
            }
            Phase::Empty => Err(GroupError::UnknownMemberId),
        }
    }

    /// SyncGroup v5 names the protocol type and name the member joined with: they must be the
    /// group's (INCONSISTENT_GROUP_PROTOCOL otherwise, as Kafka).
    pub fn sync_protocol(
        &self,
        protocol_type: Option<&str>,
        protocol: Option<&str>,
    ) -> Result<(), GroupError> {
        let differs = |given: Option<&str>, ours: &Option<String>| {
            given.is_some_and(|g| ours.as_deref().is_some_and(|o| o != g))
        };
        if differs(protocol_type, &self.protocol_type) || differs(protocol, &self.protocol) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        Ok(())
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        generation: i32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        self.check_member(member_id, generation)?;
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_seen_ms = now_ms;
        }
        match self.phase {
            Phase::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// A member leaves; the others rebalance.
    pub fn leave(&mut self, member_id: &str, now_ms: i64) -> Result<(), GroupError> {
        if self.pending_members.remove(member_id).is_some() {
            // Left before joining with the id it was handed: nothing to rebalance, and no
            // rebalance waits for it any more.
            return Ok(());
        }
        if self.members.remove(member_id).is_none() {
            return Err(GroupError::UnknownMemberId);
        }
        self.joined.remove(member_id);
        self.awaiting_sync.remove(member_id);
        self.after_departure(now_ms);
        Ok(())
    }

    /// Whether ids handed out with MEMBER_ID_REQUIRED are still waiting to be used.
    pub fn has_pending_members(&self) -> bool {
        !self.pending_members.is_empty()
    }

    /// Removes members whose session expired; returns their ids.
    pub fn expire(&mut self, now_ms: i64) -> Vec<String> {
        self.pending_members
            .retain(|_, lapses_ms| *lapses_ms >= now_ms);
        // A member whose JoinGroup or SyncGroup is waiting for the group is kept alive (it
        // cannot heartbeat meanwhile), as in Kafka; any other member must have been heard from
        // within its session. The leader that never syncs expires, which restarts the rebalance.
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                let awaiting_join =
                    self.phase == Phase::PreparingRebalance && self.joined.contains(&m.id);
                let awaiting_sync =
                    self.phase == Phase::CompletingRebalance && self.awaiting_sync.contains(&m.id);
                !awaiting_join && !awaiting_sync && m.last_seen_ms + m.session_timeout_ms < now_ms
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            self.members.remove(id);
            self.awaiting_sync.remove(id);
        }
        if !expired.is_empty() {
            self.after_departure(now_ms);
        }
        expired
    }

    fn after_departure(&mut self, now_ms: i64) {
        if self.members.is_empty() {
            self.joined.clear();
            self.generation += 1;
            self.phase = Phase::Empty;
            self.leader = None;
            self.protocol = None;
        } else if self.phase != Phase::PreparingRebalance {
            let deadline = now_ms + self.max_rebalance_timeout_ms();
            self.start_rebalance(deadline);
        }
    }

    /// Whether a commit from this member and generation may be accepted now.
    pub fn check_commit(&self, member_id: &str, generation: i32) -> Result<(), GroupError> {
        if generation < 0 && member_id.is_empty() {
            // Standalone commits are fine unless the group has live members.
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(GroupError::UnknownMemberId)
            };
        }
        self.check_member(member_id, generation)?;
        // As Kafka: members commit while a rebalance is being prepared (their generation is
        // still current; clients commit on revocation exactly then), but not between the join
        // and the assignment.
        if self.phase == Phase::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    Assigned(Bytes),
    Wait,
    /// The leader's sync completed the rebalance: every member's assignment.
    Completed(Vec<(String, Bytes)>),
}

#[cfg(test)]
mod tests;
