//! Which partitions of a topic moved, told by a watch, so replica views (`replicas`) need not
//! ask the store.
//!
//! A broker serving consumers from views of other brokers' partitions used to read each
//! partition's state key every refresh interval while a consumer waited at the end: four reads
//! a second per partition, at rest too. One [`TopicWatch`] per topic with views follows its
//! partitions' state keys and layouts instead (every commit, leadership change, DeleteRecords
//! and compactor swap writes one of them) and remembers, per partition, the last revision that
//! changed it. A view loaded at revision `R` under the current watch is current unless a change
//! after `R` was seen: checking it costs nothing, and a reload (one request) happens only when
//! something moved.
//!
//! A view trusts the watch only if the watch was confirmed before the view was loaded (the
//! watch's *generation* is recorded with the view): changes after the load are then certain to
//! be seen. When the watch ends (etcd restarted, the stream lagged) the generation goes to zero,
//! views of the topic fall back to reloading when due, and the watch is opened again after a
//! pause under a new generation; views adopt it at their next reload. Correctness never rests
//! on the watch's timeliness: a consumer asking past a view's high watermark or for a newer
//! leader epoch always makes the view reload from the store, and a view only ever holds
//! committed data.

use crate::keys;
use crate::metadata::{MetadataError, MetadataStore, Revision, WatchEvent};
use futures::stream::{self, BoxStream, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Pause before opening a topic's watch again after it failed or ended.
const REWATCH_DELAY: Duration = Duration::from_millis(500);

/// Generations of every topic watch of the process, so a view never mistakes a later watch
/// of its topic (after the first was dropped and opened again) for the one it was loaded under.
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

/// Events of a topic's watches; `None` once one of them ended.
type Events = BoxStream<'static, Option<WatchEvent>>;

/// What a watch says about one partition's view (see [`TopicWatch::says`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watched {
    /// Nothing changed after the view's load.
    Unmoved,
    /// A change after the view's load was seen.
    Moved,
    /// The watch cannot tell (it was not running when the view was loaded, or it ended).
    Unknown,
}

#[derive(Debug)]
pub(crate) struct TopicWatch {
    /// Per partition, the largest revision at which its state or layout key changed.
    moved: Mutex<HashMap<i32, Revision>>,
    /// The running watch's generation (from [`GENERATIONS`]); 0 while none runs.
    current: AtomicU64,
    /// The task following the watch, stopped when the last view of the topic goes.
    task: Mutex<Option<tokio::task::AbortHandle>>,
    /// Bumped for every change seen, to wake long polls reading replica views (the log's
    /// commit signal: see `Log::subscribe_commits`).
    wake: tokio::sync::watch::Sender<u64>,
}

impl Drop for TopicWatch {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().expect("task mutex poisoned").take() {
            task.abort();
        }
    }
}

impl TopicWatch {
    /// Opens `topic`'s watch (waiting until the store confirmed it, so a view loaded after this
    /// returns may trust it) and starts following it. A watch that cannot be opened now is
    /// retried in the background; views check the store meanwhile.
    pub(crate) async fn open(
        store: Arc<dyn MetadataStore>,
        topic: &str,
        wake: tokio::sync::watch::Sender<u64>,
    ) -> Arc<Self> {
        let watch = Arc::new(Self {
            moved: Mutex::new(HashMap::new()),
            current: AtomicU64::new(0),
            task: Mutex::new(None),
            wake,
        });
        let events = match events(&*store, topic).await {
            Ok(events) => {
                watch.start();
                Some(events)
            }
            Err(error) => {
                tracing::warn!(%error, topic, "cannot watch a topic's partitions for replica views; retrying");
                None
            }
        };
        let task = tokio::spawn(follow(
            store,
            topic.to_owned(),
            Arc::downgrade(&watch),
            events,
        ));
        *watch.task.lock().expect("task mutex poisoned") = Some(task.abort_handle());
        watch
    }

    /// The generation a view loaded from now on records (0: none runs, the view cannot trust
    /// the watch).
    pub(crate) fn generation(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    /// Whether `partition`, loaded at `revision` under `generation`, moved since.
    pub(crate) fn says(&self, partition: i32, (revision, generation): (Revision, u64)) -> Watched {
        if generation == 0 || generation != self.generation() {
            return Watched::Unknown;
        }
        let moved = self.moved.lock().expect("moved mutex poisoned");
        match moved.get(&partition) {
            Some(&changed) if changed > revision => Watched::Moved,
            _ => Watched::Unmoved,
        }
    }

    fn start(&self) {
        let generation = GENERATIONS.fetch_add(1, Ordering::AcqRel) + 1;
        self.current.store(generation, Ordering::Release);
    }

    fn stop(&self) {
        self.current.store(0, Ordering::Release);
    }

    fn note(&self, event: &WatchEvent) {
        let (key, revision) = match event {
            WatchEvent::Put(kv) => (kv.key.as_str(), kv.mod_revision),
            WatchEvent::Delete { key, revision } => (key.as_str(), *revision),
        };
        let partition = keys::topic_partition_of(&keys::all_partitions_prefix(), key)
            .or_else(|| keys::topic_partition_of(&keys::layouts_prefix(), key));
        let Some((_, partition)) = partition else {
            return;
        };
        {
            let mut moved = self.moved.lock().expect("moved mutex poisoned");
            let changed = moved.entry(partition).or_insert(revision);
            *changed = (*changed).max(revision);
        }
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The changes of `topic`'s partition states and layouts, as one stream that yields `None`
/// when either watch ends.
async fn events(store: &dyn MetadataStore, topic: &str) -> Result<Events, MetadataError> {
    let ended = || stream::once(async { None });
    let states = store
        .watch_prefix(&keys::partitions_prefix(topic))
        .await?
        .map(Some)
        .chain(ended());
    let layouts = store
        .watch_prefix(&keys::topic_layouts_prefix(topic))
        .await?
        .map(Some)
        .chain(ended());
    Ok(stream::select(states, layouts).boxed())
}

async fn follow(
    store: Arc<dyn MetadataStore>,
    topic: String,
    watch: Weak<TopicWatch>,
    mut events: Option<Events>,
) {
    loop {
        if let Some(mut running) = events.take() {
            while let Some(Some(event)) = running.next().await {
                let Some(watch) = watch.upgrade() else { return };
                watch.note(&event);
            }
            let Some(watch) = watch.upgrade() else { return };
            watch.stop();
            tracing::warn!(
                topic,
                "a topic's watch for replica views ended; opening it again"
            );
        }
        tokio::time::sleep(REWATCH_DELAY).await;
        if watch.strong_count() == 0 {
            return;
        }
        match self::events(&*store, &topic).await {
            Ok(opened) => {
                let Some(watch) = watch.upgrade() else { return };
                watch.start();
                events = Some(opened);
            }
            Err(error) => {
                tracing::warn!(%error, topic, "cannot watch a topic's partitions for replica views; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::metadata::embedded::EmbeddedStore;
    use crate::metadata::faulty::FaultyStore;
    use crate::metadata::{Txn, TxnOp};

    async fn settle() {
        for _ in 0..64 {
            tokio::task::yield_now().await;
        }
    }

    async fn put(store: &dyn MetadataStore, key: &str) -> Revision {
        store
            .txn(Txn::when(vec![]).and_then(vec![TxnOp::put(key, "{}")]))
            .await
            .expect("put")
            .revision
    }

    #[tokio::test]
    async fn a_watch_that_ends_is_not_trusted_until_opened_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(0));
        let embedded = EmbeddedStore::open(&dir.path().join("meta.redb"), clock)
            .await
            .expect("open");
        let store = Arc::new(FaultyStore::new(Arc::new(embedded)));
        let (wake, mut woken) = tokio::sync::watch::channel(0);
        let watch = TopicWatch::open(store.clone(), "t", wake).await;
        let first = watch.generation();
        assert_ne!(first, 0, "confirmed before open returns");

        // State and layout changes of the topic's partitions, by partition; other topics not.
        let loaded = put(&*store, &keys::partition("t", 0)).await;
        put(&*store, &keys::partition("u", 1)).await;
        settle().await;
        assert_eq!(watch.says(0, (loaded, first)), Watched::Unmoved);
        assert_eq!(
            watch.says(1, (0, first)),
            Watched::Unmoved,
            "u-1 is not t-1"
        );
        woken.borrow_and_update();
        let moved = put(&*store, &keys::layout("t", 0)).await;
        settle().await;
        assert!(woken.has_changed().expect("open"), "long polls woken");
        assert_eq!(watch.says(0, (loaded, first)), Watched::Moved);
        assert_eq!(watch.says(0, (moved, first)), Watched::Unmoved);
        assert_eq!(
            watch.says(0, (moved, 0)),
            Watched::Unknown,
            "loaded without a watch"
        );

        // The store ends the watch: nothing it says is trusted until it is open again, and views
        // loaded under the old one never trust the new one.
        store.end_watches();
        settle().await;
        assert_eq!(watch.generation(), 0);
        assert_eq!(watch.says(0, (moved, first)), Watched::Unknown);
        // Opened again after REWATCH_DELAY (real time: half a second).
        for _ in 0..40 {
            if watch.generation() != 0 {
                break;
            }
            tokio::time::sleep(REWATCH_DELAY / 10).await;
        }
        let second = watch.generation();
        assert!(second > first, "{second} after {first}");
        assert_eq!(watch.says(0, (moved, first)), Watched::Unknown);
        assert_eq!(watch.says(0, (moved, second)), Watched::Unmoved);
        let again = put(&*store, &keys::partition("t", 0)).await;
        settle().await;
        assert_eq!(watch.says(0, (moved, second)), Watched::Moved);
        assert_eq!(watch.says(0, (again, second)), Watched::Unmoved);
    }
}
