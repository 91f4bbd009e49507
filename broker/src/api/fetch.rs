//! Fetch: read whole batches from each requested partition, long-polling until `min_bytes` are
//! available or `max_wait_ms` has passed. Sessionless: we always answer `session_id = 0`, which
//! tells clients to keep sending full fetch requests.

use super::errors::log_error;
use super::Broker;
use crate::config::ReplicaSelector;
use crate::memory::{ConnectionMemory, Held};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName};
use kafka_protocol::ResponseError;
use skiff_tiering::log::{Isolation, PartitionRead, TopicPartition};
use std::time::Duration;
use tokio::time::Instant;

/// The oldest cluster view whose live brokers a leader picks a consumer's read replica from.
const BROKERS_VIEW_MAX_AGE: Duration = Duration::from_secs(5);

/// Longest long poll we honour, whatever the client asks.
const MAX_WAIT_MS_MAX: u64 = 60_000;

/// Answers a Fetch, with the memory its records hold until the response is written: each pass
/// over the partitions reads only as many bytes as it could reserve first.
pub async fn handle(
    broker: &Broker,
    mut request: FetchRequest,
    version: i16,
    connection: &ConnectionMemory,
    session: &crate::security::Session,
) -> (FetchResponse, Held) {
    let mut resolved = resolve_topic_ids(broker, &mut request, version).await;
    // READ on each topic (after ids became names).
    let guard = super::authz::Guard::new(broker, session, kafka_protocol::messages::ApiKey::Fetch);
    for (topic, result) in request.topics.iter().zip(resolved.iter_mut()) {
        if result.is_ok()
            && !guard.topic(crate::security::acl::Operation::Read, topic.topic.as_str())
        {
            *result = Err(ResponseError::TopicAuthorizationFailed);
        }
    }
    let wait_ms = u64::try_from(request.max_wait_ms)
        .unwrap_or(0)
        .min(MAX_WAIT_MS_MAX);
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_bytes = usize::try_from(request.max_bytes)
        .ok()
        .filter(|m| *m > 0)
        .unwrap_or(usize::MAX)
        .min(broker.limits.fetch_max_bytes);
    let replicas = ReadReplicas::new(broker, &request, version, session);
    let mut commits = broker.log.subscribe_commits();
    loop {
        commits.borrow_and_update();
        // Bounded by the long poll: a fetch that cannot get memory in time (this connection's
        // earlier responses are not yet written, or the broker's budget is spent) answers with
        // no records, and the client fetches again.
        let Ok(reservation) =
            tokio::time::timeout_at(deadline, connection.reserve_fetch(max_bytes)).await
        else {
            return (FetchResponse::default().with_session_id(0), Held::default());
        };
        let pass = read_once(broker, &request, &resolved, &replicas, reservation.bytes()).await;
        let (responses, bytes) = (pass.responses, pass.bytes);
        let response = FetchResponse::default()
            .with_session_id(0)
            .with_responses(responses);
        // Kafka answers at once when min_bytes is met (min_bytes = 0 always is), on errors,
        // when it sends the client to another replica, and when nothing was asked for.
        if bytes >= min_bytes
            || pass.answer_now
            || request.topics.is_empty()
            || Instant::now() >= deadline
        {
            return (response, reservation.shrink_to(bytes));
        }
        // Nothing is held while waiting.
        drop(reservation);
        // This broker's commits wake it for what it leads, and its replica views' watches for
        // what other brokers lead; a view reloads at most once per refresh interval, so a change
        // seen sooner shows at the next wake-up.
        let wake = if pass.replica_reads {
            deadline.min(Instant::now() + replicas.refresh)
        } else {
            deadline
        };
        tokio::select! {
            changed = commits.changed() => {
                if changed.is_err() {
                    return (response, Held::default());
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// What one pass over the requested partitions found.
struct Pass {
    responses: Vec<FetchableTopicResponse>,
    bytes: usize,
    /// A partition had an error, or names another replica to read from: Kafka answers such
    /// fetches at once.
    answer_now: bool,
    /// Some partition was read from a replica view (another broker leads it).
    replica_reads: bool,
}

/// One pass over every requested partition.
async fn read_once(
    broker: &Broker,
    request: &FetchRequest,
    resolved: &[Result<(), ResponseError>],
    replicas: &ReadReplicas,
    max_bytes: usize,
) -> Pass {
    let mut total = 0usize;
    let mut errors = false;
    let mut replica_reads = false;
    let mut responses = Vec::with_capacity(request.topics.len());
    let isolation = if request.isolation_level == 1 {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    };
    // Views brought up to date together, and sections of one flush object read with one GET,
    // rather than each as the pass reaches it.
    let reads = pass_reads(broker, request, resolved, replicas);
    if replicas.any_replica {
        broker.log.prepare_replica_views(&reads, isolation).await;
    }
    broker.log.prefetch(&reads, isolation, max_bytes).await;
    for (topic, resolved) in request.topics.iter().zip(resolved) {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            if let Err(code) = resolved {
                errors = true;
                partitions.push(unanswered(partition.partition).with_error_code(code.code()));
                continue;
            }
            let remaining = max_bytes.saturating_sub(total);
            let (data, replica_read) = read_partition(
                broker,
                (&topic.topic, partition),
                replicas,
                (remaining, total == 0),
                isolation,
            )
            .await;
            total += data.records_len();
            errors |= data.error_code != 0 || data.preferred_read_replica.0 >= 0;
            replica_reads |= replica_read;
            partitions.push(data);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_topic_id(topic.topic_id)
                .with_partitions(partitions),
        );
    }
    Pass {
        responses,
        bytes: total,
        answer_now: errors,
        replica_reads,
    }
}

/// What a pass is about to read, but for partitions whose consumer this leader sends to
/// another replica; nothing for a fetch of one partition from its leader (nothing to bring up
/// to date, nothing to read together).
fn pass_reads(
    broker: &Broker,
    request: &FetchRequest,
    resolved: &[Result<(), ResponseError>],
    replicas: &ReadReplicas,
) -> Vec<PartitionRead> {
    let partitions: usize = request.topics.iter().map(|t| t.partitions.len()).sum();
    if !replicas.any_replica && partitions < 2 {
        return Vec::new();
    }
    let served_here =
        |tp: &TopicPartition| replicas.preferred(tp).is_none() || broker.log.rules_out(tp);
    request
        .topics
        .iter()
        .zip(resolved)
        .filter(|(_, resolved)| resolved.is_ok())
        .flat_map(|(topic, _)| {
            topic.partitions.iter().map(|p| PartitionRead {
                tp: TopicPartition::new(&topic.topic, p.partition),
                offset: p.fetch_offset,
                leader_epoch: p.current_leader_epoch,
                max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
            })
        })
        .filter(|read| served_here(&read.tp))
        .collect()
}

/// Reads one partition; says too whether it was read from a replica view.
async fn read_partition(
    broker: &Broker,
    (topic, partition): (&TopicName, &FetchPartition),
    replicas: &ReadReplicas,
    (remaining, first): (usize, bool),
    isolation: Isolation,
) -> (PartitionData, bool) {
    let tp = TopicPartition::new(topic, partition.partition);
    let empty = unanswered(partition.partition);
    let fail = |code: ResponseError| (empty.clone().with_error_code(code.code()), false);
    let read = (partition.fetch_offset, partition.current_leader_epoch);
    // Replica views were brought up to date before the pass (`read_once`).
    let view = if replicas.any_replica {
        broker.log.prepared_read_view(&tp, read, isolation).await
    } else {
        broker.log.read_view(&tp, read, isolation, false).await
    };
    let view = match view {
        Ok(view) => view,
        Err(error) => return fail(log_error(&error)),
    };
    let epoch = view.leader_epoch();
    if partition.current_leader_epoch >= 0 {
        if partition.current_leader_epoch < epoch {
            return fail(ResponseError::FencedLeaderEpoch);
        }
        if partition.current_leader_epoch > epoch {
            return fail(ResponseError::UnknownLeaderEpoch);
        }
    }
    let offsets = |data: PartitionData| {
        let (start, stable, end) = view.stable_offsets();
        data.with_high_watermark(end)
            .with_last_stable_offset(stable)
            .with_log_start_offset(start)
            .with_records(Some(Bytes::new()))
    };
    // KIP-392: the leader sends a consumer to a replica in its rack, with no records.
    if view.led_here() {
        if let Some(replica) = replicas.preferred(&tp) {
            return (
                offsets(empty.clone()).with_preferred_read_replica(BrokerId(replica)),
                false,
            );
        }
    }
    let partition_max = usize::try_from(partition.partition_max_bytes).unwrap_or(0);
    // KIP-74: the first batch of the response is sent whole, even over the limits; past it,
    // no batch goes over fetch.max.bytes nor max.partition.fetch.bytes.
    let limit = partition_max.min(remaining);
    if limit == 0 && !first {
        return (offsets(empty.clone()), !view.led_here());
    }
    let read = broker
        .log
        .read_from(
            &view,
            &tp,
            partition.fetch_offset,
            (limit, first),
            isolation,
        )
        .await;
    let data = match read {
        Ok(read) => {
            // One part per buffer the read took consecutive batches from: sent from those
            // buffers as they are, never joined into a new one.
            let (records, continued) = match read.records() {
                [] => (Bytes::new(), Vec::new()),
                [first, rest @ ..] => (first.clone(), rest.to_vec()),
            };
            let aborted = read
                .aborted
                .iter()
                .map(|a| {
                    AbortedTransaction::default()
                        .with_producer_id(ProducerId(a.producer_id))
                        .with_first_offset(a.first_offset)
                })
                .collect();
            empty
                .with_high_watermark(read.high_watermark)
                .with_last_stable_offset(read.last_stable_offset)
                .with_log_start_offset(read.log_start_offset)
                .with_aborted_transactions(Some(aborted))
                .with_records(Some(records))
                .with_records_continued(continued)
        }
        Err(error) => {
            let mut data = fail(log_error(&error)).0;
            if let skiff_tiering::LogError::OffsetOutOfRange {
                log_start_offset,
                high_watermark,
                ..
            } = error
            {
                data.high_watermark = high_watermark;
                data.last_stable_offset = high_watermark;
                data.log_start_offset = log_start_offset;
            }
            data
        }
    };
    (data, !view.led_here())
}

/// Which brokers may serve this fetch's partitions (KIP-392).
struct ReadReplicas {
    /// A consumer's Fetch v11+ on a broker serving follower reads (`--replica-selector-class
    /// rack-aware`): served whoever leads the partition, since every broker reads the bucket.
    /// Older versions, and followers (none here), read from the leader only, as in Kafka.
    any_replica: bool,
    /// Where to send the consumer for partitions this broker leads: the live brokers in the
    /// consumer's rack that serve follower reads and have its listener, by node id, when this
    /// broker is `rack-aware` and the consumer named its rack; empty otherwise.
    in_client_rack: Vec<i32>,
    /// How often a replica view is checked again (the long poll's wake-up for them).
    refresh: Duration,
    /// This broker, which leads the partitions it may send elsewhere.
    leader_id: i32,
}

impl ReadReplicas {
    fn new(
        broker: &Broker,
        request: &FetchRequest,
        version: i16,
        session: &crate::security::Session,
    ) -> Self {
        let replica_id = if version >= 15 {
            request.replica_state.replica_id.0
        } else {
            request.replica_id.0
        };
        // Only brokers that registered as serving follower reads do (Metadata lists them as
        // replicas); the others answer NOT_LEADER_OR_FOLLOWER, from memory, as Kafka's brokers
        // outside a partition's replica set do.
        let rack_aware = broker.node.replica_selector == ReplicaSelector::RackAware;
        let any_replica = rack_aware && version >= 11 && replica_id < 0;
        let rack = request.rack_id.as_str();
        let in_client_rack = match rack {
            rack if any_replica && !rack.is_empty() => {
                // The controller's view of live brokers (at most a pass old); without one, the
                // leader serves.
                let listener = &*session.listener.name;
                broker
                    .view
                    .latest(BROKERS_VIEW_MAX_AGE)
                    .map(|view| {
                        view.brokers
                            .iter()
                            .filter(|b| b.follower_reads && b.rack.as_deref() == Some(rack))
                            .filter(|b| b.endpoint(listener).is_some())
                            .map(|b| b.node_id)
                            .collect()
                    })
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        Self {
            any_replica,
            in_client_rack,
            refresh: Duration::from_millis(broker.log.config().replica_view_refresh_ms.max(1)),
            leader_id: broker.node.node_id,
        }
    }

    /// The broker this (leader) sends the consumer to for `tp`, if not itself.
    fn preferred(&self, tp: &TopicPartition) -> Option<i32> {
        preferred_read_replica(&self.in_client_rack, self.leader_id, tp)
    }
}

/// The broker in the client's rack that serves `tp`'s reads: the leader when it is in the rack
/// (None: no redirection), else one chosen by the partition, so that a partition's reads keep
/// going to one broker (its caches) and partitions spread over the rack's brokers.
fn preferred_read_replica(in_client_rack: &[i32], leader: i32, tp: &TopicPartition) -> Option<i32> {
    if in_client_rack.is_empty() || in_client_rack.contains(&leader) {
        return None;
    }
    let mut candidates = in_client_rack.to_vec();
    candidates.sort_unstable();
    let spread = crc32c::crc32c(format!("{}-{}", tp.topic, tp.partition).as_bytes());
    let index = usize::try_from(spread).unwrap_or(0) % candidates.len();
    Some(candidates[index])
}

/// A partition's answer before anything is known of it.
fn unanswered(partition: i32) -> PartitionData {
    PartitionData::default()
        .with_partition_index(partition)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica(BrokerId(-1))
        .with_aborted_transactions(Some(Vec::new()))
}

/// Fetch v13+ names topics by id: fills in each topic's name; a topic whose id is unknown is
/// answered UNKNOWN_TOPIC_ID (retriable), one the store cannot look up KAFKA_STORAGE_ERROR.
async fn resolve_topic_ids(
    broker: &Broker,
    request: &mut FetchRequest,
    version: i16,
) -> Vec<Result<(), ResponseError>> {
    if version < 13 {
        return vec![Ok(()); request.topics.len()];
    }
    let names = broker
        .topic_names_by_id(request.topics.iter().map(|t| t.topic_id))
        .await;
    let names = match names {
        Ok(names) => names,
        Err(error) => {
            tracing::warn!(%error, "fetch: cannot resolve topic ids");
            return vec![Err(ResponseError::KafkaStorageError); request.topics.len()];
        }
    };
    let mut resolved = Vec::with_capacity(request.topics.len());
    for topic in &mut request.topics {
        resolved.push(match names.get(&topic.topic_id) {
            Some(name) => {
                topic.topic = name.clone();
                Ok(())
            }
            None => Err(ResponseError::UnknownTopicId),
        });
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_keeps_a_consumer_in_its_rack_and_otherwise_picks_one_broker_per_partition() {
        let tp = |p| TopicPartition::new("orders", p);
        assert_eq!(
            preferred_read_replica(&[], 1, &tp(0)),
            None,
            "no rack named"
        );
        assert_eq!(
            preferred_read_replica(&[1, 3], 1, &tp(0)),
            None,
            "the leader is in the consumer's rack"
        );
        assert_eq!(preferred_read_replica(&[2], 1, &tp(0)), Some(2));
        // Several brokers in the rack: each partition goes to one of them, the same one
        // whichever order the view lists them in, and the partitions spread over them.
        let chosen: Vec<i32> = (0..32)
            .map(|p| preferred_read_replica(&[4, 2, 3], 1, &tp(p)).expect("a replica"))
            .collect();
        for (p, id) in chosen.iter().enumerate() {
            let p = i32::try_from(p).expect("small");
            assert_eq!(preferred_read_replica(&[3, 4, 2], 1, &tp(p)), Some(*id));
        }
        for id in [2, 3, 4] {
            assert!(chosen.contains(&id), "broker {id} serves some partition");
        }
    }
}
