//! The hanging-transaction tools of KIP-664: ListTransactions and DescribeTransactions (at the
//! transaction coordinators) and DescribeProducers (at partition leaders), so an operator can
//! find which transaction holds a partition's last stable offset back.

use super::Broker;
use crate::txn::coordinator_of_id;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{
    TopicData, TransactionState as DescribedTransaction,
};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTransaction;
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, DescribeTransactionsRequest,
    DescribeTransactionsResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use skiff_tiering::log::TopicPartition;
use skiff_tiering::transactions::{TransactionRecord, TxnState};

/// Most memory a client's transactional-id pattern may compile to.
const PATTERN_COMPILED_BYTES_MAX: usize = 1 << 20;

const STATES: [TxnState; 6] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
];

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// What a ListTransactions request keeps, as Kafka's coordinator filters.
struct Filters {
    states: Vec<TxnState>,
    /// Names in the request that are no state: reported back, and they match nothing.
    unknown_states: Vec<StrBytes>,
    producer_ids: Vec<i64>,
    /// Only transactions running longer than this (-1: any).
    duration_ms: i64,
    pattern: Option<regex::Regex>,
}

impl Filters {
    fn of(request: &ListTransactionsRequest) -> Result<Self, ResponseError> {
        let mut states = Vec::new();
        let mut unknown_states = Vec::new();
        for name in &request.state_filters {
            match STATES.iter().find(|s| s.kafka_name() == name.as_str()) {
                Some(state) => states.push(*state),
                None => unknown_states.push(name.clone()),
            }
        }
        let pattern = match request.transactional_id_pattern.as_deref() {
            None | Some("") => None,
            // Kafka matches the whole id (Java's `Matcher::matches`).
            Some(pattern) => Some(
                regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .size_limit(PATTERN_COMPILED_BYTES_MAX)
                    .build()
                    .map_err(|_| ResponseError::InvalidRegularExpression)?,
            ),
        };
        Ok(Self {
            states,
            unknown_states,
            producer_ids: request.producer_id_filters.iter().map(|p| p.0).collect(),
            duration_ms: request.duration_filter,
            pattern,
        })
    }

    fn keeps(&self, id: &str, record: &TransactionRecord, now_ms: i64) -> bool {
        let state_ok = if self.states.is_empty() {
            // Only unknown names asked for: nothing can match them.
            self.unknown_states.is_empty()
        } else {
            self.states.contains(&record.state)
        };
        // Kafka measures from the start time, which is -1 outside a transaction.
        let duration_ok = self.duration_ms < 0 || now_ms - record.started_ms > self.duration_ms;
        state_ok
            && duration_ok
            && (self.producer_ids.is_empty() || self.producer_ids.contains(&record.producer_id))
            && self.pattern.as_ref().is_none_or(|p| p.is_match(id))
    }
}

/// ListTransactions: the transactional ids this broker coordinates (each broker answers for its
/// own, so asking every broker lists each id once).
pub async fn list(broker: &Broker, request: ListTransactionsRequest) -> ListTransactionsResponse {
    let failed =
        |code: ResponseError| ListTransactionsResponse::default().with_error_code(code.code());
    let filters = match Filters::of(&request) {
        Ok(filters) => filters,
        Err(code) => return failed(code),
    };
    let Ok(live) = broker.recent_live_brokers().await else {
        return failed(ResponseError::CoordinatorNotAvailable);
    };
    let me = broker.node.node_id;
    let mine = |id: &str| coordinator_of_id(id, &live) == Some(me);
    let records = match broker.txn.records(mine).await {
        Ok(records) => records,
        Err(error) => {
            tracing::warn!(?error, "ListTransactions cannot read transaction records");
            return failed(ResponseError::CoordinatorNotAvailable);
        }
    };
    let now_ms = broker.log.clock().now_ms();
    let states = records
        .iter()
        .filter(|(id, record, _)| filters.keeps(id, record, now_ms))
        .map(|(id, record, _)| {
            ListedTransaction::default()
                .with_transactional_id(text(id).into())
                .with_producer_id(ProducerId(record.producer_id))
                .with_transaction_state(text(record.state.kafka_name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(filters.unknown_states)
        .with_transaction_states(states)
}

/// DescribeTransactions: each id's record, from its coordinator.
pub async fn describe(
    broker: &Broker,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let live = broker.recent_live_brokers().await.ok();
    let mut states = Vec::with_capacity(request.transactional_ids.len());
    for id in &request.transactional_ids {
        let described = DescribedTransaction::default()
            .with_transactional_id(id.clone())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1);
        let coordinates = live
            .as_ref()
            .map(|live| coordinator_of_id(id, live) == Some(broker.node.node_id));
        let outcome = match coordinates {
            None => Err(ResponseError::CoordinatorNotAvailable),
            Some(false) => Err(ResponseError::NotCoordinator),
            Some(true) => match broker.txn.load(id).await {
                Ok((Some(record), _)) => Ok(record),
                Ok((None, _)) => Err(ResponseError::TransactionalIdNotFound),
                Err(_) => Err(ResponseError::CoordinatorNotAvailable),
            },
        };
        states.push(match outcome {
            Err(code) => described
                .with_transaction_state(text(""))
                .with_error_code(code.code()),
            Ok(record) => {
                let topics = record
                    .partitions
                    .iter()
                    .map(|(topic, partitions)| {
                        TopicData::default()
                            .with_topic(TopicName(text(topic)))
                            .with_partitions(partitions.iter().copied().collect())
                    })
                    .collect();
                described
                    .with_transaction_state(text(record.state.kafka_name()))
                    .with_transaction_timeout_ms(record.timeout_ms)
                    .with_transaction_start_time_ms(record.started_ms)
                    .with_producer_id(ProducerId(record.producer_id))
                    .with_producer_epoch(record.producer_epoch)
                    .with_topics(topics)
            }
        });
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// DescribeProducers: the producers each led partition remembers, with the first offset of the
/// transaction each has open there (-1: none).
pub async fn describe_producers(
    broker: &Broker,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
        for &index in &topic.partition_indexes {
            let tp = TopicPartition::new(topic.name.0.as_str(), index);
            let response = PartitionResponse::default().with_partition_index(index);
            partitions.push(match broker.log.producers(&tp).await {
                Err(error) => {
                    let code = super::errors::log_error(&error);
                    response
                        .with_error_code(code.code())
                        .with_error_message(Some(text(&error.to_string())))
                }
                Ok(states) => response.with_active_producers(
                    states
                        .producers
                        .iter()
                        .map(|(producer_id, entry)| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(*producer_id))
                                .with_producer_epoch(i32::from(entry.epoch))
                                .with_last_sequence(
                                    entry.batches.last().map_or(-1, |b| b.last_sequence),
                                )
                                // Kafka reports the last batch's largest timestamp; Skiff
                                // keeps when it committed the producer's last batch.
                                .with_last_timestamp(entry.last_seen_ms)
                                // Markers come from the store, not a coordinator RPC: no
                                // coordinator epoch.
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(entry.txn_first_offset.unwrap_or(-1))
                        })
                        .collect(),
                ),
            });
        }
        topics.push(
            TopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}
