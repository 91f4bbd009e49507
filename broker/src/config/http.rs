//! The HTTP port's settings: where it listens (HTTP or HTTPS) and whether it asks who calls.

use super::{parse_listener, ClientAuth, SaslArgs, TlsArgs};
use anyhow::{bail, Context};
use clap::ValueEnum;
use std::net::SocketAddr;

/// `--http-authentication`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HttpAuthentication {
    /// Every caller is User:ANONYMOUS.
    None,
    /// HTTP Basic with a SASL user, Bearer with an OAUTHBEARER token, or (https:// with
    /// --ssl-client-auth) a client certificate.
    Required,
}

impl HttpAuthentication {
    /// Logins need a SASL mechanism or client certificates (on an https:// listener with
    /// --ssl-client-auth) to check callers with (`serve` and `compactor` alike).
    pub fn validate(self, sasl: &SaslArgs, client_certificates: bool) -> anyhow::Result<()> {
        if self == HttpAuthentication::Required
            && sasl.sasl_enabled_mechanisms.is_empty()
            && !client_certificates
        {
            bail!(
                "--http-authentication required needs a SASL mechanism (--sasl-enabled-mechanisms) \
                 or client certificates (--http-listeners https://... with --ssl-client-auth) to \
                 check callers with"
            );
        }
        Ok(())
    }
}

/// `--http-listeners`: where the HTTP API binds, and whether it serves HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpListener {
    pub bind: SocketAddr,
    pub tls: bool,
}

impl HttpListener {
    /// `IP:PORT` or `http://IP:PORT` (plain), `https://IP:PORT` (TLS).
    pub fn parse(listener: &str) -> anyhow::Result<HttpListener> {
        let listener = listener.trim();
        let (tls, address) = match listener.split_once("://") {
            None => (false, listener),
            Some((scheme, address)) => match scheme.to_ascii_lowercase().as_str() {
                "http" => (false, address),
                "https" => (true, address),
                _ => bail!(
                    "--http-listeners: {listener:?} is neither http://IP:PORT nor https://IP:PORT"
                ),
            },
        };
        let bind = parse_listener(address).context("--http-listeners")?;
        Ok(HttpListener { bind, tls })
    }

    /// An https:// listener's TLS settings: when --ssl-client-auth is not `none` it requests
    /// client certificates, but never insists (probes and browsers have none; they log in
    /// otherwise). Checked (the files read) once, at start.
    pub fn tls_settings(self, tls: &TlsArgs) -> anyhow::Result<Option<TlsArgs>> {
        if !self.tls {
            return Ok(None);
        }
        let settings = TlsArgs {
            ssl_client_auth: match tls.ssl_client_auth {
                ClientAuth::None => ClientAuth::None,
                _ => ClientAuth::Requested,
            },
            ..tls.clone()
        };
        crate::security::tls::acceptor(&settings, true).context("--http-listeners https")?;
        Ok(Some(settings))
    }
}

/// Whether an https:// listener's settings ([`HttpListener::tls_settings`]) ask for client
/// certificates, which then name callers.
pub fn asks_certificates(https: Option<&TlsArgs>) -> bool {
    https.is_some_and(|tls| tls.ssl_client_auth != ClientAuth::None)
}
