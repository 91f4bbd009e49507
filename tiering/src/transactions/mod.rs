//! Kafka transactions (KIP-98), the coordinator's half: the state of one transactional id, kept
//! at `/skiff/transactions/<transactional id, escaped>`, and its transitions as pure functions.
//!
//! The coordinator (in the broker) reads the record, asks a function here what to do, and
//! writes the result with a transaction that compares the key's `mod_revision`: every
//! transition is one fenced commit, so two brokers that both think they coordinate an id can
//! never both move it, and a coordinator killed between two steps leaves a state the next one
//! resumes from (a `Prepare*` state is finished by writing its markers, whoever reads it).
//!
//! States and transitions (Kafka's, transaction version 1; Kafka's transient `PrepareEpochFence`
//! and `Dead` are not stored states here: fencing writes `PrepareAbort` under the bumped epoch at
//! once, and an expired id's key is deleted):
//!
//! ```text
//!            InitProducerId (epoch + 1)
//!   (none) ──────────────► Empty ◄──────────────────────────────┐
//!                            │ AddPartitions / AddOffsets        │ InitProducerId
//!                            ▼                                   │
//!                         Ongoing ──EndTxn(commit)──► PrepareCommit ──markers──► CompleteCommit
//!                            │ EndTxn(abort), timeout,                               │
//!                            │ InitProducerId (fences: epoch + 1)                    │ Add…
//!                            ▼                                                       ▼
//!                       PrepareAbort ──markers──► CompleteAbort ──Add…──► Ongoing
//! ```
//!
//! Pure data and decisions, no I/O.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[cfg(test)]
mod tests;

/// From this epoch on, InitProducerId gives the id a fresh producer id (epoch 0) rather than
/// bump: Kafka's `Short.MaxValue - 1`, leaving one bump for fencing an open transaction.
pub const EPOCH_EXHAUSTED: i16 = i16::MAX - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnState {
    /// A producer id and epoch, no transaction.
    Empty,
    /// Partitions (or group offsets) added: records may be written.
    Ongoing,
    /// Committing: markers are being written.
    PrepareCommit,
    /// Aborting: markers are being written.
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// Kafka's name, for DescribeTransactions and ListTransactions.
    pub fn kafka_name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// Whether markers are due (the coordinator finishes these, whoever it is).
    pub fn is_prepared(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }

    /// Whether `next` may follow `self` (Kafka's valid previous states).
    pub fn may_become(self, next: TxnState) -> bool {
        use TxnState::*;
        match next {
            Empty => matches!(self, Empty | CompleteCommit | CompleteAbort),
            Ongoing => matches!(self, Ongoing | Empty | CompleteCommit | CompleteAbort),
            PrepareCommit => self == Ongoing,
            PrepareAbort => self == Ongoing,
            CompleteCommit => self == PrepareCommit,
            CompleteAbort => self == PrepareAbort,
        }
    }
}

/// One transactional id: `/skiff/transactions/<id, escaped>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionRecord {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last InitProducerId bump (-1: unknown), so a retried InitProducerId
    /// that carries it (KIP-360) is answered with the current epoch instead of fenced.
    pub last_producer_epoch: i16,
    /// The producer id before the last rotation (-1: none), for the same retry after one.
    pub previous_producer_id: i64,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions of the transaction (Ongoing, Prepare*), by topic.
    pub partitions: BTreeMap<String, BTreeSet<i32>>,
    /// Consumer groups whose offsets the transaction commits (AddOffsetsToTxn).
    pub groups: BTreeSet<String>,
    /// When the transaction began (-1 outside one): its timeout runs from here.
    pub started_ms: i64,
    pub updated_ms: i64,
    /// How many times a transaction of this id was prepared to end; its marker requests carry
    /// it, so a partition applies each ending once however often they are put again.
    #[serde(default)]
    pub ends: u64,
}

/// What a request says of the producer: (producer id, epoch).
pub type ProducerIdEpoch = (i64, i16);

/// Kafka's answers; the broker maps them to error codes by request version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// Markers of the previous transaction are being written: retry shortly.
    #[error("concurrent transactions")]
    ConcurrentTransactions,
    /// A newer instance of the producer exists (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH before
    /// the versions that know it).
    #[error("producer fenced")]
    ProducerFenced,
    #[error("invalid producer id mapping")]
    InvalidProducerIdMapping,
    #[error("invalid transaction state")]
    InvalidTxnState,
    #[error("invalid transaction timeout")]
    InvalidTransactionTimeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitProducerId {
    pub timeout_ms: i32,
    /// KIP-360: the id and epoch the producer had, when it asks to recover rather than start.
    pub expected: Option<ProducerIdEpoch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// Store this record (unless it equals the stored one: a retry) and answer its producer id
    /// and epoch.
    Ready(TransactionRecord),
    /// Store this record: the open transaction is being aborted under a bumped epoch, which
    /// fences the old instance; write its markers, and answer CONCURRENT_TRANSACTIONS (the
    /// client retries and then gets a fresh epoch).
    Fencing(TransactionRecord),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndOutcome {
    /// Store this `Prepare*` record, answer success, then write the markers.
    Prepared(TransactionRecord),
    /// A retry of an EndTxn that already completed: answer success, store nothing.
    AlreadyDone,
}

impl TransactionRecord {
    /// Every partition of the transaction, in order.
    pub fn partition_list(&self) -> Vec<(String, i32)> {
        self.partitions
            .iter()
            .flat_map(|(topic, ps)| ps.iter().map(move |p| (topic.clone(), *p)))
            .collect()
    }

    pub fn contains(&self, topic: &str, partition: i32) -> bool {
        self.partitions
            .get(topic)
            .is_some_and(|ps| ps.contains(&partition))
    }

    /// The same id under the next epoch, or a fresh producer id once epochs run out.
    fn bumped(&self, fresh_producer_id: i64, last_producer_epoch: i16) -> Self {
        let mut next = self.clone();
        if self.producer_epoch >= EPOCH_EXHAUSTED {
            next.previous_producer_id = self.producer_id;
            next.producer_id = fresh_producer_id;
            next.producer_epoch = 0;
        } else {
            next.producer_epoch = self.producer_epoch + 1;
        }
        next.last_producer_epoch = last_producer_epoch;
        next
    }

    /// Checks a request's producer id and epoch against the record.
    fn check_producer(&self, producer: ProducerIdEpoch) -> Result<(), TxnError> {
        if producer.0 != self.producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if producer.1 != self.producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        Ok(())
    }

    /// Whether the open transaction has outlived its timeout.
    pub fn timed_out(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing
            && now_ms.saturating_sub(self.started_ms) > i64::from(self.timeout_ms)
    }

    /// Whether the id may be forgotten (Kafka's `transactional.id.expiration.ms`): no
    /// transaction in progress and untouched for that long.
    pub fn expired(&self, now_ms: i64, expiration_ms: i64) -> bool {
        matches!(
            self.state,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        ) && now_ms.saturating_sub(self.updated_ms) >= expiration_ms
    }
}

/// InitProducerId with a transactional id. `fresh_producer_id` is an unused producer id the
/// caller reserved, taken when the id is new or its epochs ran out.
pub fn init_producer_id(
    current: Option<&TransactionRecord>,
    request: &InitProducerId,
    max_timeout_ms: i32,
    fresh_producer_id: i64,
    now_ms: i64,
) -> Result<InitOutcome, TxnError> {
    if request.timeout_ms <= 0 || request.timeout_ms > max_timeout_ms {
        return Err(TxnError::InvalidTransactionTimeout);
    }
    let Some(current) = current else {
        return Ok(InitOutcome::Ready(TransactionRecord {
            producer_id: fresh_producer_id,
            producer_epoch: 0,
            last_producer_epoch: -1,
            previous_producer_id: -1,
            timeout_ms: request.timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeMap::new(),
            groups: BTreeSet::new(),
            started_ms: -1,
            updated_ms: now_ms,
            ends: 0,
        }));
    };
    if let Some((producer_id, epoch)) = request.expected {
        let current_id = producer_id == current.producer_id;
        let retried_rotation =
            producer_id == current.previous_producer_id && epoch >= EPOCH_EXHAUSTED;
        if !current_id && !retried_rotation {
            return Err(TxnError::ProducerFenced);
        }
    }
    match current.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort => Err(TxnError::ConcurrentTransactions),
        TxnState::Ongoing => {
            // A new instance while a transaction is open: abort it under a bumped epoch, so the
            // old instance is fenced at the coordinator and at every partition (the markers
            // carry the new epoch).
            // (Never a rotation: the markers must name the producer id that wrote the records.
            // Epochs handed out stop at EPOCH_EXHAUSTED, so one more always fits.)
            let mut fencing = current.clone();
            fencing.producer_epoch = current.producer_epoch.saturating_add(1);
            fencing.last_producer_epoch = -1;
            fencing.state = TxnState::PrepareAbort;
            fencing.updated_ms = now_ms;
            fencing.ends = current.ends + 1;
            Ok(InitOutcome::Fencing(fencing))
        }
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            let expected_epoch = request.expected.map(|(_, epoch)| epoch);
            let mut next = match expected_epoch {
                None => current.bumped(fresh_producer_id, -1),
                Some(epoch) if epoch == current.producer_epoch => {
                    current.bumped(fresh_producer_id, current.producer_epoch)
                }
                // The bump this request asks for already happened: its answer was lost.
                Some(epoch) if epoch == current.last_producer_epoch => current.clone(),
                Some(_) => return Err(TxnError::ProducerFenced),
            };
            if next == *current {
                return Ok(InitOutcome::Ready(next));
            }
            next.state = TxnState::Empty;
            next.timeout_ms = request.timeout_ms;
            next.partitions.clear();
            next.groups.clear();
            next.started_ms = -1;
            next.updated_ms = now_ms;
            Ok(InitOutcome::Ready(next))
        }
    }
}

/// Where a transaction's additions go: partitions (AddPartitionsToTxn) or a consumer group's
/// offsets (AddOffsetsToTxn).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addition {
    Partitions(Vec<(String, i32)>),
    Group(String),
}

/// AddPartitionsToTxn / AddOffsetsToTxn: the record to store, or None when everything is
/// already part of the open transaction (nothing to write).
pub fn add(
    current: &TransactionRecord,
    producer: ProducerIdEpoch,
    addition: &Addition,
    now_ms: i64,
) -> Result<Option<TransactionRecord>, TxnError> {
    current.check_producer(producer)?;
    if current.state.is_prepared() {
        return Err(TxnError::ConcurrentTransactions);
    }
    let included = match addition {
        Addition::Partitions(partitions) => partitions.iter().all(|(t, p)| current.contains(t, *p)),
        Addition::Group(group) => current.groups.contains(group),
    };
    if current.state == TxnState::Ongoing && included {
        return Ok(None);
    }
    let mut next = current.clone();
    if current.state != TxnState::Ongoing {
        next.partitions.clear();
        next.groups.clear();
        next.started_ms = now_ms;
    }
    match addition {
        Addition::Partitions(partitions) => {
            for (topic, partition) in partitions {
                next.partitions
                    .entry(topic.clone())
                    .or_default()
                    .insert(*partition);
            }
        }
        Addition::Group(group) => {
            next.groups.insert(group.clone());
        }
    }
    next.state = TxnState::Ongoing;
    next.updated_ms = now_ms;
    Ok(Some(next))
}

/// The partition leader's check before it stores a transactional batch (KIP-890's
/// verification): the producer is current and the partition is part of its open transaction.
pub fn verify(
    current: &TransactionRecord,
    producer: ProducerIdEpoch,
    topic: &str,
    partition: i32,
) -> Result<(), TxnError> {
    current.check_producer(producer)?;
    if current.state.is_prepared() {
        return Err(TxnError::ConcurrentTransactions);
    }
    if current.state == TxnState::Ongoing && current.contains(topic, partition) {
        Ok(())
    } else {
        Err(TxnError::InvalidTxnState)
    }
}

/// TxnOffsetCommit's check: the producer is current and `group` was added to its open
/// transaction (AddOffsetsToTxn).
pub fn verify_group(
    current: &TransactionRecord,
    producer: ProducerIdEpoch,
    group: &str,
) -> Result<(), TxnError> {
    current.check_producer(producer)?;
    if current.state.is_prepared() {
        return Err(TxnError::ConcurrentTransactions);
    }
    if current.state == TxnState::Ongoing && current.groups.contains(group) {
        Ok(())
    } else {
        Err(TxnError::InvalidTxnState)
    }
}

/// EndTxn (transaction version 1).
pub fn end(
    current: &TransactionRecord,
    producer: ProducerIdEpoch,
    commit: bool,
    now_ms: i64,
) -> Result<EndOutcome, TxnError> {
    current.check_producer(producer)?;
    use TxnState::*;
    match (current.state, commit) {
        (Ongoing, _) => {
            let mut next = current.clone();
            next.state = if commit { PrepareCommit } else { PrepareAbort };
            next.updated_ms = now_ms;
            next.ends = current.ends + 1;
            Ok(EndOutcome::Prepared(next))
        }
        (CompleteCommit, true) | (CompleteAbort, false) => Ok(EndOutcome::AlreadyDone),
        (PrepareCommit, true) | (PrepareAbort, false) => Err(TxnError::ConcurrentTransactions),
        (CompleteCommit, false)
        | (CompleteAbort, true)
        | (PrepareCommit, false)
        | (PrepareAbort, true)
        | (Empty, _) => Err(TxnError::InvalidTxnState),
    }
}

/// Aborts an open transaction that outlived its timeout, under a bumped epoch so its producer
/// is fenced (its EndTxn or next batch is refused). None when it is not due.
pub fn abort_timed_out(current: &TransactionRecord, now_ms: i64) -> Option<TransactionRecord> {
    if !current.timed_out(now_ms) {
        return None;
    }
    let mut next = current.clone();
    next.producer_epoch = current.producer_epoch.saturating_add(1);
    next.last_producer_epoch = -1;
    next.state = TxnState::PrepareAbort;
    next.updated_ms = now_ms;
    next.ends = current.ends + 1;
    Some(next)
}

/// The record once every marker of a `Prepare*` state is durable. None in any other state.
pub fn complete(current: &TransactionRecord, now_ms: i64) -> Option<TransactionRecord> {
    let state = match current.state {
        TxnState::PrepareCommit => TxnState::CompleteCommit,
        TxnState::PrepareAbort => TxnState::CompleteAbort,
        _ => return None,
    };
    let mut next = current.clone();
    next.state = state;
    next.partitions.clear();
    next.groups.clear();
    next.started_ms = -1;
    next.updated_ms = now_ms;
    Some(next)
}
