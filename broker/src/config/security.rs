//! Security settings of the Kafka listeners, named after Kafka's (`ssl.keystore.location`,
//! `sasl.enabled.mechanisms`, ...).

use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// Kafka's `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClientAuth {
    /// Clients present no certificate.
    None,
    /// Clients may present a certificate; one presented must be valid.
    Requested,
    /// Clients must present a valid certificate.
    Required,
}

#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM file with the listener's certificate chain and its unencrypted private key, for an
    /// `SSL://` listener (Kafka's `ssl.keystore.location` with `ssl.keystore.type=PEM`).
    #[arg(long, env = "SKIFF_SSL_KEYSTORE_LOCATION", value_name = "FILE")]
    pub ssl_keystore_location: Option<PathBuf>,
    /// PEM file with the listener's unencrypted private key, when --ssl-keystore-location holds
    /// only the certificate chain (as a Kubernetes TLS Secret does: `tls.crt`, `tls.key`).
    #[arg(long, env = "SKIFF_SSL_KEY_LOCATION", value_name = "FILE")]
    pub ssl_key_location: Option<PathBuf>,
    /// PEM file with the CA certificates client certificates must chain to (Kafka's
    /// `ssl.truststore.location` with `ssl.truststore.type=PEM`); the console, over SASL_SSL,
    /// also checks other brokers' certificates against them.
    #[arg(long, env = "SKIFF_SSL_TRUSTSTORE_LOCATION", value_name = "FILE")]
    pub ssl_truststore_location: Option<PathBuf>,
    /// Whether an `SSL://` listener asks clients for certificates (Kafka's `ssl.client.auth`);
    /// other than `none`, an `https://` HTTP listener requests them too (never requires them).
    #[arg(
        long,
        env = "SKIFF_SSL_CLIENT_AUTH",
        value_enum,
        default_value = "none"
    )]
    pub ssl_client_auth: ClientAuth,
    /// How a client certificate's subject becomes the principal on SSL listeners (Kafka's
    /// `ssl.principal.mapping.rules`): `RULE:pattern/replacement/[LU]` tried in order, then
    /// `DEFAULT` (the whole DN, `User:CN=alice,OU=ops,O=example`). Clients without a
    /// certificate are `User:ANONYMOUS`.
    #[arg(
        long,
        env = "SKIFF_SSL_PRINCIPAL_MAPPING_RULES",
        default_value = "DEFAULT",
        value_name = "RULES"
    )]
    pub ssl_principal_mapping_rules: String,
    /// How often the keystore, key and truststore files are checked for new contents (a
    /// renewed certificate): new connections then use them, open ones keep theirs. 0: read
    /// at start only.
    #[arg(
        long,
        env = "SKIFF_SSL_RELOAD_INTERVAL_MS",
        default_value_t = 30_000,
        value_name = "MS"
    )]
    pub ssl_reload_interval_ms: u64,
}

/// The SASL mechanisms a listener may offer (Kafka's `sasl.enabled.mechanisms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum SaslMechanism {
    /// User name and password in the clear (use it over SASL_SSL), checked against the
    /// user's SCRAM credential.
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
    /// OAuth 2 bearer tokens (RFC 7628): JWTs signed by an identity provider, checked against
    /// its published keys (`--sasl-oauthbearer-jwks-endpoint-url`).
    #[value(name = "OAUTHBEARER")]
    OauthBearer,
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OauthBearer => "OAUTHBEARER",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct SaslArgs {
    /// SASL mechanisms the SASL_PLAINTEXT and SASL_SSL listeners offer, comma-separated
    /// (Kafka's `sasl.enabled.mechanisms`). Users and their SCRAM credentials are kept in the
    /// metadata store (`skiff user set`, AlterUserScramCredentials); PLAIN checks a password
    /// against them.
    #[arg(
        long,
        env = "SKIFF_SASL_ENABLED_MECHANISMS",
        value_enum,
        value_delimiter = ',',
        default_value = "SCRAM-SHA-256,SCRAM-SHA-512"
    )]
    pub sasl_enabled_mechanisms: Vec<SaslMechanism>,
    /// Longest an authenticated SASL session lasts before the client must re-authenticate on
    /// the same connection (KIP-368) or be disconnected; 0: sessions never expire (Kafka's
    /// `connections.max.reauth.ms`).
    #[arg(
        long,
        env = "SKIFF_CONNECTIONS_MAX_REAUTH_MS",
        default_value_t = 0,
        value_name = "MS"
    )]
    pub connections_max_reauth_ms: u64,
    /// How long the answer to a failed login is held back before the connection closes, to slow
    /// down password guessing (Kafka's `connection.failed.authentication.delay.ms`).
    #[arg(
        long,
        env = "SKIFF_CONNECTION_FAILED_AUTHENTICATION_DELAY_MS",
        default_value_t = 100,
        value_name = "MS"
    )]
    pub connection_failed_authentication_delay_ms: u64,
    /// How long a connection to a SASL listener may take to log in, all steps together, before
    /// it is closed: connections that never log in cannot hold connection slots (Kafka waits
    /// `connections.max.idle.ms`).
    #[arg(
        long,
        env = "SKIFF_SASL_LOGIN_TIMEOUT_MS",
        default_value_t = 30_000,
        value_name = "MS"
    )]
    pub sasl_login_timeout_ms: u64,

    #[command(flatten)]
    pub oauthbearer: OauthBearerArgs,
}

/// How OAUTHBEARER tokens are checked: Kafka's settings for validating JWTs on the broker
/// (KIP-768). A token must be a JWS signed by one of the published keys (never `alg: none`,
/// never a shared secret), carry `exp` and `iat`, not be expired or not yet valid, and name
/// the expected issuer and audience when those are set; its subject becomes the principal.
#[derive(Debug, Clone, Args)]
pub struct OauthBearerArgs {
    /// Where the identity provider publishes the keys that sign OAUTHBEARER tokens: a JWKS
    /// document at an `https://` or `http://` URL (the provider's `jwks_uri`), or a `file:`
    /// path (Kafka's `sasl.oauthbearer.jwks.endpoint.url`). Needed when OAUTHBEARER is one of
    /// `--sasl-enabled-mechanisms`.
    #[arg(
        long,
        env = "SKIFF_SASL_OAUTHBEARER_JWKS_ENDPOINT_URL",
        value_name = "URL"
    )]
    pub sasl_oauthbearer_jwks_endpoint_url: Option<String>,
    /// How often the keys are fetched again (Kafka's
    /// `sasl.oauthbearer.jwks.endpoint.refresh.ms`). A token signed by a key not yet seen
    /// also fetches them, at most once every few seconds.
    #[arg(
        long,
        env = "SKIFF_SASL_OAUTHBEARER_JWKS_ENDPOINT_REFRESH_MS",
        default_value_t = 3_600_000,
        value_name = "MS"
    )]
    pub sasl_oauthbearer_jwks_endpoint_refresh_ms: u64,
    /// Audiences a token must name one of in its `aud` claim, comma-separated; none: `aud`
    /// is not checked (Kafka's `sasl.oauthbearer.expected.audience`).
    #[arg(
        long,
        env = "SKIFF_SASL_OAUTHBEARER_EXPECTED_AUDIENCE",
        value_delimiter = ',',
        value_name = "AUDIENCES"
    )]
    pub sasl_oauthbearer_expected_audience: Vec<String>,
    /// The issuer a token's `iss` claim must be; unset: not checked (Kafka's
    /// `sasl.oauthbearer.expected.issuer`).
    #[arg(
        long,
        env = "SKIFF_SASL_OAUTHBEARER_EXPECTED_ISSUER",
        value_name = "ISSUER"
    )]
    pub sasl_oauthbearer_expected_issuer: Option<String>,
    /// The claim whose value is the principal's name, `User:<value>` (Kafka's
    /// `sasl.oauthbearer.sub.claim.name`).
    #[arg(
        long,
        env = "SKIFF_SASL_OAUTHBEARER_SUB_CLAIM_NAME",
        default_value = "sub",
        value_name = "CLAIM"
    )]
    pub sasl_oauthbearer_sub_claim_name: String,
    /// How far the identity provider's clock may be off ours when `exp`, `nbf` and `iat` are
    /// checked (Kafka's `sasl.oauthbearer.clock.skew.seconds`).
    #[arg(
        long,
        env = "SKIFF_SASL_OAUTHBEARER_CLOCK_SKEW_SECONDS",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub sasl_oauthbearer_clock_skew_seconds: u64,
}

/// Kafka's `authorizer.class.name`, as a choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthorizerKind {
    /// Every principal may do everything; the ACL APIs answer SECURITY_DISABLED.
    None,
    /// Kafka's standard authorizer: ACLs in the metadata store (CreateAcls, `skiff acl`).
    Standard,
}

#[derive(Debug, Clone, Args)]
pub struct AuthorizerArgs {
    /// Whether requests are checked against ACLs (Kafka's `authorizer.class.name`; `standard`
    /// is its StandardAuthorizer).
    #[arg(long, env = "SKIFF_AUTHORIZER", value_enum, default_value = "none")]
    pub authorizer: AuthorizerKind,
    /// Principals allowed everything whatever the ACLs say, separated by `;` (Kafka's
    /// `super.users`), e.g. `User:admin;User:CN=ops.example.com`.
    #[arg(
        long,
        env = "SKIFF_SUPER_USERS",
        value_delimiter = ';',
        value_name = "PRINCIPALS"
    )]
    pub super_users: Vec<String>,
    /// Whether a resource no ACL names is open to everyone (Kafka's
    /// `allow.everyone.if.no.acl.found`).
    #[arg(
        long,
        env = "SKIFF_ALLOW_EVERYONE_IF_NO_ACL_FOUND",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub allow_everyone_if_no_acl_found: bool,
}

impl AuthorizerArgs {
    pub fn settings(&self) -> crate::security::authorizer::AuthorizerSettings {
        crate::security::authorizer::AuthorizerSettings {
            enabled: self.authorizer == AuthorizerKind::Standard,
            super_users: self
                .super_users
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            allow_everyone_if_no_acl_found: self.allow_everyone_if_no_acl_found,
        }
    }
}
