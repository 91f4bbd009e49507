//! The compactor's loop: every pass finds the partitions whose flush-object data is due for
//! Parquet (or below their log start), claims their jobs, reads their sections grouped by object
//! and runs the jobs.
//!
//! A partition is due when its oldest unconverted data has waited half the freshness (passes run
//! every quarter of it, within 1–15 s), so records are in Parquet within about the freshness of
//! being acknowledged; data below the log start is dropped at the next pass. A pass reads at most
//! `pass_max_bytes`; when there was more, the next pass starts at once.

use crate::convert::{self, Sections};
use crate::gc::{Collector, GcError, GcReport};
use crate::job::{self, Ctx, JobError, Plan};
use crate::lease::{Claim, Leases};
use crate::rewrite;
use crate::CompactorSettings;
use object_store::ObjectStore;
use skiff_tiering::keys::{self, CompactorError, Layout, PartitionState};
use skiff_tiering::log::TopicPartition;
use skiff_tiering::metadata::{MetadataError, MetadataStore, Txn, TxnOp};
use skiff_tiering::Clock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Counters for the admin API and tests.
#[derive(Debug, Default)]
pub struct CompactorStats {
    pub passes: AtomicU64,
    pub jobs: AtomicU64,
    pub job_failures: AtomicU64,
    /// Jobs whose swap found the index changed (retried by a later pass).
    pub conflicts: AtomicU64,
    pub files_written: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub gc_runs: AtomicU64,
    pub gc_failures: AtomicU64,
    pub objects_deleted: AtomicU64,
    pub bytes_deleted: AtomicU64,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub jobs: usize,
    pub failures: usize,
    /// Work was left for the next pass (budget reached, or a job did not take everything).
    pub more: bool,
}

#[derive(Debug)]
pub struct Compactor {
    ctx: Ctx,
    leases: Leases,
    /// Partitions with unconverted data, and since when (ms) their oldest waits.
    waiting: Mutex<HashMap<TopicPartition, i64>>,
    /// Failures in a row per partition.
    failures: Mutex<HashMap<TopicPartition, u32>>,
    stats: CompactorStats,
    collector: tokio::sync::Mutex<Collector>,
}

impl Compactor {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        objects: Arc<dyn ObjectStore>,
        clock: Arc<dyn Clock>,
        settings: CompactorSettings,
    ) -> Arc<Self> {
        let owner = ulid::Ulid::new().to_string();
        Arc::new(Self {
            leases: Leases::new(store.clone(), owner, settings.lease_ttl_ms),
            ctx: Ctx::new(store, objects, clock, settings),
            waiting: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            stats: CompactorStats::default(),
            collector: tokio::sync::Mutex::new(Collector::default()),
        })
    }

    pub fn stats(&self) -> &CompactorStats {
        &self.stats
    }

    pub fn settings(&self) -> &CompactorSettings {
        &self.ctx.settings
    }

    /// Runs passes until `stop` turns true; then gives up every claim.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let keep_alive = {
            let this = Arc::downgrade(&self);
            let every =
                std::time::Duration::from_millis((self.ctx.settings.lease_ttl_ms / 3) as u64);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let Some(this) = this.upgrade() else { return };
                    this.leases.keep_alive().await;
                }
            })
        };
        tracing::info!(owner = self.leases.owner(), "compactor started");
        let gc_every = std::time::Duration::from_millis(self.ctx.settings.gc_interval_ms as u64);
        let mut last_gc = tokio::time::Instant::now();
        loop {
            let more = match self.pass().await {
                Ok(report) => report.more,
                Err(error) => {
                    tracing::warn!(%error, "compactor pass failed; retried next pass");
                    false
                }
            };
            if *stop.borrow() {
                break;
            }
            if last_gc.elapsed() >= gc_every {
                last_gc = tokio::time::Instant::now();
                if let Err(error) = self.gc().await {
                    tracing::warn!(%error, "garbage collection failed; nothing was deleted that could not be verified, retried later");
                }
            }
            if !more {
                tokio::select! {
                    _ = tokio::time::sleep(self.ctx.settings.pass_interval()) => {}
                    _ = stop.changed() => {}
                }
            }
            if *stop.borrow() {
                break;
            }
        }
        keep_alive.abort();
        self.leases.revoke().await;
        tracing::info!("compactor stopped");
    }

    /// One pass over every partition.
    pub async fn pass(&self) -> Result<PassReport, JobError> {
        self.stats.passes.fetch_add(1, Ordering::Relaxed);
        let settings = &self.ctx.settings;
        let mut report = PassReport::default();
        let mut budget = settings.pass_max_bytes;
        let mut plans: Vec<(Plan, Claim)> = Vec::new();
        let due = self.due().await?;
        for tp in due.convert {
            if budget == 0 {
                report.more = true;
                break;
            }
            let now_ms = self.ctx.clock.now_ms();
            let key = keys::compactor_job(&tp.topic, tp.partition);
            let Some(claim) = self.leases.claim(key, now_ms).await? else {
                continue;
            };
            match job::plan(&self.ctx, &tp, settings.job_max_bytes.min(budget)).await {
                Ok(Some(plan)) => {
                    budget = budget.saturating_sub(plan.read_bytes.max(1));
                    plans.push((plan, claim));
                }
                Ok(None) => {
                    self.waiting.lock().expect("waiting poisoned").remove(&tp);
                    self.leases.release(claim).await;
                }
                Err(error) => {
                    report.failures += 1;
                    self.record_failure(&tp, &error).await;
                    self.leases.release(claim).await;
                }
            }
        }
        let mut sections = self
            .fetch(&plans.iter().map(|(plan, _)| plan).collect::<Vec<_>>())
            .await;
        for (plan, claim) in plans {
            let tp = plan.tp.clone();
            report.jobs += 1;
            self.stats.jobs.fetch_add(1, Ordering::Relaxed);
            let outcome = match sections.as_mut() {
                Ok(all) => {
                    let mine = take_sections(all, &plan);
                    self.stats
                        .bytes_read
                        .fetch_add(plan.read_bytes, Ordering::Relaxed);
                    job::run(&self.ctx, plan, mine).await
                }
                // One plan's objects failed the pass's fetch: read each plan's alone, so the
                // failure is that partition's.
                Err(_) => match self.fetch(&[&plan]).await {
                    Ok(mine) => job::run(&self.ctx, plan, mine).await,
                    Err(error) => Err(error),
                },
            };
            if let Some(done) = self.settle(&tp, outcome.map(Some), &mut report).await {
                if done.whole {
                    self.waiting.lock().expect("waiting poisoned").remove(&tp);
                } else {
                    report.more = true;
                }
            }
            self.leases.release(claim).await;
        }
        for tp in due.rewrite {
            let Some(claim) = self
                .leases
                .claim(
                    keys::compactor_job(&tp.topic, tp.partition),
                    self.ctx.clock.now_ms(),
                )
                .await?
            else {
                continue;
            };
            report.jobs += 1;
            self.stats.jobs.fetch_add(1, Ordering::Relaxed);
            let outcome = self.rewrite(&tp).await;
            self.settle(&tp, outcome, &mut report).await;
            self.leases.release(claim).await;
        }
        Ok(report)
    }

    /// Counts a job's outcome and records its failure; the outcome of a job that changed the
    /// index.
    async fn settle(
        &self,
        tp: &TopicPartition,
        outcome: Result<Option<job::Outcome>, JobError>,
        report: &mut PassReport,
    ) -> Option<job::Outcome> {
        match outcome {
            Ok(Some(done)) => {
                self.failures.lock().expect("failures poisoned").remove(tp);
                if let Some(file) = &done.file {
                    self.stats.files_written.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .bytes_written
                        .fetch_add(file.bytes, Ordering::Relaxed);
                }
                Some(done)
            }
            Ok(None) => None,
            Err(JobError::Conflict(reason)) => {
                self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%reason, partition = %tp, "compaction job lost a race; planned again next pass");
                None
            }
            Err(error) => {
                report.failures += 1;
                self.record_failure(tp, &error).await;
                None
            }
        }
    }

    /// Plans (from what is stored now) and runs a rewrite of the front of a partition's Parquet
    /// part, if one is still due.
    async fn rewrite(&self, tp: &TopicPartition) -> Result<Option<job::Outcome>, JobError> {
        let Some(job::Stored {
            topic,
            state,
            snapshot,
        }) = job::read_partition(&self.ctx, tp).await?
        else {
            return Ok(None);
        };
        let policy = rewrite::Policy::from_configs(&topic.record.configs);
        let now_ms = self.ctx.clock.now_ms();
        let log_start = state.log_start_offset;
        let stable_end = job::last_stable_offset(&self.ctx, tp).await?;
        let Some(plan) = rewrite::plan(&snapshot.layout, (log_start, stable_end), &policy, now_ms)
        else {
            return Ok(None);
        };
        rewrite::run(
            &self.ctx,
            tp,
            topic.create_revision,
            &snapshot,
            log_start,
            &policy,
            plan,
        )
        .await
        .map(Some)
    }

    /// One garbage collection, if this compactor gets the claim on it (one collector at a time
    /// keeps the grace-period memory in one place); None when another compactor holds it, or
    /// when nothing changed since this compactor's last collection left nothing waiting.
    pub async fn gc(&self) -> Result<Option<GcReport>, GcError> {
        let now_ms = self.ctx.clock.now_ms();
        // The store's revision, read without writing: unchanged since this compactor's last
        // collection left nothing waiting, there is nothing to collect.
        let revision = self.ctx.store.txn(Txn::default()).await?.revision;
        if self.collector.lock().await.is_quiet(revision, now_ms) {
            return Ok(None);
        }
        let Some(claim) = self.leases.claim(keys::compactor_gc(), now_ms).await? else {
            return Ok(None);
        };
        let mut collector = self.collector.lock().await;
        let result = collector.collect(&self.ctx).await;
        let released = self.leases.release(claim).await;
        collector.note_done(released.filter(|_| result.is_ok()));
        drop(collector);
        self.stats.gc_runs.fetch_add(1, Ordering::Relaxed);
        match &result {
            Ok(report) => {
                self.stats
                    .objects_deleted
                    .fetch_add(report.deleted as u64, Ordering::Relaxed);
                self.stats
                    .bytes_deleted
                    .fetch_add(report.deleted_bytes, Ordering::Relaxed);
                if report.deleted > 0 {
                    tracing::info!(
                        deleted = report.deleted,
                        deleted_bytes = report.deleted_bytes,
                        referenced = report.referenced,
                        listed = report.listed,
                        "garbage collected"
                    );
                }
            }
            Err(_) => {
                self.stats.gc_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        result.map(Some)
    }

    /// The sections of every plan's leaves at or above its log start, read object by object.
    async fn fetch(&self, plans: &[&Plan]) -> Result<Sections, JobError> {
        let mut leaves = Vec::new();
        for plan in plans {
            leaves.extend(
                plan.cut
                    .leaves
                    .iter()
                    .filter(|l| l.last_offset >= plan.log_start),
            );
        }
        Ok(convert::fetch_sections(&*self.ctx.objects, &leaves).await?)
    }

    /// Partitions due for a conversion (those waiting longest first) and for a rewrite.
    async fn due(&self) -> Result<Due, JobError> {
        let store = &*self.ctx.store;
        let topics = self.ctx.catalog.list().await?;
        let states: HashMap<String, PartitionState> =
            decode_all(store, &keys::all_partitions_prefix()).await?;
        let layouts: HashMap<String, Layout> = decode_all(store, &keys::layouts_prefix()).await?;
        let now_ms = self.ctx.clock.now_ms();
        let convert_after_ms = self.ctx.settings.convert_after_ms();
        let mut due = Vec::new();
        let mut rewrites = Vec::new();
        let mut seen = Vec::new();
        for topic in &topics {
            for partition in 0..topic.record.partitions {
                let name = &topic.record.name;
                let state = states
                    .get(&keys::partition(name, partition))
                    .cloned()
                    .unwrap_or_default();
                let layout = layouts
                    .get(&keys::layout(name, partition))
                    .cloned()
                    .unwrap_or_default();
                let tp = TopicPartition::new(name, partition);
                let policy = rewrite::Policy::from_configs(&topic.record.configs);
                // Planned again with the last stable offset when it runs.
                let bounds = (state.log_start_offset, i64::MAX);
                if rewrite::plan(&layout, bounds, &policy, now_ms).is_some() {
                    rewrites.push(tp.clone());
                }
                let unconverted = state.next_offset > layout.parquet_end;
                let droppable = (unconverted && state.log_start_offset > layout.parquet_end)
                    || job::has_expired(&layout, state.log_start_offset);
                if !unconverted && !droppable {
                    continue;
                }
                let known = self
                    .waiting
                    .lock()
                    .expect("waiting poisoned")
                    .get(&tp)
                    .copied();
                let since = match known {
                    Some(since) => since,
                    None => self.oldest_unconverted_ms(&tp, now_ms).await?,
                };
                seen.push((tp.clone(), since));
                if droppable || now_ms - since >= convert_after_ms {
                    due.push((since, tp));
                }
            }
        }
        {
            let mut waiting = self.waiting.lock().expect("waiting poisoned");
            waiting.clear();
            waiting.extend(seen);
        }
        due.sort();
        Ok(Due {
            convert: due.into_iter().map(|(_, tp)| tp).collect(),
            rewrite: rewrites,
        })
    }

    /// When the oldest flush-object data of a partition was written: from the key of the
    /// object holding its first tail section (keys are ULIDs, which carry their time); a
    /// rollup means old data (due now).
    async fn oldest_unconverted_ms(
        &self,
        tp: &TopicPartition,
        now_ms: i64,
    ) -> Result<i64, JobError> {
        let store = &*self.ctx.store;
        if !store
            .range_prefix(&keys::rollup_prefix(&tp.topic, tp.partition), 1)
            .await?
            .is_empty()
        {
            return Ok(now_ms - self.ctx.settings.convert_after_ms());
        }
        let first = store
            .range_prefix(&keys::index_prefix(&tp.topic, tp.partition), 1)
            .await?;
        let written_ms = first.first().and_then(|kv| {
            let entry: keys::IndexEntry = keys::decode(&kv.key, &kv.value).ok()?;
            skiff_tiering::paths::written_ms(&entry.object)
        });
        Ok(written_ms.map_or(now_ms, |ms| ms.min(now_ms)))
    }

    /// Logs a failed job and records it for the admin API (deleted by the next success).
    async fn record_failure(&self, tp: &TopicPartition, error: &JobError) {
        self.stats.job_failures.fetch_add(1, Ordering::Relaxed);
        let failures = {
            let mut all = self.failures.lock().expect("failures poisoned");
            let count = all.entry(tp.clone()).or_insert(0);
            *count += 1;
            *count
        };
        tracing::warn!(%error, partition = %tp, failures, "compaction job failed; nothing was changed, retried next pass");
        let record = CompactorError {
            error: error.to_string(),
            at_ms: self.ctx.clock.now_ms(),
            failures,
        };
        let put = skiff_tiering::metadata::Txn::default().and_then(vec![TxnOp::put(
            keys::compactor_error(&tp.topic, tp.partition),
            keys::encode(&record),
        )]);
        if let Err(error) = self.ctx.store.txn(put).await {
            tracing::debug!(%error, "compactor error not recorded");
        }
    }
}

/// What a pass has to do.
struct Due {
    convert: Vec<TopicPartition>,
    rewrite: Vec<TopicPartition>,
}

/// The fetched sections of one plan, moved out of a pass's.
fn take_sections(all: &mut Sections, plan: &Plan) -> Sections {
    plan.cut
        .leaves
        .iter()
        .filter_map(|l| {
            let key = (l.object.clone(), l.position);
            all.remove(&key).map(|bytes| (key, bytes))
        })
        .collect()
}

/// Every value under `prefix`, by key.
async fn decode_all<T: for<'de> serde::Deserialize<'de>>(
    store: &dyn MetadataStore,
    prefix: &str,
) -> Result<HashMap<String, T>, MetadataError> {
    store
        .range_prefix(prefix, 0)
        .await?
        .into_iter()
        .map(|kv| {
            let value = keys::decode(&kv.key, &kv.value).map_err(MetadataError::Corrupt)?;
            Ok((kv.key, value))
        })
        .collect()
}
