//! How the admin commands reach a secured cluster, with Kafka clients' settings
//! (`security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.location`,
//! `ssl.certificate.location`, `ssl.key.location`): TLS by rustls, then a SASL login (PLAIN,
//! SCRAM or OAUTHBEARER with a token obtained elsewhere) right after ApiVersions.

use super::client::Connection;
use crate::config::{SaslMechanism, Secret, SecurityProtocol};
use crate::security::scram;
use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use skiff_tiering::credentials::ScramMechanism;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Kafka clients' `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    #[value(name = "PLAINTEXT")]
    Plaintext,
    #[value(name = "SSL")]
    Ssl,
    #[value(name = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[value(name = "SASL_SSL")]
    SaslSsl,
}

impl Protocol {
    fn kafka(self) -> SecurityProtocol {
        match self {
            Protocol::Plaintext => SecurityProtocol::Plaintext,
            Protocol::Ssl => SecurityProtocol::Ssl,
            Protocol::SaslPlaintext => SecurityProtocol::SaslPlaintext,
            Protocol::SaslSsl => SecurityProtocol::SaslSsl,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    /// How to talk to the brokers (Kafka clients' `security.protocol`).
    #[arg(
        long,
        env = "SKIFF_SECURITY_PROTOCOL",
        value_enum,
        default_value = "PLAINTEXT",
        global = true
    )]
    pub security_protocol: Protocol,
    /// SASL mechanism for SASL_PLAINTEXT and SASL_SSL (Kafka's `sasl.mechanism`).
    #[arg(
        long,
        env = "SKIFF_SASL_MECHANISM",
        value_enum,
        default_value = "SCRAM-SHA-512",
        global = true
    )]
    pub sasl_mechanism: SaslMechanism,
    /// SASL user name (Kafka's `sasl.username`).
    #[arg(long, env = "SKIFF_SASL_USERNAME", global = true)]
    pub sasl_username: Option<String>,
    /// SASL password (Kafka's `sasl.password`); better given in the environment or the
    /// `--command-config` file than on a command line others can read. Never printed.
    #[arg(
        long,
        env = "SKIFF_SASL_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    pub sasl_password: Option<Secret>,
    /// The bearer token (a JWT from the identity provider) for `--sasl-mechanism OAUTHBEARER`;
    /// better given in the environment. Never printed.
    #[arg(
        long,
        env = "SKIFF_SASL_OAUTHBEARER_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub sasl_oauthbearer_token: Option<Secret>,
    /// PEM file of the CA certificates brokers' certificates must chain to (Kafka's
    /// `ssl.ca.location`); default: the system's trusted roots.
    #[arg(
        long,
        env = "SKIFF_SSL_CA_LOCATION",
        value_name = "FILE",
        global = true
    )]
    pub ssl_ca_location: Option<PathBuf>,
    /// PEM file with this client's certificate chain, for brokers that ask for one (Kafka's
    /// `ssl.certificate.location`).
    #[arg(
        long,
        env = "SKIFF_SSL_CERTIFICATE_LOCATION",
        value_name = "FILE",
        global = true
    )]
    pub ssl_certificate_location: Option<PathBuf>,
    /// PEM file with the private key of --ssl-certificate-location (Kafka's
    /// `ssl.key.location`; default: the certificate's file).
    #[arg(
        long,
        env = "SKIFF_SSL_KEY_LOCATION",
        value_name = "FILE",
        global = true
    )]
    pub ssl_key_location: Option<PathBuf>,
    /// Trust exactly these server certificates, whatever name they are reached by (the
    /// console, connecting to its own broker's SASL_SSL listener); other servers' are checked
    /// against --ssl-ca-location if given, else refused. Not a flag.
    #[arg(skip)]
    pub pinned_certificates: Vec<CertificateDer<'static>>,
}

impl SecurityArgs {
    /// A plain TCP connection without login (the console, to its own PLAINTEXT listener).
    pub fn plaintext() -> SecurityArgs {
        SecurityArgs {
            security_protocol: Protocol::Plaintext,
            sasl_mechanism: SaslMechanism::ScramSha512,
            sasl_username: None,
            sasl_password: None,
            sasl_oauthbearer_token: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            pinned_certificates: Vec::new(),
        }
    }
}

/// Byte streams a connection runs over: TCP, or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The transport to `addr`, TLS when the protocol says so.
pub async fn transport(
    tcp: TcpStream,
    addr: &str,
    args: &SecurityArgs,
) -> anyhow::Result<Box<dyn Stream>> {
    if !args.security_protocol.kafka().tls() {
        return Ok(Box::new(tcp));
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(args)?));
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(host, _)| host)
        .trim_matches(['[', ']']);
    let name = ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host:?} is not a host name TLS can check"))?;
    let stream = connector
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {addr} failed"))?;
    Ok(Box::new(stream))
}

fn tls_config(args: &SecurityArgs) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    if !args.pinned_certificates.is_empty() {
        let otherwise = match &args.ssl_ca_location {
            None => None,
            Some(path) => Some(
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(ca_roots(path)?),
                    provider.clone(),
                )
                .build()
                .with_context(|| format!("no usable CA certificate in {}", path.display()))?,
            ),
        };
        let verifier = PinnedCertificates {
            pinned: args.pinned_certificates.clone(),
            otherwise,
            algorithms: provider.signature_verification_algorithms,
        };
        return Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth());
    }
    let roots = match &args.ssl_ca_location {
        Some(path) => ca_roots(path)?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                // Some system stores hold certificates rustls cannot use; skip them.
                let _ = roots.add(cert);
            }
            roots
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    match &args.ssl_certificate_location {
        None => Ok(builder.with_no_client_auth()),
        Some(cert_path) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
                .and_then(|certs| certs.collect::<Result<_, _>>())
                .with_context(|| format!("cannot read {}", cert_path.display()))?;
            let key_path = args.ssl_key_location.as_ref().unwrap_or(cert_path);
            let key = PrivateKeyDer::from_pem_file(key_path).with_context(|| {
                format!("cannot read a private key from {}", key_path.display())
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .context("the client certificate and key do not fit")
        }
    }
}

/// The CA certificates of a PEM file.
pub fn ca_roots(path: &std::path::Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
    {
        roots
            .add(cert.with_context(|| format!("bad certificate in {}", path.display()))?)
            .with_context(|| format!("unusable CA certificate in {}", path.display()))?;
    }
    Ok(roots)
}

/// Accepts exactly the pinned certificates (the handshake's signature still proves the server
/// holds their key): stronger than a CA and a name, and needing neither. Any other is checked
/// by `otherwise` (CAs and the name it was reached by) when there is one.
#[derive(Debug)]
struct PinnedCertificates {
    pinned: Vec<CertificateDer<'static>>,
    otherwise: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCertificates {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        match &self.otherwise {
            Some(verifier) => verifier.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Logs in on a fresh connection (after ApiVersions) when the protocol is SASL.
pub async fn login(connection: &mut Connection, args: &SecurityArgs) -> anyhow::Result<()> {
    if !args.security_protocol.kafka().sasl() {
        return Ok(());
    }
    let mechanism = args.sasl_mechanism;
    let credential = match (mechanism, &args.sasl_username, &args.sasl_password) {
        (SaslMechanism::OauthBearer, _, _) => Credential::Token(
            args.sasl_oauthbearer_token
                .as_ref()
                .context("--sasl-mechanism OAUTHBEARER needs --sasl-oauthbearer-token")?,
        ),
        (_, Some(user), Some(password)) => Credential::Password(user, password),
        _ => bail!(
            "{:?} with {} needs --sasl-username and --sasl-password",
            args.security_protocol,
            mechanism.name()
        ),
    };
    let user = match credential {
        Credential::Token(_) => "(token)",
        Credential::Password(user, _) => user,
    };
    let handshake = connection
        .send(
            &SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_static_str(mechanism.name())),
            1,
        )
        .await?;
    if let Some(error) = super::client::error(handshake.error_code) {
        let offered: Vec<&str> = handshake.mechanisms.iter().map(|m| m.as_str()).collect();
        bail!(
            "the broker refused SASL mechanism {}: {error:?} (it offers {})",
            mechanism.name(),
            offered.join(", ")
        );
    }
    let step = |bytes: Vec<u8>| SaslAuthenticateRequest::default().with_auth_bytes(bytes.into());
    let fail = |code: i16, message: Option<&StrBytes>| {
        anyhow!(
            "SASL login as {user:?} failed: {}",
            super::client::describe(code, message)
        )
    };
    match (credential, mechanism) {
        (Credential::Token(token), _) => {
            // RFC 7628's client response: no channel binding, the token, no extensions.
            let message = format!("n,,\u{1}auth=Bearer {}\u{1}\u{1}", token.expose());
            let answer = connection.send(&step(message.into_bytes()), 2).await?;
            if answer.error_code != 0 {
                return Err(fail(answer.error_code, answer.error_message.as_ref()));
            }
        }
        (Credential::Password(_, password), SaslMechanism::Plain) => {
            let message = format!("\0{user}\0{}", password.expose()).into_bytes();
            let answer = connection.send(&step(message), 2).await?;
            if answer.error_code != 0 {
                return Err(fail(answer.error_code, answer.error_message.as_ref()));
            }
        }
        (Credential::Password(_, password), _) => {
            let scram_mechanism = if mechanism == SaslMechanism::ScramSha256 {
                ScramMechanism::Sha256
            } else {
                ScramMechanism::Sha512
            };
            let (client, first) = scram::Client::new(scram_mechanism, user, password.expose());
            let answer = connection.send(&step(first.into_bytes()), 2).await?;
            if answer.error_code != 0 {
                return Err(fail(answer.error_code, answer.error_message.as_ref()));
            }
            let (last, expected) = client
                .respond(&answer.auth_bytes)
                .map_err(|e| anyhow!("SASL login as {user:?}: {e}"))?;
            let answer = connection.send(&step(last.into_bytes()), 2).await?;
            if answer.error_code != 0 {
                return Err(fail(answer.error_code, answer.error_message.as_ref()));
            }
            if answer.auth_bytes.as_ref() != expected.as_bytes() {
                bail!(
                    "the broker's SCRAM signature is wrong: it does not know {user:?}'s credential"
                );
            }
        }
    }
    Ok(())
}

/// What a SASL login shows.
#[derive(Clone, Copy)]
enum Credential<'a> {
    Token(&'a Secret),
    Password(&'a str, &'a Secret),
}
