//! Expires the committed offsets of groups nobody uses any more, so the metadata store does not
//! grow with every group id ever seen (console consumers, `kcat -G` with fresh ids, retired
//! services).
//!
//! Kafka's rule (KIP-211): a group's offsets expire `offsets.retention.minutes` after the group
//! became empty. Membership lives in the coordinator's memory, so "empty since" is when the group
//! last lost its last member on this coordinator, and no earlier than when this broker became its
//! coordinator (a coordinator that just took over waits a whole retention); the offsets expire
//! once that and the group's newest commit are both older than the retention. Only the group's coordinator expires it, every
//! `offsets.retention.check.interval.ms`; each deletion compares the key's revision, so a commit
//! that lands meanwhile survives.

use super::coordinator::Coordinator;
use skiff_tiering::cluster::membership::{live_brokers, MembershipError};
use skiff_tiering::group_offsets;
use skiff_tiering::metadata::MetadataStore;
use skiff_tiering::Clock;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct OffsetsRetention {
    pub retention_ms: i64,
    pub check_interval: Duration,
}

/// Runs until the coordinator is dropped.
pub async fn run(
    store: Arc<dyn MetadataStore>,
    groups: Weak<Coordinator>,
    clock: Arc<dyn Clock>,
    node_id: i32,
    settings: OffsetsRetention,
) {
    let mut tick = tokio::time::interval(settings.check_interval);
    tick.tick().await; // the first tick is immediate; start one interval after start-up
    let mut coordinated_since = HashMap::new();
    loop {
        tick.tick().await;
        let Some(groups) = groups.upgrade() else {
            return;
        };
        let pass = pass(
            &*store,
            &groups,
            &*clock,
            node_id,
            settings.retention_ms,
            &mut coordinated_since,
        );
        match pass.await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "expired committed offsets of idle groups"),
            Err(error) => tracing::warn!(%error, "offsets retention pass failed; retried later"),
        }
    }
}

/// One pass. `coordinated_since` remembers, across passes, when this broker first saw each
/// group as its coordinator: a group that was active on the previous coordinator a moment ago
/// is not expired by the new one.
async fn pass(
    store: &dyn MetadataStore,
    groups: &Coordinator,
    clock: &dyn Clock,
    node_id: i32,
    retention_ms: i64,
    coordinated_since: &mut HashMap<String, i64>,
) -> Result<usize, MembershipError> {
    let live = live_brokers(store).await?;
    let stored = group_offsets::groups(store).await?;
    let now = clock.now_ms();
    {
        let known: std::collections::HashSet<&String> = stored.iter().collect();
        coordinated_since.retain(|group, _| known.contains(group));
        groups.retain_emptied(|group| known.contains(&group.to_owned()));
    }
    let mut expired = 0;
    for group in stored {
        let coordinator = crate::api::coordinator(&group, &live).map(|b| b.node_id);
        if coordinator != Some(node_id) {
            coordinated_since.remove(&group);
            continue;
        }
        let since = *coordinated_since.entry(group.clone()).or_insert(now);
        if groups.has_members(&group) {
            continue;
        }
        // Empty since it last lost a member here, or since this broker coordinates it.
        let empty_since = groups.emptied_at(&group).map_or(since, |t| t.max(since));
        if now.saturating_sub(empty_since) < retention_ms {
            continue;
        }
        let deleted = group_offsets::expire_group(store, &group, now, retention_ms).await?;
        if deleted > 0 {
            tracing::info!(group, offsets = deleted, "committed offsets expired");
        }
        expired += deleted;
    }
    Ok(expired)
}
