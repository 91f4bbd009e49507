//! A broker's view of the cluster: live brokers, topics, and every partition's state (leader,
//! epoch), read with three range requests however many topics there are.
//!
//! The controller reads one per pass (every 500 ms and on membership or topic changes) and
//! publishes it; Metadata requests take brokers and topics from the latest one instead of
//! reading them per request (partition leaders they still read fresh: a view's leadership may
//! be a pass old). Decisions that must be exact (claims, commits) compare revisions in the
//! store.

use super::membership::{live_brokers, MembershipError};
use crate::catalog::{Catalog, CatalogError, Topic};
use crate::keys::BrokerRecord;
use crate::metadata::{MetadataError, MetadataStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Membership(#[from] MembershipError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

#[derive(Debug, Clone)]
pub struct TopicView {
    pub topic: Topic,
    /// Stored partition states with their `mod_revision` (absent: nothing committed or claimed).
    pub partitions: super::PartitionStates,
}

#[derive(Debug, Clone)]
pub struct ClusterView {
    /// Live brokers, by node id.
    pub brokers: Vec<BrokerRecord>,
    pub topics: BTreeMap<String, TopicView>,
    /// Topic names by topic id (Fetch v13+ and Produce v13 name topics by id).
    pub names_by_id: HashMap<String, String>,
    pub taken_at: Instant,
}

impl ClusterView {
    /// Reads the whole view: brokers, topics, then all partition states (three requests).
    pub async fn read(store: &Arc<dyn MetadataStore>) -> Result<Self, ViewError> {
        let taken_at = Instant::now();
        let mut brokers = live_brokers(&**store).await?;
        brokers.sort_by_key(|b| b.node_id);
        let mut topics: BTreeMap<String, TopicView> = Catalog::new(Arc::clone(store))
            .list()
            .await?
            .into_iter()
            .map(|topic| {
                (
                    topic.record.name.clone(),
                    TopicView {
                        topic,
                        partitions: HashMap::new(),
                    },
                )
            })
            .collect();
        for (topic, states) in super::all_partition_states(&**store).await? {
            // States of a topic deleted between the two reads are left out.
            if let Some(view) = topics.get_mut(&topic) {
                view.partitions = states;
            }
        }
        let names_by_id = topics
            .values()
            .map(|t| (t.topic.record.id.clone(), t.topic.record.name.clone()))
            .collect();
        Ok(Self {
            brokers,
            topics,
            names_by_id,
            taken_at,
        })
    }

    pub fn live_ids(&self) -> Vec<i32> {
        self.brokers.iter().map(|b| b.node_id).collect()
    }

    pub fn is_fresher_than(&self, age: Duration) -> bool {
        self.taken_at.elapsed() <= age
    }
}

/// A published view and the [`ViewCell::generation`] current when its read began.
type Published = Option<(u64, Arc<ClusterView>)>;

/// Where the controller publishes views and handlers pick up the latest.
#[derive(Debug, Clone)]
pub struct ViewCell {
    sender: Arc<watch::Sender<Published>>,
    generation: Arc<AtomicU64>,
}

impl Default for ViewCell {
    fn default() -> Self {
        Self {
            sender: Arc::new(watch::channel(None).0),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl ViewCell {
    /// To be read before the view is: a view read before an [`invalidate`](Self::invalidate)
    /// is never served after it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn publish(&self, generation: u64, view: ClusterView) {
        self.sender.send_replace(Some((generation, Arc::new(view))));
    }

    /// This broker changed topics: until a view read afterwards is published, requests read
    /// the store (read-your-writes for admin requests).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The latest view, if it was taken within `max_age` and after the last invalidation.
    pub fn latest(&self, max_age: Duration) -> Option<Arc<ClusterView>> {
        let generation = self.generation();
        self.sender
            .borrow()
            .as_ref()
            .filter(|(g, v)| *g == generation && v.is_fresher_than(max_age))
            .map(|(_, v)| v.clone())
    }
}
