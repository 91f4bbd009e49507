//! The HTTP admin API (axum): health, counters, and topics with their offsets.

use crate::api::Broker;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use skiff_tiering::cluster::membership::live_brokers;
use skiff_tiering::cluster::partition_states;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/stats", get(stats))
        .route("/v1/topics", get(topics))
        .route("/v1/brokers", get(brokers))
        .with_state(broker)
}

async fn health() -> &'static str {
    "ok"
}

async fn brokers(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    match live_brokers(&*broker.store).await {
        Ok(live) => (StatusCode::OK, Json(json!({ "brokers": live }))),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": error.to_string() })),
        ),
    }
}

async fn stats(State(broker): State<Arc<Broker>>) -> Json<Value> {
    let stats = broker.log.stats();
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    Json(json!({
        "node_id": broker.node.node_id,
        "flushes": load(&stats.flushes),
        "objects_written": load(&stats.objects_written),
        "object_bytes_written": load(&stats.object_bytes_written),
        "commit_failures": load(&stats.commit_failures),
        "upload_failures": load(&stats.upload_failures),
        "fenced_appends": load(&stats.fenced_appends),
        "range_reads": load(&stats.range_reads),
        "recent_cache_hits": load(&stats.recent_cache_hits),
    }))
}

async fn topics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let topics = match broker.log.catalog().list().await {
        Ok(topics) => topics,
        Err(error) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": error.to_string() })),
            )
        }
    };
    let mut out = Vec::with_capacity(topics.len());
    for topic in topics {
        // The stored partition states: what every broker agrees on, whoever leads.
        let states = partition_states(&*broker.store, &topic.record.name)
            .await
            .unwrap_or_default();
        let partitions: Vec<Value> = (0..topic.record.partitions)
            .map(|index| {
                let state = states
                    .get(&index)
                    .map(|(s, _)| s.clone())
                    .unwrap_or_default();
                json!({
                    "partition": index,
                    "leader": state.leader,
                    "leader_epoch": state.leader_epoch,
                    "log_start_offset": state.log_start_offset,
                    "high_watermark": state.next_offset,
                })
            })
            .collect();
        out.push(json!({
            "name": topic.record.name,
            "id": topic.record.id,
            "configs": topic.record.configs,
            "partitions": partitions,
        }));
    }
    (StatusCode::OK, Json(json!({ "topics": out })))
}
