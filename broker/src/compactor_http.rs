//! `/v1/compactor` on the HTTP admin API: per partition, how far its data is in Parquet, the
//! backlog, the last run and its error (read from the metadata store, so every broker and every
//! compactor answers alike), and this process's compactor counters if it runs one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use skiff_compactor::Compactor;
use skiff_tiering::metadata::metered::MetadataCounts;
use skiff_tiering::metadata::MetadataStore;
use skiff_tiering::metered::ObjectStoreCounts;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Clone)]
struct CompactorState {
    store: Arc<dyn MetadataStore>,
    compactor: Option<Arc<Compactor>>,
}

pub fn routes(store: Arc<dyn MetadataStore>, compactor: Option<Arc<Compactor>>) -> Router {
    Router::new()
        .route("/v1/compactor", get(status))
        .with_state(CompactorState { store, compactor })
}

/// The whole HTTP API of `skiff compactor`: `/health`, `/v1/compactor`, `/v1/object-store` and
/// `/v1/metadata-store`.
pub fn standalone(
    store: Arc<dyn MetadataStore>,
    compactor: Arc<Compactor>,
    objects: Arc<ObjectStoreCounts>,
    metadata: Arc<MetadataCounts>,
) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/v1/object-store",
            get(move || {
                let counts = objects.snapshot();
                async move { Json(counts_json(counts)) }
            }),
        )
        .route(
            "/v1/metadata-store",
            get(move || {
                let counts = metadata.snapshot();
                async move { Json(counts_json(counts)) }
            }),
        )
        .merge(routes(store, Some(compactor)))
}

/// Request counters as JSON (`/v1/stats` of a broker; `/v1/object-store` and
/// `/v1/metadata-store` of a compactor).
pub fn counts_json(snapshot: Vec<(&'static str, u64)>) -> serde_json::Value {
    serde_json::Value::Object(
        snapshot
            .into_iter()
            .map(|(name, value)| (name.to_owned(), json!(value)))
            .collect(),
    )
}

async fn status(State(state): State<CompactorState>) -> impl IntoResponse {
    let partitions = match skiff_compactor::status::read(&state.store).await {
        Ok(partitions) => partitions,
        Err(error) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": error.to_string() })),
            )
        }
    };
    let local = state.compactor.as_ref().map(|c| {
        let stats = c.stats();
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        json!({
            "freshness_ms": c.settings().freshness_ms,
            "passes": load(&stats.passes),
            "jobs": load(&stats.jobs),
            "job_failures": load(&stats.job_failures),
            "conflicts": load(&stats.conflicts),
            "files_written": load(&stats.files_written),
            "bytes_read": load(&stats.bytes_read),
            "bytes_written": load(&stats.bytes_written),
            "gc_runs": load(&stats.gc_runs),
            "gc_failures": load(&stats.gc_failures),
            "objects_deleted": load(&stats.objects_deleted),
            "bytes_deleted": load(&stats.bytes_deleted),
        })
    });
    (
        StatusCode::OK,
        Json(json!({ "partitions": partitions, "local": local })),
    )
}
