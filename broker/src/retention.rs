//! The log retention pass: every `--log-retention-check-interval-ms`, each broker applies its
//! led partitions' `retention.ms` and `retention.bytes` (see `skiff_tiering::log::Log::enforce_retention`). Moving the
//! log start is the leader's commit, so it never races the leader's own appends; deleting the
//! bytes below it is the compactor's garbage collection.

use skiff_tiering::log::{Log, Retention};
use std::time::Duration;

pub async fn run(log: Log, check_interval: Duration, defaults: Retention) {
    let mut tick = tokio::time::interval(check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        pass(&log, defaults).await;
    }
}

/// One pass over the partitions this broker leads; failures are retried next pass.
pub async fn pass(log: &Log, defaults: Retention) {
    let now_ms = log.clock().now_ms();
    for tp in log.led_partitions() {
        let retention = match log.led_topic(&tp).await {
            Ok(topic) => crate::api::retention(&topic.configs, defaults),
            Err(error) => {
                tracing::debug!(%error, partition = %tp, "retention: partition not led now");
                continue;
            }
        };
        match log.enforce_retention(&tp, retention, now_ms).await {
            Ok(Some(start)) => {
                tracing::info!(partition = %tp, log_start_offset = start, ?retention, "retention applied")
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, partition = %tp, "retention pass failed; retried next pass")
            }
        }
    }
}
