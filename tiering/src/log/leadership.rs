//! What this broker knows it leads, without asking the metadata store.
//!
//! A client with stale metadata may fetch or produce to hundreds of partitions this broker does
//! not lead; loading each from the store (topic, state, index, rollups) just to answer
//! NOT_LEADER_OR_FOLLOWER costs several reads per partition per request. The controller
//! publishes, after every pass, the topics it saw and the partitions it holds the claim of; a
//! partition of a known topic that is not among them is answered from memory.
//!
//! The knowledge only ever says "not led": a partition it does not rule out is loaded from the
//! store as before, which decides. It may wrongly rule out a partition only between a claim's
//! commit and [`LedPartitions::insert`] right after it, or for a claim whose success was hidden
//! by an error until the next pass: the client retries, as it does after any leader change.

use super::TopicPartition;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedPartitions {
    /// Per known topic: its partition count and the partitions this broker leads.
    topics: HashMap<String, (i32, HashSet<i32>)>,
}

impl LedPartitions {
    /// A topic with `partitions` partitions, none of them led here (yet).
    pub fn add_topic(&mut self, topic: &str, partitions: i32) {
        self.topics.entry(topic.to_owned()).or_default().0 = partitions;
    }

    /// This broker leads `tp` (its topic is added if unknown).
    pub fn insert(&mut self, tp: &TopicPartition) {
        let (partitions, led) = self.topics.entry(tp.topic.to_string()).or_default();
        *partitions = (*partitions).max(tp.partition + 1);
        led.insert(tp.partition);
    }

    /// Every partition this broker holds the claim of.
    pub fn led(&self) -> Vec<TopicPartition> {
        self.topics
            .iter()
            .flat_map(|(topic, (_, led))| led.iter().map(move |p| TopicPartition::new(topic, *p)))
            .collect()
    }

    /// Whether `tp` certainly is not led here: a partition of a known topic, not held. An
    /// unknown topic or partition number is not ruled out (the store says whether it exists).
    pub fn rules_out(&self, tp: &TopicPartition) -> bool {
        match self.topics.get(&*tp.topic) {
            Some((partitions, led)) => {
                (0..*partitions).contains(&tp.partition) && !led.contains(&tp.partition)
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_out_only_known_partitions_not_held() {
        let mut led = LedPartitions::default();
        led.add_topic("t", 3);
        led.insert(&TopicPartition::new("t", 1));
        assert!(led.rules_out(&TopicPartition::new("t", 0)));
        assert!(!led.rules_out(&TopicPartition::new("t", 1)));
        assert!(led.rules_out(&TopicPartition::new("t", 2)));
        // Beyond the known count (partitions added since), and unknown topics: the store decides.
        assert!(!led.rules_out(&TopicPartition::new("t", 3)));
        assert!(!led.rules_out(&TopicPartition::new("u", 0)));
        led.insert(&TopicPartition::new("u", 4));
        assert!(!led.rules_out(&TopicPartition::new("u", 4)));
        assert!(led.rules_out(&TopicPartition::new("u", 0)));
    }
}
