//! The HTTP admin API (axum): health, counters, and topics with their offsets.

use crate::api::Broker;
use crate::compactor_http::counts_json;
use crate::http_auth::Caller;
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::authorizer::{Access, Authorizer};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{json, Value};
use skiff_tiering::cluster::membership::live_brokers;
use skiff_tiering::cluster::partition_states;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/v1/topics", get(topics))
        .route("/v1/brokers", get(brokers))
        .route("/v1/groups", get(groups))
        .route("/v1/transactions", get(transactions))
        .with_state(broker)
}

/// What the caller may see: its principal's rights (the authentication middleware names a
/// caller for every route but the open ones).
fn access(authorizer: &Authorizer, caller: Option<&Extension<Caller>>) -> Access {
    match caller {
        Some(Extension(caller)) => authorizer.access_of(Some(&caller.principal), caller.ip),
        None => authorizer.access_of(None, std::net::Ipv4Addr::UNSPECIFIED.into()),
    }
}

/// An answer of the admin API's views.
type Answer = (StatusCode, Json<Value>);

/// 403 unless the caller may describe the cluster (the broker-wide views).
pub fn describe_cluster(
    authorizer: &Authorizer,
    caller: Option<&Extension<Caller>>,
) -> Result<(), Answer> {
    if access(authorizer, caller).allows(Operation::Describe, ResourceType::Cluster, CLUSTER_NAME) {
        Ok(())
    } else {
        Err((
            StatusCode::FORBIDDEN,
            Json(json!({
                "error": "not authorized to describe the cluster (CLUSTER_AUTHORIZATION_FAILED)"
            })),
        ))
    }
}

/// Middleware for the broker-wide views merged from elsewhere (`/v1/compactor`, and
/// `skiff compactor`'s views): 403 unless the caller may describe the cluster.
pub async fn require_describe_cluster(
    State(authorizer): State<Arc<Authorizer>>,
    caller: Option<Extension<Caller>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match describe_cluster(&authorizer, caller.as_ref()) {
        Ok(()) => next.run(request).await,
        Err(answer) => answer.into_response(),
    }
}

/// Liveness: the process answers.
async fn health() -> &'static str {
    "ok"
}

/// How long readiness waits for the metadata store.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Readiness: this broker can serve — the metadata store answers, this broker is registered
/// in it (its session is alive, so it may lead partitions), and its latest flush-object upload
/// did not fail (the bucket takes its writes). 503 with the reasons otherwise.
async fn ready(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let mut problems = Vec::new();
    match tokio::time::timeout(READY_TIMEOUT, live_brokers(&*broker.store)).await {
        Ok(Ok(live)) if live.iter().any(|b| b.node_id == broker.node.node_id) => {}
        Ok(Ok(_)) => problems.push(format!(
            "node {} is not registered in the metadata store (its session lapsed)",
            broker.node.node_id
        )),
        Ok(Err(error)) => problems.push(format!("metadata store: {error}")),
        Err(_) => problems.push(format!(
            "metadata store: no answer within {READY_TIMEOUT:?}"
        )),
    }
    if broker
        .log
        .stats()
        .last_upload_failed
        .load(Ordering::Relaxed)
    {
        problems.push("object store: the latest flush-object upload failed".to_owned());
    }
    if problems.is_empty() {
        (StatusCode::OK, Json(json!({ "ready": true })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "problems": problems })),
        )
    }
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

/// Topics and partitions in a member's assignment (the consumer protocol's encoding).
fn decode_assignment(bytes: &bytes::Bytes) -> Value {
    use kafka_protocol::messages::ConsumerProtocolAssignment;
    use kafka_protocol::protocol::Decodable;
    if bytes.len() < 2 {
        return json!([]);
    }
    let mut buf = bytes.clone();
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    let _ = bytes::Buf::get_i16(&mut buf);
    match ConsumerProtocolAssignment::decode(&mut buf, version) {
        Ok(assignment) => json!(assignment
            .assigned_partitions
            .iter()
            .map(|t| json!({ "topic": t.topic.0.as_str(), "partitions": t.partitions }))
            .collect::<Vec<_>>()),
        Err(_) => json!(null),
    }
}

/// Every group with committed offsets or members: per partition the committed offset, the high
/// watermark and the lag (also for groups with no live member, when lag matters most), and,
/// from the group's coordinator, its state, members and assignments (`null` on other brokers).
async fn groups(
    State(broker): State<Arc<Broker>>,
    caller: Option<Extension<Caller>>,
) -> impl IntoResponse {
    let access = access(&broker.authorizer, caller.as_ref());
    let (stored, live) = match (
        skiff_tiering::group_offsets::groups(&*broker.store).await,
        live_brokers(&*broker.store).await,
    ) {
        (Ok(stored), Ok(live)) => (stored, live),
        (Err(error), _) => return unavailable(error.to_string()),
        (_, Err(error)) => return unavailable(error.to_string()),
    };
    let mut local: std::collections::BTreeMap<String, _> = broker
        .groups
        .summaries()
        .into_iter()
        .map(|g| (g.group_id.clone(), g))
        .collect();
    let mut ids: std::collections::BTreeSet<String> = stored.into_iter().collect();
    ids.extend(local.keys().cloned());
    // Only the groups, and their offsets in topics, the caller may describe (as
    // DescribeGroups and OffsetFetch answer).
    ids.retain(|id| access.allows(Operation::Describe, ResourceType::Group, id));
    let mut high_watermarks = std::collections::HashMap::new();
    let mut out = Vec::new();
    for id in ids {
        // A store error is a 503, never an empty answer that reads as "nothing committed".
        let committed = match skiff_tiering::group_offsets::fetch_all(&*broker.store, &id).await {
            Ok(committed) => committed,
            Err(error) => return unavailable(error.to_string()),
        };
        let mut offsets = Vec::new();
        for (topic, partitions) in committed {
            if !access.allows(Operation::Describe, ResourceType::Topic, &topic) {
                continue;
            }
            if !high_watermarks.contains_key(&topic) {
                let states = match partition_states(&*broker.store, &topic).await {
                    Ok(states) => states,
                    Err(error) => return unavailable(error.to_string()),
                };
                high_watermarks.insert(topic.clone(), states);
            }
            let states = &high_watermarks[&topic];
            for (partition, offset) in partitions {
                let high = states.get(&partition).map(|(s, _)| s.next_offset);
                offsets.push(json!({
                    "topic": topic,
                    "partition": partition,
                    "committed_offset": offset.offset,
                    "metadata": offset.metadata,
                    "high_watermark": high,
                    "lag": high.map(|h| (h - offset.offset).max(0)),
                }));
            }
        }
        let coordinator = crate::api::coordinator(&id, &live).map(|b| b.node_id);
        let here = coordinator == Some(broker.node.node_id);
        let mut entry = json!({
            "group_id": id,
            "coordinator": coordinator,
            "state": null,
            "members": null,
            "offsets": offsets,
        });
        match local.remove(&id) {
            Some(group) => {
                entry["state"] = json!(format!("{:?}", group.phase));
                entry["generation"] = json!(group.generation);
                entry["protocol_type"] = json!(group.protocol_type);
                entry["protocol"] = json!(group.protocol);
                entry["leader"] = json!(group.leader);
                entry["members"] = json!(group
                    .members
                    .iter()
                    .map(|m| json!({
                        "member_id": m.member_id,
                        "group_instance_id": m.instance_id,
                        "client_id": m.client_id,
                        "assignment": decode_assignment(&m.assignment),
                    }))
                    .collect::<Vec<_>>());
            }
            // Coordinated here and not in memory: no member is alive.
            None if here => {
                entry["state"] = json!("Empty");
                entry["members"] = json!([]);
            }
            None => {}
        }
        out.push(entry);
    }
    (StatusCode::OK, Json(json!({ "groups": out })))
}

fn unavailable(error: String) -> (StatusCode, Json<Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": error })),
    )
}

async fn stats(
    State(broker): State<Arc<Broker>>,
    caller: Option<Extension<Caller>>,
) -> Result<Json<Value>, Answer> {
    describe_cluster(&broker.authorizer, caller.as_ref())?;
    let stats = broker.log.stats();
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    Ok(Json(json!({
        "node_id": broker.node.node_id,
        "flushes": load(&stats.flushes),
        "objects_written": load(&stats.objects_written),
        "object_bytes_written": load(&stats.object_bytes_written),
        "commit_failures": load(&stats.commit_failures),
        "upload_failures": load(&stats.upload_failures),
        "fenced_appends": load(&stats.fenced_appends),
        "range_reads": load(&stats.range_reads),
        "recent_cache_hits": load(&stats.recent_cache_hits),
        "read_cache_hits": load(&stats.read_cache_hits),
        "read_cache_disk_hits": load(&stats.read_cache_disk_hits),
        "flushes_without_linger": load(&stats.flushes_without_linger),
        "read_cache_bytes": broker.log.read_cache_bytes(),
        "parquet_row_groups_read": load(&stats.parquet_row_groups_read),
        "replica_reads": load(&stats.replica_reads),
        "replica_view_loads": load(&stats.replica_view_loads),
        "prefetch_reads": load(&stats.prefetch_reads),
        "sections_prefetched": load(&stats.sections_prefetched),
        "replica_views": broker.log.replica_views(),
        "replica_view_watches": broker.log.replica_view_watches(),
        "flush_stages": stats
            .flush_times
            .summaries()
            .into_iter()
            .map(|(stage, summary)| (stage.to_string(), json!(summary)))
            .collect::<serde_json::Map<_, _>>(),
        "buffered_bytes": broker.log.buffered_bytes(),
        "object_store": counts_json(broker.object_store_counts.snapshot()),
        "metadata_store": counts_json(broker.metadata_counts.snapshot()),
    })))
}

/// Prometheus metrics (OpenMetrics text): the catalogue is `crate::metrics`.
async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let stats = broker.log.stats();
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let (compactor_counters, compactor_gauges) = match &broker.compactor {
        Some(compactor) => crate::compactor_http::compactor_metrics(&broker.store, compactor).await,
        None => (Vec::new(), Vec::new()),
    };
    let mut scraped = crate::metrics::Scraped {
        counters: vec![
            ("flushes", "Flushes planned (one object each when they hold data)", load(&stats.flushes)),
            ("objects_written", "Flush objects uploaded", load(&stats.objects_written)),
            ("object_bytes_written", "Bytes of flush objects uploaded", load(&stats.object_bytes_written)),
            ("flush_upload_failures", "Flush objects whose upload failed (their appends failed, retriable)", load(&stats.upload_failures)),
            ("flush_commit_failures", "Flush commits that failed or were fenced", load(&stats.commit_failures)),
            ("fenced_appends", "Appends refused because the partition changed leadership under them", load(&stats.fenced_appends)),
            ("flushes_without_linger", "Flushes started before the linger because every waiting producer's window was full", load(&stats.flushes_without_linger)),
            ("range_reads", "Ranged reads of flush-object sections from the bucket", load(&stats.range_reads)),
            ("recent_cache_hits", "Reads served from recently written objects in memory", load(&stats.recent_cache_hits)),
            ("read_cache_hits", "Reads served from the read cache (memory or disk)", load(&stats.read_cache_hits)),
            ("read_cache_disk_hits", "Of the read cache's hits, those served from its disk part", load(&stats.read_cache_disk_hits)),
            ("parquet_row_groups_read", "Parquet row groups decoded for Fetch", load(&stats.parquet_row_groups_read)),
            ("replica_reads", "Reads that returned records of partitions another broker leads, served for consumers (fetch from follower)", load(&stats.replica_reads)),
            ("replica_view_loads", "Views of partitions another broker leads loaded from the metadata store for those reads", load(&stats.replica_view_loads)),
            ("prefetch_reads", "Ranged reads that fetched several sections of one flush object at once, ahead of a fetch's reads", load(&stats.prefetch_reads)),
            ("sections_prefetched", "Sections those ranged reads put in the read cache", load(&stats.sections_prefetched)),
        ],
        gauges: vec![
            ("buffered_bytes", "Produce bytes accepted and not yet committed", gauge(broker.log.buffered_bytes())),
            ("read_cache_bytes", "Bytes held by the read cache's memory part", gauge(broker.log.read_cache_bytes())),
            ("replica_views", "Partitions another broker leads that this broker keeps a view of for consumers' reads", gauge(broker.log.replica_views())),
            ("replica_view_watches", "Topics whose partition changes this broker watches to keep its replica views current", gauge(broker.log.replica_view_watches())),
        ],
        object_store: broker.object_store_counts.snapshot(),
        metadata_store: broker.metadata_counts.snapshot(),
        histograms: Vec::new(),
        group_offsets: match coordinated_group_offsets(&broker).await {
            Ok(offsets) => offsets,
            Err(error) => {
                // The other metrics still matter most when the store is in trouble.
                tracing::warn!(%error, "metrics: consumer group offsets unreadable");
                Vec::new()
            }
        },
    };
    scraped.histograms = vec![
        crate::metrics::ScrapedHistogram::of(
            "object_store_request_duration_seconds",
            "Object-store request latency by operation, to the response (this process)",
            "operation",
            &broker.object_store_counts.latencies(),
        ),
        crate::metrics::ScrapedHistogram::of(
            "metadata_store_request_duration_seconds",
            "Metadata-store request latency by kind (get, range, txn)",
            "operation",
            &broker.metadata_counts.latencies(),
        ),
        crate::metrics::ScrapedHistogram::of(
            "flush_stage_duration_seconds",
            "Time each flush spent per stage: buffered (the linger actually waited), prepare, upload, commit, rollup",
            "stage",
            &stats.flush_times.histograms(),
        ),
        crate::metrics::ScrapedHistogram {
            name: "flush_object_bytes",
            help: "Sizes of the flush objects uploaded (one per flush that held data)",
            label: None,
            series: vec![(
                "",
                stats
                    .flush_times
                    .object_bytes
                    .buckets(&skiff_tiering::latency::SIZE_BUCKETS_BYTES),
            )],
        },
    ];
    if let Some((written, read)) = broker.log.read_cache_disk_io_bytes() {
        scraped.counters.extend([
            (
                "read_cache_disk_written_bytes",
                "Bytes written to the read cache's disk part",
                written,
            ),
            (
                "read_cache_disk_read_bytes",
                "Bytes read back from the read cache's disk part",
                read,
            ),
        ]);
    }
    scraped.counters.extend(compactor_counters);
    scraped.gauges.extend(compactor_gauges);
    crate::metrics::respond(broker.metrics.encode(&scraped))
}

/// Committed offsets and lag of every group this broker coordinates (so that each group is
/// exported once across the cluster): one range per group and one per topic it committed in.
async fn coordinated_group_offsets(
    broker: &Broker,
) -> Result<Vec<crate::metrics::GroupOffset>, String> {
    let live = live_brokers(&*broker.store)
        .await
        .map_err(|e| e.to_string())?;
    let mut high_watermarks = std::collections::HashMap::new();
    let mut out = Vec::new();
    let store_error = |e: skiff_tiering::metadata::MetadataError| e.to_string();
    for group in skiff_tiering::group_offsets::groups(&*broker.store)
        .await
        .map_err(store_error)?
    {
        if crate::api::coordinator(&group, &live).map(|b| b.node_id) != Some(broker.node.node_id) {
            continue;
        }
        let committed = skiff_tiering::group_offsets::fetch_all(&*broker.store, &group)
            .await
            .map_err(store_error)?;
        for (topic, partitions) in committed {
            if !high_watermarks.contains_key(&topic) {
                let states = partition_states(&*broker.store, &topic)
                    .await
                    .map_err(|e| e.to_string())?;
                high_watermarks.insert(topic.clone(), states);
            }
            for (partition, committed) in partitions {
                let high = high_watermarks[&topic]
                    .get(&partition)
                    .map(|(state, _)| state.next_offset);
                out.push(crate::metrics::GroupOffset {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition,
                    committed: committed.offset,
                    lag: high.map(|h| (h - committed.offset).max(0)),
                });
            }
        }
    }
    Ok(out)
}

fn gauge(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// Every transactional id as its coordinator recorded it, and per partition the transactions
/// open there: the first offset of each is what holds the partition's last stable offset (and
/// so every read_committed consumer) back. Read from the metadata store: any broker answers.
async fn transactions(
    State(broker): State<Arc<Broker>>,
    caller: Option<Extension<Caller>>,
) -> impl IntoResponse {
    let access = access(&broker.authorizer, caller.as_ref());
    use skiff_tiering::keys;
    use skiff_tiering::producers::ProducerStates;
    use skiff_tiering::transactions::TransactionRecord;
    let now_ms = broker.log.clock().now_ms();
    let ids_prefix = keys::transactions_prefix();
    let records = match broker.store.range_prefix(&ids_prefix, 0).await {
        Ok(records) => records,
        Err(error) => return unavailable(error.to_string()),
    };
    let ids: Vec<Value> = records
        .iter()
        .filter_map(|kv| {
            let id = keys::unescape_group(kv.key.strip_prefix(&ids_prefix)?)?;
            if !access.allows(Operation::Describe, ResourceType::TransactionalId, &id) {
                return None;
            }
            let record: TransactionRecord = keys::decode(&kv.key, &kv.value).ok()?;
            let partitions: Vec<Value> = record
                .partition_list()
                .into_iter()
                .map(|(topic, partition)| json!({ "topic": topic, "partition": partition }))
                .collect();
            Some(json!({
                "transactional_id": id,
                "state": record.state.kafka_name(),
                "producer_id": record.producer_id,
                "producer_epoch": record.producer_epoch,
                "timeout_ms": record.timeout_ms,
                "started_ms": record.started_ms,
                "age_ms": (record.started_ms >= 0).then(|| now_ms - record.started_ms),
                "partitions": partitions,
                "groups": record.groups,
            }))
        })
        .collect();
    let producers_prefix = keys::all_producers_prefix();
    let states = match broker.store.range_prefix(&producers_prefix, 0).await {
        Ok(states) => states,
        Err(error) => return unavailable(error.to_string()),
    };
    let mut open = Vec::new();
    for kv in &states {
        let Some((topic, partition)) = keys::topic_partition_of(&producers_prefix, &kv.key) else {
            continue;
        };
        if !access.allows(Operation::Describe, ResourceType::Topic, &topic) {
            continue;
        }
        let Ok(state) = serde_json::from_slice::<ProducerStates>(&kv.value) else {
            continue;
        };
        for (producer_id, entry) in &state.producers {
            if let Some(first_offset) = entry.txn_first_offset {
                open.push(json!({
                    "topic": topic,
                    "partition": partition,
                    "producer_id": producer_id,
                    "producer_epoch": entry.epoch,
                    "first_offset": first_offset,
                    "last_seen_ms": entry.last_seen_ms,
                }));
            }
        }
    }
    (
        StatusCode::OK,
        Json(json!({ "transactional_ids": ids, "open_in_partitions": open })),
    )
}

async fn topics(
    State(broker): State<Arc<Broker>>,
    caller: Option<Extension<Caller>>,
) -> impl IntoResponse {
    let access = access(&broker.authorizer, caller.as_ref());
    let mut topics = match broker.log.catalog().list().await {
        Ok(topics) => topics,
        Err(error) => return unavailable(error.to_string()),
    };
    topics.retain(|t| access.allows(Operation::Describe, ResourceType::Topic, &t.record.name));
    let mut out = Vec::with_capacity(topics.len());
    for topic in topics {
        // The stored partition states: what every broker agrees on, whoever leads.
        let states = match partition_states(&*broker.store, &topic.record.name).await {
            Ok(states) => states,
            Err(error) => return unavailable(error.to_string()),
        };
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
