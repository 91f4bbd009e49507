//! The etcd implementation of [`MetadataStore`], for cluster mode.
//!
//! A thin mapping onto etcd's v3 API (`etcd-client`): the trait was shaped after it, so every
//! call is one etcd request. Transport failures are `Unavailable` (retriable); etcd's
//! "too many operations in txn request" is `TooLarge`; an unknown lease is `LeaseNotFound`.
//! The exception is `range_prefix`, read in pages from one snapshot (see [`range`]).

mod range;

use super::{
    Compare, CompareOp, CompareTarget, KeyValue, LeaseId, MetadataError, MetadataStore, Read,
    ReadOutcome, Result, Txn, TxnOp, TxnOutcome, WatchEvent,
};
use async_trait::async_trait;
use bytes::Bytes;
use etcd_client as etcd;
use futures::stream::{BoxStream, StreamExt};
use std::time::Duration;

/// etcd's default `--max-txn-ops`.
pub const ETCD_MAX_TXN_OPS: usize = 128;

/// The largest gRPC message the client accepts from etcd (tonic's default: 4 MiB). Range pages
/// are bounded by key count ([`range::RANGE_PAGE_KEYS`]), not bytes, so a page of large values
/// can exceed any limit; this one holds ~20 values of etcd's largest request (1.5 MiB), so a
/// halved page always fits soon, and watch responses carrying whole large transactions fit too.
/// It bounds the memory one response may take.
pub const ETCD_MAX_DECODING_MESSAGE_BYTES: usize = 32 << 20;

#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub connect_timeout: Duration,
    /// Deadline of every etcd request.
    pub request_timeout: Duration,
    /// The server's `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// etcd's authentication: a user and password (etcd's `--user`).
    pub user: Option<EtcdUser>,
    /// TLS settings for `https://` endpoints.
    pub tls: Option<EtcdTls>,
}

/// An etcd user; the password never prints.
#[derive(Clone)]
pub struct EtcdUser {
    pub name: String,
    pub password: String,
}

impl std::fmt::Debug for EtcdUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// TLS to etcd: the CA certificates its servers' certificates chain to (PEM; `None`: the
/// system's roots) and a client certificate with its key (PEM) for `--client-cert-auth`.
#[derive(Clone)]
pub struct EtcdTls {
    pub ca_pem: Option<Vec<u8>>,
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity_pem.is_some())
            .finish()
    }
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            max_txn_ops: ETCD_MAX_TXN_OPS,
            user: None,
            tls: None,
        }
    }
}

#[derive(Clone)]
pub struct EtcdStore {
    /// For leases; key-value and watch calls use the clients below.
    client: etcd::Client,
    /// With the receive limit raised to [`ETCD_MAX_DECODING_MESSAGE_BYTES`].
    kv: etcd::KvClient,
    watch: etcd::WatchClient,
    max_txn_ops: usize,
    /// Deadline of streaming calls (watch creation, lease keep-alive), which the client's
    /// per-request timeout does not cover.
    request_timeout: Duration,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

/// Sorts etcd's errors by what the caller can do about them: the gRPC status code first, then
/// etcd's documented error text where one code covers several errors (`rpctypes` in etcd).
fn map_err(error: etcd::Error) -> MetadataError {
    match &error {
        etcd::Error::GRpcStatus(status) => match status.code() {
            tonic::Code::InvalidArgument
                if status
                    .message()
                    .contains("too many operations in txn request")
                    || status.message().contains("request is too large") =>
            {
                MetadataError::TooLarge(status.message().to_owned())
            }
            // The client refuses to send or read a message over its gRPC limit. (etcd also
            // uses ResourceExhausted for a full database, NOSPACE: that stays Unavailable.)
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
                if status.message().contains("too large")
                    || status.message().contains("larger than max") =>
            {
                MetadataError::TooLarge(status.message().to_owned())
            }
            _ => MetadataError::Unavailable(format!("etcd: {error}")),
        },
        _ => MetadataError::Unavailable(format!("etcd: {error}")),
    }
}

/// Whether etcd said the lease does not exist (expired or revoked): a gRPC `NotFound` status,
/// or the keep-alive stream's zero-TTL answer, which etcd-client reports as
/// `LeaseKeepAliveError`.
fn is_lease_not_found(error: &etcd::Error) -> bool {
    match error {
        etcd::Error::GRpcStatus(status) => status.code() == tonic::Code::NotFound,
        etcd::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    }
}

fn from_etcd(kv: &etcd::KeyValue) -> Result<KeyValue> {
    let key = kv
        .key_str()
        .map_err(|e| MetadataError::Corrupt(format!("non-UTF-8 key in etcd: {e}")))?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    })
}

fn to_etcd_compare(compare: Compare) -> etcd::Compare {
    let op = match compare.op {
        CompareOp::Equal => etcd::CompareOp::Equal,
        CompareOp::NotEqual => etcd::CompareOp::NotEqual,
        CompareOp::Less => etcd::CompareOp::Less,
        CompareOp::Greater => etcd::CompareOp::Greater,
    };
    match compare.target {
        CompareTarget::Version(v) => etcd::Compare::version(compare.key, op, v),
        CompareTarget::ModRevision(r) => etcd::Compare::mod_revision(compare.key, op, r),
        CompareTarget::CreateRevision(r) => etcd::Compare::create_revision(compare.key, op, r),
        CompareTarget::Value(v) => etcd::Compare::value(compare.key, op, v.to_vec()),
    }
}

fn to_etcd_op(op: TxnOp) -> etcd::TxnOp {
    match op {
        TxnOp::Put { key, value, lease } => {
            let options = lease.map(|id| etcd::PutOptions::new().with_lease(id));
            etcd::TxnOp::put(key, value.to_vec(), options)
        }
        TxnOp::Delete { key } => etcd::TxnOp::delete(key, None),
        TxnOp::DeletePrefix { prefix } => {
            etcd::TxnOp::delete(prefix, Some(etcd::DeleteOptions::new().with_prefix()))
        }
        TxnOp::DeleteRange { start, end } => {
            etcd::TxnOp::delete(start, Some(etcd::DeleteOptions::new().with_range(end)))
        }
    }
}

impl EtcdStore {
    pub async fn connect(config: &EtcdConfig) -> Result<Self> {
        let mut options = etcd::ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        if let Some(user) = &config.user {
            options = options.with_user(user.name.clone(), user.password.clone());
        }
        if let Some(tls) = &config.tls {
            let mut options_tls = etcd::TlsOptions::new();
            options_tls = match &tls.ca_pem {
                Some(ca) => options_tls.ca_certificate(etcd::Certificate::from_pem(ca)),
                None => options_tls.with_native_roots(),
            };
            if let Some((cert, key)) = &tls.identity_pem {
                options_tls = options_tls.identity(etcd::Identity::from_pem(cert, key));
            }
            options = options.with_tls(options_tls);
        }
        let client = etcd::Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(map_err)?;
        let kv = client
            .kv_client()
            .max_decoding_message_size(ETCD_MAX_DECODING_MESSAGE_BYTES);
        let watch = client
            .watch_client()
            .max_decoding_message_size(ETCD_MAX_DECODING_MESSAGE_BYTES);
        Ok(Self {
            client,
            kv,
            watch,
            max_txn_ops: config.max_txn_ops,
            request_timeout: config.request_timeout,
        })
    }
}

#[async_trait]
impl MetadataStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let response = self.kv.clone().get(key, None).await.map_err(map_err)?;
        response.kvs().first().map(from_etcd).transpose()
    }

    async fn range_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<KeyValue>> {
        range::read_prefix(self, prefix, limit, range::RANGE_PAGE_KEYS).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        let etcd_txn = etcd::Txn::new()
            .when(
                txn.compares
                    .into_iter()
                    .map(to_etcd_compare)
                    .collect::<Vec<_>>(),
            )
            .and_then(txn.success.into_iter().map(to_etcd_op).collect::<Vec<_>>())
            .or_else(txn.failure.into_iter().map(to_etcd_op).collect::<Vec<_>>());
        let response = self.kv.clone().txn(etcd_txn).await.map_err(map_err)?;
        let revision = response.header().map_or(0, |h| h.revision());
        Ok(TxnOutcome {
            succeeded: response.succeeded(),
            revision,
        })
    }

    async fn read_many(&self, reads: &[Read]) -> Result<ReadOutcome> {
        if reads.len() > self.max_txn_ops {
            return Err(MetadataError::TooLarge(format!(
                "read_many reads={} max={}",
                reads.len(),
                self.max_txn_ops
            )));
        }
        let ops: Vec<etcd::TxnOp> = reads
            .iter()
            .map(|read| match read {
                Read::Key(key) => etcd::TxnOp::get(key.as_str(), None),
                Read::Prefix(prefix) => {
                    etcd::TxnOp::get(prefix.as_str(), Some(etcd::GetOptions::new().with_prefix()))
                }
            })
            .collect();
        // No compares: the success branch always runs, all its ranges at one revision.
        let response = self
            .kv
            .clone()
            .txn(etcd::Txn::new().and_then(ops))
            .await
            .map_err(map_err)?;
        let revision = response.header().map_or(0, |h| h.revision());
        let mut results = Vec::with_capacity(reads.len());
        for op in response.op_responses() {
            let etcd::TxnOpResponse::Get(get) = op else {
                return Err(MetadataError::Corrupt(
                    "etcd: a read transaction answered with a write".into(),
                ));
            };
            if get.more() {
                return Err(MetadataError::TooLarge(
                    "read_many: a prefix did not fit one response".into(),
                ));
            }
            results.push(get.kvs().iter().map(from_etcd).collect::<Result<_>>()?);
        }
        if results.len() != reads.len() {
            return Err(MetadataError::Corrupt(format!(
                "etcd: {} results for {} reads",
                results.len(),
                reads.len()
            )));
        }
        Ok(ReadOutcome { revision, results })
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<BoxStream<'static, WatchEvent>> {
        let mut stream = self
            .watch
            .clone()
            .watch(prefix, Some(etcd::WatchOptions::new().with_prefix()))
            .await
            .map_err(map_err)?;
        // Wait until etcd confirms the watch, so every change after this call is seen.
        let created = tokio::time::timeout(self.request_timeout, stream.next())
            .await
            .map_err(|_| MetadataError::Unavailable("etcd: watch not confirmed in time".into()))?;
        match created {
            Some(Ok(response)) if response.created() => {}
            Some(Ok(_)) => {
                return Err(MetadataError::Unavailable("etcd: watch not created".into()))
            }
            Some(Err(error)) => return Err(map_err(error)),
            None => {
                return Err(MetadataError::Unavailable(
                    "etcd: watch stream closed".into(),
                ))
            }
        }
        let events = stream
            .take_while(|response| {
                let keep = matches!(response, Ok(r) if !r.canceled());
                async move { keep }
            })
            .flat_map(|response| {
                let events: Vec<WatchEvent> = match response {
                    Ok(response) => {
                        let revision = response.header().map_or(0, |h| h.revision());
                        response
                            .events()
                            .iter()
                            .filter_map(|event| {
                                let kv = from_etcd(event.kv()?).ok()?;
                                Some(match event.event_type() {
                                    etcd::EventType::Put => WatchEvent::Put(kv),
                                    etcd::EventType::Delete => WatchEvent::Delete {
                                        key: kv.key,
                                        revision: kv.mod_revision.max(revision),
                                    },
                                })
                            })
                            .collect()
                    }
                    Err(_) => Vec::new(),
                };
                futures::stream::iter(events)
            });
        Ok(events.boxed())
    }

    async fn lease_grant(&self, ttl_ms: i64) -> Result<LeaseId> {
        // etcd counts TTLs in whole seconds.
        let ttl_s = ((ttl_ms + 999) / 1000).max(1);
        let response = self
            .client
            .clone()
            .lease_grant(ttl_s, None)
            .await
            .map_err(map_err)?;
        Ok(response.id())
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()> {
        tokio::time::timeout(self.request_timeout, self.keep_alive_once(lease))
            .await
            .map_err(|_| MetadataError::Unavailable("etcd: lease keep-alive timed out".into()))?
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        match self.client.clone().lease_revoke(lease).await {
            Ok(_) => Ok(()),
            Err(error) if is_lease_not_found(&error) => Err(MetadataError::LeaseNotFound(lease)),
            Err(error) => Err(map_err(error)),
        }
    }

    fn max_txn_ops(&self) -> usize {
        self.max_txn_ops
    }
}

impl EtcdStore {
    async fn keep_alive_once(&self, lease: LeaseId) -> Result<()> {
        let (mut keeper, mut stream) = match self.client.clone().lease_keep_alive(lease).await {
            Ok(opened) => opened,
            Err(error) if is_lease_not_found(&error) => {
                return Err(MetadataError::LeaseNotFound(lease))
            }
            Err(error) => return Err(map_err(error)),
        };
        keeper.keep_alive().await.map_err(map_err)?;
        match stream.message().await.map_err(map_err)? {
            Some(response) if response.ttl() > 0 => Ok(()),
            Some(_) => Err(MetadataError::LeaseNotFound(lease)),
            None => Err(MetadataError::Unavailable(
                "etcd: keep-alive stream closed".into(),
            )),
        }
    }
}

/// One page of a range: keys in etcd's default (ascending key) order.
#[async_trait]
impl range::PageSource for EtcdStore {
    async fn page(&self, request: &range::PageRequest) -> Result<range::Page, range::PageError> {
        let limit = i64::try_from(request.limit).unwrap_or(i64::MAX);
        let mut options = etcd::GetOptions::new()
            .with_range(request.end.clone())
            .with_limit(limit);
        if request.revision > 0 {
            options = options.with_revision(request.revision);
        }
        let response = match self
            .kv
            .clone()
            .get(request.start.clone(), Some(options))
            .await
        {
            Ok(response) => response,
            Err(error) if is_compacted(&error) => return Err(range::PageError::Compacted),
            Err(error) => {
                return Err(match map_err(error) {
                    MetadataError::TooLarge(message) => range::PageError::TooLarge(message),
                    other => range::PageError::Store(other),
                })
            }
        };
        let kvs = response
            .kvs()
            .iter()
            .map(from_etcd)
            .collect::<Result<_>>()
            .map_err(range::PageError::Store)?;
        // Later pages are read at this revision: without it they would not be one snapshot.
        let revision = response.header().map(|h| h.revision()).ok_or_else(|| {
            range::PageError::Store(MetadataError::Unavailable(
                "etcd: range response without a header".into(),
            ))
        })?;
        Ok(range::Page {
            kvs,
            revision,
            more: response.more(),
        })
    }
}

/// Whether etcd said the requested revision was compacted (`ErrCompacted`: "mvcc: required
/// revision has been compacted", gRPC `OutOfRange`).
fn is_compacted(error: &etcd::Error) -> bool {
    matches!(error, etcd::Error::GRpcStatus(status)
        if status.code() == tonic::Code::OutOfRange && status.message().contains("compacted"))
}
