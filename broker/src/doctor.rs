//! `skiff doctor`: checks a broker's configuration against the world before it serves — the
//! settings, its listener addresses, the metadata store (etcd or embedded), the bucket (write,
//! read back, list, delete a probe object with the given credentials) and this machine's clock
//! against the bucket's — and says what is wrong in plain words. It takes exactly `skiff
//! serve`'s settings (flags, `SKIFF_*` variables, config file), so it checks what a broker
//! started the same way would use.

use crate::config::ServeArgs;
use crate::storage;
use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use skiff_tiering::keys::brokers_prefix;
use skiff_tiering::{paths, Clock, SystemClock};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long each check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);
/// Clock skew against the bucket worth a warning, and worth a failure (timestamps, retention,
/// transaction and group timeouts all read this machine's clock).
const SKEW_WARN_MS: i64 = 2_000;
const SKEW_FAIL_MS: i64 = 30_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Warn,
    Fail,
}

struct Report {
    checks: Vec<(Status, String, String)>,
}

impl Report {
    fn add(&mut self, status: Status, check: &str, detail: impl Into<String>) {
        let detail = detail.into();
        let word = match status {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        println!("{word:<5} {check:<24} {detail}");
        self.checks.push((status, check.to_owned(), detail));
    }
}

/// Runs every check; true if none failed.
pub async fn run(args: ServeArgs) -> anyhow::Result<bool> {
    let mut report = Report { checks: Vec::new() };
    match args.validate() {
        Ok(()) => report.add(Status::Ok, "settings", "valid"),
        Err(error) => {
            report.add(Status::Fail, "settings", format!("{error:#}"));
            return Ok(false);
        }
    }
    listeners(&args, &mut report).await;
    security(&args, &mut report).await;
    metadata(&args, &mut report).await;
    bucket(&args, &mut report).await;
    Ok(report.checks.iter().all(|(s, _, _)| *s != Status::Fail))
}

async fn listeners(args: &ServeArgs, report: &mut Report) {
    let kafka = args.kafka_listeners().unwrap_or_default(); // validate() said so already
    let mut binds: Vec<(String, &str, SocketAddr)> = kafka
        .iter()
        .map(|l| (format!("kafka listener {}", l.name), "--listeners", l.bind))
        .collect();
    if let Ok(http) = args.http_bind() {
        binds.push(("http listener".to_owned(), "--http-listeners", http));
    }
    for (check, flag, addr) in binds {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(_) => report.add(Status::Ok, &check, format!("{addr} can be bound")),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => report.add(
                Status::Warn,
                &check,
                format!("{addr} is in use (by a broker already running here?); {flag}"),
            ),
            Err(e) => report.add(
                Status::Fail,
                &check,
                format!("cannot bind {addr}: {e}; change {flag}"),
            ),
        }
    }
    for listener in &kafka {
        let check = format!("advertised {}", listener.name);
        let (host, port) = listener
            .advertised
            .clone()
            .unwrap_or_else(|| (listener.bind.ip().to_string(), listener.bind.port()));
        if host == "0.0.0.0" || host == "::" {
            report.add(
                Status::Fail,
                &check,
                format!(
                    "clients would be told to connect to {host}:{port}; set \
                     --advertised-listeners {}://HOST:PORT to an address they can reach",
                    listener.name
                ),
            );
            continue;
        }
        let target = format!("{host}:{port}");
        let resolved = tokio::time::timeout(CHECK_TIMEOUT, tokio::net::lookup_host(target.clone()))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|mut addrs| addrs.next().is_some());
        if resolved {
            report.add(Status::Ok, &check, format!("clients connect to {target}"));
        } else {
            report.add(
                Status::Fail,
                &check,
                format!("{host} does not resolve here; clients will not reach {target}"),
            );
        }
    }
}

/// The TLS files the listeners would serve with, and the OAUTHBEARER signing keys.
async fn security(args: &ServeArgs, report: &mut Report) {
    use crate::config::{SaslMechanism, SecurityProtocol};
    let kafka = args.kafka_listeners().unwrap_or_default();
    if kafka.iter().any(|l| {
        matches!(
            l.protocol,
            SecurityProtocol::Ssl | SecurityProtocol::SaslSsl
        )
    }) {
        // (validate() built the acceptor already; this says what it serves.)
        match crate::security::tls::keystore_chain(&args.tls) {
            Ok(chain) => {
                // (keystore_chain refuses an empty chain.)
                let (detail, expired) = match x509_parser::parse_x509_certificate(&chain[0]) {
                    Ok((_, cert)) => {
                        let not_after = cert.validity().not_after;
                        // The DN as principal mapping rules see it.
                        let subject = crate::security::principal::subject_dn(&chain[0])
                            .unwrap_or_else(|| cert.subject().to_string());
                        (
                            format!("{subject} valid until {not_after}"),
                            not_after.timestamp() < SystemClock.now_ms() / 1000,
                        )
                    }
                    Err(_) => (format!("{} certificates", chain.len()), false),
                };
                report.add(
                    if expired { Status::Fail } else { Status::Ok },
                    "tls certificate",
                    if expired {
                        format!("expired: {detail}; renew --ssl-keystore-location")
                    } else {
                        detail
                    },
                );
            }
            Err(error) => report.add(Status::Fail, "tls certificate", format!("{error:#}")),
        }
    }
    if args
        .sasl
        .sasl_enabled_mechanisms
        .contains(&SaslMechanism::OauthBearer)
    {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let fetched =
            match crate::security::oauth::TokenValidator::new(&args.sasl.oauthbearer, clock) {
                Ok(Some(validator)) => tokio::time::timeout(CHECK_TIMEOUT, validator.fetch_keys())
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {CHECK_TIMEOUT:?}"))),
                Ok(None) => Err(anyhow::anyhow!(
                    "--sasl-oauthbearer-jwks-endpoint-url is not set"
                )),
                Err(error) => Err(error),
            };
        let url = args
            .sasl
            .oauthbearer
            .sasl_oauthbearer_jwks_endpoint_url
            .as_deref()
            .unwrap_or("");
        match fetched {
            Ok(0) => report.add(
                Status::Fail,
                "oauthbearer keys",
                format!("{url} publishes no key that can check signatures"),
            ),
            Ok(count) => report.add(
                Status::Ok,
                "oauthbearer keys",
                format!("{count} signing keys from {url}"),
            ),
            Err(error) => report.add(Status::Fail, "oauthbearer keys", format!("{error:#}")),
        }
    }
}

async fn metadata(args: &ServeArgs, report: &mut Report) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let what = match &args.store.etcd_endpoints {
        Some(endpoints) => format!("etcd at {endpoints}"),
        None => format!("embedded in {}", args.store.data_dir.join("meta").display()),
    };
    let opened = tokio::time::timeout(
        CHECK_TIMEOUT,
        storage::open_metadata_store(&args.store, clock),
    )
    .await;
    let store = match opened {
        Ok(Ok((store, _))) => store,
        Ok(Err(error)) => {
            report.add(Status::Fail, "metadata store", format!("{what}: {error:#}"));
            return;
        }
        Err(_) => {
            report.add(
                Status::Fail,
                "metadata store",
                format!("{what}: no answer within {CHECK_TIMEOUT:?}"),
            );
            return;
        }
    };
    let started = Instant::now();
    match tokio::time::timeout(CHECK_TIMEOUT, store.range_prefix(&brokers_prefix(), 1_000)).await {
        Ok(Ok(brokers)) => report.add(
            Status::Ok,
            "metadata store",
            format!(
                "{what}: {} broker(s) registered, read in {} ms",
                brokers.len(),
                started.elapsed().as_millis()
            ),
        ),
        Ok(Err(error)) => report.add(Status::Fail, "metadata store", format!("{what}: {error}")),
        Err(_) => report.add(
            Status::Fail,
            "metadata store",
            format!("{what}: a read took longer than {CHECK_TIMEOUT:?}"),
        ),
    }
}

async fn bucket(args: &ServeArgs, report: &mut Report) {
    let what = match &args.store.object_store_url {
        Some(url) if !url.is_empty() => url.clone(),
        _ => format!(
            "local directory {}",
            args.store.data_dir.join("objects").display()
        ),
    };
    let objects = match storage::open_object_store(&args.store) {
        Ok((objects, _)) => objects,
        Err(error) => {
            report.add(Status::Fail, "object store", format!("{what}: {error:#}"));
            return;
        }
    };
    let started = Instant::now();
    match tokio::time::timeout(CHECK_TIMEOUT, probe(&*objects)).await {
        Ok(Ok(last_modified_ms)) => {
            report.add(
                Status::Ok,
                "object store",
                format!(
                    "{what}: a probe object written, read back, listed and deleted in {} ms",
                    started.elapsed().as_millis()
                ),
            );
            clock(&what, last_modified_ms, report);
        }
        Ok(Err(error)) => {
            let mut detail = format!("{what}: {error}");
            // object_store falls back to the cloud's instance metadata for credentials.
            if detail.contains("169.254.169.254") {
                detail.push_str(
                    "; no credentials were given (--s3-access-key-id and --s3-secret-access-key, \
                     or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) and the cloud's instance \
                     metadata did not provide any",
                );
            }
            report.add(Status::Fail, "object store", detail);
        }
        Err(_) => report.add(
            Status::Fail,
            "object store",
            format!("{what}: no answer within {CHECK_TIMEOUT:?}"),
        ),
    }
}

/// Writes, reads back, lists and deletes a probe object; the bucket's time of the write.
async fn probe(objects: &dyn ObjectStore) -> anyhow::Result<i64> {
    let key = paths::new_doctor_probe(SystemClock.now_ms());
    let body = Bytes::from(format!("skiff doctor probe {key}"));
    objects
        .put(&key, PutPayload::from(body.clone()))
        .await
        .map_err(|e| match e {
            // S3 answers a PUT into a missing bucket with 404 (NoSuchBucket).
            object_store::Error::NotFound { .. } => anyhow::anyhow!(
                "the bucket does not exist (writing {key} was answered 404 Not Found)"
            ),
            e => anyhow::anyhow!("cannot write {key}: {e}"),
        })?;
    let read = async {
        let got = objects
            .get(&key)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read back {key}: {e}"))?;
        let last_modified_ms = got.meta.last_modified.timestamp_millis();
        let bytes = got
            .bytes()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read back {key}: {e}"))?;
        if bytes != body {
            anyhow::bail!("{key} read back differs from what was written");
        }
        use futures::TryStreamExt;
        let prefix = object_store::path::Path::from(paths::DOCTOR_PREFIX);
        let listed: Vec<_> = objects
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot list {prefix}/: {e}"))?;
        if !listed.iter().any(|m| m.location == key) {
            anyhow::bail!("{key} was written but a listing of {prefix}/ does not show it");
        }
        Ok(last_modified_ms)
    }
    .await;
    // Deleted whatever the checks found (garbage collection would never list it).
    let deleted = objects
        .delete(&key)
        .await
        .map_err(|e| anyhow::anyhow!("cannot delete {key}: {e}"));
    let last_modified_ms = read?;
    deleted?;
    Ok(last_modified_ms)
}

fn clock(what: &str, bucket_ms: i64, report: &mut Report) {
    let skew_ms = SystemClock.now_ms() - bucket_ms;
    // Last-Modified has a resolution of a second, and the request took some time.
    let detail = format!("this machine's clock is {skew_ms} ms ahead of {what}'s");
    if skew_ms.abs() >= SKEW_FAIL_MS {
        report.add(
            Status::Fail,
            "clock",
            format!("{detail}; synchronise it (NTP)"),
        );
    } else if skew_ms.abs() >= SKEW_WARN_MS {
        report.add(Status::Warn, "clock", format!("{detail}; check NTP"));
    } else {
        report.add(Status::Ok, "clock", detail);
    }
}
