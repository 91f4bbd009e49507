//! Produce: validate every partition's record batches, hand them to the log, and answer once
//! each partition's data is committed (acks=1 and acks=-1 both mean: written to the object
//! store and committed to the metadata store; acks=0 gets no response at all).

use super::configs::{self, TopicConfigs};
use super::errors::{batch_error, catalog_error, log_error};
use super::Broker;
use crate::config::TimestampType;
use crate::txn::CoordError;
use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use skiff_tiering::batch;
use skiff_tiering::keys::TopicRecord;
use skiff_tiering::log::{AppendOutcome, TopicPartition};
use skiff_tiering::metadata::Revision;
use skiff_tiering::producers::CONTINUES_OPEN_TRANSACTION;
use skiff_tiering::transactions::{self, TransactionRecord, TxnError};
use skiff_tiering::LogError;
use std::time::Duration;
use tokio::sync::oneshot;

type Pending = oneshot::Receiver<Result<AppendOutcome, LogError>>;

/// What one partition's produce turned into before waiting for the commit.
enum Slot {
    Failed(ResponseError, String),
    /// Queued: its commit, and the (bytes, records) it carries for `/metrics`.
    Waiting(Pending, (u64, u64)),
}

/// A produce request whose data is validated and queued in the log, not yet committed.
pub struct Staged {
    acks: i16,
    timeout_ms: i32,
    topics: Vec<StagedTopic>,
    /// Some batch came from an idempotent (or transactional) producer.
    idempotent: bool,
    /// Records bytes validated and queued for the log (a queued append may still fail).
    accepted_bytes: usize,
}

impl Staged {
    /// For a request that will be answered (acks ≠ 0): whether its producer is idempotent,
    /// whose window of requests in flight is known (`crate::windows`), and the records bytes
    /// it put in the log.
    pub fn window(&self) -> Option<(bool, usize)> {
        (self.acks != 0).then_some((self.idempotent, self.accepted_bytes))
    }
}

/// A topic's name, its id (Produce v13 names topics by id; nil before) and its partitions.
type StagedTopic = (TopicName, uuid::Uuid, Vec<(i32, Slot)>);

/// Validates and queues every partition's data. Connections run this in request order, so
/// pipelined produce requests to one partition are appended in the order they were sent.
pub async fn stage(
    broker: &Broker,
    request: ProduceRequest,
    session: &crate::security::Session,
) -> Staged {
    use crate::security::acl::Operation;
    let guard =
        super::authz::Guard::new(broker, session, kafka_protocol::messages::ApiKey::Produce);
    // A transactional producer needs WRITE on its transactional id (else every partition is
    // refused), and WRITE on each topic.
    let txn_allowed = request
        .transactional_id
        .as_ref()
        .is_none_or(|id| guard.transactional_id(Operation::Write, id.as_str()));
    let acks = request.acks;
    // A transactional producer's batches are verified against its coordinator's record (read
    // at most once per request, and only for partitions its transaction is not open in yet).
    let mut txn = Verifier::new(request.transactional_id.as_ref().map(|id| id.0.as_str()));
    let mut request_bytes = 0usize;
    let mut accepted_bytes = 0usize;
    let mut idempotent = false;
    let mut validated = Vec::with_capacity(request.topic_data.len());
    // v13 names topics by id: one lookup for the whole request.
    let names = broker
        .topic_names_by_id(request.topic_data.iter().map(|t| t.topic_id))
        .await
        .map_err(|error| (catalog_error(&error), error.to_string()));
    for mut topic_data in request.topic_data {
        let by_id = match (&names, topic_data.topic_id.is_nil()) {
            (_, true) => Ok(()),
            (Err(failure), false) => Err(failure.clone()),
            (Ok(names), false) => match names.get(&topic_data.topic_id) {
                Some(name) => {
                    topic_data.name = name.clone();
                    Ok(())
                }
                None => Err((
                    ResponseError::UnknownTopicId,
                    format!("no topic with id {}", topic_data.topic_id),
                )),
            },
        };
        let name = topic_data.name.0.to_string();
        let topic = if let Err(failure) = by_id {
            Err(failure)
        } else if !txn_allowed {
            Err((
                ResponseError::TransactionalIdAuthorizationFailed,
                "not allowed to write with this transactional id".to_owned(),
            ))
        } else if !guard.topic(Operation::Write, &name) {
            Err((
                ResponseError::TopicAuthorizationFailed,
                format!("not allowed to write to {name}"),
            ))
        } else if !(-1..=1).contains(&acks) {
            Err((ResponseError::InvalidRequiredAcks, format!("acks={acks}")))
        } else {
            topic_record(broker, &name, &topic_data.partition_data, &guard).await
        };
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for partition in topic_data.partition_data {
            request_bytes += partition.records.as_ref().map_or(0, |r| r.len());
            let result = match &topic {
                Err(failure) => Err(failure.clone()),
                Ok(topic) => {
                    let configs = TopicConfigs::new(broker, &topic.configs);
                    match validate(&name, partition.index, partition.records, &configs) {
                        Ok(validated) => match check_compressed_counts(validated).await {
                            Ok(v) => txn.verify(broker, &name, partition.index, v).await,
                            Err(failure) => Err(failure),
                        },
                        Err(failure) => Err(failure),
                    }
                }
            };
            if let Ok(ok) = &result {
                accepted_bytes += ok.bytes();
                idempotent |= ok.batches.iter().any(|(h, _)| h.producer_id >= 0);
            }
            partitions.push((partition.index, result));
        }
        validated.push((topic_data.name, topic_data.topic_id, partitions));
    }
    // Accepted batches are slices of the request frame and keep all of it alive until their
    // flush. When most of the frame was refused, copy them out so the produce buffer's byte
    // accounting (which charges accepted bytes) stays true.
    let detach = accepted_bytes * 2 < request_bytes;
    let mut topics = Vec::with_capacity(validated.len());
    for (name, topic_id, partitions) in validated {
        let mut slots = Vec::with_capacity(partitions.len());
        for (index, result) in partitions {
            let slot = match result {
                Err((code, message)) => Slot::Failed(code, message),
                Ok(mut ok) => {
                    if detach {
                        ok.detach();
                    }
                    enqueue(broker, &name, index, ok).await
                }
            };
            slots.push((index, slot));
        }
        topics.push((name, topic_id, slots));
    }
    Staged {
        acks,
        timeout_ms: request.timeout_ms,
        topics,
        idempotent,
        accepted_bytes,
    }
}

/// Waits until every queued partition is committed (or failed), at most the request's timeout
/// from `started` (when it was read: the connection's writer may reach the reply later), and
/// builds the response; `None` for acks=0, which Kafka never answers.
pub async fn complete(
    broker: &Broker,
    staged: Staged,
    started: tokio::time::Instant,
) -> Option<ProduceResponse> {
    let Staged {
        acks,
        timeout_ms,
        topics,
        ..
    } = staged;
    if acks == 0 {
        // The appends proceed; nobody waits for them (counted as accepted).
        for (name, _, slots) in &topics {
            for (_, slot) in slots {
                if let Slot::Waiting(_, (bytes, records)) = slot {
                    broker.metrics.produced(name, *bytes, *records);
                }
            }
        }
        return None;
    }
    let deadline = started
        + Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0))
            .max(Duration::from_millis(broker_min_wait_ms(broker)));
    let mut response = ProduceResponse::default();
    for (name, topic_id, slots) in topics {
        let topic = name.as_str();
        let partitions = join_all(slots.into_iter().map(|(index, slot)| async move {
            let result = match slot {
                Slot::Failed(code, message) => Err((code, message)),
                Slot::Waiting(pending, (bytes, records)) => {
                    match tokio::time::timeout_at(deadline, pending).await {
                        Err(_) => Err((
                            ResponseError::RequestTimedOut,
                            "not committed within the request timeout".to_owned(),
                        )),
                        Ok(Err(_)) => {
                            let error = LogError::ShuttingDown;
                            Err((log_error(&error), error.to_string()))
                        }
                        Ok(Ok(Err(error))) => Err((log_error(&error), error.to_string())),
                        Ok(Ok(Ok(outcome))) => {
                            broker.metrics.produced(topic, bytes, records);
                            Ok(outcome)
                        }
                    }
                }
            };
            if let Err((code, _)) = &result {
                broker.metrics.partition_error("Produce", code.code());
            }
            partition_response(index, result)
        }))
        .await;
        response.responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_topic_id(topic_id)
                .with_partition_responses(partitions),
        );
    }
    Some(response)
}

/// A produce never times out before its flush had a fair chance to happen.
fn broker_min_wait_ms(broker: &Broker) -> u64 {
    broker.log.config().flush_linger_ms + 1_000
}

/// The topic's record: cached with a partition this broker leads (the usual case, no store
/// read), else read from the store, creating the topic if auto-creation is on.
async fn topic_record(
    broker: &Broker,
    name: &str,
    partitions: &[kafka_protocol::messages::produce_request::PartitionProduceData],
    guard: &super::authz::Guard<'_>,
) -> Result<TopicRecord, (ResponseError, String)> {
    if let Some(first) = partitions.first() {
        if let Ok(record) = broker
            .log
            .led_topic(&TopicPartition::new(name, first.index))
            .await
        {
            return Ok(record);
        }
    }
    // Auto-creation takes CREATE, as through Metadata (asked only for a topic not led here).
    match broker
        .topic_or_create(name, || guard.create_topic(name))
        .await
    {
        Ok(Some(topic)) => Ok(topic.record),
        Ok(None) => Err((ResponseError::UnknownTopicOrPartition, name.to_owned())),
        Err(error) => Err((catalog_error(&error), error.to_string())),
    }
}

/// One partition's batches, checked and ready to queue.
struct Validated {
    batches: Vec<(batch::BatchHeader, Bytes)>,
    log_append_time: bool,
    /// For a transactional batch: the coordinator record's revision it was verified against.
    verified_revision: Option<i64>,
}

type TxnLookup = Result<(Option<TransactionRecord>, Revision), CoordError>;

/// KIP-890's verification of one request's transactional batches.
struct Verifier<'a> {
    transactional_id: Option<&'a str>,
    /// The coordinator's record, read when a partition first needs it.
    lookup: Option<TxnLookup>,
}

impl<'a> Verifier<'a> {
    fn new(transactional_id: Option<&'a str>) -> Self {
        Self {
            transactional_id,
            lookup: None,
        }
    }

    /// A batch continuing the producer's transaction already open in the partition (same
    /// producer and epoch) needs no check, as in Kafka: it is queued marked so, and refused at
    /// commit if a marker closed that transaction meanwhile. Any other transactional batch is
    /// verified against the coordinator's record.
    async fn verify(
        &mut self,
        broker: &Broker,
        topic: &str,
        partition: i32,
        mut validated: Validated,
    ) -> Result<Validated, (ResponseError, String)> {
        let Some((header, _)) = validated.batches.iter().find(|(h, _)| h.is_transactional()) else {
            return Ok(validated);
        };
        let producer = (header.producer_id, header.producer_epoch);
        let tp = TopicPartition::new(topic, partition);
        if self.transactional_id.is_some() && broker.log.continues_transaction(&tp, producer).await
        {
            validated.verified_revision = Some(CONTINUES_OPEN_TRANSACTION);
            return Ok(validated);
        }
        if self.lookup.is_none() {
            if let Some(id) = self.transactional_id {
                self.lookup = Some(broker.txn.load(id).await);
            }
        }
        verify_transactional(self.lookup.as_ref(), producer, topic, partition, validated)
    }
}

/// KIP-890's verification, against the record in the store: a transactional batch is stored
/// only for the producer's current epoch and a partition in its open transaction. Error codes
/// as Kafka's for produce: a fenced producer gets INVALID_PRODUCER_EPOCH, a coordinator busy
/// ending the previous transaction NOT_ENOUGH_REPLICAS (retriable for every client version).
fn verify_transactional(
    txn: Option<&TxnLookup>,
    producer: (i64, i16),
    topic: &str,
    partition: i32,
    mut validated: Validated,
) -> Result<Validated, (ResponseError, String)> {
    let (record, revision) = match txn {
        None => {
            return Err((
                ResponseError::InvalidTxnState,
                "transactional batch without a transactional id".to_owned(),
            ))
        }
        Some(Err(error)) => {
            return Err((
                ResponseError::NotEnoughReplicas,
                format!("cannot read the transaction's state: {error:?}"),
            ))
        }
        Some(Ok((None, _))) => {
            return Err((
                ResponseError::InvalidProducerIdMapping,
                "unknown transactional id".to_owned(),
            ))
        }
        Some(Ok((Some(record), revision))) => (record, *revision),
    };
    transactions::verify(record, producer, topic, partition).map_err(|error| {
        let code = match error {
            TxnError::ProducerFenced => ResponseError::InvalidProducerEpoch,
            TxnError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
            TxnError::ConcurrentTransactions => ResponseError::NotEnoughReplicas,
            _ => ResponseError::InvalidTxnState,
        };
        (
            code,
            format!("{topic}-{partition} is not in the producer's open transaction: {error}"),
        )
    })?;
    validated.verified_revision = Some(revision);
    Ok(validated)
}

impl Validated {
    fn bytes(&self) -> usize {
        self.batches.iter().map(|(_, b)| b.len()).sum()
    }

    fn detach(&mut self) {
        for (_, bytes) in &mut self.batches {
            *bytes = Bytes::copy_from_slice(bytes);
        }
    }
}

fn validate(
    topic: &str,
    partition: i32,
    records: Option<Bytes>,
    configs: &TopicConfigs<'_>,
) -> Result<Validated, (ResponseError, String)> {
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return Err((ResponseError::CorruptMessage, "no records".to_owned()));
    };
    let batches =
        batch::split_and_validate(&records, configs.max_message_bytes()).map_err(|error| {
            tracing::debug!(%error, topic, partition, "rejected produce data");
            (batch_error(&error), error.to_string())
        })?;
    if configs.is_compacted() {
        configs::check_keys_for_compaction(&batches)
            .map_err(|message| (ResponseError::InvalidRecord, message))?;
    }
    Ok(Validated {
        batches,
        log_append_time: configs.timestamp_type() == TimestampType::LogAppendTime,
        verified_revision: None,
    })
}

/// As Kafka's validation: each compressed batch is decompressed (streamed, capped) to check
/// that it holds the records its header claims, which is what offsets are assigned from. Runs
/// on the blocking pool: a batch that expands a lot must not hold up a runtime worker (the
/// session keep-alive and the controller run there).
async fn check_compressed_counts(
    validated: Validated,
) -> Result<Validated, (ResponseError, String)> {
    if validated.batches.iter().all(|(h, _)| h.compression() == 0) {
        return Ok(validated);
    }
    tokio::task::spawn_blocking(move || {
        for (header, batch) in &validated.batches {
            if header.compression() == 0 {
                continue;
            }
            let checked = match super::records::count_compressed_records(header, batch) {
                Ok(count) if count == i64::from(header.records_count) => Ok(()),
                Ok(count) => Err(format!(
                    "batch claims {} records but holds {count}",
                    header.records_count
                )),
                Err(error) => Err(error),
            };
            if let Err(error) = checked {
                tracing::debug!(%error, "rejected compressed produce data");
                return Err((ResponseError::CorruptMessage, error));
            }
        }
        Ok(validated)
    })
    .await
    .unwrap_or_else(|error| {
        tracing::error!(%error, "compressed batch check failed");
        Err((
            ResponseError::CorruptMessage,
            "batch check failed".to_owned(),
        ))
    })
}

async fn enqueue(broker: &Broker, topic: &str, partition: i32, validated: Validated) -> Slot {
    let tp = TopicPartition::new(topic, partition);
    let carried = (
        validated.bytes() as u64,
        validated
            .batches
            .iter()
            .map(|(h, _)| u64::try_from(h.last_offset_delta).unwrap_or(0) + 1)
            .sum(),
    );
    let queued = match validated.verified_revision {
        Some(revision) => {
            broker
                .log
                .enqueue_transactional(tp, validated.batches, validated.log_append_time, revision)
                .await
        }
        None => {
            broker
                .log
                .enqueue(tp, validated.batches, validated.log_append_time)
                .await
        }
    };
    match queued {
        Ok(pending) => Slot::Waiting(pending, carried),
        Err(error) => Slot::Failed(log_error(&error), error.to_string()),
    }
}

fn partition_response(
    index: i32,
    result: Result<AppendOutcome, (ResponseError, String)>,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default().with_index(index);
    match result {
        Ok(outcome) => response
            .with_error_code(0)
            .with_base_offset(outcome.base_offset)
            .with_log_append_time_ms(outcome.log_append_time_ms.unwrap_or(-1))
            .with_log_start_offset(outcome.log_start_offset),
        Err((code, message)) => response
            .with_error_code(code.code())
            .with_base_offset(-1)
            .with_log_append_time_ms(-1)
            .with_log_start_offset(-1)
            .with_error_message(Some(StrBytes::from_string(message))),
    }
}
