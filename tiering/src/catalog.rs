//! Topics: their names, ids, partition counts and config overrides, kept in the metadata store.
//!
//! Partition state keys are created lazily by the first commit to a partition, so creating a
//! topic is one transaction whatever its partition count; deleting one is one transaction too
//! (topic key plus two prefix deletes). Config changes are a read-modify-write of the topic key,
//! committed only if the key is unchanged since the read (and retried from a fresh read if not),
//! so concurrent alters never lose one another. The topic key's `create_revision` identifies one
//! incarnation of a name: log commits compare it, so data produced to a topic that was deleted
//! (and perhaps re-created) meanwhile is never committed into the new one.

use crate::keys::{self, TopicRecord};
use crate::metadata::{Compare, MetadataError, MetadataStore, Revision, Txn, TxnOp};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_LEN_MAX: usize = 249;
/// Partitions one topic may have. Kafka has no hard limit, but every partition costs metadata
/// keys and broker memory, and a request for millions must not be accepted in one call.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;
/// Attempts of a config change that keeps losing its compare to concurrent writers.
const CONFIG_UPDATE_ATTEMPTS_MAX: usize = 16;

/// A topic's `cleanup.policy`: `delete` (the default), `compact`, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// Time and size retention apply.
    pub delete: bool,
    /// Log compaction applies (and records need keys).
    pub compact: bool,
}

impl CleanupPolicy {
    /// From a topic's configs (Kafka's list syntax, `compact,delete`).
    pub fn of(configs: &BTreeMap<String, String>) -> Self {
        let Some(policy) = configs.get("cleanup.policy") else {
            return Self {
                delete: true,
                compact: false,
            };
        };
        let has = |name: &str| policy.split(',').any(|item| item.trim() == name);
        Self {
            delete: has("delete"),
            compact: has("compact"),
        }
    }
}

pub fn check_partition_count(partitions: i32) -> Result<(), CatalogError> {
    if partitions < 1 {
        return Err(CatalogError::InvalidPartitions(format!(
            "number of partitions must be at least 1: partitions={partitions}"
        )));
    }
    if partitions > PARTITIONS_PER_TOPIC_MAX {
        return Err(CatalogError::InvalidPartitions(format!(
            "at most {PARTITIONS_PER_TOPIC_MAX} partitions per topic: partitions={partitions}"
        )));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("topic already exists: topic={0}")]
    TopicAlreadyExists(String),
    #[error("unknown topic: topic={0}")]
    UnknownTopic(String),
    #[error("invalid topic name: {0}")]
    InvalidTopicName(String),
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    #[error("concurrent change: topic={0}")]
    Conflict(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("{0}")]
    Corrupt(String),
}

/// A topic as stored, with the revision identifying this incarnation of its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub record: TopicRecord,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

/// Checks a topic name the way Kafka does (`org.apache.kafka.common.internals.Topic`).
pub fn validate_topic_name(name: &str) -> Result<(), CatalogError> {
    let invalid = |why: &str| Err(CatalogError::InvalidTopicName(format!("{why}: {name:?}")));
    if name.is_empty() {
        return invalid("topic name is empty");
    }
    if name == "." || name == ".." {
        return invalid("topic name cannot be '.' or '..'");
    }
    if name.len() > TOPIC_NAME_LEN_MAX {
        return invalid("topic name is longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return invalid("topic name may only contain ASCII alphanumerics, '.', '_' and '-'");
    }
    Ok(())
}

/// Checks that `total` partitions would grow `topic` (Kafka never shrinks) within the limit.
pub fn check_growth(topic: &Topic, total: i32) -> Result<(), CatalogError> {
    if total <= topic.record.partitions {
        return Err(CatalogError::InvalidPartitions(format!(
            "topic currently has {} partitions, {total} would not be an increase",
            topic.record.partitions
        )));
    }
    check_partition_count(total)
}

#[derive(Debug, Clone)]
pub struct Catalog {
    store: Arc<dyn MetadataStore>,
}

impl Catalog {
    pub fn new(store: Arc<dyn MetadataStore>) -> Self {
        Self { store }
    }

    pub(crate) fn decode(kv: crate::metadata::KeyValue) -> Result<Topic, CatalogError> {
        let record = keys::decode(&kv.key, &kv.value).map_err(CatalogError::Corrupt)?;
        Ok(Topic {
            record,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        })
    }

    pub async fn get(&self, name: &str) -> Result<Option<Topic>, CatalogError> {
        match self.store.get(&keys::topic(name)).await? {
            Some(kv) => Ok(Some(Self::decode(kv)?)),
            None => Ok(None),
        }
    }

    pub async fn list(&self) -> Result<Vec<Topic>, CatalogError> {
        let kvs = self.store.range_prefix(&keys::topics_prefix(), 0).await?;
        kvs.into_iter().map(Self::decode).collect()
    }

    /// The topic with this id (32 lowercase hex digits), if any.
    pub async fn find_by_id(&self, id: &str) -> Result<Option<Topic>, CatalogError> {
        Ok(self.list().await?.into_iter().find(|t| t.record.id == id))
    }

    pub async fn create(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Topic, CatalogError> {
        validate_topic_name(name)?;
        check_partition_count(partitions)?;
        let record = TopicRecord {
            name: name.to_owned(),
            id: format!("{:032x}", ulid::Ulid::new().0),
            partitions,
            configs,
            created_ms: now_ms,
        };
        let key = keys::topic(name);
        let txn = Txn::when(vec![Compare::absent(&key)])
            .and_then(vec![TxnOp::put(&key, keys::encode(&record))]);
        let outcome = self.store.txn(txn).await?;
        if !outcome.succeeded {
            return Err(CatalogError::TopicAlreadyExists(name.to_owned()));
        }
        Ok(Topic {
            record,
            create_revision: outcome.revision,
            mod_revision: outcome.revision,
        })
    }

    /// Deletes the topic and its log metadata. Its objects become garbage for the compactor.
    pub async fn delete(&self, name: &str) -> Result<Topic, CatalogError> {
        let topic = self
            .get(name)
            .await?
            .ok_or_else(|| CatalogError::UnknownTopic(name.to_owned()))?;
        let key = keys::topic(name);
        let txn = Txn::when(vec![Compare::mod_revision(&key, topic.mod_revision)]).and_then(vec![
            TxnOp::delete(&key),
            TxnOp::DeletePrefix {
                prefix: keys::partitions_prefix(name),
            },
            TxnOp::DeletePrefix {
                prefix: keys::topic_index_prefix(name),
            },
            TxnOp::DeletePrefix {
                prefix: keys::topic_rollup_prefix(name),
            },
            TxnOp::DeletePrefix {
                prefix: keys::topic_producers_prefix(name),
            },
            TxnOp::DeletePrefix {
                prefix: keys::topic_layouts_prefix(name),
            },
            TxnOp::DeletePrefix {
                prefix: keys::topic_compactor_errors_prefix(name),
            },
            // Markers for a topic that is gone are done: its transactions complete without.
            TxnOp::DeletePrefix {
                prefix: keys::topic_marker_requests_prefix(name),
            },
        ]);
        if !self.store.txn(txn).await?.succeeded {
            return Err(CatalogError::Conflict(name.to_owned()));
        }
        Ok(topic)
    }

    /// Grows a topic to `total` partitions (Kafka never shrinks).
    pub async fn create_partitions(&self, name: &str, total: i32) -> Result<Topic, CatalogError> {
        let topic = self
            .get(name)
            .await?
            .ok_or_else(|| CatalogError::UnknownTopic(name.to_owned()))?;
        check_growth(&topic, total)?;
        let mut record = topic.record.clone();
        record.partitions = total;
        let key = keys::topic(name);
        let txn = Txn::when(vec![Compare::mod_revision(&key, topic.mod_revision)])
            .and_then(vec![TxnOp::put(&key, keys::encode(&record))]);
        let outcome = self.store.txn(txn).await?;
        if !outcome.succeeded {
            return Err(CatalogError::Conflict(name.to_owned()));
        }
        Ok(Topic {
            record,
            create_revision: topic.create_revision,
            mod_revision: outcome.revision,
        })
    }
}

impl Catalog {
    /// Replaces a topic's config overrides with `edit(current overrides)`, in a transaction that
    /// compares the topic key's `mod_revision` with the one read; when another writer got there
    /// first, reads again and re-applies `edit`, so both changes survive. `edit` refuses a change
    /// with [`CatalogError::InvalidConfig`] (or any other error), which is returned as is.
    pub async fn update_configs<F>(&self, name: &str, edit: F) -> Result<Topic, CatalogError>
    where
        F: Fn(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, CatalogError>,
    {
        let key = keys::topic(name);
        for _ in 0..CONFIG_UPDATE_ATTEMPTS_MAX {
            let topic = self
                .get(name)
                .await?
                .ok_or_else(|| CatalogError::UnknownTopic(name.to_owned()))?;
            let configs = edit(&topic.record.configs)?;
            if configs == topic.record.configs {
                return Ok(topic);
            }
            let mut record = topic.record.clone();
            record.configs = configs;
            let txn = Txn::when(vec![Compare::mod_revision(&key, topic.mod_revision)])
                .and_then(vec![TxnOp::put(&key, keys::encode(&record))]);
            let outcome = self.store.txn(txn).await?;
            if outcome.succeeded {
                return Ok(Topic {
                    record,
                    create_revision: topic.create_revision,
                    mod_revision: outcome.revision,
                });
            }
        }
        Err(CatalogError::Conflict(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::metadata::embedded::EmbeddedStore;

    #[test]
    fn cleanup_policy_reads_kafkas_list() {
        let of = |value: Option<&str>| {
            let configs = value
                .map(|v| BTreeMap::from([("cleanup.policy".to_owned(), v.to_owned())]))
                .unwrap_or_default();
            let policy = CleanupPolicy::of(&configs);
            (policy.delete, policy.compact)
        };
        assert_eq!(of(None), (true, false), "Kafka's default is delete");
        assert_eq!(of(Some("compact")), (false, true));
        assert_eq!(of(Some("compact, delete")), (true, true));
        assert_eq!(of(Some("delete")), (true, false));
    }

    #[tokio::test]
    async fn concurrent_config_updates_keep_both_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(0));
        let store: Arc<dyn MetadataStore> = Arc::new(
            EmbeddedStore::open(&dir.path().join("meta.redb"), clock)
                .await
                .expect("store"),
        );
        let catalog = Catalog::new(store);
        let created = catalog
            .create("t", 1, BTreeMap::new(), 0)
            .await
            .expect("create");
        let set = |name: &'static str, value: &'static str| {
            let catalog = catalog.clone();
            async move {
                catalog
                    .update_configs("t", |current| {
                        let mut next = current.clone();
                        next.insert(name.to_owned(), value.to_owned());
                        Ok(next)
                    })
                    .await
            }
        };
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let name: &'static str = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
                tokio::spawn(set(name, "1"))
            })
            .collect();
        for task in tasks {
            task.await.expect("task").expect("update");
        }
        let topic = catalog.get("t").await.expect("get").expect("exists");
        assert_eq!(topic.record.configs.len(), 8, "{:?}", topic.record.configs);
        assert_eq!(topic.create_revision, created.create_revision);
        assert!(topic.mod_revision > created.mod_revision);

        let refused = catalog
            .update_configs("t", |_| Err(CatalogError::InvalidConfig("no".into())))
            .await;
        assert!(matches!(refused, Err(CatalogError::InvalidConfig(_))));
        let missing = catalog.update_configs("nope", |c| Ok(c.clone())).await;
        assert!(matches!(missing, Err(CatalogError::UnknownTopic(_))));
    }

    #[test]
    fn validates_names_like_kafka() {
        for ok in ["a", "test-topic", "a.b_c-D9", &"x".repeat(249)] {
            validate_topic_name(ok).expect(ok);
        }
        for bad in ["", ".", "..", "a b", "a/b", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
