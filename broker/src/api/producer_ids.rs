//! InitProducerId: hands out producer ids that are unique across the cluster and across
//! restarts, reserved from the metadata store in blocks.
//!
//! Idempotent producers (kafka-python's default, librdkafka's `enable.idempotence`) need an id
//! to start; the log then checks their sequence numbers per partition and answers a retried
//! batch with its first offset instead of storing it twice (`skiff_tiering::producers`).

use kafka_protocol::messages::{InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;
use skiff_tiering::keys::{self, ProducerIdBlock};
use skiff_tiering::metadata::{Compare, MetadataStore, Txn, TxnOp};
use std::sync::Arc;
use tokio::sync::Mutex;

const BLOCK_SIZE: i64 = 1_000;
const RESERVE_ATTEMPTS_MAX: usize = 8;

#[derive(Debug)]
pub struct ProducerIds {
    store: Arc<dyn MetadataStore>,
    /// [next, end) of the block this broker holds.
    block: Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub fn new(store: Arc<dyn MetadataStore>) -> Self {
        Self {
            store,
            block: Mutex::new((0, 0)),
        }
    }

    /// InitProducerId without a transactional id.
    pub async fn handle(&self) -> InitProducerIdResponse {
        let response = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        // Without a transactional id Kafka always hands out a fresh id (a re-initialising
        // producer included), so no client can take over another producer's id.
        match self.next().await {
            Ok(id) => response
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0),
            Err(error) => {
                tracing::warn!(%error, "cannot reserve producer ids");
                response.with_error_code(ResponseError::CoordinatorNotAvailable.code())
            }
        }
    }

    /// A producer id no one else has or will get.
    pub async fn next(&self) -> Result<i64, String> {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            *block = self.reserve().await?;
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }

    async fn reserve(&self) -> Result<(i64, i64), String> {
        let key = keys::producer_ids();
        for _ in 0..RESERVE_ATTEMPTS_MAX {
            let current = self.store.get(&key).await.map_err(|e| e.to_string())?;
            let (start, revision) = match &current {
                Some(kv) => (
                    keys::decode::<ProducerIdBlock>(&kv.key, &kv.value)?.next_producer_id,
                    kv.mod_revision,
                ),
                None => (0, 0),
            };
            let next = ProducerIdBlock {
                next_producer_id: start + BLOCK_SIZE,
            };
            let txn = Txn::when(vec![Compare::mod_revision(&key, revision)])
                .and_then(vec![TxnOp::put(&key, keys::encode(&next))]);
            if self
                .store
                .txn(txn)
                .await
                .map_err(|e| e.to_string())?
                .succeeded
            {
                return Ok((start, start + BLOCK_SIZE));
            }
        }
        Err("producer id block contended".to_owned())
    }
}
