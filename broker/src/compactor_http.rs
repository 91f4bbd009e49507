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

/// The whole HTTP API of `skiff compactor`: `/health`, `/metrics`, and, for callers who may
/// describe the cluster, `/v1/compactor`, `/v1/object-store` and `/v1/metadata-store`.
pub fn standalone(
    store: Arc<dyn MetadataStore>,
    compactor: Arc<Compactor>,
    objects: Arc<ObjectStoreCounts>,
    metadata: Arc<MetadataCounts>,
    authorizer: Arc<crate::security::authorizer::Authorizer>,
) -> Router {
    let metrics = {
        let (store, compactor, objects, metadata) = (
            store.clone(),
            compactor.clone(),
            objects.clone(),
            metadata.clone(),
        );
        move || async move {
            let (counters, gauges) = compactor_metrics(&store, &compactor).await;
            let scraped = crate::metrics::Scraped {
                counters,
                gauges,
                object_store: objects.snapshot(),
                metadata_store: metadata.snapshot(),
                group_offsets: Vec::new(),
                histograms: vec![
                    crate::metrics::ScrapedHistogram::of(
                        "object_store_request_duration_seconds",
                        "Object-store request latency by operation, to the response (this process)",
                        "operation",
                        &objects.latencies(),
                    ),
                    crate::metrics::ScrapedHistogram::of(
                        "metadata_store_request_duration_seconds",
                        "Metadata-store request latency by kind (get, range, txn)",
                        "operation",
                        &metadata.latencies(),
                    ),
                ],
            };
            crate::metrics::respond(crate::metrics::encode_scraped(&scraped))
        }
    };
    let views = Router::new()
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
        .route_layer(axum::middleware::from_fn_with_state(
            authorizer,
            crate::http::require_describe_cluster,
        ));
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .merge(views)
}

/// A compactor's metrics: this process's compactor counters, and the cluster's compaction backlog
/// read from the metadata store (the same in every process that exports it: aggregate the
/// backlog gauges with `max`, not `sum`; left out when the store cannot be read).
pub async fn compactor_metrics(
    store: &Arc<dyn MetadataStore>,
    compactor: &Compactor,
) -> (
    Vec<(&'static str, &'static str, u64)>,
    Vec<(&'static str, &'static str, i64)>,
) {
    let stats = compactor.stats();
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let counters = vec![
        (
            "compactor_passes",
            "Compactor passes over the partitions",
            load(&stats.passes),
        ),
        (
            "compactor_jobs",
            "Compaction jobs run (one partition's range rewritten as Parquet)",
            load(&stats.jobs),
        ),
        (
            "compactor_job_failures",
            "Compaction jobs that failed (each is retried; the log stays readable)",
            load(&stats.job_failures),
        ),
        (
            "compactor_conflicts",
            "Compaction swaps refused because the partition's index changed under them",
            load(&stats.conflicts),
        ),
        (
            "compactor_files_written",
            "Parquet files written",
            load(&stats.files_written),
        ),
        (
            "compactor_read_bytes",
            "Bytes of flush objects and Parquet read by compaction",
            load(&stats.bytes_read),
        ),
        (
            "compactor_written_bytes",
            "Bytes of Parquet written",
            load(&stats.bytes_written),
        ),
        (
            "compactor_gc_runs",
            "Garbage collection runs",
            load(&stats.gc_runs),
        ),
        (
            "compactor_gc_failures",
            "Garbage collection runs that failed",
            load(&stats.gc_failures),
        ),
        (
            "compactor_objects_deleted",
            "Unreferenced objects deleted by garbage collection",
            load(&stats.objects_deleted),
        ),
        (
            "compactor_deleted_bytes",
            "Bytes of unreferenced objects deleted",
            load(&stats.bytes_deleted),
        ),
    ];
    let mut gauges = Vec::new();
    match skiff_compactor::status::read(store).await {
        Ok(partitions) => {
            let sum = |f: &dyn Fn(&skiff_compactor::status::PartitionStatus) -> i64| {
                partitions.iter().map(f).fold(0i64, i64::saturating_add)
            };
            let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            gauges.extend([
                ("compactor_backlog_bytes", "Bytes of the cluster's flush objects not yet in Parquet (cluster-wide: aggregate with max)", sum(&|p| big(p.backlog_bytes))),
                ("compactor_backlog_records", "Records of the cluster not yet in Parquet (cluster-wide: aggregate with max)", sum(&|p| p.backlog_records)),
                ("compactor_backlog_objects", "Flush-object sections not yet in Parquet (cluster-wide: aggregate with max)", sum(&|p| i64::try_from(p.backlog_objects).unwrap_or(i64::MAX))),
                ("compactor_partitions_failing", "Partitions whose last compaction job failed (cluster-wide: aggregate with max)", sum(&|p| i64::from(p.last_error.is_some()))),
                ("parquet_bytes", "Bytes of the cluster's Parquet files (cluster-wide: aggregate with max)", sum(&|p| big(p.parquet_bytes))),
            ]);
        }
        Err(error) => tracing::warn!(%error, "metrics: compaction backlog unreadable"),
    }
    (counters, gauges)
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
