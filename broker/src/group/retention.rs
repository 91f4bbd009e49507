//! Expires the committed offsets of groups nobody uses any more, so the metadata store does not
//! grow with every group id ever seen (console consumers, `kcat -G` with fresh ids, retired
//! services).
//!
//! Kafka's rule (KIP-211): a group's offsets expire `offsets.retention.minutes` after the group
//! became empty. Here: once the group has no member on its coordinator and its newest commit is
//! older than the retention. Only the group's coordinator expires it, every
//! `offsets.retention.check.interval.ms`; each deletion compares the key's revision, so a commit
//! that lands meanwhile survives.

use super::coordinator::Coordinator;
use skiff_tiering::cluster::membership::{live_brokers, MembershipError};
use skiff_tiering::group_offsets;
use skiff_tiering::metadata::MetadataStore;
use skiff_tiering::Clock;
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
    loop {
        tick.tick().await;
        let Some(groups) = groups.upgrade() else {
            return;
        };
        match pass(&*store, &groups, &*clock, node_id, settings.retention_ms).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "expired committed offsets of idle groups"),
            Err(error) => tracing::warn!(%error, "offsets retention pass failed; retried later"),
        }
    }
}

async fn pass(
    store: &dyn MetadataStore,
    groups: &Coordinator,
    clock: &dyn Clock,
    node_id: i32,
    retention_ms: i64,
) -> Result<usize, MembershipError> {
    let live = live_brokers(store).await?;
    let mut expired = 0;
    for group in group_offsets::groups(store).await? {
        let coordinator = crate::api::coordinator(&group, &live).map(|b| b.node_id);
        let has_members = groups
            .summary(&group)
            .is_some_and(|g| !g.members.is_empty());
        if coordinator != Some(node_id) || has_members {
            continue;
        }
        let deleted =
            group_offsets::expire_group(store, &group, clock.now_ms(), retention_ms).await?;
        if deleted > 0 {
            tracing::info!(group, offsets = deleted, "committed offsets expired");
        }
        expired += deleted;
    }
    Ok(expired)
}
