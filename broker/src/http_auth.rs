//! Who calls the HTTP admin API and the console. With `--http-authentication required` (the
//! default when a Kafka listener uses SASL) every route but the probes and the Prometheus
//! scrape ([`OPEN_PATHS`]) needs one of
//!
//! - `Authorization: Basic` with a SASL user's name and password, checked against the user's
//!   SCRAM credential as a PLAIN login is. A password once checked is remembered for
//!   [`CHECKED_PASSWORD_TTL_MS`] by an HMAC of user, password and the credential's stored key
//!   under a per-process key, so a console page's requests do not each cost a PBKDF2; the
//!   credential is read at every request, so a changed password or a deleted user takes
//!   effect at once;
//! - `Authorization: Bearer` with an OAUTHBEARER token, checked as an OAUTHBEARER login is;
//! - on HTTPS with `--ssl-client-auth` other than `none`, and no Authorization header: a client
//!   certificate verified in the handshake, its principal mapped as an SSL client's is.
//!
//! Anything else is answered 401 with both challenges (a browser then asks for a user name and
//! password), after `--connection-failed-authentication-delay-ms` when credentials were wrong;
//! failures are logged without the secret and counted (`skiff_http_authentications_total`).
//! The caller ([`Caller`]) goes into the request's extensions: the admin API's views filter by
//! what its principal may describe, and the console's Kafka requests log in as the caller, so
//! the broker's ACLs judge them as any client's. With `none`, every caller is User:ANONYMOUS.

use crate::config::Secret;
use crate::http_listener::HttpPeer;
use crate::security::sasl::{Authenticator, LoginError};
use crate::security::Principal;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::json;
use skiff_tiering::clock::Clock;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Routes open to every caller: liveness and readiness probes, and the Prometheus scrape
/// (metrics name topics and groups but hold no records; keep the port on the monitoring
/// network, or turn per-topic labels off with `--metrics-topic-labels false`).
pub const OPEN_PATHS: [&str; 3] = ["/health", "/ready", "/metrics"];
/// How long a checked password is remembered.
pub const CHECKED_PASSWORD_TTL_MS: i64 = 60_000;
/// Most passwords remembered at once (a full cache is emptied).
const CHECKED_PASSWORDS_MAX: usize = 1024;

/// The caller of an HTTP request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Principal,
    pub ip: IpAddr,
    pub credential: Credential,
}

/// What the caller showed, for the console's Kafka requests made on its behalf.
#[derive(Clone, Debug)]
pub enum Credential {
    /// `--http-authentication none`.
    Anonymous,
    Password {
        user: String,
        password: Secret,
    },
    Token(Secret),
    /// A client certificate verified by the HTTPS listener: nothing the console can log in
    /// with.
    Certificate,
}

/// Counts one checked caller: (scheme, success).
pub type Counter = Arc<dyn Fn(&'static str, bool) + Send + Sync>;

/// The middleware's state.
#[derive(Clone)]
pub struct HttpAuth {
    sasl: Arc<Authenticator>,
    clock: Arc<dyn Clock>,
    count: Counter,
    required: bool,
    inner: Arc<Checked>,
}

struct Checked {
    key: aws_lc_rs::hmac::Key,
    /// HMAC(user, password, stored key) → until when it is good, in milliseconds since the
    /// epoch.
    passwords: Mutex<HashMap<Vec<u8>, i64>>,
}

/// What the Authorization header held.
#[derive(Debug, PartialEq, Eq)]
enum Presented {
    Basic { user: String, password: String },
    Bearer(String),
}

fn parse(value: &str) -> Option<Presented> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("Basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        Some(Presented::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    } else if scheme.eq_ignore_ascii_case("Bearer") && !rest.is_empty() {
        Some(Presented::Bearer(rest.to_owned()))
    } else {
        None
    }
}

impl HttpAuth {
    /// The middleware of a process whose users `sasl` checks; `count` is told each result.
    pub fn new(
        sasl: Arc<Authenticator>,
        clock: Arc<dyn Clock>,
        count: Counter,
        required: bool,
    ) -> HttpAuth {
        HttpAuth {
            sasl,
            clock,
            count,
            required,
            inner: Arc::new(Checked {
                key: aws_lc_rs::hmac::Key::new(
                    aws_lc_rs::hmac::HMAC_SHA256,
                    &crate::security::scram::random_bytes(32),
                ),
                passwords: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Checks Basic credentials, or finds them checked lately against the same credential.
    async fn password(&self, user: &str, password: &str) -> Result<(), LoginError> {
        if !self.sasl.accepts_passwords() {
            return Err(LoginError::PasswordsDisabled);
        }
        let current = self.sasl.password_credential(user).await?;
        // (An unknown user is never remembered: its check below always fails.)
        let stored_key = current
            .as_ref()
            .map_or_else(String::new, |(_, c)| c.stored_key.clone());
        let tag = aws_lc_rs::hmac::sign(
            &self.inner.key,
            format!(
                "{}\0{user}\0{}\0{password}\0{stored_key}",
                user.len(),
                password.len()
            )
            .as_bytes(),
        )
        .as_ref()
        .to_vec();
        let now = self.now_ms();
        let remembered = self
            .inner
            .passwords
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tag)
            .is_some_and(|until| *until > now);
        if remembered {
            return Ok(());
        }
        self.sasl
            .check_password_against(user, password.as_bytes(), current)
            .await?;
        let mut passwords = self
            .inner
            .passwords
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if passwords.len() >= CHECKED_PASSWORDS_MAX {
            passwords.clear();
        }
        passwords.insert(tag, now + CHECKED_PASSWORD_TTL_MS);
        Ok(())
    }

    async fn caller(&self, presented: Presented, ip: IpAddr) -> Result<Caller, LoginError> {
        match presented {
            Presented::Basic { user, password } => {
                self.password(&user, &password).await?;
                Ok(Caller {
                    principal: Principal::user(&user),
                    ip,
                    credential: Credential::Password {
                        user,
                        password: Secret::new(password),
                    },
                })
            }
            Presented::Bearer(token) => {
                let valid = self.sasl.check_token(&token).await?;
                Ok(Caller {
                    principal: Principal::user(valid.subject),
                    ip,
                    credential: Credential::Token(Secret::new(token)),
                })
            }
        }
    }
}

/// The middleware: puts the [`Caller`] in the request, or answers 401.
pub async fn authenticate(
    State(auth): State<HttpAuth>,
    ConnectInfo(HttpPeer {
        addr: peer,
        certificate,
    }): ConnectInfo<HttpPeer>,
    mut request: Request,
    next: Next,
) -> Response {
    let ip = peer.ip();
    if !auth.required {
        request.extensions_mut().insert(Caller {
            principal: Principal::anonymous(),
            ip,
            credential: Credential::Anonymous,
        });
        return next.run(request).await;
    }
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().ok().and_then(parse));
    let presented = match (presented, certificate) {
        (None, Some(principal)) => {
            // A client certificate verified in the TLS handshake, and nothing else shown.
            (auth.count)("certificate", true);
            request.extensions_mut().insert(Caller {
                principal,
                ip,
                credential: Credential::Certificate,
            });
            return next.run(request).await;
        }
        (presented, _) => presented,
    };
    let presented = match presented {
        None => return challenge(
            "authentication required: HTTP Basic with a SASL user, Bearer, or a client certificate",
        ),
        Some(None) => {
            (auth.count)("none", false);
            return challenge("malformed Authorization header");
        }
        Some(Some(p)) => p,
    };
    let scheme = match presented {
        Presented::Basic { .. } => "basic",
        Presented::Bearer(_) => "bearer",
    };
    let user = match &presented {
        Presented::Basic { user, .. } => user.clone(),
        Presented::Bearer(_) => String::new(),
    };
    match auth.caller(presented, ip).await {
        Ok(caller) => {
            (auth.count)(scheme, true);
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(LoginError::Store(reason)) => {
            // The store is in trouble, not the caller's credentials: say so, at once.
            tracing::warn!(peer = %peer, reason = %reason, "HTTP authentication: credentials unreadable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": "credentials cannot be read now; retry" })),
            )
                .into_response()
        }
        Err(reason) => {
            (auth.count)(scheme, false);
            tracing::info!(
                peer = %peer,
                scheme,
                user,
                reason = %reason,
                path = request.uri().path(),
                "HTTP authentication failed"
            );
            tokio::time::sleep(auth.sasl.failure_delay()).await;
            challenge("invalid credentials")
        }
    }
}

fn challenge(message: &str) -> Response {
    let mut response =
        (StatusCode::UNAUTHORIZED, Json(json!({ "error": message }))).into_response();
    let headers = response.headers_mut();
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"skiff\", charset=\"UTF-8\""),
    );
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"skiff\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_headers_are_parsed() {
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert_eq!(
            parse(&basic("alice:pa:ss")),
            Some(Presented::Basic {
                user: "alice".to_owned(),
                password: "pa:ss".to_owned()
            })
        );
        assert_eq!(
            parse("bearer  a.b.c "),
            Some(Presented::Bearer("a.b.c".to_owned()))
        );
        for bad in [
            "",
            "Basic",
            "Basic !!!",
            &basic("no-colon"),
            "Bearer ",
            "Digest x",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
