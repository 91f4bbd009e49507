//! The HTTP admin API (axum): health, counters, and topics with their offsets.

use crate::api::Broker;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use skiff_tiering::log::TopicPartition;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/stats", get(stats))
        .route("/v1/topics", get(topics))
        .with_state(broker)
}

async fn health() -> &'static str {
    "ok"
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
        let mut partitions = Vec::new();
        for index in 0..topic.record.partitions {
            let tp = TopicPartition::new(&topic.record.name, index);
            let offsets = broker.log.offsets(&tp).await.ok();
            partitions.push(json!({
                "partition": index,
                "log_start_offset": offsets.map(|o| o.0),
                "high_watermark": offsets.map(|o| o.1),
            }));
        }
        out.push(json!({
            "name": topic.record.name,
            "id": topic.record.id,
            "configs": topic.record.configs,
            "partitions": partitions,
        }));
    }
    (StatusCode::OK, Json(json!({ "topics": out })))
}
