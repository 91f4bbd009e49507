//! Every broker runs this loop: it claims the partitions it should lead and hands over the
//! ones it should not, whenever membership or topics change (watches) and on a short tick.
//!
//! Decisions come from [`super::assignment`]; every claim and release is a compare-and-set on
//! the partition state, so brokers with momentarily different views of membership cause at most
//! a fenced commit (a retriable error for a producer), never two leaders committing.

use super::assignment::{decide, preferred_leader, Action};
use super::membership::{Membership, MembershipError};
use super::view::{ClusterView, ViewCell};
use crate::keys;
use crate::log::leadership::LedPartitions;
use crate::log::{Log, TopicPartition};
use crate::metadata::{MetadataStore, Revision};
use futures::{FutureExt, StreamExt};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often leadership is re-checked even without a watch event.
const RECONCILE_INTERVAL: Duration = Duration::from_millis(500);
/// A burst of watch events (say, 100 topics created at once) makes one pass, not 100.
const EVENT_COALESCE: Duration = Duration::from_millis(50);

pub struct Controller {
    store: Arc<dyn MetadataStore>,
    log: Log,
    membership: Arc<Membership>,
    view: ViewCell,
    /// Partitions this process claimed. One whose state names this node id without being here
    /// was led by an earlier process with the same id: it is claimed again (a new epoch), so
    /// nothing that process may still hold can commit.
    claimed: std::sync::Mutex<HashSet<TopicPartition>>,
}

impl Controller {
    /// `view` receives the cluster view each pass reads (for Metadata requests).
    pub fn new(
        store: Arc<dyn MetadataStore>,
        log: Log,
        membership: Arc<Membership>,
        view: ViewCell,
    ) -> Self {
        Self {
            store,
            log,
            membership,
            view,
            claimed: std::sync::Mutex::new(HashSet::new()),
        }
    }

    /// Runs until `stop` turns true. Also keeps the broker's registration alive.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut keep_alive = tokio::spawn(keep_alive_loop(
            self.membership.clone(),
            self.log.clone(),
            stop.clone(),
        ));
        let mut changes = self.watch_changes().await;
        let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Err(error) = self.reconcile().await {
                tracing::warn!(%error, "leadership reconcile failed; retrying");
            }
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = tick.tick() => {}
                // The session keep-alive must not end before a stop (a panic, a bug): the
                // controller ends too, and the broker, which supervises it, exits.
                ended = &mut keep_alive => {
                    if !*stop.borrow() {
                        tracing::error!(?ended, "the session keep-alive task ended");
                    }
                    return;
                }
                event = changes.next() => {
                    if event.is_none() {
                        // The watch ended (store hiccup): watch again; the tick covers the gap.
                        changes = self.watch_changes().await;
                    } else {
                        tokio::time::sleep(EVENT_COALESCE).await;
                        while let Some(Some(())) = changes.next().now_or_never() {}
                    }
                }
            }
        }
        let _ = keep_alive.await;
    }

    async fn watch_changes(&self) -> futures::stream::BoxStream<'static, ()> {
        let brokers = self.store.watch_prefix(&keys::brokers_prefix()).await;
        let topics = self.store.watch_prefix(&keys::topics_prefix()).await;
        match (brokers, topics) {
            (Ok(brokers), Ok(topics)) => {
                futures::stream::select(brokers.map(|_| ()), topics.map(|_| ())).boxed()
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "cannot watch membership and topics; retrying");
                // Ends after a pause, so the loop watches again; the tick covers the gap.
                futures::stream::once(tokio::time::sleep(Duration::from_secs(1)))
                    .filter(|_| async { false })
                    .boxed()
            }
        }
    }

    /// One pass over every partition of every topic, from a view read with three requests;
    /// the view (with this pass's own claims and releases applied) is then published.
    pub async fn reconcile(&self) -> Result<(), String> {
        let me = self.membership.node_id();
        if self.membership.displaced() {
            return Err(format!(
                "another process registered node id {me} while this one was cut off; this one leads nothing until restarted"
            ));
        }
        let generation = self.view.generation();
        let mut view = ClusterView::read(&self.store)
            .await
            .map_err(|e| e.to_string())?;
        let live = view.live_ids();
        // Config changes made through any broker reach the produce path's cached records.
        self.log
            .refresh_topics(|name| view.topics.get(name).map(|v| &v.topic));
        let mut seen: HashMap<TopicPartition, (i32, i32, Revision)> = HashMap::new();
        for topic_view in view.topics.values_mut() {
            let topic = &topic_view.topic;
            let states = &mut topic_view.partitions;
            let name = &topic.record.name;
            for partition in 0..topic.record.partitions {
                let current = states.get(&partition);
                let (leader, epoch) = current.map_or((-1, -1), |(s, _)| (s.leader, s.leader_epoch));
                let tp = TopicPartition::new(name, partition);
                seen.insert(tp.clone(), (leader, epoch, topic.create_revision));
                if !live.contains(&me) {
                    // Not registered (session lapsed): claiming now would only be undone.
                    continue;
                }
                let preferred = preferred_leader(name, partition, &live);
                let inherited = leader == me
                    && !self
                        .claimed
                        .lock()
                        .expect("claimed mutex poisoned")
                        .contains(&tp);
                if leader != me {
                    self.claimed
                        .lock()
                        .expect("claimed mutex poisoned")
                        .remove(&tp);
                }
                let action = match decide(me, leader, preferred, &live) {
                    Action::Keep if inherited && preferred == Some(me) => Action::Claim,
                    action => action,
                };
                match action {
                    Action::Keep => {}
                    Action::Claim => {
                        // An inherited partition may already take appends here, moving its
                        // state on since the view was read: claim against a fresh read.
                        let fresh = if inherited {
                            match self.fresh_state(name, partition).await {
                                // Someone else claimed it meanwhile: it hands over first.
                                Ok(Some((state, _))) if state.leader != me => continue,
                                Ok(fresh) => fresh,
                                Err(error) => {
                                    tracing::warn!(partition = %tp, %error, "cannot re-read state");
                                    continue;
                                }
                            }
                        } else {
                            current.cloned()
                        };
                        let claimed = super::claim(
                            &*self.store,
                            name,
                            partition,
                            me,
                            fresh.as_ref().map(|(s, r)| (s, *r)),
                            topic.create_revision,
                        )
                        .await;
                        // Unless the claim lost a race (nothing changed here), load the
                        // partition afresh on its next use (an etcd timeout may hide a success).
                        if !matches!(claimed, Ok(None)) {
                            self.log.forget_partition(&tp);
                        }
                        match claimed {
                            Ok(Some(epoch)) => {
                                self.log.note_claimed(&tp);
                                tracing::info!(partition = %tp, epoch, previous = leader, "claimed leadership");
                                self.claimed
                                    .lock()
                                    .expect("claimed mutex poisoned")
                                    .insert(tp.clone());
                                let entry = states.entry(partition).or_default();
                                entry.0.leader = me;
                                entry.0.leader_epoch = epoch;
                            }
                            Ok(None) => {}
                            Err(error) => tracing::warn!(partition = %tp, %error, "claim failed"),
                        }
                    }
                    Action::Release => match self.log.release(&tp).await {
                        Ok(()) => {
                            tracing::info!(partition = %tp, ?preferred, "released leadership");
                            if let Some(entry) = states.get_mut(&partition) {
                                entry.0.leader = -1;
                            }
                        }
                        Err(error) => tracing::info!(partition = %tp, %error, "release skipped"),
                    },
                }
            }
        }
        self.drop_stale_views(&seen);
        self.log.publish_leadership(led_partitions(&view, me));
        self.view.publish(generation, view);
        Ok(())
    }

    async fn fresh_state(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<(keys::PartitionState, Revision)>, String> {
        let Some(kv) = self
            .store
            .get(&keys::partition(topic, partition))
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let state = keys::decode(&kv.key, &kv.value)?;
        Ok(Some((state, kv.mod_revision)))
    }

    /// Forgets cached partitions whose leadership, epoch or topic changed elsewhere (claimed
    /// while this broker was paused, topic deleted or re-created through another broker), so
    /// it stops serving them from a stale view.
    fn drop_stale_views(&self, stored: &HashMap<TopicPartition, (i32, i32, Revision)>) {
        for (tp, leader, epoch, created) in self.log.cached_leadership() {
            if stored.get(&tp) != Some(&(leader, epoch, created)) {
                tracing::info!(partition = %tp, "dropping a stale cached view");
                self.log.forget_partition(&tp);
            }
        }
    }
}

/// The partitions `me` leads in `view` (with a pass's claims and releases applied), among the
/// topics it holds: what request paths may answer NOT_LEADER for without a store read.
fn led_partitions(view: &ClusterView, me: i32) -> LedPartitions {
    let mut led = LedPartitions::default();
    for (name, topic_view) in &view.topics {
        led.add_topic(name, topic_view.topic.record.partitions);
        for (partition, (state, _)) in &topic_view.partitions {
            if state.leader == me {
                led.insert(&TopicPartition::new(name, *partition));
            }
        }
    }
    led
}

async fn keep_alive_loop(membership: Arc<Membership>, log: Log, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_millis((membership.ttl_ms() / 3).max(100) as u64);
    let mut tick = tokio::time::interval(period);
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        match membership.keep_alive().await {
            // The session lapsed: other brokers may have taken partitions meanwhile.
            Ok(true) => log.forget_all(),
            Ok(false) => {}
            Err(MembershipError::NodeIdTaken(id)) => {
                tracing::error!(
                    node_id = id,
                    "another process registered this node id while this broker was cut off; \
                     it stops leading (give each broker its own --node-id, then restart it)"
                );
                log.forget_all();
                log.shutdown().await;
                return;
            }
            Err(error) => tracing::warn!(%error, "cannot renew the broker session"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::keys::{BrokerRecord, PartitionState};
    use crate::log::LogConfig;
    use crate::metadata::embedded::EmbeddedStore;
    use object_store::memory::InMemory;

    struct Node {
        log: Log,
        membership: Arc<Membership>,
        controller: Controller,
    }

    async fn node(store: &Arc<dyn MetadataStore>, objects: &Arc<InMemory>, id: i32) -> Node {
        let log = Log::open(
            store.clone(),
            objects.clone(),
            Arc::new(ManualClock::new(0)),
            LogConfig {
                node_id: id,
                flush_linger_ms: 1,
                ..LogConfig::default()
            },
        );
        let record = BrokerRecord {
            node_id: id,
            host: "127.0.0.1".into(),
            port: 9000 + id,
            rack: None,
            incarnation: String::new(),
            listeners: Vec::new(),
            follower_reads: false,
        };
        let membership = Arc::new(
            Membership::register(store.clone(), record, 60_000, Duration::ZERO)
                .await
                .expect("register"),
        );
        let controller = Controller::new(
            store.clone(),
            log.clone(),
            membership.clone(),
            ViewCell::default(),
        );
        Node {
            log,
            membership,
            controller,
        }
    }

    /// An embedded metadata store (in a temporary directory, kept alive by the first value) and
    /// an in-memory bucket.
    async fn stores() -> (tempfile::TempDir, Arc<dyn MetadataStore>, Arc<InMemory>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn MetadataStore> = Arc::new(
            EmbeddedStore::open(&dir.path().join("m.redb"), Arc::new(ManualClock::new(0)))
                .await
                .expect("store"),
        );
        (dir, store, Arc::new(InMemory::new()))
    }

    async fn leaders(store: &dyn MetadataStore, topic: &str) -> Vec<(i32, i32)> {
        let mut out = Vec::new();
        for kv in store
            .range_prefix(&keys::partitions_prefix(topic), 0)
            .await
            .expect("range")
        {
            let state: PartitionState = keys::decode(&kv.key, &kv.value).expect("state");
            out.push((state.leader, state.leader_epoch));
        }
        out
    }

    #[tokio::test]
    async fn partitions_spread_over_brokers_and_move_when_one_leaves() {
        let (_dir, store, objects) = stores().await;
        let (a, b) = (
            node(&store, &objects, 1).await,
            node(&store, &objects, 2).await,
        );
        a.log
            .catalog()
            .create("t", 12, Default::default(), 0)
            .await
            .expect("create");
        for _ in 0..2 {
            a.controller.reconcile().await.expect("reconcile");
            b.controller.reconcile().await.expect("reconcile");
        }
        let before = leaders(&*store, "t").await;
        assert_eq!(before.len(), 12, "every partition has a state");
        for (p, (leader, epoch)) in before.iter().enumerate() {
            let preferred = preferred_leader("t", p as i32, &[1, 2]).expect("live");
            assert_eq!((*leader, *epoch), (preferred, 0), "partition {p}");
        }
        assert!(before.iter().any(|(l, _)| *l == 1) && before.iter().any(|(l, _)| *l == 2));

        // Broker 2 leads some partitions and takes writes on them; broker 1 refuses those.
        let led_by_b = before
            .iter()
            .position(|(l, _)| *l == 2)
            .expect("b leads one") as i32;
        let tp = TopicPartition::new("t", led_by_b);
        assert!(matches!(
            a.log.offsets(&tp).await,
            Err(crate::LogError::NotLeader(_))
        ));
        assert_eq!(b.log.offsets(&tp).await.expect("offsets"), (0, 0));

        // Broker 2 leaves: broker 1 claims everything, with a higher epoch where it changed.
        b.membership.deregister().await;
        a.controller.reconcile().await.expect("reconcile");
        let after = leaders(&*store, "t").await;
        for ((leader, epoch), (old_leader, old_epoch)) in after.iter().zip(&before) {
            assert_eq!(*leader, 1);
            assert_eq!(
                *epoch,
                if *old_leader == 2 {
                    old_epoch + 1
                } else {
                    *old_epoch
                }
            );
        }
        assert_eq!(a.log.offsets(&tp).await.expect("offsets"), (0, 0));
        // The old leader is fenced even though it still believes it leads.
        let data = crate::batch::tests::sample_batch(1, 1, 8);
        let batch = bytes::Bytes::from(data);
        let header = crate::batch::parse_header(&batch).expect("header");
        let fenced = b.log.append(tp.clone(), vec![(header, batch)], false).await;
        assert!(
            matches!(fenced, Err(crate::LogError::Fenced(_))),
            "{fenced:?}"
        );
        a.log.shutdown().await;
        b.log.shutdown().await;
    }

    #[tokio::test]
    async fn a_joining_broker_gets_its_partitions_handed_over() {
        let (_dir, store, objects) = stores().await;
        let a = node(&store, &objects, 1).await;
        a.log
            .catalog()
            .create("t", 12, Default::default(), 0)
            .await
            .expect("create");
        a.controller.reconcile().await.expect("reconcile");
        assert!(leaders(&*store, "t").await.iter().all(|(l, _)| *l == 1));
        let b = node(&store, &objects, 2).await;
        // a releases what b should lead; b then claims it.
        a.controller.reconcile().await.expect("reconcile");
        b.controller.reconcile().await.expect("reconcile");
        for (p, (leader, epoch)) in leaders(&*store, "t").await.iter().enumerate() {
            let preferred = preferred_leader("t", p as i32, &[1, 2]).expect("live");
            assert_eq!(*leader, preferred, "partition {p}");
            assert_eq!(*epoch, if preferred == 2 { 1 } else { 0 });
        }
        a.log.shutdown().await;
        b.log.shutdown().await;
    }

    #[tokio::test]
    async fn a_restarted_broker_claims_its_partitions_again_and_fences_its_predecessor() {
        let (_dir, store, objects) = stores().await;
        let old = node(&store, &objects, 1).await;
        old.log
            .catalog()
            .create("t", 3, Default::default(), 0)
            .await
            .expect("create");
        old.controller.reconcile().await.expect("reconcile");
        old.controller.reconcile().await.expect("second pass keeps");
        assert_eq!(leaders(&*store, "t").await, vec![(1, 0); 3]);
        let tp = TopicPartition::new("t", 0);
        assert_eq!(old.log.offsets(&tp).await.expect("cached"), (0, 0));
        // The same node id in a new process (the old one hung, not dead): its first pass
        // claims every partition again under a new epoch.
        old.membership.deregister().await;
        let new = node(&store, &objects, 1).await;
        new.controller.reconcile().await.expect("reconcile");
        assert_eq!(leaders(&*store, "t").await, vec![(1, 1); 3]);
        new.controller.reconcile().await.expect("reconcile");
        assert_eq!(leaders(&*store, "t").await, vec![(1, 1); 3], "claimed once");
        // What the old process still holds cannot commit.
        let batch = bytes::Bytes::from(crate::batch::tests::sample_batch(1, 1, 8));
        let header = crate::batch::parse_header(&batch).expect("header");
        let fenced = old
            .log
            .append(tp.clone(), vec![(header, batch)], false)
            .await;
        assert!(
            matches!(fenced, Err(crate::LogError::Fenced(_))),
            "{fenced:?}"
        );
        old.log.shutdown().await;
        new.log.shutdown().await;
    }

    /// A client with stale metadata asking for many partitions led elsewhere is answered from
    /// what the controller knows, not with store reads per partition.
    #[tokio::test]
    async fn partitions_led_elsewhere_are_refused_without_store_reads() {
        let (_dir, store, objects) = stores().await;
        // Counts the reads a broker's log makes (gets, ranges and read_many requests).
        let metered = crate::metadata::metered::MeteredMetadata::new(store.clone());
        let counts = metered.counts();
        let reads = || counts.reads();
        let counted: Arc<dyn MetadataStore> = Arc::new(metered);
        let (a, b) = (
            node(&counted, &objects, 1).await,
            node(&store, &objects, 2).await,
        );
        let partitions = 1_000;
        a.log
            .catalog()
            .create("t", partitions, Default::default(), 0)
            .await
            .expect("create");
        for _ in 0..2 {
            a.controller.reconcile().await.expect("reconcile");
            b.controller.reconcile().await.expect("reconcile");
        }
        a.controller.reconcile().await.expect("reconcile");
        let led_by_b: Vec<i32> = leaders(&*store, "t")
            .await
            .iter()
            .enumerate()
            .filter(|(_, (leader, _))| *leader == 2)
            .map(|(p, _)| p as i32)
            .collect();
        assert!(
            led_by_b.len() > partitions as usize / 4,
            "b leads its share"
        );

        let before = reads();
        for &p in &led_by_b {
            let tp = TopicPartition::new("t", p);
            let refused = a.log.leader_epoch(&tp).await;
            assert!(
                matches!(refused, Err(crate::LogError::NotLeader(_))),
                "{refused:?}"
            );
        }
        assert_eq!(reads() - before, 0, "no store read per not-led partition");

        // What a leads still loads (and is cached), and an unknown topic still asks the store.
        let mine = (0..partitions)
            .find(|p| !led_by_b.contains(p))
            .expect("a leads one");
        assert_eq!(
            a.log
                .leader_epoch(&TopicPartition::new("t", mine))
                .await
                .expect("led"),
            0
        );
        assert!(matches!(
            a.log.leader_epoch(&TopicPartition::new("nope", 0)).await,
            Err(crate::LogError::UnknownTopicOrPartition(_))
        ));
        a.log.shutdown().await;
        b.log.shutdown().await;
    }
}
