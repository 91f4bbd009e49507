//! Access control lists, durable in the metadata store (Kafka keeps them in its metadata log):
//! one key per resource pattern holding every entry on it, so one pattern's entries change in one
//! compare-and-swap and a broker loads all of them with one range read.
//!
//! Key: `/skiff/acls/<resource type>/<pattern type>/<name, escaped>` ([`keys::acl`]), with
//! Kafka's names for the types (`TOPIC`, `LITERAL`); the broker gives them meaning.

use crate::keys;
use crate::metadata::{Compare, MetadataError, MetadataStore, Txn, TxnOp};
use serde::{Deserialize, Serialize};

/// A resource pattern as stored: Kafka's names of the types, and the name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PatternKey {
    pub resource_type: String,
    pub pattern_type: String,
    pub name: String,
}

/// One entry of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryRecord {
    pub principal: String,
    pub host: String,
    pub operation: String,
    pub permission: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRecord {
    pub entries: Vec<EntryRecord>,
}

/// Attempts of one compare-and-swap against concurrent changes of the same pattern.
const CAS_ATTEMPTS_MAX: usize = 16;

/// Every pattern with its entries.
pub async fn list(
    store: &dyn MetadataStore,
) -> Result<Vec<(PatternKey, AclRecord)>, MetadataError> {
    let prefix = keys::acls_prefix();
    let mut out = Vec::new();
    for kv in store.range_prefix(&prefix, 0).await? {
        let Some(pattern) = parse_key(&kv.key[prefix.len()..]) else {
            continue;
        };
        let record: AclRecord = keys::decode(&kv.key, &kv.value).map_err(MetadataError::Corrupt)?;
        out.push((pattern, record));
    }
    Ok(out)
}

fn parse_key(rest: &str) -> Option<PatternKey> {
    let mut parts = rest.splitn(3, '/');
    Some(PatternKey {
        resource_type: parts.next()?.to_owned(),
        pattern_type: parts.next()?.to_owned(),
        name: keys::unescape_group(parts.next()?)?,
    })
}

/// Changes one pattern's entries with `change` (which returns whether it changed anything),
/// atomically against concurrent changes; the key goes when no entry is left.
pub async fn update(
    store: &dyn MetadataStore,
    pattern: &PatternKey,
    mut change: impl FnMut(&mut Vec<EntryRecord>) -> bool,
) -> Result<(), MetadataError> {
    let key = keys::acl(&pattern.resource_type, &pattern.pattern_type, &pattern.name);
    for _ in 0..CAS_ATTEMPTS_MAX {
        let current = store.get(&key).await?;
        let (mut record, compare) = match &current {
            Some(kv) => (
                keys::decode::<AclRecord>(&key, &kv.value).map_err(MetadataError::Corrupt)?,
                Compare::mod_revision(key.clone(), kv.mod_revision),
            ),
            None => (AclRecord::default(), Compare::absent(key.clone())),
        };
        if !change(&mut record.entries) {
            return Ok(());
        }
        record.entries.sort();
        record.entries.dedup();
        let op = if record.entries.is_empty() {
            TxnOp::delete(key.clone())
        } else {
            TxnOp::put(key.clone(), keys::encode(&record))
        };
        if store
            .txn(Txn::when(vec![compare]).and_then(vec![op]))
            .await?
            .succeeded
        {
            return Ok(());
        }
    }
    Err(MetadataError::Unavailable(format!(
        "ACLs of {key} changed concurrently {CAS_ATTEMPTS_MAX} times"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::metadata::embedded::EmbeddedStore;
    use std::sync::Arc;

    fn entry(principal: &str, operation: &str) -> EntryRecord {
        EntryRecord {
            principal: principal.into(),
            host: "*".into(),
            operation: operation.into(),
            permission: "ALLOW".into(),
        }
    }

    #[tokio::test]
    async fn patterns_are_updated_listed_and_removed_when_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(&dir.path().join("m.redb"), Arc::new(ManualClock::new(0)))
            .await
            .expect("open");
        let pattern = PatternKey {
            resource_type: "TOPIC".into(),
            pattern_type: "PREFIXED".into(),
            name: "team/a.*".into(),
        };
        update(&store, &pattern, |entries| {
            entries.push(entry("User:b", "READ"));
            entries.push(entry("User:a", "WRITE"));
            entries.push(entry("User:a", "WRITE"));
            true
        })
        .await
        .expect("add");
        let listed = list(&store).await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, pattern);
        assert_eq!(
            listed[0].1.entries,
            vec![entry("User:a", "WRITE"), entry("User:b", "READ")],
            "sorted, without repeats"
        );
        update(&store, &pattern, |entries| {
            entries.clear();
            true
        })
        .await
        .expect("clear");
        assert!(list(&store).await.expect("list").is_empty());
    }
}
