//! Who is on the other end of a Kafka connection: TLS (`tls`), SASL logins (`sasl`, with SCRAM
//! in `scram`), and the per-connection [`Session`] that every request is handled in.
//!
//! A connection's principal is Kafka's: `User:ANONYMOUS` on PLAINTEXT and SSL listeners,
//! `User:<name>` once a SASL login succeeded. On a SASL listener nothing but ApiVersions,
//! SaslHandshake and SaslAuthenticate is served before that; once the session's lifetime
//! (`--connections-max-reauth-ms`) has passed, nothing but a re-authentication (KIP-368).

pub mod acl;
pub mod authorizer;
pub mod hashing;
pub mod oauth;
pub mod principal;
pub mod sasl;
pub mod scram;
pub mod tls;

use crate::config::SecurityProtocol;
use kafka_protocol::messages::ApiKey;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// Kafka's principal of a connection (`User:alice`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    pub name: String,
}

impl Principal {
    pub fn user(name: impl Into<String>) -> Principal {
        Principal { name: name.into() }
    }

    pub fn anonymous() -> Principal {
        Principal::user("ANONYMOUS")
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "User:{}", self.name)
    }
}

/// The listener a connection came in on.
#[derive(Debug)]
pub struct ListenerInfo {
    /// Kafka's listener name: Metadata answers with every broker's address for it.
    pub name: Arc<str>,
    pub protocol: SecurityProtocol,
}

/// One connection's security state.
#[derive(Debug)]
pub struct Session {
    pub listener: Arc<ListenerInfo>,
    pub peer: std::net::SocketAddr,
    state: Mutex<SessionState>,
}

#[derive(Debug)]
struct SessionState {
    /// `None` until a SASL login succeeded.
    principal: Option<Principal>,
    /// When the SASL session ends unless renewed by a re-authentication.
    expires_at: Option<Instant>,
    exchange: sasl::Exchange,
    /// After a SaslHandshake v0, the login's messages come as bare length-prefixed tokens, not
    /// SaslAuthenticate requests (until the login ends).
    raw_tokens: bool,
}

/// Whether a request may be served in the session's state.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Serve,
    /// The connection is closed, as Kafka closes it: `reason` is logged.
    Close(&'static str),
}

impl Session {
    pub fn new(listener: Arc<ListenerInfo>, peer: std::net::SocketAddr) -> Session {
        let principal = (!listener.protocol.sasl()).then(Principal::anonymous);
        Session {
            listener,
            peer,
            state: Mutex::new(SessionState {
                principal,
                expires_at: None,
                exchange: sasl::Exchange::Idle,
                raw_tokens: false,
            }),
        }
    }

    /// The session of a client that showed a certificate on an SSL listener: its principal
    /// is the certificate's (SASL listeners take the login's instead).
    pub fn with_certificate(self, principal: Principal) -> Session {
        if !self.listener.protocol.sasl() {
            self.state().principal = Some(principal);
        }
        self
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SessionState> {
        // A panic while holding this lock (none can happen: no code under it panics) would
        // leave plain data; go on with it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The authenticated principal (`None` before a SASL login).
    pub fn principal(&self) -> Option<Principal> {
        self.state().principal.clone()
    }

    /// Whether the connection has a principal (always on listeners without SASL).
    pub fn authenticated(&self) -> bool {
        self.state().principal.is_some()
    }

    /// Whether the next frame is a bare SASL token (a login begun with SaslHandshake v0).
    pub fn expects_raw_token(&self) -> bool {
        self.state().raw_tokens
    }

    /// Whether `api_key` may be served now.
    pub fn admit(&self, api_key: ApiKey, now: Instant) -> Admission {
        if matches!(
            api_key,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        ) {
            return Admission::Serve;
        }
        let state = self.state();
        if state.principal.is_none() {
            return Admission::Close("request before SASL authentication");
        }
        if state.expires_at.is_some_and(|at| now >= at) {
            return Admission::Close("SASL session expired without re-authentication");
        }
        Admission::Serve
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(protocol: SecurityProtocol) -> Session {
        Session::new(
            Arc::new(ListenerInfo {
                name: protocol.name().into(),
                protocol,
            }),
            "127.0.0.1:1".parse().expect("addr"),
        )
    }

    #[test]
    fn sasl_listeners_serve_only_the_login_before_it() {
        let now = Instant::now();
        let plain = session(SecurityProtocol::Plaintext);
        assert_eq!(plain.admit(ApiKey::Produce, now), Admission::Serve);
        assert_eq!(plain.principal(), Some(Principal::anonymous()));
        let sasl = session(SecurityProtocol::SaslSsl);
        assert_eq!(sasl.principal(), None);
        for key in [
            ApiKey::ApiVersions,
            ApiKey::SaslHandshake,
            ApiKey::SaslAuthenticate,
        ] {
            assert_eq!(sasl.admit(key, now), Admission::Serve);
        }
        assert!(matches!(
            sasl.admit(ApiKey::Metadata, now),
            Admission::Close(_)
        ));
        sasl.state().principal = Some(Principal::user("alice"));
        sasl.state().expires_at = Some(now + std::time::Duration::from_secs(1));
        assert_eq!(sasl.admit(ApiKey::Metadata, now), Admission::Serve);
        let later = now + std::time::Duration::from_secs(1);
        assert!(matches!(
            sasl.admit(ApiKey::Fetch, later),
            Admission::Close(_)
        ));
        assert_eq!(sasl.admit(ApiKey::SaslHandshake, later), Admission::Serve);
    }
}
