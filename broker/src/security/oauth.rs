//! OAUTHBEARER logins (RFC 7628): the client sends a JWT its identity provider signed, the
//! broker checks it against the keys the provider publishes (a JWKS document) and the
//! expected claims, as Kafka's broker-side JWT validation (KIP-768) does:
//!
//! - a JWS signed with an asymmetric algorithm (RS*, PS*, ES256/384, EdDSA) by one of the
//!   published keys, chosen by the token's `kid` (or the only key when the token names none);
//!   `alg: none` and shared-secret (HS*) tokens are refused;
//! - `exp` and `iat` present, `exp` not passed and `nbf` (if any) reached, within
//!   `--sasl-oauthbearer-clock-skew-seconds`, on the broker's clock;
//! - `iss` and `aud` as expected when those are set;
//! - the subject claim (`sub`, or `--sasl-oauthbearer-sub-claim-name`) names the principal,
//!   `User:<subject>`; an authorization id in the message must be the same.
//!
//! The session lasts until the token expires (or `--connections-max-reauth-ms`, if
//! shorter): the client logs in again with a fresh token on the same connection (KIP-368) or
//! is disconnected. Kafka lets a connection outlive its token unless re-authentication is on;
//! a leaked, expired token opening a long-lived connection is what token expiry is for.
//!
//! Keys are fetched at start, every `--sasl-oauthbearer-jwks-endpoint-refresh-ms`, and when a
//! token names a key not yet seen (providers publish a new key before signing with it), at
//! most once every [`UNKNOWN_KEY_REFETCH_MS`]. A failed fetch keeps the keys already known.

use crate::config::OauthBearerArgs;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use skiff_tiering::clock::Clock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Fewest milliseconds between two fetches of the keys that tokens naming an unknown key
/// cause: a flood of made-up key ids cannot turn into a flood of requests to the provider.
pub const UNKNOWN_KEY_REFETCH_MS: i64 = 5_000;
/// How long fetching the keys may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How soon a failed fetch of the keys is tried again.
const FAILED_FETCH_RETRY: Duration = Duration::from_secs(10);
/// The largest JWKS document read.
const JWKS_BYTES_MAX: usize = 1024 * 1024;

/// Why a token was refused: logged; the client is told the same words (none is a secret).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed OAUTHBEARER message (RFC 7628 client response expected)")]
    Malformed,
    #[error("the token is not a signed JWT: {0}")]
    NotJws(String),
    #[error("tokens signed with {0:?} are not accepted (asymmetric algorithms only)")]
    Algorithm(Algorithm),
    #[error("no published key has id {0:?}")]
    UnknownKey(String),
    #[error("the token names no key id and several keys are published")]
    NoKeyId,
    #[error("no signing keys are loaded: {0}")]
    NoKeys(String),
    #[error("the token's signature does not verify with the published key {0:?}")]
    Signature(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token lacks the {0:?} claim")]
    MissingClaim(String),
    #[error("the token's issuer is not the expected one")]
    Issuer,
    #[error("the token is not meant for this audience")]
    Audience,
    #[error("the authorization id differs from the token's subject")]
    AuthorizationId,
}

/// The client's one message: `n,[a=authzid],^Aauth=Bearer <token>^A[key=value^A...]^A`.
#[derive(Debug, PartialEq, Eq)]
pub struct InitialResponse {
    pub token: String,
    pub authzid: Option<String>,
}

/// Parses the client's message (RFC 7628 section 3.1; SASL extensions, KIP-342, are read
/// past).
pub fn parse_initial_response(message: &[u8]) -> Result<InitialResponse, TokenError> {
    let text = std::str::from_utf8(message).map_err(|_| TokenError::Malformed)?;
    // gs2-header: channel binding is not supported ("n"), or supported by the client only ("y").
    let rest = text
        .strip_prefix("n,")
        .or_else(|| text.strip_prefix("y,"))
        .ok_or(TokenError::Malformed)?;
    let (authzid, rest) = rest.split_once(',').ok_or(TokenError::Malformed)?;
    let authzid = match authzid {
        "" => None,
        a => Some(
            a.strip_prefix("a=")
                .ok_or(TokenError::Malformed)?
                .replace("=2C", ",")
                .replace("=3D", "="),
        ),
    };
    let pairs = rest
        .strip_prefix('\u{1}')
        .and_then(|r| r.strip_suffix('\u{1}'))
        .ok_or(TokenError::Malformed)?;
    if !pairs.is_empty() && !pairs.ends_with('\u{1}') {
        return Err(TokenError::Malformed);
    }
    let mut token = None;
    for pair in pairs.split_terminator('\u{1}') {
        let (key, value) = pair.split_once('=').ok_or(TokenError::Malformed)?;
        if key == "auth" {
            // RFC 6750: the scheme is case-insensitive, one or more spaces before the token.
            let (scheme, credentials) = value.split_once(' ').ok_or(TokenError::Malformed)?;
            let credentials = credentials.trim_start_matches(' ');
            if !scheme.eq_ignore_ascii_case("Bearer") || credentials.is_empty() {
                return Err(TokenError::Malformed);
            }
            token = Some(credentials.to_owned());
        }
    }
    Ok(InitialResponse {
        token: token.ok_or(TokenError::Malformed)?,
        authzid,
    })
}

/// A token that passed: who it names and until when it holds.
#[derive(Debug, PartialEq, Eq)]
pub struct ValidToken {
    pub subject: String,
    /// `exp`, in milliseconds since the epoch.
    pub expires_at_ms: i64,
}

/// Where the keys come from.
#[derive(Debug)]
enum KeySource {
    File(std::path::PathBuf),
    Http(reqwest::Client, String),
}

/// One published key that can check signatures.
struct Key {
    decoding: DecodingKey,
    /// The key's `alg`, when it names one: tokens must use it.
    algorithm: Option<Algorithm>,
}

#[derive(Default)]
struct Keys {
    by_id: HashMap<String, Arc<Key>>,
    /// Keys without a `kid`.
    unnamed: Vec<Arc<Key>>,
    /// Why the latest fetch failed, while no keys were ever loaded.
    error: Option<String>,
}

/// Checks OAUTHBEARER tokens.
pub struct TokenValidator {
    source: KeySource,
    keys: RwLock<Keys>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    /// When the latest fetch started, in milliseconds since the epoch.
    fetched_at_ms: AtomicI64,
    audience: Vec<String>,
    issuer: Option<String>,
    subject_claim: String,
    skew_ms: i64,
    /// How often the keys are fetched again.
    pub refresh: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for TokenValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenValidator")
            .field("source", &self.source)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenValidator {
    /// A validator for the settings; `None` without a JWKS URL (checked at start when
    /// OAUTHBEARER is enabled). Fetches nothing yet: see [`TokenValidator::fetch_keys`].
    pub fn new(
        args: &OauthBearerArgs,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Option<TokenValidator>> {
        let Some(url) = &args.sasl_oauthbearer_jwks_endpoint_url else {
            return Ok(None);
        };
        let source = if let Some(path) = url.strip_prefix("file:") {
            // file:///abs/path, file:/abs/path and file:relative all name a local file.
            let path = path.strip_prefix("//").unwrap_or(path);
            KeySource::File(path.into())
        } else if url.starts_with("https://") || url.starts_with("http://") {
            let client = reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .build()
                .map_err(|e| anyhow::anyhow!("cannot make an HTTP client for the JWKS: {e}"))?;
            KeySource::Http(client, url.clone())
        } else {
            anyhow::bail!(
                "--sasl-oauthbearer-jwks-endpoint-url must be an https://, http:// or file: URL, \
                 not {url:?}"
            );
        };
        Ok(Some(TokenValidator {
            source,
            keys: RwLock::new(Keys::default()),
            fetching: tokio::sync::Mutex::new(()),
            fetched_at_ms: AtomicI64::new(i64::MIN),
            audience: args
                .sasl_oauthbearer_expected_audience
                .iter()
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
            issuer: args.sasl_oauthbearer_expected_issuer.clone(),
            subject_claim: args.sasl_oauthbearer_sub_claim_name.clone(),
            skew_ms: i64::try_from(args.sasl_oauthbearer_clock_skew_seconds)
                .unwrap_or(i64::MAX / 2000)
                .saturating_mul(1000),
            refresh: Duration::from_millis(args.sasl_oauthbearer_jwks_endpoint_refresh_ms.max(1)),
            clock,
        }))
    }

    /// Fetches the published keys and replaces the known ones; returns how many can check
    /// signatures. On failure the keys already known stay.
    pub async fn fetch_keys(&self) -> anyhow::Result<usize> {
        let _one = self.fetching.lock().await;
        self.fetched_at_ms
            .store(self.clock.now_ms(), Ordering::Relaxed);
        let result = self.read_jwks().await.and_then(|text| {
            let set: JwkSet = serde_json::from_slice(&text)
                .map_err(|e| anyhow::anyhow!("the JWKS is not a JSON Web Key Set: {e}"))?;
            Ok(usable_keys(&set))
        });
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(fresh) => {
                let count = fresh.by_id.len() + fresh.unnamed.len();
                *keys = fresh;
                Ok(count)
            }
            Err(error) => {
                if keys.by_id.is_empty() && keys.unnamed.is_empty() {
                    keys.error = Some(error.to_string());
                }
                Err(error)
            }
        }
    }

    async fn read_jwks(&self) -> anyhow::Result<Vec<u8>> {
        match &self.source {
            KeySource::File(path) => {
                let text = tokio::fs::read(path)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                anyhow::ensure!(
                    text.len() <= JWKS_BYTES_MAX,
                    "{} is over {JWKS_BYTES_MAX} bytes",
                    path.display()
                );
                Ok(text)
            }
            KeySource::Http(client, url) => {
                let mut response = client
                    .get(url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| anyhow::anyhow!("cannot fetch {url}: {e}"))?;
                let mut text = Vec::new();
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot fetch {url}: {e}"))?
                {
                    text.extend_from_slice(&chunk);
                    anyhow::ensure!(
                        text.len() <= JWKS_BYTES_MAX,
                        "{url} answered over {JWKS_BYTES_MAX} bytes"
                    );
                }
                Ok(text)
            }
        }
    }

    /// Fetches the keys now (before the listeners serve: a token is not refused for want of
    /// keys the provider would have given), then every `refresh`, and every
    /// [`FAILED_FETCH_RETRY`] while fetches fail, until the process ends.
    pub async fn start_refreshing(self: &Arc<Self>) {
        let mut failed = self.fetch_and_log().await.is_err();
        let validator = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let wait = if failed {
                    FAILED_FETCH_RETRY.min(validator.refresh)
                } else {
                    validator.refresh
                };
                tokio::time::sleep(wait).await;
                failed = validator.fetch_and_log().await.is_err();
            }
        });
    }

    async fn fetch_and_log(&self) -> anyhow::Result<usize> {
        let fetched = self.fetch_keys().await;
        match &fetched {
            Ok(count) => tracing::debug!(keys = count, "OAUTHBEARER signing keys fetched"),
            Err(error) => tracing::error!(
                error = %format!("{error:#}"),
                "cannot fetch the OAUTHBEARER signing keys; retrying"
            ),
        }
        fetched
    }

    /// Checks a token: signature, then claims.
    pub async fn validate(&self, token: &str) -> Result<ValidToken, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::NotJws(e.to_string()))?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(TokenError::Algorithm(header.alg));
        }
        let key = match self.key(header.kid.as_deref()) {
            Err(TokenError::UnknownKey(_)) if self.may_refetch() => {
                if let Err(error) = self.fetch_keys().await {
                    tracing::warn!(%error, "cannot fetch the OAUTHBEARER signing keys");
                }
                self.key(header.kid.as_deref())?
            }
            found => found?,
        };
        if key.algorithm.is_some_and(|a| a != header.alg) {
            return Err(TokenError::Algorithm(header.alg));
        }
        let mut validation = Validation::new(header.alg);
        // The claims are checked below, on the broker's clock.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, Value>>(
            token,
            &key.decoding,
            &validation,
        )
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature
            | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                TokenError::Signature(header.kid.clone().unwrap_or_default())
            }
            _ => TokenError::NotJws(e.to_string()),
        })?
        .claims;
        self.check_claims(&claims)
    }

    fn may_refetch(&self) -> bool {
        self.clock
            .now_ms()
            .saturating_sub(self.fetched_at_ms.load(Ordering::Relaxed))
            >= UNKNOWN_KEY_REFETCH_MS
    }

    fn key(&self, kid: Option<&str>) -> Result<Arc<Key>, TokenError> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        if keys.by_id.is_empty() && keys.unnamed.is_empty() {
            return Err(TokenError::NoKeys(
                keys.error
                    .clone()
                    .unwrap_or_else(|| "none published".to_owned()),
            ));
        }
        match kid {
            Some(kid) => keys
                .by_id
                .get(kid)
                .cloned()
                .ok_or_else(|| TokenError::UnknownKey(kid.to_owned())),
            None => match (keys.by_id.len(), keys.unnamed.as_slice()) {
                (0, [only]) => Ok(only.clone()),
                (1, []) => Ok(keys.by_id.values().next().cloned().expect("one key")),
                _ => Err(TokenError::NoKeyId),
            },
        }
    }

    /// `exp`, `iat`, `nbf`, `iss`, `aud` and the subject, against the broker's clock.
    fn check_claims(
        &self,
        claims: &serde_json::Map<String, Value>,
    ) -> Result<ValidToken, TokenError> {
        let seconds = |name: &str| -> Result<Option<i64>, TokenError> {
            match claims.get(name) {
                None => Ok(None),
                // NumericDate: seconds, possibly with a fraction.
                Some(Value::Number(n)) => n
                    .as_f64()
                    .map(|s| Some((s * 1000.0) as i64))
                    .ok_or_else(|| TokenError::MissingClaim(name.to_owned())),
                Some(_) => Err(TokenError::MissingClaim(name.to_owned())),
            }
        };
        let now = self.clock.now_ms();
        let expires_at_ms =
            seconds("exp")?.ok_or_else(|| TokenError::MissingClaim("exp".to_owned()))?;
        seconds("iat")?.ok_or_else(|| TokenError::MissingClaim("iat".to_owned()))?;
        if now >= expires_at_ms.saturating_add(self.skew_ms) {
            return Err(TokenError::Expired);
        }
        if let Some(not_before) = seconds("nbf")? {
            if now < not_before.saturating_sub(self.skew_ms) {
                return Err(TokenError::NotYetValid);
            }
        }
        if let Some(issuer) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err(TokenError::Issuer);
            }
        }
        if !self.audience.is_empty() {
            let named: Vec<&str> = match claims.get("aud") {
                Some(Value::String(one)) => vec![one.as_str()],
                Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !named.iter().any(|a| self.audience.iter().any(|e| e == a)) {
                return Err(TokenError::Audience);
            }
        }
        let subject = claims
            .get(&self.subject_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| TokenError::MissingClaim(self.subject_claim.clone()))?;
        Ok(ValidToken {
            subject: subject.to_owned(),
            expires_at_ms,
        })
    }
}

/// The keys of a set that can check JWT signatures: public keys of an asymmetric kind, not
/// marked for encryption only. Others are read past (providers publish encryption keys too).
fn usable_keys(set: &JwkSet) -> Keys {
    let mut keys = Keys::default();
    for jwk in &set.keys {
        let Some(key) = usable_key(jwk) else {
            tracing::debug!(kid = ?jwk.common.key_id, "JWKS key skipped (not a signature key)");
            continue;
        };
        match &jwk.common.key_id {
            Some(kid) => {
                keys.by_id.insert(kid.clone(), Arc::new(key));
            }
            None => keys.unnamed.push(Arc::new(key)),
        }
    }
    keys
}

fn usable_key(jwk: &Jwk) -> Option<Key> {
    use jsonwebtoken::jwk::{AlgorithmParameters, PublicKeyUse};
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return None;
    }
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let algorithm = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => match alg.to_string().parse::<Algorithm>() {
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) | Err(_) => return None,
            Ok(alg) => Some(alg),
        },
    };
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        decoding,
        algorithm,
    })
}

#[cfg(test)]
mod tests;
