//! The Kafka protocol client behind the admin commands: one connection per broker, requests
//! encoded and responses decoded by `kafka-protocol`, each at the highest version both sides
//! speak (and the command's code was written for), so the commands work against Kafka too.

use super::ClientArgs;
use anyhow::{anyhow, bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FindCoordinatorRequest, MetadataRequest,
    MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, Request, StrBytes};
use kafka_protocol::ResponseError;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

use super::security::{self, Stream};

/// The largest response read (a Metadata response of a very large cluster stays far below).
const RESPONSE_MAX_BYTES: usize = 256 << 20;

/// One broker's connection and the versions it speaks.
pub struct Connection {
    addr: String,
    stream: BufStream<Box<dyn Stream>>,
    client_id: String,
    timeout: Duration,
    correlation_id: i32,
    /// api key → (min, max) as the broker's ApiVersions answered.
    versions: HashMap<i16, (i16, i16)>,
}

impl Connection {
    pub async fn open(addr: &str, args: &ClientArgs) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(args.request_timeout_ms);
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("cannot connect to {addr}: no answer within {timeout:?}"))?
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true).ok();
        let stream =
            tokio::time::timeout(timeout, security::transport(stream, addr, &args.security))
                .await
                .map_err(|_| anyhow!("no TLS handshake with {addr} within {timeout:?}"))??;
        let mut connection = Connection {
            addr: addr.to_owned(),
            stream: BufStream::new(stream),
            client_id: args.client_id.clone(),
            timeout,
            correlation_id: 0,
            versions: HashMap::new(),
        };
        connection.negotiate().await?;
        security::login(&mut connection, &args.security).await?;
        Ok(connection)
    }

    /// ApiVersions v3 (v0 if the broker answers UNSUPPORTED_VERSION, as Kafka's clients do).
    async fn negotiate(&mut self) -> anyhow::Result<()> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("skiff-cli"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut body = self.exchange(&request, 3).await?;
        // An UNSUPPORTED_VERSION answer is a v0 body: look at its error code before decoding.
        let code = body.first_chunk::<2>().map(|c| i16::from_be_bytes(*c));
        let response = if code == Some(ResponseError::UnsupportedVersion.code()) {
            body = self.exchange(&ApiVersionsRequest::default(), 0).await?;
            decode::<ApiVersionsResponse>(&self.addr, body, 0)?
        } else {
            decode::<ApiVersionsResponse>(&self.addr, body, 3)?
        };
        if let Some(error) = error(response.error_code) {
            bail!("{} refused ApiVersions: {error:?}", self.addr);
        }
        self.versions = response
            .api_keys
            .iter()
            .map(|v| (v.api_key, (v.min_version, v.max_version)))
            .collect();
        Ok(())
    }

    /// Sends `request` at the highest version both sides speak, at most `max_version` (the
    /// newest version the caller fills the fields of).
    pub async fn send<R: Request>(
        &mut self,
        request: &R,
        max_version: i16,
    ) -> anyhow::Result<R::Response> {
        let api = api_name(R::KEY);
        let (broker_min, broker_max) = *self
            .versions
            .get(&R::KEY)
            .ok_or_else(|| anyhow!("{} does not support {api}", self.addr))?;
        let version = max_version.min(R::VERSIONS.max).min(broker_max);
        if version < broker_min.max(R::VERSIONS.min) {
            bail!(
                "{} speaks {api} versions {broker_min}..={broker_max}, this client {}..={}",
                self.addr,
                R::VERSIONS.min,
                max_version.min(R::VERSIONS.max)
            );
        }
        let body = self.exchange(request, version).await?;
        decode::<R::Response>(&self.addr, body, version)
    }

    /// Writes one request and reads its response's body (after the response header).
    async fn exchange<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<Bytes> {
        let api = api_name(R::KEY);
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())))
            .encode(&mut buf, R::header_version(version))
            .with_context(|| format!("cannot encode the {api} request header"))?;
        request
            .encode(&mut buf, version)
            .with_context(|| format!("cannot encode {api} v{version}"))?;
        let length = i32::try_from(buf.len() - 4).context("request too large")?;
        buf[..4].copy_from_slice(&length.to_be_bytes());

        let addr = self.addr.clone();
        let stream = &mut self.stream;
        let frame = tokio::time::timeout(self.timeout, async {
            stream.write_all(&buf).await?;
            stream.flush().await?;
            let length = stream.read_i32().await?;
            let length = usize::try_from(length)
                .ok()
                .filter(|l| *l <= RESPONSE_MAX_BYTES)
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("response length {length} out of range"),
                    )
                })?;
            let mut frame = vec![0; length];
            stream.read_exact(&mut frame).await?;
            Ok::<_, std::io::Error>(frame)
        })
        .await
        .map_err(|_| anyhow!("{addr} did not answer {api} within {:?}", self.timeout))?
        .with_context(|| format!("{api} to {addr} failed"))?;

        let mut frame = Bytes::from(frame);
        let header = ResponseHeader::decode(
            &mut frame,
            <R::Response as HeaderVersion>::header_version(version),
        )
        .with_context(|| format!("cannot decode the {api} response header from {addr}"))?;
        if header.correlation_id != correlation_id {
            bail!(
                "{addr} answered correlation id {} to {api} request {correlation_id}",
                header.correlation_id
            );
        }
        Ok(frame)
    }
}

fn decode<M: Decodable + Message>(addr: &str, mut body: Bytes, version: i16) -> anyhow::Result<M> {
    M::decode(&mut body, version)
        .with_context(|| format!("cannot decode a response from {addr} (version {version})"))
}

/// The name Kafka's documentation uses for an API key.
pub fn api_name(key: i16) -> String {
    ApiKey::try_from(key).map_or_else(|_| format!("api key {key}"), |k| format!("{k:?}"))
}

/// A Kafka error code as an error (`None` for 0).
pub fn error(code: i16) -> Option<ResponseError> {
    ResponseError::try_from_code(code)
}

/// A Kafka error in plain words, with the broker's message when it sent one.
pub fn describe(code: i16, message: Option<&StrBytes>) -> String {
    let name = error_name(code);
    match message.map(|m| m.as_str()).filter(|m| !m.is_empty()) {
        Some(message) => format!("{name}: {message}"),
        None => name,
    }
}

/// Kafka's documented name of an error code (`UNKNOWN_TOPIC_OR_PARTITION`).
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_owned(),
        Some(ResponseError::Unknown(code)) => format!("error code {code}"),
        Some(known) => {
            let camel = known.to_string();
            let mut name = String::with_capacity(camel.len() + 8);
            for (i, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
    }
}

/// A topic's name as a response gives it (Metadata and DeleteTopics name topics optionally).
pub fn name_of(name: &Option<TopicName>) -> String {
    name.as_ref().map(|n| n.to_string()).unwrap_or_default()
}

/// A broker of the cluster as Metadata describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerInfo {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Connections to a cluster: the bootstrap broker's, then one per broker as requests need them.
pub struct Client {
    args: ClientArgs,
    bootstrap: Connection,
    brokers: BTreeMap<i32, BrokerInfo>,
    nodes: HashMap<i32, Connection>,
}

impl Client {
    /// Connects to the first bootstrap server that answers.
    pub async fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
        let mut failures = Vec::new();
        for addr in args.bootstrap_server.split(',').map(str::trim) {
            if addr.is_empty() {
                continue;
            }
            match Connection::open(addr, args).await {
                Ok(bootstrap) => {
                    let mut client = Client {
                        args: args.clone(),
                        bootstrap,
                        brokers: BTreeMap::new(),
                        nodes: HashMap::new(),
                    };
                    client.metadata(Some(Vec::new())).await?;
                    return Ok(client);
                }
                Err(error) => failures.push(format!("{error:#}")),
            }
        }
        if failures.is_empty() {
            bail!("--bootstrap-server is empty");
        }
        bail!("no bootstrap server answered: {}", failures.join("; "))
    }

    pub fn bootstrap(&mut self) -> &mut Connection {
        &mut self.bootstrap
    }

    pub fn brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values()
    }

    /// Metadata for `topics` (`None`: every topic; an empty list: brokers only), remembering
    /// the brokers it lists.
    pub async fn metadata(
        &mut self,
        topics: Option<Vec<String>>,
    ) -> anyhow::Result<MetadataResponse> {
        use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .into_iter()
                    .map(|name| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(name))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let response = self.bootstrap.send(&request, 12).await?;
        self.brokers = response
            .brokers
            .iter()
            .map(|b| {
                let info = BrokerInfo {
                    node_id: b.node_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                };
                (info.node_id, info)
            })
            .collect();
        Ok(response)
    }

    /// The connection to broker `node_id`, opened on first use.
    pub async fn node(&mut self, node_id: i32) -> anyhow::Result<&mut Connection> {
        if !self.nodes.contains_key(&node_id) {
            let broker = self
                .brokers
                .get(&node_id)
                .ok_or_else(|| anyhow!("broker {node_id} is not in the cluster's metadata"))?;
            let connection = Connection::open(&broker.addr(), &self.args).await?;
            self.nodes.insert(node_id, connection);
        }
        Ok(self.nodes.get_mut(&node_id).expect("inserted above"))
    }

    /// The node id of the coordinator of consumer group `group`.
    pub async fn group_coordinator(&mut self, group: &str) -> anyhow::Result<i32> {
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_owned()))
            .with_key_type(0);
        let response = self.bootstrap.send(&request, 3).await?;
        if response.error_code != 0 {
            bail!(
                "cannot find the coordinator of group {group:?}: {}",
                describe(response.error_code, response.error_message.as_ref())
            );
        }
        let node_id = response.node_id.0;
        self.brokers.entry(node_id).or_insert_with(|| BrokerInfo {
            node_id,
            host: response.host.to_string(),
            port: response.port,
            rack: None,
        });
        Ok(node_id)
    }
}
