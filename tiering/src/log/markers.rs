//! Appending the transaction markers coordinators ask for.
//!
//! A transaction coordinator that has decided to commit or abort writes one
//! `keys::MarkerRequest` per partition of the transaction (`/skiff/txn-markers/...`, fenced on
//! its transaction record). Every broker watches that prefix and appends the markers of the
//! partitions it leads through its normal write path ([`Log::append_marker`]); the commit that
//! makes a marker durable deletes its request. A request for a partition led elsewhere is that
//! leader's; a request this broker could not serve (leadership moving, the store failing) stays
//! and is tried again on the next pass, so a marker is never lost, only sometimes appended
//! twice (harmless: a second marker finds no open transaction to end).

use super::{Log, LogError, TopicPartition};
use crate::keys::{self, MarkerRequest};
use crate::metadata::{Compare, KeyValue, Txn, TxnOp, WatchEvent};
use crate::producers::Marker;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Every pending request is looked at again this often (leadership that moved here, a watch
/// that missed events, a request whose append failed).
const RESCAN_INTERVAL: Duration = Duration::from_millis(1_000);

/// Runs until `stopped` turns true.
pub async fn run(log: Log, mut stopped: watch::Receiver<bool>) {
    let in_flight: Arc<Mutex<InFlight>> = Arc::default();
    let prefix = keys::all_marker_requests_prefix();
    loop {
        let mut events = match log.inner.store.watch_prefix(&prefix).await {
            Ok(events) => Some(events),
            Err(error) => {
                tracing::warn!(%error, "cannot watch marker requests; polling");
                None
            }
        };
        // Whatever the watch missed before it started.
        rescan(&log, &in_flight).await;
        let mut rescan_at = tokio::time::Instant::now() + RESCAN_INTERVAL;
        loop {
            let event = async {
                match events.as_mut() {
                    Some(events) => events.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stopped.changed() => return,
                _ = tokio::time::sleep_until(rescan_at) => {
                    rescan(&log, &in_flight).await;
                    rescan_at = tokio::time::Instant::now() + RESCAN_INTERVAL;
                }
                event = event => match event {
                    Some(WatchEvent::Put(kv)) => start(&log, &in_flight, kv),
                    Some(_) => {}
                    // The watch ended (the store restarted, the stream lagged): watch again.
                    None => break,
                },
            }
            if *stopped.borrow() {
                return;
            }
        }
    }
}

/// Requests being appended, and the revision each request key was last appended at: a rescan
/// that read a request before its append deleted it must not append it again (a second marker
/// for a transaction could end the producer's next one in that partition).
#[derive(Debug, Default)]
struct InFlight {
    appending: HashSet<String>,
    appended: HashMap<String, i64>,
}

/// Request keys remembered as appended; beyond it the oldest half is forgotten (a request
/// revision is only replayed by a rescan racing its own append, within a second).
const APPENDED_MAX: usize = 10_000;

async fn rescan(log: &Log, in_flight: &Arc<Mutex<InFlight>>) {
    match log
        .inner
        .store
        .range_prefix(&keys::all_marker_requests_prefix(), 0)
        .await
    {
        Ok(requests) => {
            for kv in requests {
                start(log, in_flight, kv);
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read marker requests"),
    }
}

/// Appends the marker a request asks for, if this broker leads its partition and is not
/// appending it already.
fn start(log: &Log, in_flight: &Arc<Mutex<InFlight>>, kv: KeyValue) {
    let Some((topic, partition)) =
        keys::topic_partition_of(&keys::all_marker_requests_prefix(), &kv.key)
    else {
        return;
    };
    let tp = TopicPartition::new(&topic, partition);
    if log.rules_out(&tp) {
        return;
    }
    let request: MarkerRequest = match keys::decode(&kv.key, &kv.value) {
        Ok(request) => request,
        Err(error) => {
            tracing::error!(%error, key = kv.key, "unreadable marker request");
            return;
        }
    };
    {
        let mut state = in_flight.lock().expect("in-flight poisoned");
        let done = state
            .appended
            .get(&kv.key)
            .is_some_and(|&revision| revision >= kv.mod_revision);
        if done || !state.appending.insert(kv.key.clone()) {
            return;
        }
    }
    let log = log.clone();
    let in_flight = in_flight.clone();
    tokio::spawn(async move {
        let marker = Marker {
            producer_id: request.producer_id,
            epoch: request.producer_epoch,
            commit: request.commit,
            revision: kv.mod_revision,
            end: request.end,
        };
        let appended = log.append_marker(tp.clone(), marker, kv.key.clone()).await;
        if appended.is_ok() {
            let mut state = in_flight.lock().expect("in-flight poisoned");
            if state.appended.len() >= APPENDED_MAX {
                let mut revisions: Vec<i64> = state.appended.values().copied().collect();
                revisions.sort_unstable();
                let median = revisions[revisions.len() / 2];
                state.appended.retain(|_, r| *r > median);
            }
            state.appended.insert(kv.key.clone(), kv.mod_revision);
        }
        match appended {
            Ok(outcome) => tracing::debug!(
                partition = %tp,
                offset = outcome.base_offset,
                commit = request.commit,
                "transaction marker appended"
            ),
            // Led elsewhere: that leader appends it.
            Err(LogError::NotLeader(_) | LogError::Fenced(_)) => {}
            Err(LogError::UnknownTopicOrPartition(_)) | Err(LogError::InvalidProducerEpoch(_)) => {
                // Nothing to mark (the topic is gone), or a marker older than what the
                // partition already saw from this producer (a newer epoch fenced it): the
                // request is answered without a marker.
                let txn = Txn::when(vec![Compare::mod_revision(&kv.key, kv.mod_revision)])
                    .and_then(vec![TxnOp::delete(&kv.key)]);
                if let Err(error) = log.inner.store.txn(txn).await {
                    tracing::warn!(%error, key = kv.key, "cannot drop a marker request");
                }
            }
            Err(error) => {
                tracing::warn!(%error, partition = %tp, "transaction marker not appended; will retry");
            }
        }
        in_flight
            .lock()
            .expect("in-flight poisoned")
            .appending
            .remove(&kv.key);
    });
}
