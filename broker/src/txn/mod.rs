//! The transaction coordinator: runs `skiff_tiering::transactions`' state machine for the
//! transactional ids this broker coordinates, with every transition one metadata transaction
//! fenced on the id's record (ARCHITECTURE.md, "Transactions").
//!
//! Deciding to end a transaction writes the `Prepare*` record and one marker request per
//! partition; partition leaders append the markers and delete the requests
//! (`skiff_tiering::log::markers`). [`Coordinator::finish`] then makes a committed
//! transaction's consumer-group offsets visible and writes `Complete*`. Whoever coordinates an id
//! finishes what a dead coordinator prepared, aborts transactions past their timeout and forgets
//! ids idle past `transactional.id.expiration.ms` ([`Coordinator::run`]).

pub mod offsets;

use crate::api::ProducerIds;
use skiff_tiering::cluster::assignment::preferred_leader;
use skiff_tiering::cluster::membership::live_brokers;
use skiff_tiering::keys::{self, BrokerRecord, MarkerRequest};
use skiff_tiering::metadata::{Compare, MetadataError, MetadataStore, Revision, Txn, TxnOp};
use skiff_tiering::transactions::{
    self, Addition, EndOutcome, InitOutcome, InitProducerId, ProducerIdEpoch, TransactionRecord,
    TxnError, TxnState, EPOCH_EXHAUSTED,
};
use skiff_tiering::Clock;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Locks serialising one broker's requests per transactional id (by hash).
const ID_LOCKS: usize = 64;
/// How often a finishing coordinator looks whether every marker is durable, at most.
const MARKER_POLL_MAX: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct TxnSettings {
    /// `transaction.max.timeout.ms`: the longest transaction timeout a producer may ask for.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: idle ids are forgotten after this long.
    pub id_expiration_ms: i64,
    /// Most transactional ids remembered: a new id beyond it is refused.
    pub id_max_count: usize,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how often this
    /// coordinator looks for transactions to abort, finish or forget.
    pub check_interval: Duration,
}

/// Why a coordinator request failed, beyond the state machine's own answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordError {
    Txn(TxnError),
    /// The record changed under this coordinator (another broker moved it): retry after
    /// finding the coordinator again.
    NotCoordinator,
    /// The metadata store failed.
    Unavailable(String),
    /// A new transactional id while the cluster remembers `id_max_count` of them.
    TooManyIds,
}

impl From<TxnError> for CoordError {
    fn from(error: TxnError) -> Self {
        CoordError::Txn(error)
    }
}

impl From<MetadataError> for CoordError {
    fn from(error: MetadataError) -> Self {
        CoordError::Unavailable(error.to_string())
    }
}

pub struct Coordinator {
    store: Arc<dyn MetadataStore>,
    clock: Arc<dyn Clock>,
    producer_ids: Arc<ProducerIds>,
    pub settings: TxnSettings,
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Ids whose `Prepare*` record this broker is finishing now.
    finishing: Mutex<HashSet<String>>,
    /// Transactional ids in the store at the last check (all, not only this broker's).
    known_ids: AtomicUsize,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        clock: Arc<dyn Clock>,
        producer_ids: Arc<ProducerIds>,
        settings: TxnSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            clock,
            producer_ids,
            settings,
            locks: (0..ID_LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
            finishing: Mutex::new(HashSet::new()),
            known_ids: AtomicUsize::new(0),
        })
    }

    fn lock_of(&self, id: &str) -> &tokio::sync::Mutex<()> {
        let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        &self.locks[(hash % ID_LOCKS as u64) as usize]
    }

    /// The id's record and its `mod_revision` (0: none).
    pub async fn load(
        &self,
        id: &str,
    ) -> Result<(Option<TransactionRecord>, Revision), CoordError> {
        match self.store.get(&keys::transaction(id)).await? {
            Some(kv) => {
                let record = keys::decode(&kv.key, &kv.value).map_err(CoordError::Unavailable)?;
                Ok((Some(record), kv.mod_revision))
            }
            None => Ok((None, 0)),
        }
    }

    /// Writes `record` if the id's record is still at `revision`, with `extra` operations.
    async fn store_record(
        &self,
        id: &str,
        revision: Revision,
        record: &TransactionRecord,
        extra: Vec<TxnOp>,
    ) -> Result<Revision, CoordError> {
        let key = keys::transaction(id);
        let mut ops = vec![TxnOp::put(&key, keys::encode(record))];
        ops.extend(extra);
        let outcome = self
            .store
            .txn(Txn::when(vec![Compare::mod_revision(&key, revision)]).and_then(ops))
            .await?;
        if outcome.succeeded {
            Ok(outcome.revision)
        } else {
            Err(CoordError::NotCoordinator)
        }
    }

    pub async fn init_producer_id(
        self: &Arc<Self>,
        id: &str,
        timeout_ms: i32,
        expected: Option<ProducerIdEpoch>,
    ) -> Result<ProducerIdEpoch, CoordError> {
        let _serial = self.lock_of(id).lock().await;
        let (current, revision) = self.load(id).await?;
        if current.is_none() && self.known_ids.load(Ordering::Relaxed) >= self.settings.id_max_count
        {
            tracing::warn!(
                transactional_id = id,
                max = self.settings.id_max_count,
                "refusing a new transactional id: the cluster remembers too many"
            );
            return Err(CoordError::TooManyIds);
        }
        let needs_fresh = current
            .as_ref()
            .is_none_or(|r| r.producer_epoch >= EPOCH_EXHAUSTED);
        let fresh = if needs_fresh {
            self.producer_ids
                .next()
                .await
                .map_err(CoordError::Unavailable)?
        } else {
            -1
        };
        let request = InitProducerId {
            timeout_ms,
            expected,
        };
        let now_ms = self.clock.now_ms();
        match transactions::init_producer_id(
            current.as_ref(),
            &request,
            self.settings.max_timeout_ms,
            fresh,
            now_ms,
        )? {
            InitOutcome::Ready(record) => {
                if current.as_ref() != Some(&record) {
                    self.store_record(id, revision, &record, Vec::new()).await?;
                }
                Ok((record.producer_id, record.producer_epoch))
            }
            InitOutcome::Fencing(record) => {
                tracing::info!(
                    transactional_id = id,
                    producer_id = record.producer_id,
                    epoch = record.producer_epoch,
                    "a new instance fenced the open transaction; aborting it"
                );
                let revision = self.prepare(id, revision, &record).await?;
                self.spawn_finish(id, revision);
                Err(CoordError::Txn(TxnError::ConcurrentTransactions))
            }
        }
    }

    pub async fn add(
        &self,
        id: &str,
        producer: ProducerIdEpoch,
        addition: &Addition,
    ) -> Result<(), CoordError> {
        let _serial = self.lock_of(id).lock().await;
        let (current, revision) = self.load(id).await?;
        let current = current.ok_or(CoordError::Txn(TxnError::InvalidProducerIdMapping))?;
        if let Some(next) = transactions::add(&current, producer, addition, self.clock.now_ms())? {
            self.store_record(id, revision, &next, Vec::new()).await?;
        }
        Ok(())
    }

    pub async fn end(
        self: &Arc<Self>,
        id: &str,
        producer: ProducerIdEpoch,
        commit: bool,
    ) -> Result<(), CoordError> {
        let _serial = self.lock_of(id).lock().await;
        let (current, revision) = self.load(id).await?;
        let current = current.ok_or(CoordError::Txn(TxnError::InvalidProducerIdMapping))?;
        match transactions::end(&current, producer, commit, self.clock.now_ms())? {
            EndOutcome::AlreadyDone => Ok(()),
            EndOutcome::Prepared(record) => {
                let revision = self.prepare(id, revision, &record).await?;
                self.spawn_finish(id, revision);
                Ok(())
            }
        }
    }

    /// Writes a `Prepare*` record and its marker requests: in the same transaction when they
    /// fit one, else the record first and the requests after it, each chunk fenced on it.
    /// Returns the record's revision.
    async fn prepare(
        &self,
        id: &str,
        revision: Revision,
        record: &TransactionRecord,
    ) -> Result<Revision, CoordError> {
        debug_assert!(record.state.is_prepared());
        let mut requests = marker_requests(id, record, self.clock.now_ms());
        let per_txn = self.store.max_txn_ops().saturating_sub(1).max(1);
        let first: Vec<TxnOp> = requests.drain(..per_txn.min(requests.len())).collect();
        let revision = self.store_record(id, revision, record, first).await?;
        self.put_requests(id, revision, requests).await?;
        Ok(revision)
    }

    async fn put_requests(
        &self,
        id: &str,
        revision: Revision,
        mut requests: Vec<TxnOp>,
    ) -> Result<(), CoordError> {
        let per_txn = self.store.max_txn_ops().saturating_sub(1).max(1);
        while !requests.is_empty() {
            let chunk: Vec<TxnOp> = requests.drain(..per_txn.min(requests.len())).collect();
            let fenced = Txn::when(vec![Compare::mod_revision(keys::transaction(id), revision)]);
            if !self.store.txn(fenced.and_then(chunk)).await?.succeeded {
                return Err(CoordError::NotCoordinator);
            }
        }
        Ok(())
    }

    fn spawn_finish(self: &Arc<Self>, id: &str, revision: Revision) {
        if !self
            .finishing
            .lock()
            .expect("finishing poisoned")
            .insert(id.to_owned())
        {
            return;
        }
        let coordinator = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            if let Err(error) = coordinator.finish(&id, revision).await {
                tracing::warn!(
                    transactional_id = id,
                    ?error,
                    "transaction not finished yet; will retry"
                );
            }
            coordinator
                .finishing
                .lock()
                .expect("finishing poisoned")
                .remove(&id);
        });
    }

    /// Waits until every marker request of the `Prepare*` record at `revision` is answered,
    /// then (on commit) moves the transaction's group offsets into place and writes
    /// `Complete*`. Stops quietly if the record moved on (another coordinator finished it).
    async fn finish(&self, id: &str, revision: Revision) -> Result<(), CoordError> {
        let (Some(record), current) = self.load(id).await? else {
            return Ok(());
        };
        if current != revision || !record.state.is_prepared() {
            return Ok(());
        }
        let mut pause = Duration::from_millis(5);
        // Partitions whose marker request may still be there, in order: each poll reads from
        // the first of them and stops at one still there (one read per poll while waiting, one
        // per partition in all). Answered requests are not read again: the Complete write below
        // checks that none was put again meanwhile.
        let mut left = record.partition_list();
        loop {
            while let Some((topic, partition)) = left.first() {
                let key = keys::marker_request(topic, *partition, id);
                if self.store.get(&key).await?.is_some() {
                    break;
                }
                left.remove(0);
            }
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(pause).await;
            // Markers usually land within a few short polls; only a slow wait looks whether
            // another coordinator took the id over (the writes below are fenced regardless).
            if pause == MARKER_POLL_MAX {
                let (_, now) = self.load(id).await?;
                if now != revision {
                    return Ok(());
                }
            }
            pause = (pause * 2).min(MARKER_POLL_MAX);
        }
        let commit = record.state == TxnState::PrepareCommit;
        for group in &record.groups {
            offsets::settle(&*self.store, id, revision, group, commit).await?;
        }
        let _serial = self.lock_of(id).lock().await;
        let Some(done) = transactions::complete(&record, self.clock.now_ms()) else {
            return Ok(());
        };
        // Complete only while no request is left: a request put again meanwhile (a successor
        // coordinator's check) is answered first. (Partitions also refuse an ending they
        // applied already, so a late one never ends the producer's next transaction; beyond
        // what one transaction can compare, the partitions were polled above.)
        let requests = record.partition_list();
        let absent: Vec<Compare> = if requests.len() < self.store.max_txn_ops() {
            requests
                .iter()
                .map(|(topic, partition)| {
                    Compare::absent(keys::marker_request(topic, *partition, id))
                })
                .collect()
        } else {
            Vec::new()
        };
        let key = keys::transaction(id);
        let mut compares = vec![Compare::mod_revision(&key, revision)];
        compares.extend(absent);
        let txn = Txn::when(compares).and_then(vec![TxnOp::put(&key, keys::encode(&done))]);
        if !self.store.txn(txn).await?.succeeded {
            return Err(CoordError::NotCoordinator);
        }
        Ok(())
    }

    /// One pass over every id this broker coordinates (`coordinates` says which): finishes
    /// prepared transactions nobody here is finishing (a dead coordinator's, after putting its
    /// marker requests again: partitions apply each ending once), aborts timed-out ones, forgets
    /// expired ids.
    pub async fn check(
        self: &Arc<Self>,
        coordinates: impl Fn(&str) -> bool,
    ) -> Result<(), CoordError> {
        for (id, record, kv) in self.records(coordinates).await? {
            // One id's failure (another coordinator moved it, a store hiccup) does not hold
            // back the others.
            if let Err(error) = self.check_one(&id, &record, &kv).await {
                tracing::warn!(
                    transactional_id = id,
                    ?error,
                    "transaction check failed; retrying"
                );
            }
        }
        Ok(())
    }

    /// Every stored transactional id that `coordinates` accepts, with its record and key.
    /// An unreadable record is logged and left out.
    pub async fn records(
        &self,
        coordinates: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, TransactionRecord, skiff_tiering::metadata::KeyValue)>, CoordError>
    {
        let prefix = keys::transactions_prefix();
        let mut records = Vec::new();
        let all = self.store.range_prefix(&prefix, 0).await?;
        self.known_ids.store(all.len(), Ordering::Relaxed);
        for kv in all {
            let Some(id) = kv.key.strip_prefix(&prefix).and_then(keys::unescape_group) else {
                continue;
            };
            if !coordinates(&id) {
                continue;
            }
            match keys::decode(&kv.key, &kv.value) {
                Ok(record) => records.push((id, record, kv)),
                Err(error) => {
                    tracing::error!(%error, key = kv.key, "unreadable transaction record");
                }
            }
        }
        Ok(records)
    }

    async fn check_one(
        self: &Arc<Self>,
        id: &str,
        record: &TransactionRecord,
        kv: &skiff_tiering::metadata::KeyValue,
    ) -> Result<(), CoordError> {
        let now_ms = self.clock.now_ms();
        if record.state.is_prepared() {
            let busy = self
                .finishing
                .lock()
                .expect("finishing poisoned")
                .contains(id);
            if !busy {
                let requests = marker_requests(id, record, now_ms);
                self.put_requests(id, kv.mod_revision, requests).await?;
                self.spawn_finish(id, kv.mod_revision);
            }
        } else if let Some(aborting) = transactions::abort_timed_out(record, now_ms) {
            let _serial = self.lock_of(id).lock().await;
            tracing::info!(
                transactional_id = id,
                timeout_ms = record.timeout_ms,
                "aborting a transaction past its timeout"
            );
            let revision = self.prepare(id, kv.mod_revision, &aborting).await?;
            self.spawn_finish(id, revision);
        } else if record.expired(now_ms, self.settings.id_expiration_ms) {
            let forget = Txn::when(vec![Compare::mod_revision(&kv.key, kv.mod_revision)])
                .and_then(vec![TxnOp::delete(&kv.key)]);
            self.store.txn(forget).await?;
        }
        Ok(())
    }
}

/// The broker coordinating transactional id `id` among the live ones (rendezvous hashing, as
/// for groups).
pub fn coordinator<'a>(id: &str, live: &'a [BrokerRecord]) -> Option<&'a BrokerRecord> {
    let ids: Vec<i32> = live.iter().map(|b| b.node_id).collect();
    let node = preferred_leader(&format!("transaction:{id}"), 0, &ids)?;
    live.iter().find(|b| b.node_id == node)
}

/// Runs [`Coordinator::check`] every `check_interval` for the ids `node_id` coordinates, until
/// `stopped` turns true.
pub async fn run(
    coordinator: Arc<Coordinator>,
    node_id: i32,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(coordinator.settings.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => return,
        }
        let live = match live_brokers(&*coordinator.store).await {
            Ok(live) => live,
            Err(error) => {
                tracing::warn!(%error, "cannot read live brokers for transaction checks");
                continue;
            }
        };
        let mine = |id: &str| coordinator_of_id(id, &live) == Some(node_id);
        if let Err(error) = coordinator.check(mine).await {
            tracing::warn!(?error, "transaction check failed; retrying");
        }
    }
}

pub fn coordinator_of_id(id: &str, live: &[BrokerRecord]) -> Option<i32> {
    coordinator(id, live).map(|b| b.node_id)
}

/// The marker request of every partition of a prepared transaction.
fn marker_requests(id: &str, record: &TransactionRecord, now_ms: i64) -> Vec<TxnOp> {
    let request = MarkerRequest {
        producer_id: record.producer_id,
        producer_epoch: record.producer_epoch,
        commit: record.state == TxnState::PrepareCommit,
        requested_ms: now_ms,
        end: record.ends,
    };
    let value = keys::encode(&request);
    record
        .partition_list()
        .into_iter()
        .map(|(topic, partition)| {
            TxnOp::put(keys::marker_request(&topic, partition, id), value.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_tiering::clock::ManualClock;
    use skiff_tiering::metadata::embedded::EmbeddedStore;

    fn settings(id_expiration_ms: i64, id_max_count: usize) -> TxnSettings {
        TxnSettings {
            max_timeout_ms: 60_000,
            id_expiration_ms,
            id_max_count,
            check_interval: Duration::from_secs(10),
        }
    }

    fn coordinator_on(
        store: &Arc<dyn MetadataStore>,
        clock: &Arc<ManualClock>,
        settings: TxnSettings,
    ) -> Arc<Coordinator> {
        Coordinator::new(
            store.clone(),
            clock.clone(),
            Arc::new(ProducerIds::new(store.clone())),
            settings,
        )
    }

    /// A coordinator over an embedded store in `dir`, on a manual clock at 1,000 ms.
    async fn coordinator_with(
        dir: &tempfile::TempDir,
        id_expiration_ms: i64,
        id_max_count: usize,
    ) -> (Arc<Coordinator>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_000));
        let store: Arc<dyn MetadataStore> = Arc::new(
            EmbeddedStore::open(&dir.path().join("meta.redb"), clock.clone())
                .await
                .expect("store"),
        );
        let settings = settings(id_expiration_ms, id_max_count);
        (coordinator_on(&store, &clock, settings), clock)
    }

    #[tokio::test]
    async fn idle_transactional_ids_are_forgotten_and_open_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (coordinator, clock) = coordinator_with(&dir, 10_000, 100).await;
        let idle = coordinator
            .init_producer_id("idle", 60_000, None)
            .await
            .expect("init idle");
        let open = coordinator
            .init_producer_id("open", 60_000, None)
            .await
            .expect("init open");
        let partitions = Addition::Partitions(vec![("t".to_string(), 0)]);
        coordinator
            .add("open", open, &partitions)
            .await
            .expect("open a transaction");
        // Not idle long enough yet: both kept.
        clock.advance_ms(9_999);
        coordinator.check(|_| true).await.expect("check");
        assert!(coordinator.load("idle").await.expect("load").0.is_some());
        // Past the expiration: the idle id's record is deleted; the open transaction (not
        // timed out: 60 s) keeps its id however long it has been idle.
        clock.advance_ms(1);
        coordinator.check(|_| true).await.expect("check");
        assert!(coordinator.load("idle").await.expect("load").0.is_none());
        let (kept, _) = coordinator.load("open").await.expect("load");
        assert_eq!(kept.expect("open id kept").producer_id, open.0);
        // A forgotten id starts again as new: a fresh producer id, epoch 0.
        let again = coordinator
            .init_producer_id("idle", 60_000, None)
            .await
            .expect("init again");
        assert_ne!(again.0, idle.0);
        assert_eq!(again.1, 0);
    }

    /// Deletes every marker request of `id` still in the store, as the partitions' leaders do
    /// when they append the markers; how many there were.
    async fn answer_marker_requests(
        store: &dyn MetadataStore,
        id: &str,
        parts: &[(&str, i32)],
    ) -> usize {
        let mut answered = 0;
        for (topic, partition) in parts {
            let key = keys::marker_request(topic, *partition, id);
            if store.get(&key).await.expect("get").is_some() {
                let delete = Txn::when(Vec::new()).and_then(vec![TxnOp::delete(&key)]);
                assert!(store.txn(delete).await.expect("delete").succeeded);
                answered += 1;
            }
        }
        answered
    }

    #[tokio::test]
    async fn a_transaction_prepared_by_a_dead_coordinator_is_finished_by_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, clock) = coordinator_with(&dir, 3_600_000, 100).await;
        let id = "tid";
        let parts = [("t", 0), ("t", 1)];
        let producer = first
            .init_producer_id(id, 60_000, None)
            .await
            .expect("init");
        let addition =
            Addition::Partitions(parts.iter().map(|(t, p)| (t.to_string(), *p)).collect());
        first.add(id, producer, &addition).await.expect("add");
        // The first coordinator writes PrepareCommit and its marker requests, then dies before
        // it sees the markers through (its finishing task never runs).
        let (current, revision) = first.load(id).await.expect("load");
        let EndOutcome::Prepared(prepared) =
            transactions::end(&current.expect("record"), producer, true, 1_000).expect("end")
        else {
            panic!("a transaction with partitions is prepared");
        };
        first
            .prepare(id, revision, &prepared)
            .await
            .expect("prepare");
        let store = first.store.clone();
        drop(first);
        // One leader appended its marker before the coordinator died, the other had not.
        let key = keys::marker_request("t", 0, id);
        let delete = Txn::when(Vec::new()).and_then(vec![TxnOp::delete(&key)]);
        assert!(store.txn(delete).await.expect("delete").succeeded);

        // The next coordinator's check puts the requests again (each partition applies an
        // ending once) and waits for them before writing CompleteCommit.
        let next = coordinator_on(&store, &clock, settings(3_600_000, 100));
        next.check(|_| true).await.expect("check");
        let (record, _) = next.load(id).await.expect("load");
        assert_eq!(record.expect("record").state, TxnState::PrepareCommit);
        assert_eq!(
            answer_marker_requests(&*store, id, &parts).await,
            parts.len(),
            "every request put again"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (record, _) = next.load(id).await.expect("load");
            if record.expect("record").state == TxnState::CompleteCommit {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never completed");
            answer_marker_requests(&*store, id, &parts).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn new_transactional_ids_are_refused_beyond_the_maximum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (coordinator, _clock) = coordinator_with(&dir, 3_600_000, 2).await;
        for id in ["a", "b"] {
            coordinator
                .init_producer_id(id, 1_000, None)
                .await
                .expect("init");
        }
        // Counted by the periodic check: then a third id is refused, known ones are not.
        coordinator.check(|_| true).await.expect("check");
        assert_eq!(
            coordinator.init_producer_id("c", 1_000, None).await,
            Err(CoordError::TooManyIds)
        );
        let (again, _) = coordinator.load("c").await.expect("load");
        assert!(again.is_none(), "nothing stored for the refused id");
        let (_, epoch) = coordinator
            .init_producer_id("a", 1_000, None)
            .await
            .expect("a known id");
        assert_eq!(epoch, 1);
    }
}
