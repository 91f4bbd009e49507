//! SASL/SCRAM credentials, durable in the metadata store (Kafka keeps them in its metadata log):
//! per user and mechanism the salt, the iteration count and the two keys RFC 5802 derives from
//! the salted password (`StoredKey`, `ServerKey`). The password itself is never stored, nor
//! anything from which a client's proof could be made without it.
//!
//! Key: `/skiff/users/<user, escaped>/scram/<mechanism>` ([`keys::scram_credential`]).

use crate::keys;
use crate::metadata::{MetadataError, MetadataStore, Txn, TxnOp};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The SCRAM mechanisms Kafka defines, with the numbers its admin APIs use for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism name (`SCRAM-SHA-256`).
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// Kafka's `ScramMechanism` type in Alter/DescribeUserScramCredentials.
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(value: i8) -> Option<ScramMechanism> {
        ScramMechanism::ALL
            .into_iter()
            .find(|m| m.kafka_type() == value)
    }

    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        ScramMechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Kafka's bounds on the iteration count (`ScramMechanism.minIterations()`, 16384 at most).
    pub fn iterations_range(self) -> std::ops::RangeInclusive<u32> {
        4096..=16384
    }
}

/// One user's credential for one mechanism.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    /// Base64, as in the SCRAM exchange.
    pub salt: String,
    pub stored_key: String,
    pub server_key: String,
    pub iterations: u32,
}

/// Never prints keys: a credential in a debug log is as good as a password hash leaked.
impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    pub fn new(salt: &[u8], stored_key: &[u8], server_key: &[u8], iterations: u32) -> Self {
        ScramCredential {
            salt: BASE64.encode(salt),
            stored_key: BASE64.encode(stored_key),
            server_key: BASE64.encode(server_key),
            iterations,
        }
    }

    /// (salt, stored key, server key), or `None` when the record is not valid base64.
    pub fn decoded(&self) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        Some((
            BASE64.decode(&self.salt).ok()?,
            BASE64.decode(&self.stored_key).ok()?,
            BASE64.decode(&self.server_key).ok()?,
        ))
    }
}

/// A change AlterUserScramCredentials asks for.
#[derive(Debug, Clone)]
pub enum CredentialChange {
    Upsert {
        user: String,
        mechanism: ScramMechanism,
        credential: ScramCredential,
    },
    Delete {
        user: String,
        mechanism: ScramMechanism,
    },
}

pub async fn get(
    store: &dyn MetadataStore,
    user: &str,
    mechanism: ScramMechanism,
) -> Result<Option<ScramCredential>, MetadataError> {
    let key = keys::scram_credential(user, mechanism.name());
    match store.get(&key).await? {
        None => Ok(None),
        Some(kv) => keys::decode(&key, &kv.value)
            .map(Some)
            .map_err(MetadataError::Corrupt),
    }
}

/// Applies changes in one transaction per chunk of the store's operation limit (each user's
/// changes are independent, as in Kafka).
pub async fn apply(
    store: &dyn MetadataStore,
    changes: &[CredentialChange],
) -> Result<(), MetadataError> {
    for chunk in changes.chunks(store.max_txn_ops().max(1)) {
        let ops = chunk
            .iter()
            .map(|change| match change {
                CredentialChange::Upsert {
                    user,
                    mechanism,
                    credential,
                } => TxnOp::put(
                    keys::scram_credential(user, mechanism.name()),
                    keys::encode(credential),
                ),
                CredentialChange::Delete { user, mechanism } => {
                    TxnOp::delete(keys::scram_credential(user, mechanism.name()))
                }
            })
            .collect();
        store.txn(Txn::when(vec![]).and_then(ops)).await?;
    }
    Ok(())
}

/// Every user with a credential: their mechanisms and iteration counts.
pub async fn list(
    store: &dyn MetadataStore,
) -> Result<BTreeMap<String, Vec<(ScramMechanism, u32)>>, MetadataError> {
    let prefix = keys::users_prefix();
    let mut users: BTreeMap<String, Vec<(ScramMechanism, u32)>> = BTreeMap::new();
    for kv in store.range_prefix(&prefix, 0).await? {
        let rest = &kv.key[prefix.len()..];
        let Some((escaped, mechanism)) = rest.split_once("/scram/") else {
            continue;
        };
        let (Some(user), Some(mechanism)) = (
            keys::unescape_group(escaped),
            ScramMechanism::from_name(mechanism),
        ) else {
            continue;
        };
        let credential: ScramCredential =
            keys::decode(&kv.key, &kv.value).map_err(MetadataError::Corrupt)?;
        users
            .entry(user)
            .or_default()
            .push((mechanism, credential.iterations));
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::metadata::embedded::EmbeddedStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn credentials_are_stored_listed_and_deleted_per_mechanism() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(&dir.path().join("m.redb"), Arc::new(ManualClock::new(0)))
            .await
            .expect("open");
        let credential = ScramCredential::new(b"salt", b"stored", b"server", 4096);
        let user = "alice/ops,=x";
        apply(
            &store,
            &[
                CredentialChange::Upsert {
                    user: user.into(),
                    mechanism: ScramMechanism::Sha256,
                    credential: credential.clone(),
                },
                CredentialChange::Upsert {
                    user: "bob".into(),
                    mechanism: ScramMechanism::Sha512,
                    credential: ScramCredential::new(b"s", b"k", b"v", 8192),
                },
            ],
        )
        .await
        .expect("apply");
        let read = get(&store, user, ScramMechanism::Sha256)
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(read, credential);
        assert_eq!(
            read.decoded().expect("base64"),
            (b"salt".to_vec(), b"stored".to_vec(), b"server".to_vec())
        );
        assert!(get(&store, user, ScramMechanism::Sha512)
            .await
            .expect("get")
            .is_none());
        let users = list(&store).await.expect("list");
        assert_eq!(users[user], vec![(ScramMechanism::Sha256, 4096)]);
        assert_eq!(users["bob"], vec![(ScramMechanism::Sha512, 8192)]);
        apply(
            &store,
            &[CredentialChange::Delete {
                user: user.into(),
                mechanism: ScramMechanism::Sha256,
            }],
        )
        .await
        .expect("delete");
        assert!(!list(&store).await.expect("list").contains_key(user));
        assert!(!format!("{credential:?}").contains(&credential.stored_key));
    }
}
