//! Reads of partitions another broker leads (Kafka's fetch from follower, KIP-392).
//!
//! Every broker reads the same bucket, so any broker can serve a consumer whatever partition it
//! reads: what it needs is the partition's committed state and index, which the metadata store
//! holds. A broker keeps a *replica view* of each such partition it served recently, read from
//! the store in one request and reloaded when a read reaches the view's end, asks for a newer
//! leader epoch, or finds the view older than its maximum age — unless the topic's watch
//! (`replica_watch`) says nothing changed since the view was loaded, which costs no request.
//! Between reloads the view lags the leader, as a Kafka follower's high watermark does: by at
//! most `replica_view_refresh_ms` for a consumer at the end of the log.
//!
//! A replica view only ever shows committed data (the state key's next offset is the high
//! watermark: nothing the leader has not committed is visible), so reading from one never shows
//! a record that could be lost. What it reads may have been compacted or deleted since the view
//! was loaded; the reader then finds an object gone and reloads the index (as a leader does).

use super::load::read_partition_at;
use super::replica_watch::{TopicWatch, Watched};
use super::{Isolation, LoadFor, LogError, LogInner, PartitionLog, PartitionRead, TopicPartition};
use crate::metadata::Revision;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Default of `LogConfig::replica_view_refresh_ms`.
pub const REPLICA_VIEW_REFRESH_MS: u64 = 250;

/// A view used for reads below its end is checked again after this many refresh intervals
/// (retention, DeleteRecords, a new leader), so its log start offset does not lag for long.
const MAX_AGE_REFRESHES: i64 = 20;

/// Replica views a fetch reloads with one metadata-store request (`Log::prepare_replica_views`;
/// six reads each, so sixteen take 96 of etcd's 128 operations per transaction).
pub(crate) const VIEWS_PER_LOAD: usize = 16;

/// Such requests one fetch has in flight at once.
pub(crate) const LOADS_AT_ONCE: usize = 4;

/// Default of `LogConfig::replica_views_max`.
pub const REPLICA_VIEWS_MAX: usize = 1024;

/// The replica views this broker keeps, at most `max` (the least recently used goes first), and
/// a watch per topic they belong to.
#[derive(Debug)]
pub(crate) struct ReplicaViews {
    views: Mutex<HashMap<TopicPartition, Arc<ReplicaView>>>,
    /// Locked after `views` when both are.
    watches: Mutex<HashMap<Arc<str>, Arc<TopicWatch>>>,
    max: usize,
}

/// A load of a replica view.
#[derive(Debug, Clone)]
struct Loaded {
    partition: Arc<PartitionLog>,
    /// The store's revision the load read at.
    revision: Revision,
    /// The topic watch's generation when the load started (0: none ran).
    generation: u64,
}

#[derive(Debug)]
struct ReplicaView {
    /// The latest load; replaced whole by a reload.
    loaded: Mutex<Loaded>,
    /// When the store was last read for this partition (the clock's milliseconds).
    checked_ms: Mutex<i64>,
    /// When a read last used it (for eviction).
    used_ms: Mutex<i64>,
    /// One check at a time: concurrent reads of a stale view wait for one store read.
    checking: tokio::sync::Mutex<()>,
}

/// Why a view must be reloaded from the store before a read (`watched`: what the topic's watch
/// says about it).
fn needs_check(
    (offset, leader_epoch, isolation): (i64, i32, Isolation),
    partition: &PartitionLog,
    (checked_ms, now_ms): (i64, i64),
    refresh_ms: i64,
    watched: Watched,
) -> bool {
    let view = partition.view.lock().expect("view mutex poisoned");
    let age_ms = now_ms.saturating_sub(checked_ms);
    let (_, last_stable_offset, high_watermark) = view.stable_offsets();
    // Where this read's data ends: a read_committed consumer waits at the last stable offset.
    let end = match isolation {
        Isolation::ReadUncommitted => high_watermark,
        Isolation::ReadCommitted => last_stable_offset,
    };
    // Past the high watermark: the consumer has seen more than this view (from the leader, or
    // another replica) — only the store can say whether that offset exists.
    // Past the high watermark, or a newer epoch: a consumer has seen more than the watch may
    // have told yet, so the store is asked whatever the watch says.
    offset > high_watermark
        || leader_epoch > view.state.leader_epoch
        || (watched != Watched::Unmoved
            && ((offset >= end && age_ms >= refresh_ms)
                || age_ms >= refresh_ms.saturating_mul(MAX_AGE_REFRESHES)))
}

impl ReplicaView {
    /// A view of what `loaded` read, checked and used at `now_ms`.
    fn new(loaded: Loaded, now_ms: i64) -> Arc<Self> {
        Arc::new(Self {
            loaded: Mutex::new(loaded),
            checked_ms: Mutex::new(now_ms),
            used_ms: Mutex::new(now_ms),
            checking: tokio::sync::Mutex::new(()),
        })
    }

    /// The partition as the view shows it, and whether the read (`offset`, `leader_epoch`,
    /// `isolation`) must reload it first (see [`needs_check`]).
    fn look(
        &self,
        tp: &TopicPartition,
        read: (i64, i32, Isolation),
        watch: Option<&TopicWatch>,
        (now_ms, refresh_ms): (i64, i64),
    ) -> (Arc<PartitionLog>, bool) {
        let loaded = self.loaded.lock().expect("loaded mutex poisoned").clone();
        let watched = watch.map_or(Watched::Unknown, |watch| {
            watch.says(tp.partition, (loaded.revision, loaded.generation))
        });
        let checked_ms = *self.checked_ms.lock().expect("checked mutex poisoned");
        let stale = needs_check(
            read,
            &loaded.partition,
            (checked_ms, now_ms),
            refresh_ms,
            watched,
        );
        (loaded.partition, stale)
    }

    /// Not read within `recent_ms` of `now_ms`: a new view may take its place.
    fn idle(&self, (now_ms, recent_ms): (i64, i64)) -> bool {
        let used_ms = *self.used_ms.lock().expect("used mutex poisoned");
        now_ms.saturating_sub(used_ms) >= recent_ms
    }

    /// Takes `fresh` unless the view already holds a later load (a read's own reload that
    /// finished first).
    fn take(&self, fresh: Loaded, now_ms: i64) {
        let mut loaded = self.loaded.lock().expect("loaded mutex poisoned");
        if fresh.revision >= loaded.revision {
            *loaded = fresh;
            *self.checked_ms.lock().expect("checked mutex poisoned") = now_ms;
        }
    }
}

impl ReplicaViews {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            views: Mutex::new(HashMap::new()),
            watches: Mutex::new(HashMap::new()),
            max,
        }
    }

    pub(crate) fn forget_topic(&self, topic: &str) {
        let mut views = self.views.lock().expect("replica views poisoned");
        views.retain(|tp, _| &*tp.topic != topic);
        self.drop_unused_watch(&views, topic);
    }

    pub(crate) fn forget_all(&self) {
        self.views.lock().expect("replica views poisoned").clear();
        self.watches.lock().expect("watches poisoned").clear();
    }

    fn forget(&self, tp: &TopicPartition) {
        let mut views = self.views.lock().expect("replica views poisoned");
        views.remove(tp);
        self.drop_unused_watch(&views, &tp.topic);
    }

    /// Stops `topic`'s watch if no view of it is left.
    fn drop_unused_watch(&self, views: &HashMap<TopicPartition, Arc<ReplicaView>>, topic: &str) {
        if !views.keys().any(|tp| &*tp.topic == topic) {
            self.watches.lock().expect("watches poisoned").remove(topic);
        }
    }

    /// Views kept now.
    pub(crate) fn len(&self) -> usize {
        self.views.lock().expect("replica views poisoned").len()
    }

    /// Topic watches running now.
    pub(crate) fn watches(&self) -> usize {
        self.watches.lock().expect("watches poisoned").len()
    }

    fn get(&self, tp: &TopicPartition) -> Option<Arc<ReplicaView>> {
        self.views
            .lock()
            .expect("replica views poisoned")
            .get(tp)
            .cloned()
    }

    /// The partition a view shows now, if this broker keeps one (not marked as used).
    pub(crate) fn partition(&self, tp: &TopicPartition) -> Option<Arc<PartitionLog>> {
        let view = self.get(tp)?;
        let loaded = view.loaded.lock().expect("replica view poisoned");
        Some(loaded.partition.clone())
    }

    fn watch_if_any(&self, topic: &str) -> Option<Arc<TopicWatch>> {
        self.watches
            .lock()
            .expect("watches poisoned")
            .get(topic)
            .cloned()
    }

    /// `topic`'s watch, opened first if there is none.
    async fn watch(&self, inner: &LogInner, topic: &Arc<str>) -> Arc<TopicWatch> {
        if let Some(watch) = self.watch_if_any(topic) {
            return watch;
        }
        let opened = TopicWatch::open(inner.store.clone(), topic, inner.commits.clone()).await;
        // Another read may have opened one meanwhile: keep the first.
        self.watches
            .lock()
            .expect("watches poisoned")
            .entry(topic.clone())
            .or_insert(opened)
            .clone()
    }

    /// How many views not kept now could be kept at `now_ms`: the free places, and the idle
    /// views (not read within `recent_ms`, each of which [`Self::insert`] may drop for a new one).
    fn room(&self, at: (i64, i64)) -> usize {
        let views = self.views.lock().expect("replica views poisoned");
        let idle = views.values().filter(|v| v.idle(at)).count();
        self.max.saturating_sub(views.len()) + idle
    }

    /// Whether one more view could be kept ([`Self::room`] without counting them all).
    fn has_room(&self, at: (i64, i64)) -> bool {
        let views = self.views.lock().expect("replica views poisoned");
        views.len() < self.max || views.values().any(|v| v.idle(at))
    }

    /// Keeps `view` of `tp`, dropping the least recently read view if there are `max`, unless
    /// that one was read within `recent_ms` of `now_ms`: then every kept view is in use (a
    /// consumer fetching more partitions than `max`) and dropping one would only make the next
    /// pass load it again, so `view` serves its one read and is not kept.
    fn insert(&self, tp: &TopicPartition, view: Arc<ReplicaView>, at: (i64, i64)) {
        let mut views = self.views.lock().expect("replica views poisoned");
        if views.len() >= self.max && !views.contains_key(tp) {
            let oldest = views
                .iter()
                .min_by_key(|(_, v)| *v.used_ms.lock().expect("used mutex poisoned"));
            match oldest {
                Some((oldest, v)) if v.idle(at) => {
                    let oldest = oldest.clone();
                    views.remove(&oldest);
                    if oldest.topic != tp.topic {
                        self.drop_unused_watch(&views, &oldest.topic);
                    }
                }
                _ => {
                    self.drop_unused_watch(&views, &tp.topic);
                    return;
                }
            }
        }
        views.insert(tp.clone(), view);
    }
}

/// Which checks of a view a read makes before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Every check [`needs_check`] asks for, its intervals included.
    Due,
    /// Only those the read cannot do without (past the view's high watermark, a newer leader
    /// epoch): a Fetch pass whose views were just brought up to date together reads them as
    /// they are, so a view that became due during the pass is not reloaded alone (and its new
    /// sections read one GET each) but at the next pass.
    Prepared,
}

/// The partition as the store last showed it, checked again first when the read (`offset`,
/// `leader_epoch` (-1: none), `isolation`) needs a fresher view (see [`needs_check`]).
pub(crate) async fn replica_view(
    inner: &LogInner,
    tp: &TopicPartition,
    (offset, leader_epoch): (i64, i32),
    isolation: Isolation,
    freshness: Freshness,
) -> Result<Arc<PartitionLog>, LogError> {
    let now_ms = inner.clock.now_ms();
    let interval_ms = i64::try_from(inner.config.replica_view_refresh_ms).unwrap_or(i64::MAX);
    let refresh_ms = match freshness {
        Freshness::Due => interval_ms,
        // No interval is ever reached: only a read that needs it checks the store.
        Freshness::Prepared => i64::MAX,
    };
    let known = inner.replicas.get(tp);
    let Some(view) = known else {
        // A view there is no room for serves this one read: it needs no watch (opening one
        // per read, for a consumer of more partitions than `max`, would churn the store's).
        let keep = inner.replicas.has_room((now_ms, interval_ms));
        let generation = match keep {
            false => 0,
            true => inner.replicas.watch(inner, &tp.topic).await.generation(),
        };
        let loaded = load(inner, tp, generation).await?;
        let partition = loaded.partition.clone();
        if keep {
            inner
                .replicas
                .insert(tp, ReplicaView::new(loaded, now_ms), (now_ms, interval_ms));
        }
        return Ok(partition);
    };
    *view.used_ms.lock().expect("used mutex poisoned") = now_ms;
    let watch = inner.replicas.watch_if_any(&tp.topic);
    let read = (offset, leader_epoch, isolation);
    let look = |view: &ReplicaView| view.look(tp, read, watch.as_deref(), (now_ms, refresh_ms));
    let (partition, stale) = look(&view);
    if !stale {
        return Ok(partition);
    }
    let _checking = view.checking.lock().await;
    // Another read may have checked while this one waited.
    let (partition, stale) = look(&view);
    if !stale {
        return Ok(partition);
    }
    let watch = inner.replicas.watch(inner, &tp.topic).await;
    match load(inner, tp, watch.generation()).await {
        Ok(fresh) => {
            view.take(fresh, now_ms);
            let loaded = view.loaded.lock().expect("loaded mutex poisoned");
            Ok(loaded.partition.clone())
        }
        Err(error) => {
            // A deleted topic, a store outage: the next read starts from the store again.
            inner.replicas.forget(tp);
            Err(error)
        }
    }
}

/// Brings up to date, [`VIEWS_PER_LOAD`] to a metadata-store request, the views of `reads`
/// that a read with `isolation` would reload or load first (see [`needs_check`]),
/// [`LOADS_AT_ONCE`] requests at a time. New views only as many as there is room for: the rest
/// could not be kept until their reads, which would load them again. Errors are left for the
/// reads to meet: a view that could not be loaded (a deleted topic, a store that answers
/// nothing) is dropped.
pub(crate) async fn prepare(inner: &LogInner, reads: &[&PartitionRead], isolation: Isolation) {
    use futures::StreamExt;
    let now_ms = inner.clock.now_ms();
    let refresh_ms = i64::try_from(inner.config.replica_view_refresh_ms).unwrap_or(i64::MAX);
    let mut due: Vec<TopicPartition> = Vec::new();
    let mut new: Vec<TopicPartition> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for PartitionRead {
        tp,
        offset,
        leader_epoch,
        ..
    } in reads.iter().copied()
    {
        if !seen.insert(tp) {
            continue;
        }
        let stale = match inner.replicas.get(tp) {
            None => {
                new.push(tp.clone());
                false
            }
            Some(view) => {
                *view.used_ms.lock().expect("used mutex poisoned") = now_ms;
                let watch = inner.replicas.watch_if_any(&tp.topic);
                let read = (*offset, *leader_epoch, isolation);
                view.look(tp, read, watch.as_deref(), (now_ms, refresh_ms))
                    .1
            }
        };
        if stale {
            due.push(tp.clone());
        }
    }
    // After the loop: the views this pass reads were marked used, so they are not counted as
    // room.
    let room = inner.replicas.room((now_ms, refresh_ms));
    due.extend(new.into_iter().take(room));
    let per_load = VIEWS_PER_LOAD
        .min(inner.store.max_txn_ops() / super::load::READS_PER_PARTITION)
        .max(1);
    futures::stream::iter(due.chunks(per_load))
        .for_each_concurrent(LOADS_AT_ONCE, |tps| async move {
            load_views(inner, tps, (now_ms, refresh_ms)).await;
        })
        .await;
}

/// Loads the views of `tps` with one request and keeps them; drops those with no load (a
/// deleted topic, a store that cannot answer), so their reads load them and meet the error
/// themselves (a pass reads prepared views as they are, and must not keep serving one that
/// cannot be reloaded).
async fn load_views(inner: &LogInner, tps: &[TopicPartition], (now_ms, refresh_ms): (i64, i64)) {
    // Each topic's watch generation, read before the load (as `replica_view` does). Only views
    // there is room for come here, so none with `max` 0.
    let mut generations: HashMap<Arc<str>, u64> = HashMap::new();
    for tp in tps {
        if !generations.contains_key(&tp.topic) {
            let generation = inner.replicas.watch(inner, &tp.topic).await.generation();
            generations.insert(tp.topic.clone(), generation);
        }
    }
    inner
        .stats
        .replica_view_loads
        .fetch_add(tps.len() as u64, Ordering::Relaxed);
    for (tp, loaded) in tps.iter().zip(read_views(inner, tps).await) {
        let (partition, revision) = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::debug!(partition = %tp, %error, "replica view not reloaded");
                inner.replicas.forget(tp);
                continue;
            }
        };
        let fresh = Loaded {
            partition,
            revision,
            generation: generations.get(&tp.topic).copied().unwrap_or(0),
        };
        match inner.replicas.get(tp) {
            Some(view) => view.take(fresh, now_ms),
            None => {
                let view = ReplicaView::new(fresh, now_ms);
                inner.replicas.insert(tp, view, (now_ms, refresh_ms));
            }
        }
    }
}

/// Each of `tps` loaded, with the revision it was read at: all in one request, or, if that
/// request fails, one request each (one partition may load where many did not: a response
/// too large, say) — unless the first of those fails too (the store is down: no point asking
/// again for each).
async fn read_views(
    inner: &LogInner,
    tps: &[TopicPartition],
) -> Vec<Result<(Arc<PartitionLog>, Revision), LogError>> {
    match super::load::read_partitions_at(inner, tps, LoadFor::Replica).await {
        Ok((loaded, revision)) => loaded
            .into_iter()
            .map(|partition| partition.map(|p| (p, revision)))
            .collect(),
        Err(error) if tps.len() == 1 => vec![Err(error)],
        Err(error) => {
            tracing::debug!(%error, views = tps.len(), "views not loaded together; one by one");
            let mut loaded = Vec::with_capacity(tps.len());
            for tp in tps {
                let one = read_partition_at(inner, tp, LoadFor::Replica).await;
                if loaded.is_empty() && one.is_err() {
                    return tps.iter().map(|_| Err(error.clone())).collect();
                }
                loaded.push(one);
            }
            loaded
        }
    }
}

/// Reloads a replica view in place, whole (state, index, producer state), for a read that found
/// an object gone. A topic deleted (or re-created) meanwhile is forgotten instead: the read fails
/// retriably and the next one starts from the store.
pub(crate) async fn reload_in_place(
    inner: &LogInner,
    tp: &TopicPartition,
    partition: &PartitionLog,
) -> Result<(), LogError> {
    let generation = inner
        .replicas
        .watch_if_any(&tp.topic)
        .map_or(0, |watch| watch.generation());
    let fresh = match load(inner, tp, generation).await {
        Ok(fresh) if fresh.partition.topic_create_revision == partition.topic_create_revision => {
            fresh
        }
        other => {
            inner.replicas.forget(tp);
            return match other {
                Ok(_) => Err(LogError::Unavailable(format!(
                    "{tp}: topic re-created while read"
                ))),
                Err(error) => Err(error),
            };
        }
    };
    let view = fresh
        .partition
        .view
        .lock()
        .expect("view mutex poisoned")
        .clone();
    *partition.view.lock().expect("view mutex poisoned") = view;
    // The view now holds what this load read: say so, so the watch is asked from here on.
    let kept = inner.replicas.get(tp);
    if let Some(kept) = kept {
        let mut loaded = kept.loaded.lock().expect("loaded mutex poisoned");
        if std::ptr::eq(Arc::as_ptr(&loaded.partition), partition) {
            loaded.revision = fresh.revision;
            loaded.generation = fresh.generation;
        }
    }
    Ok(())
}

/// The partition read from the store for a replica view (counted), under the watch
/// `generation` read before it started.
async fn load(inner: &LogInner, tp: &TopicPartition, generation: u64) -> Result<Loaded, LogError> {
    inner
        .stats
        .replica_view_loads
        .fetch_add(1, Ordering::Relaxed);
    let (partition, revision) = read_partition_at(inner, tp, LoadFor::Replica).await?;
    Ok(Loaded {
        partition,
        revision,
        generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{self, PartitionState};
    use crate::log::{pending, PartitionView};
    use crate::producers::ProducerStates;
    use std::collections::BTreeMap;

    fn partition(next_offset: i64, leader_epoch: i32) -> PartitionLog {
        PartitionLog {
            topic_create_revision: 1,
            topic: Mutex::new((
                1,
                keys::TopicRecord {
                    name: "t".into(),
                    id: String::new(),
                    partitions: 1,
                    configs: BTreeMap::new(),
                    created_ms: 0,
                },
            )),
            view: Mutex::new(PartitionView {
                state: PartitionState {
                    next_offset,
                    leader_epoch,
                    ..PartitionState::default()
                },
                releasing: false,
                state_revision: 5,
                layout: keys::Layout::default(),
                layout_revision: 0,
                index: BTreeMap::new(),
                rollups: BTreeMap::new(),
                producers: ProducerStates::default(),
                projected: None,
                plan_generation: 0,
            }),
            inflight: pending::Inflight::default(),
            replica: true,
        }
    }

    #[test]
    fn a_view_is_checked_only_at_its_end_past_the_refresh_or_when_old() {
        let p = partition(100, 3);
        let fresh = (1_000, 1_100); // checked 100 ms ago
        let due = (1_000, 1_250); // the refresh interval has passed
        let old = (1_000, 1_000 + 250 * MAX_AGE_REFRESHES);
        const RU: Isolation = Isolation::ReadUncommitted;
        // Without a watch, and with one that saw a change: the intervals decide.
        for w in [Watched::Unknown, Watched::Moved] {
            assert!(
                !needs_check((50, -1, RU), &p, fresh, 250, w),
                "below the end"
            );
            assert!(!needs_check((50, -1, RU), &p, due, 250, w), "below the end");
            assert!(needs_check((50, -1, RU), &p, old, 250, w), "too old");
            assert!(
                !needs_check((100, -1, RU), &p, fresh, 250, w),
                "at the end, fresh"
            );
            assert!(
                needs_check((100, -1, RU), &p, due, 250, w),
                "at the end, due"
            );
        }
        // A watch that saw nothing change since the load: never, however old.
        let w = Watched::Unmoved;
        assert!(!needs_check((100, -1, RU), &p, due, 250, w), "at the end");
        assert!(!needs_check((50, -1, RU), &p, old, 250, w), "old");
        // Whatever the watch says: a consumer that saw more, or a newer epoch, asks the store.
        for w in [Watched::Unknown, Watched::Moved, Watched::Unmoved] {
            assert!(
                needs_check((101, -1, RU), &p, fresh, 250, w),
                "past the end"
            );
            assert!(needs_check((50, 4, RU), &p, fresh, 250, w), "a newer epoch");
            assert!(
                !needs_check((50, 3, RU), &p, fresh, 250, w),
                "the same epoch"
            );
            assert!(
                !needs_check((50, 2, RU), &p, fresh, 250, w),
                "an older epoch: fenced, not stale"
            );
        }
    }
}
