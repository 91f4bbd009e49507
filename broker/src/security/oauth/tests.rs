//! Tokens signed here with Ed25519 and ECDSA keys made for each test, checked against a JWKS
//! file, on a clock the tests move.

use super::*;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use skiff_tiering::clock::ManualClock;

const NOW_S: i64 = 1_800_000_000;

/// A signing key and its public JWK.
struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    jwk: Value,
}

fn ed25519(kid: Option<&str>) -> Signer {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
    let mut jwk = json!({
        "kty": "OKP", "crv": "Ed25519", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
    });
    if let Some(kid) = kid {
        jwk["kid"] = json!(kid);
    }
    Signer {
        key: EncodingKey::from_ed_der(pkcs8.as_ref()),
        alg: Algorithm::EdDSA,
        jwk,
    }
}

fn es256(kid: &str) -> Signer {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("key");
    // Uncompressed point: 0x04 || x || y.
    let point = pair.public_key().as_ref();
    Signer {
        key: EncodingKey::from_ec_der(pkcs8.as_ref()),
        alg: Algorithm::ES256,
        jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }),
    }
}

impl Signer {
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = self.jwk["kid"].as_str().map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign")
    }
}

fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "iat": NOW_S - 10, "exp": NOW_S + 300, "iss": "https://idp.example",
            "aud": ["skiff", "other"] })
}

struct Fixture {
    _dir: tempfile::TempDir,
    jwks: std::path::PathBuf,
    clock: Arc<ManualClock>,
    validator: TokenValidator,
}

fn publish(path: &std::path::Path, keys: &[&Signer]) {
    let set = json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    std::fs::write(path, set.to_string()).expect("write jwks");
}

fn fixture(keys: &[&Signer], configure: impl FnOnce(&mut OauthBearerArgs)) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks = dir.path().join("jwks.json");
    publish(&jwks, keys);
    let mut args = OauthBearerArgs {
        sasl_oauthbearer_jwks_endpoint_url: Some(format!("file://{}", jwks.display())),
        sasl_oauthbearer_jwks_endpoint_refresh_ms: 3_600_000,
        sasl_oauthbearer_expected_audience: vec![],
        sasl_oauthbearer_expected_issuer: None,
        sasl_oauthbearer_sub_claim_name: "sub".to_owned(),
        sasl_oauthbearer_clock_skew_seconds: 30,
    };
    configure(&mut args);
    let clock = Arc::new(ManualClock::new(NOW_S * 1000));
    let validator = TokenValidator::new(&args, clock.clone())
        .expect("settings")
        .expect("a validator");
    Fixture {
        _dir: dir,
        jwks,
        clock,
        validator,
    }
}

async fn loaded(keys: &[&Signer], configure: impl FnOnce(&mut OauthBearerArgs)) -> Fixture {
    let f = fixture(keys, configure);
    f.validator.fetch_keys().await.expect("keys");
    f
}

#[tokio::test]
async fn a_token_signed_by_a_published_key_names_its_subject_until_it_expires() {
    let (ed, ec) = (ed25519(Some("ed")), es256("ec"));
    let f = loaded(&[&ed, &ec], |a| {
        a.sasl_oauthbearer_expected_issuer = Some("https://idp.example".to_owned());
        a.sasl_oauthbearer_expected_audience = vec!["skiff".to_owned()];
    })
    .await;
    for signer in [&ed, &ec] {
        assert_eq!(
            f.validator.validate(&signer.sign(&claims("alice"))).await,
            Ok(ValidToken {
                subject: "alice".to_owned(),
                expires_at_ms: (NOW_S + 300) * 1000
            })
        );
    }
    // Within the allowed skew past `exp`, then not.
    f.clock.advance_ms(300_000 + 29_000);
    assert!(f
        .validator
        .validate(&ed.sign(&claims("alice")))
        .await
        .is_ok());
    f.clock.advance_ms(1_000);
    assert_eq!(
        f.validator.validate(&ed.sign(&claims("alice"))).await,
        Err(TokenError::Expired)
    );
}

#[tokio::test]
async fn claims_that_do_not_match_are_refused() {
    let ed = ed25519(Some("ed"));
    let f = loaded(&[&ed], |a| {
        a.sasl_oauthbearer_expected_issuer = Some("https://idp.example".to_owned());
        a.sasl_oauthbearer_expected_audience = vec!["skiff".to_owned(), "kafka".to_owned()];
    })
    .await;
    let check = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims("alice");
        edit(&mut c);
        let token = ed.sign(&c);
        let validator = &f.validator;
        async move { validator.validate(&token).await }
    };
    assert_eq!(
        check(&|c| c["iss"] = json!("https://evil.example")).await,
        Err(TokenError::Issuer)
    );
    assert_eq!(
        check(&|c| c["aud"] = json!("other")).await,
        Err(TokenError::Audience)
    );
    assert!(check(&|c| c["aud"] = json!("kafka")).await.is_ok());
    assert_eq!(
        check(&|c| {
            c.as_object_mut().expect("object").remove("aud");
        })
        .await,
        Err(TokenError::Audience)
    );
    assert_eq!(
        check(&|c| c["nbf"] = json!(NOW_S + 60)).await,
        Err(TokenError::NotYetValid)
    );
    assert!(check(&|c| c["nbf"] = json!(NOW_S + 20)).await.is_ok());
    for claim in ["exp", "iat", "sub"] {
        assert_eq!(
            check(&|c| {
                c.as_object_mut().expect("object").remove(claim);
            })
            .await,
            Err(TokenError::MissingClaim(claim.to_owned()))
        );
    }
    assert_eq!(
        check(&|c| c["exp"] = json!("tomorrow")).await,
        Err(TokenError::MissingClaim("exp".to_owned()))
    );
}

#[tokio::test]
async fn the_subject_comes_from_the_configured_claim() {
    let ed = ed25519(None);
    let f = loaded(&[&ed], |a| {
        a.sasl_oauthbearer_sub_claim_name = "client_id".to_owned()
    })
    .await;
    let mut c = claims("not-this");
    c["client_id"] = json!("svc-orders");
    assert_eq!(
        f.validator.validate(&ed.sign(&c)).await.map(|t| t.subject),
        Ok("svc-orders".to_owned())
    );
}

#[tokio::test]
async fn forged_unsigned_and_shared_secret_tokens_are_refused() {
    let (ed, impostor) = (ed25519(Some("ed")), ed25519(Some("ed")));
    let f = loaded(&[&ed], |_| {}).await;
    // Signed by another key under the published key's id.
    assert_eq!(
        f.validator.validate(&impostor.sign(&claims("alice"))).await,
        Err(TokenError::Signature("ed".to_owned()))
    );
    // A payload swapped under a valid signature.
    let good = ed.sign(&claims("alice"));
    let evil = ed.sign(&claims("mallory"));
    let parts: Vec<&str> = good.split('.').collect();
    let evil_payload = evil.split('.').nth(1).expect("payload");
    let spliced = format!("{}.{}.{}", parts[0], evil_payload, parts[2]);
    assert!(matches!(
        f.validator.validate(&spliced).await,
        Err(TokenError::Signature(_))
    ));
    // alg: none (what an unsecured client, e.g. librdkafka's default, sends).
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims("alice").to_string());
    assert!(matches!(
        f.validator
            .validate(&format!("{none_header}.{payload}."))
            .await,
        Err(TokenError::NotJws(_))
    ));
    // A shared secret, even one that happens to be the public key's bytes.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("alice"),
        &EncodingKey::from_secret(b"guess"),
    )
    .expect("sign");
    assert_eq!(
        f.validator.validate(&hs).await,
        Err(TokenError::Algorithm(Algorithm::HS256))
    );
    assert!(matches!(
        f.validator.validate("not a token").await,
        Err(TokenError::NotJws(_))
    ));
}

#[tokio::test]
async fn a_new_key_is_fetched_when_a_token_names_it_but_not_too_often() {
    let (old, new) = (ed25519(Some("2026-11")), ed25519(Some("2026-12")));
    let f = loaded(&[&old], |_| {}).await;
    publish(&f.jwks, &[&old, &new]);
    // Fetched a moment ago: a token naming an unknown key does not fetch again yet.
    assert_eq!(
        f.validator.validate(&new.sign(&claims("alice"))).await,
        Err(TokenError::UnknownKey("2026-12".to_owned()))
    );
    f.clock.advance_ms(UNKNOWN_KEY_REFETCH_MS);
    assert!(f
        .validator
        .validate(&new.sign(&claims("alice")))
        .await
        .is_ok());
    assert!(f
        .validator
        .validate(&old.sign(&claims("alice")))
        .await
        .is_ok());
}

#[tokio::test]
async fn keys_that_cannot_be_read_say_why_and_known_keys_stay() {
    let ed = ed25519(Some("ed"));
    let f = fixture(&[&ed], |_| {});
    std::fs::write(&f.jwks, "not json").expect("write");
    assert!(f.validator.fetch_keys().await.is_err());
    match f.validator.validate(&ed.sign(&claims("alice"))).await {
        Err(TokenError::NoKeys(why)) => assert!(why.contains("not a JSON Web Key Set"), "{why}"),
        other => panic!("{other:?}"),
    }
    publish(&f.jwks, &[&ed]);
    assert_eq!(f.validator.fetch_keys().await.expect("keys"), 1);
    std::fs::remove_file(&f.jwks).expect("remove");
    assert!(f.validator.fetch_keys().await.is_err());
    assert!(f
        .validator
        .validate(&ed.sign(&claims("alice")))
        .await
        .is_ok());
}

#[test]
fn jwks_keys_that_cannot_check_signatures_are_left_out() {
    let ed = ed25519(Some("ed"));
    let set: JwkSet = serde_json::from_value(json!({ "keys": [
        ed.jwk,
        { "kty": "oct", "kid": "secret", "k": "c2VjcmV0" },
        { "kty": "RSA", "kid": "enc", "use": "enc", "alg": "RSA-OAEP", "n": "sXch", "e": "AQAB" },
    ]}))
    .expect("set");
    let keys = usable_keys(&set);
    assert_eq!(keys.by_id.keys().collect::<Vec<_>>(), vec!["ed"]);
}

#[test]
fn the_client_message_is_parsed_as_rfc_7628_says() {
    let parse = |m: &str| parse_initial_response(m.as_bytes());
    assert_eq!(
        parse("n,,\u{1}auth=Bearer abc.def.ghi\u{1}\u{1}"),
        Ok(InitialResponse {
            token: "abc.def.ghi".to_owned(),
            authzid: None
        })
    );
    // An authorization id (escaped), extensions, the scheme in another case.
    assert_eq!(
        parse("n,a=al=2Cice,\u{1}traceId=7\u{1}auth=bearer  t.o.k\u{1}\u{1}"),
        Ok(InitialResponse {
            token: "t.o.k".to_owned(),
            authzid: Some("al,ice".to_owned())
        })
    );
    for bad in [
        "",
        "n,,",
        "n,,\u{1}\u{1}",
        "p=x,,\u{1}auth=Bearer t\u{1}\u{1}",
        "n,,\u{1}auth=Basic dXNlcg==\u{1}\u{1}",
        "n,,\u{1}auth=Bearer \u{1}\u{1}",
        "n,,\u{1}auth=Bearer t\u{1}",
        "n,x,\u{1}auth=Bearer t\u{1}\u{1}",
    ] {
        assert_eq!(parse(bad), Err(TokenError::Malformed), "{bad:?}");
    }
    assert_eq!(
        parse_initial_response(&[0xff, 0xfe]),
        Err(TokenError::Malformed)
    );
}
