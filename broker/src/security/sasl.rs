//! SASL logins on SASL_PLAINTEXT and SASL_SSL listeners: SaslHandshake (the mechanism) then
//! SaslAuthenticate (v0-v2: the mechanism's messages), as Kafka's `SaslServerAuthenticator`.
//! After a SaslHandshake v0 (older clients; librdkafka before 2.x looks for it) the messages
//! come as bare length-prefixed tokens instead, answered the same way, and a failure closes the
//! connection without an answer (that framing has no room for one).
//!
//! - PLAIN: `authzid NUL user NUL password`, checked against the user's SCRAM credential (one
//!   user store for every mechanism; PBKDF2 runs off the async threads, a bounded number at a
//!   time at the lowest CPU priority (`hashing`), so a flood of logins cannot starve
//!   authenticated clients).
//! - SCRAM-SHA-256 and SCRAM-SHA-512 (`scram`), credentials from the metadata store. An unknown
//!   user gets a made-up credential and fails at the proof, as a wrong password does.
//! - OAUTHBEARER (`oauth`): a JWT checked against the identity provider's published keys; the
//!   session ends when the token expires.
//!
//! A failed login is answered SASL_AUTHENTICATION_FAILED after
//! `--connection-failed-authentication-delay-ms`, logged (never with the password) and counted,
//! and the connection closes. Out-of-order requests get ILLEGAL_SASL_STATE, an unknown
//! mechanism UNSUPPORTED_SASL_MECHANISM with the enabled ones, and both close the connection.
//! With `--connections-max-reauth-ms` a session lasts that long (told to the client in
//! SaslAuthenticate v1+): the client logs in again on the same connection (KIP-368), as the
//! same principal, or is disconnected at its next request.

use super::oauth::{self, TokenError, TokenValidator};
use super::scram::{self, ScramError, ServerFirst};
use super::{Principal, Session};
use crate::config::{SaslArgs, SaslMechanism};
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use skiff_tiering::clock::Clock;
use skiff_tiering::credentials::{self, ScramCredential, ScramMechanism};
use skiff_tiering::metadata::MetadataStore;
use std::sync::Arc;
use std::time::Duration;

/// Kafka's `sasl.server.max.receive.size`: the largest SASL message a client may send.
pub const AUTH_BYTES_MAX: usize = 512 * 1024;

/// Where a connection's login stands.
#[derive(Debug, Default)]
pub enum Exchange {
    /// No login under way.
    #[default]
    Idle,
    /// SaslHandshake chose the mechanism; SaslAuthenticate comes next.
    Handshaken(SaslMechanism),
    /// SCRAM: the server's first message was sent.
    Scram(SaslMechanism, Box<ServerFirst>),
}

/// What the connection does after a SASL request.
#[derive(Debug, Clone, Copy)]
pub enum Next {
    /// Go on reading requests.
    Continue,
    /// Send the answer after this delay, then close the connection.
    Close(Duration),
}

/// The SASL side of the broker: settings and the user store.
pub struct Authenticator {
    store: Arc<dyn MetadataStore>,
    mechanisms: Vec<SaslMechanism>,
    session_lifetime: Option<Duration>,
    failure_delay: Duration,
    /// How long a connection may take to log in.
    pub login_timeout: Duration,
    /// Where PBKDF2 runs (PLAIN logins, HTTP Basic).
    password_checks: super::hashing::Hashers,
    /// Makes unknown users' credentials up, the same each time for a user.
    unknown_user_key: Vec<u8>,
    /// Checks OAUTHBEARER tokens (when that mechanism is enabled).
    tokens: Option<Arc<TokenValidator>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mechanisms", &self.mechanisms)
            .field("session_lifetime", &self.session_lifetime)
            .finish_non_exhaustive()
    }
}

/// Why a login failed, for the log (the client hears only "invalid credentials").
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Scram(#[from] ScramError),
    #[error("malformed PLAIN message")]
    MalformedPlain,
    #[error("the authorization id differs from the user name")]
    AuthorizationId,
    #[error("wrong password or unknown user")]
    InvalidCredentials,
    #[error("no password mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) is enabled")]
    PasswordsDisabled,
    #[error("re-authentication as {0}, not the session's principal")]
    PrincipalChanged(Principal),
    #[error("SASL message of {0} bytes, over the limit")]
    TooLarge(usize),
    #[error("credentials cannot be read: {0}")]
    Store(String),
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl Authenticator {
    /// The authenticator for the settings; OAUTHBEARER needs its keys' URL.
    pub fn new(
        store: Arc<dyn MetadataStore>,
        args: &SaslArgs,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Authenticator> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let tokens = if args
            .sasl_enabled_mechanisms
            .contains(&SaslMechanism::OauthBearer)
        {
            let validator = TokenValidator::new(&args.oauthbearer, clock.clone())?;
            let Some(validator) = validator else {
                anyhow::bail!(
                    "OAUTHBEARER is in --sasl-enabled-mechanisms but \
                     --sasl-oauthbearer-jwks-endpoint-url is not set: tokens cannot be checked \
                     without the identity provider's keys"
                );
            };
            Some(Arc::new(validator))
        } else {
            None
        };
        Ok(Authenticator {
            store,
            mechanisms: args.sasl_enabled_mechanisms.clone(),
            session_lifetime: (args.connections_max_reauth_ms > 0)
                .then(|| Duration::from_millis(args.connections_max_reauth_ms)),
            failure_delay: Duration::from_millis(args.connection_failed_authentication_delay_ms),
            login_timeout: Duration::from_millis(args.sasl_login_timeout_ms),
            // Half the cores at most: logins never take all of them.
            password_checks: super::hashing::Hashers::new(cores / 2),
            unknown_user_key: scram::random_bytes(32),
            tokens,
            clock,
        })
    }

    /// Fetches the OAUTHBEARER keys, now and every refresh interval (nothing without
    /// OAUTHBEARER).
    pub async fn start_key_refresh(&self) {
        if let Some(tokens) = &self.tokens {
            tokens.start_refreshing().await;
        }
    }

    fn enabled_names(&self) -> Vec<StrBytes> {
        self.mechanisms
            .iter()
            .map(|m| StrBytes::from_static_str(m.name()))
            .collect()
    }

    /// SaslHandshake on a SASL listener.
    pub fn handshake(
        &self,
        session: &Session,
        request: &SaslHandshakeRequest,
        version: i16,
        metrics: &crate::metrics::Metrics,
    ) -> (SaslHandshakeResponse, Next) {
        let response = SaslHandshakeResponse::default().with_mechanisms(self.enabled_names());
        let mut state = session.state();
        if !matches!(state.exchange, Exchange::Idle) {
            drop(state);
            metrics.sasl_authentication("none", false);
            tracing::info!(peer = %session.peer, "SaslHandshake in the middle of a login");
            return (
                response.with_error_code(ResponseError::IllegalSaslState.code()),
                Next::Close(Duration::ZERO),
            );
        }
        let chosen = self
            .mechanisms
            .iter()
            .copied()
            .find(|m| m.name().eq_ignore_ascii_case(request.mechanism.as_str()));
        let Some(mechanism) = chosen else {
            drop(state);
            metrics.sasl_authentication("none", false);
            tracing::info!(
                peer = %session.peer,
                mechanism = %request.mechanism.as_str(),
                "SASL mechanism not enabled"
            );
            return (
                response.with_error_code(ResponseError::UnsupportedSaslMechanism.code()),
                Next::Close(Duration::ZERO),
            );
        };
        state.exchange = Exchange::Handshaken(mechanism);
        state.raw_tokens = version == 0;
        (response, Next::Continue)
    }

    /// SaslAuthenticate on a SASL listener.
    pub async fn authenticate(
        &self,
        session: &Session,
        request: &SaslAuthenticateRequest,
        metrics: &crate::metrics::Metrics,
    ) -> (SaslAuthenticateResponse, Next) {
        let exchange = std::mem::take(&mut session.state().exchange);
        let mechanism = match &exchange {
            Exchange::Idle => {
                metrics.sasl_authentication("none", false);
                tracing::info!(peer = %session.peer, "SaslAuthenticate before SaslHandshake");
                return (
                    failed(
                        ResponseError::IllegalSaslState,
                        "SaslAuthenticate before SaslHandshake",
                    ),
                    Next::Close(Duration::ZERO),
                );
            }
            Exchange::Handshaken(m) | Exchange::Scram(m, _) => *m,
        };
        if request.auth_bytes.len() > AUTH_BYTES_MAX {
            let error = LoginError::TooLarge(request.auth_bytes.len());
            return self.refuse(session, mechanism, None, &error, metrics);
        }
        let step = match exchange {
            // (Idle was answered above.)
            Exchange::Idle | Exchange::Handshaken(SaslMechanism::Plain) => self
                .plain(&request.auth_bytes)
                .await
                .map(|user| (user, Vec::new(), None)),
            Exchange::Handshaken(SaslMechanism::OauthBearer) => self
                .oauthbearer(&request.auth_bytes)
                .await
                .map(|token| (token.subject, Vec::new(), Some(token.expires_at_ms))),
            Exchange::Handshaken(scram_mechanism) => {
                match self
                    .scram_first(scram_of(scram_mechanism), &request.auth_bytes)
                    .await
                {
                    Ok(server) => {
                        let message = server.message().as_bytes().to_vec();
                        session.state().exchange =
                            Exchange::Scram(scram_mechanism, Box::new(server));
                        return (
                            SaslAuthenticateResponse::default().with_auth_bytes(message.into()),
                            Next::Continue,
                        );
                    }
                    Err(error) => Err(error),
                }
            }
            Exchange::Scram(_, server) => server
                .finish(&request.auth_bytes)
                .map(|last| (server.user().to_owned(), last.into_bytes(), None))
                .map_err(LoginError::from),
        };
        let (user, last, credential_expires_at_ms) = match step {
            Ok(done) => done,
            Err(error) => return self.refuse(session, mechanism, None, &error, metrics),
        };
        let principal = Principal::user(&user);
        let mut state = session.state();
        if let Some(current) = &state.principal {
            if *current != principal {
                drop(state);
                return self.refuse(
                    session,
                    mechanism,
                    Some(&user),
                    &LoginError::PrincipalChanged(principal),
                    metrics,
                );
            }
        }
        let reauthenticated = state.principal.replace(principal).is_some();
        state.raw_tokens = false;
        // The session ends when the credential does (a token's `exp`), or after
        // --connections-max-reauth-ms if that comes first.
        let credential_lifetime = credential_expires_at_ms
            .map(|at| Duration::from_millis(u64::try_from(at - self.clock.now_ms()).unwrap_or(0)));
        let lifetime = match (self.session_lifetime, credential_lifetime) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let now = tokio::time::Instant::now();
        state.expires_at = lifetime.map(|lifetime| now + lifetime);
        drop(state);
        metrics.sasl_authentication(mechanism.name(), true);
        tracing::debug!(
            peer = %session.peer,
            user,
            mechanism = mechanism.name(),
            reauthenticated,
            "SASL login"
        );
        // 0 means "never expires" to the client: a session ending now is 1 ms long.
        let lifetime_ms = lifetime.map_or(0, |l| {
            i64::try_from(l.as_millis()).unwrap_or(i64::MAX).max(1)
        });
        (
            SaslAuthenticateResponse::default()
                .with_auth_bytes(last.into())
                .with_session_lifetime_ms(lifetime_ms),
            Next::Continue,
        )
    }

    fn refuse(
        &self,
        session: &Session,
        mechanism: SaslMechanism,
        user: Option<&str>,
        error: &LoginError,
        metrics: &crate::metrics::Metrics,
    ) -> (SaslAuthenticateResponse, Next) {
        metrics.sasl_authentication(mechanism.name(), false);
        tracing::info!(
            peer = %session.peer,
            listener = %session.listener.name,
            mechanism = mechanism.name(),
            user = user.unwrap_or(""),
            reason = %error,
            "SASL authentication failed"
        );
        let message = match error {
            LoginError::Store(_) => {
                "Authentication failed: credentials cannot be read now; retry".to_owned()
            }
            // What was wrong with a token tells nothing secret, and saves its owner a guess.
            LoginError::Token(reason) => format!("Authentication failed: {reason}"),
            _ => format!(
                "Authentication failed during authentication due to invalid credentials with \
                 SASL mechanism {}",
                mechanism.name()
            ),
        };
        (
            failed(ResponseError::SaslAuthenticationFailed, &message),
            Next::Close(self.failure_delay),
        )
    }

    /// PLAIN: the user, when the password is right.
    async fn plain(&self, message: &[u8]) -> Result<String, LoginError> {
        let mut parts = message.split(|b| *b == 0);
        let (Some(authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(LoginError::MalformedPlain);
        };
        let (Ok(authzid), Ok(user)) = (std::str::from_utf8(authzid), std::str::from_utf8(user))
        else {
            return Err(LoginError::MalformedPlain);
        };
        if user.is_empty() || password.is_empty() {
            return Err(LoginError::MalformedPlain);
        }
        if !authzid.is_empty() && authzid != user {
            return Err(LoginError::AuthorizationId);
        }
        self.check_password(user, password).await?;
        Ok(user.to_owned())
    }

    /// Whether `password` opens `user`'s SCRAM credential (PLAIN logins, and HTTP callers'
    /// Basic credentials).
    pub async fn check_password(&self, user: &str, password: &[u8]) -> Result<(), LoginError> {
        if user.is_empty() || password.is_empty() {
            return Err(LoginError::InvalidCredentials);
        }
        let found = self.password_credential(user).await?;
        self.check_password_against(user, password, found).await
    }

    /// [`Self::check_password`] against `found`, the user's credential as
    /// [`Self::password_credential`] read it (for a caller that has just read it).
    pub async fn check_password_against(
        &self,
        user: &str,
        password: &[u8],
        found: Option<(ScramMechanism, ScramCredential)>,
    ) -> Result<(), LoginError> {
        if user.is_empty() || password.is_empty() {
            return Err(LoginError::InvalidCredentials);
        }
        // The strongest credential the user has; a made-up one for an unknown user, so that
        // both cost the same.
        let (mechanism, credential, known) = match found {
            Some((mechanism, credential)) => (mechanism, credential, true),
            None => (
                ScramMechanism::Sha256,
                self.unknown_user(ScramMechanism::Sha256, user),
                false,
            ),
        };
        let password = password.to_vec();
        let matches = self
            .password_checks
            .run(move || scram::password_matches(mechanism, &credential, &password))
            .await
            .ok_or_else(|| LoginError::Store("the password check failed".to_owned()))?;
        if matches && known {
            Ok(())
        } else {
            Err(LoginError::InvalidCredentials)
        }
    }

    /// The credential a password of `user` is checked against: the strongest the user has
    /// (`None`: no such user).
    pub async fn password_credential(
        &self,
        user: &str,
    ) -> Result<Option<(ScramMechanism, ScramCredential)>, LoginError> {
        for mechanism in [ScramMechanism::Sha512, ScramMechanism::Sha256] {
            if let Some(credential) = self.credential(mechanism, user).await? {
                return Ok(Some((mechanism, credential)));
            }
        }
        Ok(None)
    }

    /// An OAUTHBEARER token's subject and expiry, when it holds (HTTP callers' Bearer tokens).
    pub async fn check_token(&self, token: &str) -> Result<oauth::ValidToken, LoginError> {
        match &self.tokens {
            Some(tokens) => Ok(tokens.validate(token).await?),
            None => Err(LoginError::Token(TokenError::NoKeys(
                "OAUTHBEARER is not enabled (--sasl-enabled-mechanisms)".to_owned(),
            ))),
        }
    }

    /// Whether users may log in with passwords at all (PLAIN or SCRAM enabled): HTTP Basic
    /// takes a password only where Kafka clients could.
    pub fn accepts_passwords(&self) -> bool {
        self.mechanisms
            .iter()
            .any(|m| *m != SaslMechanism::OauthBearer)
    }

    /// How long a failed login's answer is held back.
    pub fn failure_delay(&self) -> Duration {
        self.failure_delay
    }

    /// OAUTHBEARER: the token's subject and expiry, when the token holds.
    async fn oauthbearer(&self, message: &[u8]) -> Result<oauth::ValidToken, LoginError> {
        let Some(tokens) = &self.tokens else {
            // (Only reached if the mechanism is enabled, which needs the validator.)
            return Err(LoginError::Token(TokenError::NoKeys(
                "OAUTHBEARER is not configured".to_owned(),
            )));
        };
        let response = oauth::parse_initial_response(message)?;
        let token = tokens.validate(&response.token).await?;
        if response
            .authzid
            .as_ref()
            .is_some_and(|id| *id != token.subject)
        {
            return Err(TokenError::AuthorizationId.into());
        }
        Ok(token)
    }

    async fn scram_first(
        &self,
        mechanism: ScramMechanism,
        message: &[u8],
    ) -> Result<ServerFirst, LoginError> {
        let client = scram::parse_client_first(message)?;
        let credential = match self.credential(mechanism, &client.user).await? {
            Some(credential) => credential,
            None => self.unknown_user(mechanism, &client.user),
        };
        Ok(ServerFirst::new(mechanism, client, &credential)?)
    }

    async fn credential(
        &self,
        mechanism: ScramMechanism,
        user: &str,
    ) -> Result<Option<ScramCredential>, LoginError> {
        credentials::get(&*self.store, user, mechanism)
            .await
            .map_err(|e| LoginError::Store(e.to_string()))
    }

    /// A credential no password opens, stable per user (a repeated login sees the same salt).
    fn unknown_user(&self, mechanism: ScramMechanism, user: &str) -> ScramCredential {
        let derive = |label: &str| {
            let key =
                aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA512, &self.unknown_user_key);
            aws_lc_rs::hmac::sign(&key, format!("{label}\0{user}").as_bytes())
                .as_ref()
                .to_vec()
        };
        let len = match mechanism {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        };
        ScramCredential::new(
            &derive("salt")[..16],
            &derive("stored")[..len],
            &derive("server")[..len],
            4096,
        )
    }
}

fn scram_of(mechanism: SaslMechanism) -> ScramMechanism {
    match mechanism {
        SaslMechanism::ScramSha512 => ScramMechanism::Sha512,
        _ => ScramMechanism::Sha256,
    }
}

fn failed(error: ResponseError, message: &str) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(error.code())
        .with_error_message(Some(StrBytes::from_string(message.to_owned())))
}
