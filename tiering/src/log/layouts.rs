//! Keeping a leader's view of its partitions' index current after compactor swaps.
//!
//! A swap changes a partition's layout key. The leader watches the layouts and reloads the
//! index of a partition it caches when its layout moved past the view's, so reads of compacted
//! offsets go to the Parquet files (and log compaction becomes visible) at once rather than
//! whenever a replaced object is found missing. A lost watch (the store restarted, the stream
//! lagged) is re-established, and every cached partition whose layout changed meanwhile is
//! reloaded. Correctness never rests on this: a stale view reads objects that still exist, or
//! finds one gone and reloads (`reader`), and roll-ups compare the layout.

use super::{LogError, LogInner, PartitionLog, TopicPartition};
use crate::keys;
use crate::keys::{IndexEntry, RollupEntry};
use crate::layout::IndexSnapshot;
use crate::metadata::WatchEvent;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Pause before watching again after the watch failed or ended.
const REWATCH_DELAY: Duration = Duration::from_millis(500);

pub(crate) async fn run(inner: Weak<LogInner>) {
    loop {
        let stream = {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            strong.store.watch_prefix(&keys::layouts_prefix()).await
        };
        match stream {
            Ok(mut events) => {
                // Events before the watch started were missed: compare every cached view.
                if let Some(strong) = inner.upgrade() {
                    reload_changed(&strong).await;
                }
                while let Some(event) = events.next().await {
                    let Some(strong) = inner.upgrade() else {
                        return;
                    };
                    let WatchEvent::Put(kv) = event else { continue };
                    let Some((topic, partition)) =
                        keys::topic_partition_of(&keys::layouts_prefix(), &kv.key)
                    else {
                        continue;
                    };
                    let tp = TopicPartition::new(&topic, partition);
                    reload_if_behind(&strong, &tp, kv.mod_revision).await;
                }
            }
            Err(error) => tracing::warn!(%error, "cannot watch partition layouts; retrying"),
        }
        tokio::time::sleep(REWATCH_DELAY).await;
    }
}

/// Reloads `tp`'s index if this broker caches it with an older layout.
async fn reload_if_behind(inner: &LogInner, tp: &TopicPartition, revision: i64) {
    let cached = inner
        .partitions
        .read()
        .expect("partitions poisoned")
        .get(tp)
        .cloned();
    let Some(partition) = cached else { return };
    let behind = partition
        .view
        .lock()
        .expect("view mutex poisoned")
        .layout_revision
        < revision;
    if behind {
        if let Err(error) = refresh_index(inner, tp, &partition).await {
            tracing::warn!(%error, partition = %tp, "index reload after a compaction failed; the partition is reloaded on its next use");
            inner
                .partitions
                .write()
                .expect("partitions poisoned")
                .remove(tp);
        }
    }
}

/// Reloads every cached partition whose stored layout differs from its view's.
async fn reload_changed(inner: &Arc<LogInner>) {
    let cached: Vec<TopicPartition> = inner
        .partitions
        .read()
        .expect("partitions poisoned")
        .keys()
        .cloned()
        .collect();
    for tp in cached {
        match inner
            .store
            .get(&keys::layout(&tp.topic, tp.partition))
            .await
        {
            Ok(Some(kv)) => reload_if_behind(inner, &tp, kv.mod_revision).await,
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot read partition layouts; retried when the watch is re-established");
                return;
            }
        }
    }
}

/// The flush-object part of a snapshot as a view holds it.
pub(crate) fn view_index(
    snapshot: &IndexSnapshot,
) -> (BTreeMap<i64, IndexEntry>, BTreeMap<i64, RollupEntry>) {
    let rollups = snapshot
        .rollups
        .iter()
        .map(|(base, (entry, _))| (*base, entry.clone()))
        .collect();
    let index = snapshot
        .tail
        .iter()
        .map(|(base, (entry, _))| (*base, entry.clone()))
        .collect();
    (index, rollups)
}

/// Reads a cached partition's index again (after a compactor's swap: the Parquet part grew and
/// flush-object keys went), under the commit lock so no commit of this broker is lost from the
/// view. The state and producers are this broker's own and stay.
pub(crate) async fn refresh_index(
    inner: &LogInner,
    tp: &TopicPartition,
    partition: &PartitionLog,
) -> Result<(), LogError> {
    let _state_commits = inner.state_commits.lock().await;
    let snapshot = IndexSnapshot::load(&*inner.store, &tp.topic, tp.partition).await?;
    let (index, rollups) = view_index(&snapshot);
    let mut view = partition.view.lock().expect("view mutex poisoned");
    if snapshot.layout_revision != view.layout_revision {
        tracing::debug!(partition = %tp, parquet_end = snapshot.layout.parquet_end, "index reloaded after a compaction");
    }
    view.layout = snapshot.layout;
    view.layout_revision = snapshot.layout_revision;
    view.index = index;
    view.rollups = rollups;
    Ok(())
}
