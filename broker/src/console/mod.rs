//! The web console, served by every broker at `/` on its HTTP port: brokers and partition
//! leadership, topics and their configs, a message browser, consumer groups with members,
//! assignments and lag, and the bucket's request counts over time. The page and its script are
//! embedded in the binary (`assets/`), so it works without internet access.
//!
//! The page reads the admin API (`/v1/brokers`, `/v1/topics`, `/v1/groups`, `/v1/stats`) and
//! `/v1/records`, and changes things through `POST /v1/topics`, `DELETE /v1/topics/{name}`,
//! `POST /v1/topics/{name}/configs` and `POST /v1/groups/{group}/reset-offsets`. All of these
//! act as a Kafka client of this cluster (bootstrapped from this broker's own listener, with
//! the admin commands' code), so any broker can show and change anything, exactly as
//! `skiff topic …` / `skiff group …` would. The changing routes take JSON bodies only, which a
//! page of another origin cannot send without the browser asking first (CORS), so a visited
//! site cannot drive them.
//!
//! Who the console acts as is the HTTP caller (`crate::http_auth`): with
//! `--http-authentication required` its Kafka requests log in to this broker's SASL_PLAINTEXT
//! listener (else its SASL_SSL one, trusting exactly the certificate it serves, and other
//! brokers' certificates by the CAs of `--ssl-truststore-location`) with the
//! caller's own credentials (PLAIN, else SCRAM, with a password; OAUTHBEARER
//! with a token), so the broker's ACLs judge them exactly as any client's; without, they go to
//! the PLAINTEXT listener as User:ANONYMOUS.

use crate::admin::client::Client;
use crate::admin::group::{commit, parse_datetime, plan_reset, Target};
use crate::admin::security::{Protocol, SecurityArgs};
use crate::admin::topic::{alter_configs, create_topics, delete_topics, CreateSpec, ItemResult};
use crate::admin::{browse, ClientArgs, Output, Start};
use crate::config::SaslMechanism;
use crate::http_auth::{Caller, Credential};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Json};
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

const INDEX: &str = include_str!("assets/index.html");
const APP: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// Records the message browser shows at most per page.
const RECORDS_PER_PAGE_MAX: usize = 500;

/// This broker's own Kafka listeners, as a client reaches them from here.
#[derive(Clone, Debug, Default)]
pub struct LocalKafka {
    /// A PLAINTEXT listener (anonymous callers).
    pub plaintext: Option<String>,
    /// A SASL_PLAINTEXT listener (callers who logged in).
    pub sasl_plaintext: Option<String>,
    /// Else a SASL_SSL listener, and its acceptor: the certificates it serves are trusted as
    /// they are.
    pub sasl_ssl: Option<(
        String,
        std::sync::Arc<crate::security::tls::ReloadingAcceptor>,
    )>,
    /// `--ssl-truststore-location`: over SASL_SSL, the CAs other brokers' certificates (a
    /// partition's leader elsewhere) are checked against, with the name they advertise.
    pub truststore: Option<std::path::PathBuf>,
    /// `--sasl-enabled-mechanisms`.
    pub mechanisms: Vec<SaslMechanism>,
}

#[derive(Clone)]
struct ConsoleState {
    local: LocalKafka,
}

/// The console's routes.
pub fn routes(local: LocalKafka) -> Router {
    Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route(
            "/console/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    APP,
                )
            }),
        )
        .route(
            "/console/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }),
        )
        .merge(
            Router::new()
                .route("/v1/records", get(records))
                .route("/v1/topics", post(create_topic))
                .route("/v1/topics/{name}", delete(delete_topic))
                .route("/v1/topics/{name}/configs", post(alter_topic_configs))
                .route("/v1/groups/{group}/reset-offsets", post(reset_offsets))
                .route_layer(axum::middleware::from_fn(needs_a_login)),
        )
        .with_state(ConsoleState { local })
}

/// The console's Kafka requests log in as their caller with its password or token: a caller
/// known only by a client certificate has nothing to log in with, and is told so (403, not a
/// 503 that says to retry).
async fn needs_a_login(
    caller: Option<Extension<Caller>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if matches!(
        caller.as_ref().map(|c| &c.0.credential),
        Some(Credential::Certificate)
    ) {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({
                "error": "the console's Kafka requests log in as the caller with a password or \
                          a token; a client certificate shows the admin views only"
            })),
        )
            .into_response();
    }
    next.run(request).await
}

#[derive(Debug, Deserialize)]
struct RecordsQuery {
    topic: String,
    partition: i32,
    offset: Option<i64>,
    /// Milliseconds since the epoch.
    timestamp: Option<i64>,
    limit: Option<usize>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `/v1/records?topic=T&partition=P[&offset=O|&timestamp=MS][&limit=N]`: records with keys,
/// values and header values as hex (the page shows them as text, JSON or hex).
async fn records(
    State(state): State<ConsoleState>,
    caller: Option<Extension<Caller>>,
    Query(query): Query<RecordsQuery>,
) -> impl IntoResponse {
    let start = match (query.offset, query.timestamp) {
        (Some(offset), _) => Start::Offset(offset),
        (None, Some(ms)) => Start::Timestamp(ms),
        (None, None) => Start::Earliest,
    };
    let limit = query.limit.unwrap_or(50).clamp(1, RECORDS_PER_PAGE_MAX);
    let args = match client_args(&state, caller.as_ref()) {
        Ok(args) => args,
        Err(error) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": format!("{error:#}") })),
            )
        }
    };
    match browse(&args, &query.topic, query.partition, start, limit).await {
        Ok((offset, records)) => {
            let records: Vec<_> = records
                .iter()
                .map(|r| {
                    json!({
                        "offset": r.offset,
                        "timestamp": r.timestamp,
                        "key": r.key.as_deref().map(hex),
                        "value": r.value.as_deref().map(hex),
                        "headers": r.headers.iter()
                            .map(|h| json!([String::from_utf8_lossy(&h.key), h.value.as_deref().map(hex)]))
                            .collect::<Vec<_>>(),
                    })
                })
                .collect();
            (
                StatusCode::OK,
                Json(json!({ "start_offset": offset, "records": records })),
            )
        }
        Err(error) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("{error:#}") })),
        ),
    }
}

/// How long the console's Kafka requests may take.
const REQUEST_TIMEOUT_MS: u64 = 30_000;

/// How the console's Kafka requests reach this broker as the caller.
fn client_args(
    state: &ConsoleState,
    caller: Option<&Extension<Caller>>,
) -> anyhow::Result<ClientArgs> {
    let mut security = SecurityArgs::plaintext();
    let credential = caller.map_or(&Credential::Anonymous, |c| &c.0.credential);
    let local = &state.local;
    // SASL_PLAINTEXT if there is one, else SASL_SSL trusting this broker's own certificate
    // (and other brokers' by the truststore's CAs).
    let sasl_listener = |security: &mut SecurityArgs| {
        if let Some(listener) = &local.sasl_plaintext {
            security.security_protocol = Protocol::SaslPlaintext;
            return Ok(listener.clone());
        }
        match &local.sasl_ssl {
            Some((listener, acceptor)) => {
                security.security_protocol = Protocol::SaslSsl;
                security.pinned_certificates = acceptor.certificates();
                security.ssl_ca_location = local.truststore.clone();
                Ok(listener.clone())
            }
            None => Err(anyhow::anyhow!(
                "the console acts as its logged-in caller on a SASL_PLAINTEXT or SASL_SSL Kafka \
                 listener of this broker, and there is none (see --listeners)"
            )),
        }
    };
    let bootstrap = match credential {
        Credential::Anonymous => local.plaintext.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "the console needs a PLAINTEXT Kafka listener on this broker, or \
                 --http-authentication required and a SASL_PLAINTEXT one (see --listeners)"
            )
        })?,
        Credential::Password { user, password } => {
            // PLAIN costs the least (one PBKDF2, on the broker), and crosses only loopback.
            security.sasl_mechanism = [
                SaslMechanism::Plain,
                SaslMechanism::ScramSha512,
                SaslMechanism::ScramSha256,
            ]
            .into_iter()
            .find(|m| local.mechanisms.contains(m))
            .ok_or_else(|| {
                anyhow::anyhow!("no password mechanism is in --sasl-enabled-mechanisms")
            })?;
            security.sasl_username = Some(user.clone());
            security.sasl_password = Some(password.clone());
            sasl_listener(&mut security)?
        }
        Credential::Certificate => anyhow::bail!(
            "the console's Kafka requests log in as the caller with a password or a token; \
             a client certificate shows the admin views only"
        ),
        Credential::Token(token) => {
            anyhow::ensure!(
                local.mechanisms.contains(&SaslMechanism::OauthBearer),
                "a Bearer token needs OAUTHBEARER in --sasl-enabled-mechanisms"
            );
            security.sasl_mechanism = SaslMechanism::OauthBearer;
            security.sasl_oauthbearer_token = Some(token.clone());
            sasl_listener(&mut security)?
        }
    };
    Ok(ClientArgs {
        command_config: None,
        bootstrap_server: bootstrap,
        client_id: "skiff-console".to_owned(),
        security,
        request_timeout_ms: REQUEST_TIMEOUT_MS,
        output: Output::Json,
    })
}

async fn client(
    state: &ConsoleState,
    caller: Option<&Extension<Caller>>,
) -> anyhow::Result<Client> {
    Client::connect(&client_args(state, caller)?).await
}

/// 200 with the per-item results when all succeeded, 400 with them (and the first error) when
/// one failed, 503 when the cluster could not be asked.
fn answer(outcome: anyhow::Result<Vec<ItemResult>>) -> (StatusCode, Json<serde_json::Value>) {
    match outcome {
        Ok(results) => {
            let error = results.iter().find_map(|r| r.error.clone());
            let status = if error.is_some() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            (status, Json(json!({ "results": results, "error": error })))
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": format!("{error:#}") })),
        ),
    }
}

#[derive(Debug, Deserialize)]
struct NewTopic {
    name: String,
    partitions: Option<i32>,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

async fn create_topic(
    State(state): State<ConsoleState>,
    caller: Option<Extension<Caller>>,
    Json(topic): Json<NewTopic>,
) -> impl IntoResponse {
    let spec = CreateSpec {
        topics: vec![topic.name],
        partitions: topic.partitions,
        replication_factor: None,
        configs: topic.configs.into_iter().collect(),
        if_not_exists: false,
        dry_run: false,
    };
    let timeout_ms = i32::try_from(REQUEST_TIMEOUT_MS).unwrap_or(i32::MAX);
    answer(
        async {
            create_topics(
                &mut client(&state, caller.as_ref()).await?,
                &spec,
                timeout_ms,
            )
            .await
        }
        .await,
    )
}

async fn delete_topic(
    State(state): State<ConsoleState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
) -> impl IntoResponse {
    let timeout_ms = i32::try_from(REQUEST_TIMEOUT_MS).unwrap_or(i32::MAX);
    answer(
        async {
            delete_topics(
                &mut client(&state, caller.as_ref()).await?,
                &[name],
                timeout_ms,
            )
            .await
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
struct ConfigChange {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    delete: Vec<String>,
}

async fn alter_topic_configs(
    State(state): State<ConsoleState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    Json(change): Json<ConfigChange>,
) -> impl IntoResponse {
    if change.set.is_empty() && change.delete.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "nothing to change: give configs to set or delete" })),
        );
    }
    let set: Vec<(String, String)> = change.set.into_iter().collect();
    answer(
        async {
            alter_configs(
                &mut client(&state, caller.as_ref()).await?,
                &[name],
                &set,
                &change.delete,
                false,
            )
            .await
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
struct ResetRequest {
    /// A topic, or `topic:0,2`; none for every partition the group has offsets for.
    topic: Option<String>,
    /// earliest, latest, offset, datetime or shift.
    to: String,
    value: Option<String>,
    #[serde(default)]
    execute: bool,
}

fn reset_target(request: &ResetRequest) -> anyhow::Result<Target> {
    let value = || {
        request
            .value
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("\"{}\" needs a value", request.to))
    };
    let number = |v: &str| {
        v.trim()
            .parse::<i64>()
            .map_err(|_| anyhow::anyhow!("{v:?} is not a number"))
    };
    Ok(match request.to.as_str() {
        "earliest" => Target::Earliest,
        "latest" => Target::Latest,
        "offset" => Target::Offset(number(value()?)?),
        "shift" => Target::Shift(number(value()?)?),
        "datetime" => Target::Time(parse_datetime(value()?)?),
        other => {
            anyhow::bail!("unknown target {other:?}: earliest, latest, offset, datetime or shift")
        }
    })
}

/// Plans (and with `execute`, commits) a reset of an inactive group's offsets, as
/// `skiff group reset-offsets` does.
async fn reset_offsets(
    State(state): State<ConsoleState>,
    caller: Option<Extension<Caller>>,
    Path(group): Path<String>,
    Json(request): Json<ResetRequest>,
) -> impl IntoResponse {
    let outcome = async {
        let target = reset_target(&request)?;
        let mut client = client(&state, caller.as_ref()).await?;
        let topics: Vec<String> = request.topic.iter().cloned().collect();
        let (coordinator, plan) = plan_reset(&mut client, &group, &topics, target).await?;
        let failures = if request.execute {
            commit(&mut client, coordinator, &group, &plan).await?
        } else {
            Vec::new()
        };
        anyhow::Ok(json!({
            "group": group,
            "executed": request.execute,
            "offsets": plan,
            "failures": failures,
        }))
    }
    .await;
    match outcome {
        Ok(body) => (StatusCode::OK, Json(body)),
        Err(error) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("{error:#}") })),
        ),
    }
}
