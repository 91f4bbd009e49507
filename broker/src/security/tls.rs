//! TLS for the Kafka listener (`SSL://` in `--listeners`, Kafka's SSL security protocol), with
//! rustls: the server's certificate chain and key from a PEM file (Kafka's
//! `ssl.keystore.location` with `ssl.keystore.type=PEM`), and client certificates checked
//! against a PEM trust store when `--ssl-client-auth` asks for them (Kafka's `ssl.client.auth`).
//!
//! Nothing here is secret in logs: errors name files, never their contents.

use crate::config::{ClientAuth, TlsArgs};
use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The certificate chain of the TLS listeners (`--ssl-keystore-location`).
pub fn keystore_chain(args: &TlsArgs) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let Some(keystore) = &args.ssl_keystore_location else {
        bail!("a TLS listener (SSL, SASL_SSL, https) needs --ssl-keystore-location (a PEM file with the certificate chain and its private key)");
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(keystore)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .with_context(|| format!("cannot read certificates from {}", keystore.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", keystore.display());
    }
    Ok(chain)
}

/// The acceptor of an SSL listener, from the settings (checked once, at start).
/// `client_auth`: whether `--ssl-client-auth` applies (SSL listeners; SASL_SSL ones
/// authenticate with SASL, as Kafka's do unless configured per listener).
pub fn acceptor(args: &TlsArgs, client_auth: bool) -> anyhow::Result<TlsAcceptor> {
    Ok(build(args, client_auth)?.0)
}

/// The acceptor and the chain it serves, the files read once.
fn build(
    args: &TlsArgs,
    client_auth: bool,
) -> anyhow::Result<(TlsAcceptor, Vec<CertificateDer<'static>>)> {
    let chain = keystore_chain(args)?;
    // The keystore is there (keystore_chain checked); the key is in it unless given apart.
    let key_file = args
        .ssl_key_location
        .as_ref()
        .or(args.ssl_keystore_location.as_ref())
        .context("a TLS listener needs --ssl-keystore-location")?;
    let key = PrivateKeyDer::from_pem_file(key_file).with_context(|| {
        format!(
            "cannot read an unencrypted private key from {} (PKCS#8, PKCS#1 or SEC1 PEM)",
            key_file.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let wanted = if client_auth {
        args.ssl_client_auth
    } else {
        ClientAuth::None
    };
    let builder = match wanted {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let Some(truststore) = &args.ssl_truststore_location else {
                bail!("--ssl-client-auth {auth:?} needs --ssl-truststore-location (PEM CA certificates)");
            };
            let roots = Arc::new(trust_store(truststore)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .context("cannot build the client certificate verifier")?,
            )
        }
    };
    let config = builder
        .with_single_cert(chain.clone(), key)
        .with_context(|| {
            format!(
                "the key in {} does not fit its certificate",
                key_file.display()
            )
        })?;
    Ok((TlsAcceptor::from(Arc::new(config)), chain))
}

/// A TLS listener's acceptor, built again when its files change (a rotated certificate, as
/// cert-manager or any renewal rewrites a mounted Secret): new connections get the new one,
/// open ones keep theirs. Files that cannot be used keep the acceptor as it was, loudly.
pub struct ReloadingAcceptor {
    args: TlsArgs,
    client_auth: bool,
    current: std::sync::RwLock<Loaded>,
}

impl std::fmt::Debug for ReloadingAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingAcceptor")
            .field("keystore", &self.args.ssl_keystore_location)
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

struct Loaded {
    acceptor: TlsAcceptor,
    /// Of the files' contents.
    fingerprint: u64,
    /// The chain served.
    chain: Vec<CertificateDer<'static>>,
    /// The chain served before the latest reload (empty before any).
    previous_chain: Vec<CertificateDer<'static>>,
}

impl ReloadingAcceptor {
    /// Reads the files and builds the acceptor (failing as [`acceptor`] does).
    pub fn new(args: &TlsArgs, client_auth: bool) -> anyhow::Result<Arc<ReloadingAcceptor>> {
        let fingerprint = files_fingerprint(args);
        let (acceptor, chain) = build(args, client_auth)?;
        Ok(Arc::new(ReloadingAcceptor {
            args: args.clone(),
            client_auth,
            current: std::sync::RwLock::new(Loaded {
                acceptor,
                fingerprint,
                chain,
                previous_chain: Vec::new(),
            }),
        }))
    }

    /// The acceptor for a new connection.
    pub fn current(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .acceptor
            .clone()
    }

    /// The certificates served now and before the latest reload (the console trusts its own
    /// broker's, and other brokers may reload a little later).
    pub fn certificates(&self) -> Vec<CertificateDer<'static>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current
            .chain
            .iter()
            .chain(&current.previous_chain)
            .cloned()
            .collect()
    }

    /// Builds the acceptor again if the files' contents changed: `Ok(true)` when it did.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let fingerprint = files_fingerprint(&self.args);
        if fingerprint
            == self
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .fingerprint
        {
            return Ok(false);
        }
        let built = build(&self.args, self.client_auth);
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        // Remembered either way: broken files are reported once, not at every check.
        current.fingerprint = fingerprint;
        let (acceptor, chain) = built?;
        current.acceptor = acceptor;
        current.previous_chain = std::mem::replace(&mut current.chain, chain);
        Ok(true)
    }

    /// [`ReloadingAcceptor::new`], then checking the files every `--ssl-reload-interval-ms`
    /// (if not 0) until the process ends.
    pub fn reloading(args: &TlsArgs, client_auth: bool) -> anyhow::Result<Arc<ReloadingAcceptor>> {
        let acceptor = ReloadingAcceptor::new(args, client_auth)?;
        if args.ssl_reload_interval_ms > 0 {
            acceptor.spawn_reloader(std::time::Duration::from_millis(
                args.ssl_reload_interval_ms,
            ));
        }
        Ok(acceptor)
    }

    /// Checks the files every `interval` until the process ends.
    fn spawn_reloader(self: &Arc<Self>, interval: std::time::Duration) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                match this.reload_if_changed() {
                    Ok(false) => {}
                    Ok(true) => tracing::info!(
                        keystore = ?this.args.ssl_keystore_location,
                        client_auth = this.client_auth,
                        "TLS certificates reloaded: new connections use them"
                    ),
                    Err(error) => tracing::error!(
                        error = %format!("{error:#}"),
                        "the TLS files changed but cannot be used; still serving the previous ones"
                    ),
                }
            }
        });
    }
}

/// A hash of the TLS files' contents (a file that cannot be read counts as empty).
fn files_fingerprint(args: &TlsArgs) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for path in [
        &args.ssl_keystore_location,
        &args.ssl_key_location,
        &args.ssl_truststore_location,
    ]
    .into_iter()
    .flatten()
    {
        std::fs::read(path).unwrap_or_default().hash(&mut hasher);
    }
    hasher.finish()
}

fn trust_store(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
    {
        let cert = cert.with_context(|| format!("bad certificate in {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("unusable CA certificate in {}", path.display()))?;
    }
    if roots.is_empty() {
        bail!("{} holds no CA certificate", path.display());
    }
    Ok(roots)
}
