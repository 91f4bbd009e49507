//! The broker's Prometheus metrics, served at `/metrics` on the HTTP port (OpenMetrics text):
//! the one catalogue of every metric the binary exports, their names, units and labels.
//!
//! Two kinds: those counted as things happen (requests and their latency, bytes and records in
//! and out per topic, connections), kept in [`Metrics`]; and those read at scrape time from the
//! counters the log and the stores already keep (flushes, objects, the object store's requests
//! by operation — the bucket bill —, the metadata store's, the process's CPU and memory), so no
//! hot path pays twice.
//!
//! Label cardinality: `api` is bounded by Kafka's API keys, `operation` and `stage` by the code,
//! `topic` by the cluster's topics (per-topic series: a cluster with very many topics can turn
//! them off with `--metrics-topic-labels false`, leaving the totals under `topic=""`).

use axum::http::header::{HeaderName, CONTENT_TYPE};
use axum::http::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use skiff_tiering::latency::{Buckets, LatencyHistogram, REQUEST_BUCKETS_SECS};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    api: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SaslLabels {
    mechanism: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpAuthLabels {
    scheme: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    operation: &'static str,
    resource_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupPartitionLabels {
    group: String,
    topic: String,
    partition: i32,
}

/// A consumer group's position in one partition (see [`Scraped::group_offsets`]).
#[derive(Debug, Clone)]
pub struct GroupOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    /// High watermark minus the committed offset (0 at least); `None` when the partition's
    /// high watermark is unknown.
    pub lag: Option<i64>,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request latencies from 0.5 ms to ~16 s (a long-polling Fetch waits up to its `max_wait_ms`).
fn request_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Metrics counted as things happen.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    topic_labels: bool,
    requests: Family<ApiLabels, Counter>,
    request_seconds: HistogramFamily<ApiLabels>,
    request_errors: Family<ErrorLabels, Counter>,
    tls_handshake_failures: Counter,
    sasl_authentications: Family<SaslLabels, Counter>,
    http_authentications: Family<HttpAuthLabels, Counter>,
    authorization_denials: Family<DenialLabels, Counter>,
    produced_bytes: Family<TopicLabels, Counter>,
    produced_records: Family<TopicLabels, Counter>,
    fetched_bytes: Family<TopicLabels, Counter>,
    connections: Gauge,
}

impl Metrics {
    pub fn new(topic_labels: bool) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "skiff_requests",
            "Kafka requests handled, by API",
            requests.clone(),
        );
        let request_seconds: HistogramFamily<ApiLabels> =
            Family::new_with_constructor(request_seconds);
        registry.register(
            "skiff_request_duration_seconds",
            "Time from reading a Kafka request to its response being ready, by API (Produce: until its data is committed; Fetch: including its long poll)",
            request_seconds.clone(),
        );
        let request_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "skiff_request_errors",
            "Errors answered, by API and Kafka error: one per failed partition or item where the API answers per partition or item (Produce, Fetch, ListOffsets, CreateTopics, ...), else one per failed request",
            request_errors.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "skiff_tls_handshake_failures",
            "TLS handshakes of the Kafka and HTTPS listeners that failed or did not finish in time (untrusted or expired certificates, plaintext clients, scanners)",
            tls_handshake_failures.clone(),
        );
        let sasl_authentications = Family::<SaslLabels, Counter>::default();
        registry.register(
            "skiff_sasl_authentications",
            "SASL logins on the Kafka listeners (first logins and re-authentications), by mechanism and result (success, failure: wrong password, unknown user, malformed or out-of-order exchange)",
            sasl_authentications.clone(),
        );
        let http_authentications = Family::<HttpAuthLabels, Counter>::default();
        registry.register(
            "skiff_http_authentications",
            "Callers of the HTTP admin API and console checked (--http-authentication required), by scheme (basic, bearer, none: no or malformed credentials) and result",
            http_authentications.clone(),
        );
        let authorization_denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "skiff_authorization_denials",
            "Operations refused by the ACLs (--authorizer standard) that a client was told of, by operation and resource type; listings narrowed to what a principal may describe are not counted",
            authorization_denials.clone(),
        );
        let produced_bytes = Family::<TopicLabels, Counter>::default();
        registry.register(
            "skiff_produced_bytes",
            "Record-batch bytes produced and committed, by topic",
            produced_bytes.clone(),
        );
        let produced_records = Family::<TopicLabels, Counter>::default();
        registry.register(
            "skiff_produced_records",
            "Records produced and committed, by topic",
            produced_records.clone(),
        );
        let fetched_bytes = Family::<TopicLabels, Counter>::default();
        registry.register(
            "skiff_fetched_bytes",
            "Record-batch bytes returned by Fetch, by topic",
            fetched_bytes.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "skiff_connections",
            "Open Kafka connections",
            connections.clone(),
        );
        Self {
            registry,
            topic_labels,
            requests,
            request_seconds,
            request_errors,
            tls_handshake_failures,
            sasl_authentications,
            http_authentications,
            authorization_denials,
            produced_bytes,
            produced_records,
            fetched_bytes,
            connections,
        }
    }

    fn topic(&self, topic: &str) -> TopicLabels {
        TopicLabels {
            topic: if self.topic_labels {
                topic.to_owned()
            } else {
                String::new()
            },
        }
    }

    /// One request of `api` (Kafka's name, `Produce`) answered after `took`.
    pub fn request(&self, api: &'static str, took: Duration) {
        let labels = ApiLabels { api };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// One partition or item of an `api` response (or the whole response, where the API has
    /// no parts) answered with Kafka error `code`.
    pub fn partition_error(&self, api: &'static str, code: i16) {
        let error = error_name(code);
        self.request_errors
            .get_or_create(&ErrorLabels { api, error })
            .inc();
    }

    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    /// One SASL login with `mechanism` (Kafka's name; "none" before one was chosen).
    pub fn sasl_authentication(&self, mechanism: &'static str, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.sasl_authentications
            .get_or_create(&SaslLabels { mechanism, result })
            .inc();
    }

    /// One HTTP caller checked, by `scheme` (basic, bearer, none).
    pub fn http_authentication(&self, scheme: &'static str, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.http_authentications
            .get_or_create(&HttpAuthLabels { scheme, result })
            .inc();
    }

    /// An operation the ACLs refused.
    pub fn authorization_denied(&self, operation: &'static str, resource_type: &'static str) {
        self.authorization_denials
            .get_or_create(&DenialLabels {
                operation,
                resource_type,
            })
            .inc();
    }

    pub fn produced(&self, topic: &str, bytes: u64, records: u64) {
        let labels = self.topic(topic);
        self.produced_bytes.get_or_create(&labels).inc_by(bytes);
        self.produced_records.get_or_create(&labels).inc_by(records);
    }

    pub fn fetched(&self, topic: &str, bytes: u64) {
        if bytes > 0 {
            self.fetched_bytes
                .get_or_create(&self.topic(topic))
                .inc_by(bytes);
        }
    }

    /// Counts an open connection until the guard is dropped.
    pub fn connection(&self) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(self.connections.clone())
    }

    /// The OpenMetrics text of these metrics and of `scraped` (read at scrape time).
    pub fn encode(&self, scraped: &Scraped) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode_registry(&mut text, &self.registry)?;
        encode_registry(&mut text, &scraped.registry()?)?;
        encode_eof(&mut text)?;
        Ok(text)
    }
}

/// The OpenMetrics text of `scraped` alone (`skiff compactor`, which serves no Kafka requests).
pub fn encode_scraped(scraped: &Scraped) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    encode_registry(&mut text, &scraped.registry()?)?;
    encode_eof(&mut text)?;
    Ok(text)
}

/// The HTTP answer to a scrape.
pub fn respond(
    encoded: Result<String, std::fmt::Error>,
) -> (StatusCode, [(HeaderName, &'static str); 1], String) {
    match encoded {
        Ok(text) => (
            StatusCode::OK,
            [(
                CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("metrics encoding failed: {error}"),
        ),
    }
}

pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Values read at scrape time from counters kept elsewhere.
#[derive(Debug, Default)]
pub struct Scraped {
    /// (name without `skiff_` and `_total`, help, value)
    pub counters: Vec<(&'static str, &'static str, u64)>,
    /// (name without `skiff_`, help, value)
    pub gauges: Vec<(&'static str, &'static str, i64)>,
    /// Object-store requests and bytes by operation (`ObjectStoreCounts::snapshot`).
    pub object_store: Vec<(&'static str, u64)>,
    /// Metadata-store requests by kind (`MetadataCounts::snapshot`).
    pub metadata_store: Vec<(&'static str, u64)>,
    /// Committed offsets and lag of the consumer groups this broker coordinates (each group is
    /// exported by one broker: summing over brokers counts it once).
    pub group_offsets: Vec<GroupOffset>,
    /// Latency histograms kept elsewhere (object-store and metadata-store requests, flush
    /// stages), read into Prometheus buckets at scrape time.
    pub histograms: Vec<ScrapedHistogram>,
}

/// One histogram family read at scrape time: `skiff_<name>` with one series per label value.
#[derive(Debug, Clone)]
pub struct ScrapedHistogram {
    /// Without `skiff_`; ends in `_seconds`.
    pub name: &'static str,
    pub help: &'static str,
    /// The label that tells the series apart (`None`: one series, unlabelled).
    pub label: Option<&'static str>,
    pub series: Vec<(&'static str, Buckets)>,
}

impl ScrapedHistogram {
    /// A family from `(label value, histogram)` pairs, in Prometheus' request buckets.
    pub fn of(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        histograms: &[(&'static str, &LatencyHistogram)],
    ) -> Self {
        ScrapedHistogram {
            name,
            help,
            label: Some(label),
            series: histograms
                .iter()
                .map(|(value, h)| (*value, h.buckets(&REQUEST_BUCKETS_SECS)))
                .collect(),
        }
    }
}

impl Collector for ScrapedHistogram {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let name = format!("skiff_{}", self.name);
        let mut family =
            encoder.encode_descriptor(&name, self.help, None, MetricType::Histogram)?;
        for (value, buckets) in &self.series {
            let labels: Vec<(&str, &str)> = self.label.map(|l| (l, *value)).into_iter().collect();
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    buckets.sum_secs,
                    buckets.count,
                    &buckets.per_bucket,
                    None,
                )?;
        }
        Ok(())
    }
}

impl Scraped {
    fn registry(&self) -> Result<Registry, std::fmt::Error> {
        let mut registry = Registry::default();
        for (name, help, value) in &self.counters {
            let counter = Counter::<u64>::default();
            counter.inc_by(*value);
            registry.register(format!("skiff_{name}"), *help, counter);
        }
        for (name, help, value) in &self.gauges {
            let gauge = Gauge::<i64>::default();
            gauge.set(*value);
            registry.register(format!("skiff_{name}"), *help, gauge);
        }
        let requests = Family::<OperationLabels, Counter>::default();
        let bytes = Family::<OperationLabels, Counter>::default();
        for (name, value) in &self.object_store {
            let (family, operation) = match name.strip_suffix("_bytes") {
                Some(operation) => (&bytes, operation),
                // "puts", "gets", "lists", "deletes", "copies" → PUT, GET, LIST, DELETE, COPY
                None if *name == "copies" => (&requests, "copy"),
                None => (&requests, name.strip_suffix('s').unwrap_or(name)),
            };
            family
                .get_or_create(&OperationLabels {
                    operation: operation.to_uppercase(),
                })
                .inc_by(*value);
        }
        registry.register(
            "skiff_object_store_requests",
            "Object-store requests by operation (PUT, GET, LIST, DELETE, COPY): what the bucket bills",
            requests,
        );
        registry.register(
            "skiff_object_store_bytes",
            "Object-store bytes by operation (PUT: uploaded, GET: downloaded)",
            bytes,
        );
        let metadata = Family::<OperationLabels, Counter>::default();
        for (name, value) in &self.metadata_store {
            metadata
                .get_or_create(&OperationLabels {
                    operation: (*name).to_owned(),
                })
                .inc_by(*value);
        }
        registry.register(
            "skiff_metadata_store_requests",
            "Metadata-store requests by kind (gets, ranges, txns, txns_failed: conflicts, ...)",
            metadata,
        );
        let committed = Family::<GroupPartitionLabels, Gauge>::default();
        let lag = Family::<GroupPartitionLabels, Gauge>::default();
        for offset in &self.group_offsets {
            let labels = GroupPartitionLabels {
                group: offset.group.clone(),
                topic: offset.topic.clone(),
                partition: offset.partition,
            };
            committed.get_or_create(&labels).set(offset.committed);
            if let Some(behind) = offset.lag {
                lag.get_or_create(&labels).set(behind);
            }
        }
        registry.register(
            "skiff_consumer_group_committed_offset",
            "Committed offset of a consumer group in a partition (groups this broker coordinates)",
            committed,
        );
        registry.register(
            "skiff_consumer_group_lag_records",
            "Records between a consumer group's committed offset and the partition's high watermark (groups this broker coordinates)",
            lag,
        );
        for histogram in &self.histograms {
            registry.register_collector(Box::new(histogram.clone()));
        }
        if let Some((cpu_seconds, resident_bytes)) = process_usage() {
            let cpu = Counter::<f64, std::sync::atomic::AtomicU64>::default();
            cpu.inc_by(cpu_seconds);
            registry.register(
                "process_cpu_seconds",
                "User and system CPU time of the process",
                cpu,
            );
            let rss = Gauge::<i64>::default();
            rss.set(resident_bytes);
            registry.register(
                "process_resident_memory_bytes",
                "Resident memory of the process",
                rss,
            );
        }
        Ok(registry)
    }
}

/// The name of a Kafka error code (`NotLeaderOrFollower`), made once per code.
fn error_name(code: i16) -> &'static str {
    static NAMES: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<i16, &'static str>>,
    > = std::sync::OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    names.entry(code).or_insert_with(|| {
        let name = kafka_protocol::ResponseError::try_from_code(code)
            .map_or_else(|| "None".to_owned(), |e| e.to_string());
        Box::leak(name.into_boxed_str())
    })
}

/// (CPU seconds, resident bytes) of this process, from `/proc` (Linux; `None` elsewhere).
fn process_usage() -> Option<(f64, i64)> {
    // /proc reports CPU times in USER_HZ ticks, 100 per second on every Linux ABI.
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(((utime + stime) / TICKS_PER_SECOND, rss_kib * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_encodes_as_openmetrics() {
        let metrics = Metrics::new(true);
        metrics.request("Produce", Duration::from_millis(3));
        metrics.produced("orders", 2048, 2);
        metrics.fetched("orders", 1024);
        let _open = metrics.connection();
        let put_latency = LatencyHistogram::default();
        put_latency.record(Duration::from_millis(3));
        put_latency.record(Duration::from_millis(30));
        let scraped = Scraped {
            counters: vec![("objects_written", "Objects written", 5)],
            gauges: vec![("buffered_bytes", "Bytes buffered", 7)],
            object_store: vec![("puts", 5), ("put_bytes", 4096), ("gets", 1)],
            metadata_store: vec![("txns", 9)],
            group_offsets: vec![GroupOffset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 3,
                committed: 40,
                lag: Some(2),
            }],
            histograms: vec![ScrapedHistogram::of(
                "object_store_request_duration_seconds",
                "Object-store request latency",
                "operation",
                &[("PUT", &put_latency)],
            )],
        };
        metrics.partition_error("Produce", 6);
        let text = metrics.encode(&scraped).expect("encodes");
        for line in [
            "skiff_requests_total{api=\"Produce\"} 1",
            "skiff_request_duration_seconds_count{api=\"Produce\"} 1",
            "skiff_produced_bytes_total{topic=\"orders\"} 2048",
            "skiff_produced_records_total{topic=\"orders\"} 2",
            "skiff_fetched_bytes_total{topic=\"orders\"} 1024",
            "skiff_connections 1",
            "skiff_objects_written_total 5",
            "skiff_buffered_bytes 7",
            "skiff_object_store_requests_total{operation=\"PUT\"} 5",
            "skiff_object_store_requests_total{operation=\"GET\"} 1",
            "skiff_object_store_bytes_total{operation=\"PUT\"} 4096",
            "skiff_metadata_store_requests_total{operation=\"txns\"} 9",
            "skiff_consumer_group_lag_records{group=\"g\",topic=\"orders\",partition=\"3\"} 2",
            "skiff_consumer_group_committed_offset{group=\"g\",topic=\"orders\",partition=\"3\"} 40",
            "skiff_request_errors_total{api=\"Produce\",error=\"NotLeaderOrFollower\"} 1",
            "# TYPE skiff_object_store_request_duration_seconds histogram",
            "skiff_object_store_request_duration_seconds_count{operation=\"PUT\"} 2",
            "skiff_object_store_request_duration_seconds_bucket{le=\"0.0025\",operation=\"PUT\"} 0",
            "skiff_object_store_request_duration_seconds_bucket{le=\"0.005\",operation=\"PUT\"} 1",
            "skiff_object_store_request_duration_seconds_bucket{le=\"0.05\",operation=\"PUT\"} 2",
            "skiff_object_store_request_duration_seconds_bucket{le=\"+Inf\",operation=\"PUT\"} 2",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        drop(_open);
        let without_topics = Metrics::new(false);
        without_topics.produced("orders", 1, 1);
        let text = without_topics.encode(&Scraped::default()).expect("encodes");
        assert!(text.contains("skiff_produced_records_total{topic=\"\"} 1"));
    }
}
