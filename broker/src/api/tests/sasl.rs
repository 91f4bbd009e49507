//! SASL logins (PLAIN, SCRAM-SHA-256/512) against credentials set with
//! AlterUserScramCredentials, and the credential APIs' validation.

use super::*;
use crate::config::SecurityProtocol;
use crate::security::sasl::Next;
use crate::security::{scram, Admission, Principal, Session};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use skiff_tiering::credentials::ScramMechanism;

fn upsert(user: &str, mechanism: ScramMechanism, password: &str) -> ScramCredentialUpsertion {
    let salt = scram::random_bytes(16);
    ScramCredentialUpsertion::default()
        .with_name(StrBytes::from_string(user.into()))
        .with_mechanism(mechanism.kafka_type())
        .with_iterations(4096)
        .with_salted_password(
            scram::salted_password(mechanism, password.as_bytes(), &salt, 4096).into(),
        )
        .with_salt(salt.into())
}

async fn alter(broker: &Broker, request: AlterUserScramCredentialsRequest) -> Vec<(String, i16)> {
    let response: AlterUserScramCredentialsResponse =
        call(broker, ApiKey::AlterUserScramCredentials, 0, &request).await;
    response
        .results
        .iter()
        .map(|r| (r.user.to_string(), r.error_code))
        .collect()
}

fn handshake(broker: &Broker, session: &Session, mechanism: &str) -> (i16, Next) {
    let request =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(mechanism.into()));
    let (response, next) = broker.sasl.handshake(session, &request, 1, &broker.metrics);
    (response.error_code, next)
}

async fn authenticate(
    broker: &Broker,
    session: &Session,
    bytes: Vec<u8>,
) -> (SaslAuthenticateResponse, Next) {
    let request = SaslAuthenticateRequest::default().with_auth_bytes(bytes.into());
    broker
        .sasl
        .authenticate(session, &request, &broker.metrics)
        .await
}

/// A SCRAM login; the error code of the step that failed, or 0.
async fn scram_login(
    broker: &Broker,
    session: &Session,
    mechanism: ScramMechanism,
    user: &str,
    password: &str,
) -> i16 {
    let (code, _) = handshake(broker, session, mechanism.name());
    assert_eq!(code, 0);
    let (client, first) = scram::Client::new(mechanism, user, password);
    let (response, _) = authenticate(broker, session, first.into_bytes()).await;
    if response.error_code != 0 {
        return response.error_code;
    }
    let (last, expected) = client.respond(&response.auth_bytes).expect("server-first");
    let (response, _) = authenticate(broker, session, last.into_bytes()).await;
    if response.error_code == 0 {
        assert_eq!(
            &response.auth_bytes[..],
            expected.as_bytes(),
            "server signature"
        );
        assert_eq!(response.session_lifetime_ms, 60_000);
    }
    response.error_code
}

#[tokio::test]
async fn scram_and_plain_logins_use_the_stored_credentials() {
    let f = super::fixture().await;
    let broker = &f.broker;
    let results = alter(
        broker,
        AlterUserScramCredentialsRequest::default().with_upsertions(vec![
            upsert("alice", ScramMechanism::Sha256, "wonderland"),
            upsert("alice", ScramMechanism::Sha512, "wonderland"),
            upsert("bob", ScramMechanism::Sha256, "builder"),
        ]),
    )
    .await;
    assert_eq!(results, vec![("alice".into(), 0), ("bob".into(), 0)]);

    for mechanism in ScramMechanism::ALL {
        let session = test_session(SecurityProtocol::SaslSsl);
        let now = tokio::time::Instant::now();
        assert!(matches!(
            session.admit(ApiKey::Metadata, now),
            Admission::Close(_)
        ));
        assert_eq!(
            scram_login(broker, &session, mechanism, "alice", "wonderland").await,
            0
        );
        assert_eq!(session.principal(), Some(Principal::user("alice")));
        assert_eq!(session.admit(ApiKey::Metadata, now), Admission::Serve);
    }
    // Wrong password, unknown user, a mechanism the user has no credential for: all alike.
    for (mechanism, user, password) in [
        (ScramMechanism::Sha256, "alice", "rabbit"),
        (ScramMechanism::Sha512, "mallory", "anything"),
        (ScramMechanism::Sha512, "bob", "builder"),
    ] {
        let session = test_session(SecurityProtocol::SaslPlaintext);
        assert_eq!(
            scram_login(broker, &session, mechanism, user, password).await,
            ResponseError::SaslAuthenticationFailed.code(),
            "{user} with {mechanism:?}"
        );
        assert_eq!(session.principal(), None);
    }

    // PLAIN checks the password against the SCRAM credential.
    for (message, ok) in [
        (&b"\0bob\0builder"[..], true),
        (b"bob\0bob\0builder", true),
        (b"\0bob\0wrong", false),
        (b"\0nobody\0builder", false),
        (b"eve\0bob\0builder", false),
        (b"\0bob", false),
        (b"\0bob\0builder\0extra", false),
    ] {
        let session = test_session(SecurityProtocol::SaslPlaintext);
        assert_eq!(handshake(broker, &session, "PLAIN").0, 0);
        let (response, next) = authenticate(broker, &session, message.to_vec()).await;
        assert_eq!(response.error_code == 0, ok, "{message:?}");
        if !ok {
            assert_eq!(
                response.error_code,
                ResponseError::SaslAuthenticationFailed.code()
            );
            let message = response.error_message.expect("message").to_string();
            assert!(!message.contains("builder") && !message.contains("wrong"));
            assert!(matches!(next, Next::Close(d) if d == std::time::Duration::from_millis(100)));
        }
    }
}

#[tokio::test]
async fn out_of_order_and_unknown_steps_are_refused() {
    let f = super::fixture().await;
    let broker = &f.broker;
    // SaslAuthenticate before the handshake.
    let session = test_session(SecurityProtocol::SaslPlaintext);
    let (response, next) = authenticate(broker, &session, b"\0a\0b".to_vec()).await;
    assert_eq!(response.error_code, ResponseError::IllegalSaslState.code());
    assert!(matches!(next, Next::Close(_)));
    // A mechanism that is not enabled: the enabled ones are named.
    let session = test_session(SecurityProtocol::SaslPlaintext);
    let request =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("GSSAPI"));
    let (response, next) = broker
        .sasl
        .handshake(&session, &request, 1, &broker.metrics);
    assert_eq!(
        response.error_code,
        ResponseError::UnsupportedSaslMechanism.code()
    );
    assert_eq!(response.mechanisms.len(), 3);
    assert!(matches!(next, Next::Close(_)));
    // A second handshake in the middle of a login.
    let session = test_session(SecurityProtocol::SaslPlaintext);
    assert_eq!(handshake(broker, &session, "SCRAM-SHA-256").0, 0);
    assert_eq!(
        handshake(broker, &session, "SCRAM-SHA-256").0,
        ResponseError::IllegalSaslState.code()
    );
    // Garbage and an oversized message.
    for bytes in [
        vec![0xff; 64],
        b"n,,n=x".to_vec(),
        vec![b'a'; crate::security::sasl::AUTH_BYTES_MAX + 1],
    ] {
        let session = test_session(SecurityProtocol::SaslPlaintext);
        assert_eq!(handshake(broker, &session, "SCRAM-SHA-512").0, 0);
        let (response, next) = authenticate(broker, &session, bytes).await;
        assert_eq!(
            response.error_code,
            ResponseError::SaslAuthenticationFailed.code()
        );
        assert!(matches!(next, Next::Close(_)));
    }
    // On a listener without SASL, the login requests are out of place.
    let response: SaslHandshakeResponse = call(
        broker,
        ApiKey::SaslHandshake,
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
    )
    .await;
    assert_eq!(response.error_code, ResponseError::IllegalSaslState.code());
}

#[tokio::test]
async fn reauthentication_keeps_the_principal() {
    let f = super::fixture().await;
    let broker = &f.broker;
    alter(
        broker,
        AlterUserScramCredentialsRequest::default().with_upsertions(vec![
            upsert("alice", ScramMechanism::Sha256, "a-pw"),
            upsert("bob", ScramMechanism::Sha256, "b-pw"),
        ]),
    )
    .await;
    let session = test_session(SecurityProtocol::SaslSsl);
    assert_eq!(
        scram_login(broker, &session, ScramMechanism::Sha256, "alice", "a-pw").await,
        0
    );
    // Past the session's lifetime only a new login is served.
    let later = tokio::time::Instant::now() + std::time::Duration::from_secs(61);
    assert!(matches!(
        session.admit(ApiKey::Fetch, later),
        Admission::Close(_)
    ));
    assert_eq!(
        scram_login(broker, &session, ScramMechanism::Sha256, "alice", "a-pw").await,
        0
    );
    assert_eq!(
        session.admit(ApiKey::Fetch, tokio::time::Instant::now()),
        Admission::Serve
    );
    // Another user's credentials cannot take the connection over.
    assert_eq!(
        scram_login(broker, &session, ScramMechanism::Sha256, "bob", "b-pw").await,
        ResponseError::SaslAuthenticationFailed.code()
    );
    assert_eq!(session.principal(), Some(Principal::user("alice")));
}

#[tokio::test]
async fn credential_changes_are_validated_and_described() {
    let f = super::fixture().await;
    let broker = &f.broker;
    let mut too_few = upsert("carol", ScramMechanism::Sha256, "pw");
    too_few.iterations = 100;
    let mut unknown = upsert("dave", ScramMechanism::Sha256, "pw");
    unknown.mechanism = 9;
    let results = alter(
        broker,
        AlterUserScramCredentialsRequest::default()
            .with_upsertions(vec![
                upsert("alice", ScramMechanism::Sha512, "pw"),
                too_few,
                unknown,
                upsert("erin", ScramMechanism::Sha256, "pw"),
                upsert("erin", ScramMechanism::Sha256, "pw2"),
                upsert("", ScramMechanism::Sha256, "pw"),
            ])
            .with_deletions(vec![ScramCredentialDeletion::default()
                .with_name(StrBytes::from_static_str("frank"))
                .with_mechanism(1)]),
    )
    .await;
    let code = |user: &str| {
        results
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, c)| *c)
            .expect("a result per user")
    };
    assert_eq!(code("alice"), 0);
    assert_eq!(code("carol"), ResponseError::UnacceptableCredential.code());
    assert_eq!(code("dave"), ResponseError::UnsupportedSaslMechanism.code());
    assert_eq!(code("erin"), ResponseError::DuplicateResource.code());
    assert_eq!(code(""), ResponseError::UnacceptableCredential.code());
    assert_eq!(code("frank"), ResponseError::ResourceNotFound.code());

    let all: DescribeUserScramCredentialsResponse = call(
        broker,
        ApiKey::DescribeUserScramCredentials,
        0,
        &DescribeUserScramCredentialsRequest::default(),
    )
    .await;
    assert_eq!(all.results.len(), 1, "only alice was stored");
    assert_eq!(all.results[0].user.as_str(), "alice");
    assert_eq!(all.results[0].credential_infos[0].mechanism, 2);
    assert_eq!(all.results[0].credential_infos[0].iterations, 4096);
    let named: DescribeUserScramCredentialsResponse = call(
        broker,
        ApiKey::DescribeUserScramCredentials,
        0,
        &DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
            UserName::default().with_name(StrBytes::from_static_str("alice")),
            UserName::default().with_name(StrBytes::from_static_str("zed")),
        ])),
    )
    .await;
    assert_eq!(named.results[0].error_code, 0);
    assert_eq!(
        named.results[1].error_code,
        ResponseError::ResourceNotFound.code()
    );
    // Deleting it leaves no user.
    let results = alter(
        broker,
        AlterUserScramCredentialsRequest::default().with_deletions(vec![
            ScramCredentialDeletion::default()
                .with_name(StrBytes::from_static_str("alice"))
                .with_mechanism(2),
        ]),
    )
    .await;
    assert_eq!(results, vec![("alice".into(), 0)]);
    let all: DescribeUserScramCredentialsResponse = call(
        broker,
        ApiKey::DescribeUserScramCredentials,
        0,
        &DescribeUserScramCredentialsRequest::default(),
    )
    .await;
    assert!(all.results.is_empty());
}
