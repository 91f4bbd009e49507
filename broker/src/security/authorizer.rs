//! The broker's authorizer: every ACL in memory (loaded from the metadata store, kept current by
//! a watch on its prefix and a periodic reload), super users, and the decision for a session.
//! With `--authorizer none` (the default, as Kafka without `authorizer.class.name`) everything
//! is allowed and the ACL APIs answer SECURITY_DISABLED.

use super::acl::{
    AclBinding, AclEntry, AclSet, Operation, PatternType, Permission, ResourcePattern, ResourceType,
};
use super::{Principal, Session};
use futures::StreamExt;
use skiff_tiering::acls::{self, EntryRecord, PatternKey};
use skiff_tiering::metadata::{MetadataError, MetadataStore};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often the ACLs are read again in full, whatever the watch said (a watch that broke
/// silently is healed within this).
const RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// What `--authorizer`, `--super-users` and `--allow-everyone-if-no-acl-found` say.
#[derive(Debug, Clone, Default)]
pub struct AuthorizerSettings {
    pub enabled: bool,
    pub super_users: Vec<String>,
    pub allow_everyone_if_no_acl_found: bool,
}

#[derive(Debug)]
pub struct Authorizer {
    settings: AuthorizerSettings,
    store: Arc<dyn MetadataStore>,
    acls: RwLock<Arc<AclSet>>,
    /// One reload at a time: an older read never replaces a newer one.
    reloading: tokio::sync::Mutex<()>,
}

impl Authorizer {
    pub fn new(store: Arc<dyn MetadataStore>, settings: AuthorizerSettings) -> Arc<Authorizer> {
        Arc::new(Authorizer {
            settings,
            store,
            acls: RwLock::new(Arc::new(AclSet::default())),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Loads the ACLs, then keeps them current until the authorizer is dropped. The first load
    /// happens before this returns, so a broker never serves with an empty set by mistake.
    pub async fn start(self: &Arc<Self>) -> Result<(), MetadataError> {
        if !self.enabled() {
            return Ok(());
        }
        self.reload().await?;
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(authorizer) = weak.upgrade() else {
                    return;
                };
                let store = authorizer.store.clone();
                drop(authorizer);
                let events = store
                    .watch_prefix(&skiff_tiering::keys::acls_prefix())
                    .await;
                let mut events = match events {
                    Ok(events) => Some(events),
                    Err(error) => {
                        tracing::warn!(%error, "cannot watch ACLs; reloading them periodically");
                        None
                    }
                };
                let mut tick = tokio::time::interval(RELOAD_INTERVAL);
                tick.tick().await;
                loop {
                    let changed = match &mut events {
                        Some(stream) => tokio::select! {
                            event = stream.next() => event.is_some(),
                            _ = tick.tick() => true,
                        },
                        None => {
                            tick.tick().await;
                            true
                        }
                    };
                    let Some(authorizer) = weak.upgrade() else {
                        return;
                    };
                    if let Err(error) = authorizer.reload().await {
                        tracing::warn!(%error, "cannot reload ACLs; keeping the last ones read");
                    }
                    if !changed {
                        // The watch ended: start a new one.
                        break;
                    }
                }
            }
        });
        Ok(())
    }

    /// Reads every ACL from the store.
    pub async fn reload(&self) -> Result<(), MetadataError> {
        let _one_at_a_time = self.reloading.lock().await;
        let mut set = AclSet::default();
        for (pattern, record) in acls::list(&*self.store).await? {
            let Some(pattern) = pattern_of(&pattern) else {
                tracing::warn!(
                    ?pattern,
                    "ignoring an ACL pattern this broker does not know"
                );
                continue;
            };
            let entries = record.entries.iter().map(entry_of).collect();
            set.by_pattern.insert(pattern, entries);
        }
        *self
            .acls
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
        Ok(())
    }

    /// The ACLs as last read.
    pub fn current(&self) -> Arc<AclSet> {
        self.acls
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// What the session may do, worked out once for a request's many checks: its principal and
    /// host as ACLs name them, and the ACLs as now.
    pub fn access(&self, session: &Session) -> Access {
        // (Checked first: without an authorizer no request pays for the principal's copy.)
        if !self.enabled() {
            return Access::Everything;
        }
        self.access_of(session.principal().as_ref(), session.peer.ip())
    }

    /// What `principal` (`None`: not logged in) connecting from `ip` may do.
    pub fn access_of(&self, principal: Option<&Principal>, ip: std::net::IpAddr) -> Access {
        if !self.enabled() {
            return Access::Everything;
        }
        let Some(principal) = principal else {
            return Access::Nothing;
        };
        let principal = principal.to_string();
        if self.settings.super_users.contains(&principal) {
            return Access::Everything;
        }
        Access::Checked {
            principal,
            // An IPv4 client of a dual-stack listener is its IPv4 address, as in Kafka.
            host: ip.to_canonical().to_string(),
            acls: self.current(),
            allow_if_no_acl: self.settings.allow_everyone_if_no_acl_found,
        }
    }

    /// Adds bindings (CreateAcls), each pattern in one compare-and-swap.
    pub async fn create(&self, bindings: &[AclBinding]) -> Result<(), MetadataError> {
        let mut by_pattern: std::collections::BTreeMap<&ResourcePattern, Vec<EntryRecord>> =
            Default::default();
        for binding in bindings {
            by_pattern
                .entry(&binding.pattern)
                .or_default()
                .push(record_of(&binding.entry));
        }
        for (pattern, added) in by_pattern {
            acls::update(&*self.store, &key_of(pattern), |entries| {
                let before = entries.len();
                entries.extend(added.iter().cloned());
                entries.sort();
                entries.dedup();
                entries.len() != before
            })
            .await?;
        }
        self.reload().await
    }

    /// Removes the bindings `matches` selects (DeleteAcls); returns those removed.
    pub async fn delete(
        &self,
        matches: impl Fn(&AclBinding) -> bool,
    ) -> Result<Vec<AclBinding>, MetadataError> {
        self.reload().await?;
        let current = self.current();
        let mut removed = Vec::new();
        for (pattern, entries) in &current.by_pattern {
            let doomed: Vec<AclBinding> = entries
                .iter()
                .map(|entry| AclBinding {
                    pattern: pattern.clone(),
                    entry: entry.clone(),
                })
                .filter(|binding| matches(binding))
                .collect();
            if doomed.is_empty() {
                continue;
            }
            let records: Vec<EntryRecord> = doomed.iter().map(|b| record_of(&b.entry)).collect();
            acls::update(&*self.store, &key_of(pattern), |entries| {
                let before = entries.len();
                entries.retain(|e| !records.contains(e));
                entries.len() != before
            })
            .await?;
            removed.extend(doomed);
        }
        self.reload().await?;
        Ok(removed)
    }
}

/// A session's rights for one request (see [`Authorizer::access`]).
#[derive(Debug)]
pub enum Access {
    /// No authorizer, or a super user.
    Everything,
    /// Not logged in.
    Nothing,
    Checked {
        principal: String,
        host: String,
        acls: Arc<AclSet>,
        allow_if_no_acl: bool,
    },
}

impl Access {
    pub fn allows(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        match self {
            Access::Everything => true,
            Access::Nothing => false,
            Access::Checked {
                principal,
                host,
                acls,
                allow_if_no_acl,
            } => acls.allows(
                principal,
                host,
                operation,
                resource_type,
                name,
                *allow_if_no_acl,
            ),
        }
    }
}

fn key_of(pattern: &ResourcePattern) -> PatternKey {
    PatternKey {
        resource_type: pattern.resource_type.name().to_owned(),
        pattern_type: pattern.pattern_type.name().to_owned(),
        name: pattern.name.clone(),
    }
}

fn pattern_of(key: &PatternKey) -> Option<ResourcePattern> {
    Some(ResourcePattern {
        resource_type: ResourceType::from_name(&key.resource_type)?,
        pattern_type: PatternType::from_name(&key.pattern_type)?,
        name: key.name.clone(),
    })
}

fn record_of(entry: &AclEntry) -> EntryRecord {
    EntryRecord {
        principal: entry.principal.clone(),
        host: entry.host.clone(),
        operation: entry.operation.name().to_owned(),
        permission: entry.permission.name().to_owned(),
    }
}

/// An entry as stored; one naming an operation or permission this broker does not know is
/// read as a DENY of everything for its principal and host (failing closed, loudly).
fn entry_of(record: &EntryRecord) -> AclEntry {
    let operation = Operation::from_name(&record.operation);
    let permission = Permission::from_name(&record.permission);
    let (operation, permission) = match (operation, permission) {
        (Some(operation), Some(permission)) => (operation, permission),
        _ => {
            tracing::error!(
                principal = record.principal,
                operation = record.operation,
                permission = record.permission,
                "unknown ACL entry read as DENY ALL"
            );
            (Operation::All, Permission::Deny)
        }
    };
    AclEntry {
        principal: record.principal.clone(),
        host: record.host.clone(),
        operation,
        permission,
    }
}
