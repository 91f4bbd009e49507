//! The HTTP admin API (axum): health, counters, and topics with their offsets.

use crate::api::Broker;
use crate::compactor_http::counts_json;
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
        .route("/v1/groups", get(groups))
        .route("/v1/transactions", get(transactions))
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
async fn groups(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
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
        "read_cache_hits": load(&stats.read_cache_hits),
        "flushes_without_linger": load(&stats.flushes_without_linger),
        "read_cache_bytes": broker.log.read_cache_bytes(),
        "parquet_row_groups_read": load(&stats.parquet_row_groups_read),
        "flush_stages": stats
            .flush_times
            .summaries()
            .into_iter()
            .map(|(stage, summary)| (stage.to_string(), json!(summary)))
            .collect::<serde_json::Map<_, _>>(),
        "buffered_bytes": broker.log.buffered_bytes(),
        "object_store": counts_json(broker.object_store_counts.snapshot()),
        "metadata_store": counts_json(broker.metadata_counts.snapshot()),
    }))
}

/// Every transactional id as its coordinator recorded it, and per partition the transactions
/// open there: the first offset of each is what holds the partition's last stable offset (and
/// so every read_committed consumer) back. Read from the metadata store: any broker answers.
async fn transactions(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
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

async fn topics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let topics = match broker.log.catalog().list().await {
        Ok(topics) => topics,
        Err(error) => return unavailable(error.to_string()),
    };
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
