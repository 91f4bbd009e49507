//! SCRAM (RFC 5802, RFC 7677) as Kafka speaks it: SCRAM-SHA-256 and SCRAM-SHA-512 without
//! channel binding, over SaslAuthenticate. Pure functions over the exchanged messages; the
//! primitives (PBKDF2, HMAC, hashes, constant-time comparison, randomness) are aws-lc-rs's, the
//! crypto library rustls already uses here.
//!
//! ```text
//! client-first  n,,n=<user>,r=<client nonce>
//! server-first  r=<client nonce><server nonce>,s=<salt, base64>,i=<iterations>
//! client-final  c=biws,r=<both nonces>,p=<proof, base64>
//! server-final  v=<server signature, base64>
//! ```
//! The server keeps `StoredKey = H(HMAC(SaltedPassword, "Client Key"))` and
//! `ServerKey = HMAC(SaltedPassword, "Server Key")`; the proof is `ClientKey XOR
//! HMAC(StoredKey, AuthMessage)`, so the server checks `H(proof XOR signature) == StoredKey`.

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2, rand};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use skiff_tiering::credentials::{ScramCredential, ScramMechanism};
use std::num::NonZeroU32;

/// Why an exchange failed. Messages never hold a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("the authorization id differs from the user name")]
    AuthorizationId,
    #[error("delegation tokens are not supported")]
    TokenAuth,
    #[error("invalid credentials")]
    InvalidCredentials,
}

fn hmac_algorithm(mechanism: ScramMechanism) -> hmac::Algorithm {
    match mechanism {
        ScramMechanism::Sha256 => hmac::HMAC_SHA256,
        ScramMechanism::Sha512 => hmac::HMAC_SHA512,
    }
}

fn digest_algorithm(mechanism: ScramMechanism) -> &'static digest::Algorithm {
    match mechanism {
        ScramMechanism::Sha256 => &digest::SHA256,
        ScramMechanism::Sha512 => &digest::SHA512,
    }
}

fn hmac(mechanism: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac_algorithm(mechanism), key), data)
        .as_ref()
        .to_vec()
}

fn hash(mechanism: ScramMechanism, data: &[u8]) -> Vec<u8> {
    digest::digest(digest_algorithm(mechanism), data)
        .as_ref()
        .to_vec()
}

/// `Hi(password, salt, i)`: PBKDF2 with the mechanism's HMAC. Costs `iterations` HMACs:
/// callers on a request path run it off the async threads.
pub fn salted_password(
    mechanism: ScramMechanism,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    let (algorithm, len) = match mechanism {
        ScramMechanism::Sha256 => (pbkdf2::PBKDF2_HMAC_SHA256, 32),
        ScramMechanism::Sha512 => (pbkdf2::PBKDF2_HMAC_SHA512, 64),
    };
    let mut out = vec![0u8; len];
    let iterations = NonZeroU32::new(iterations.max(1)).expect("at least 1");
    pbkdf2::derive(algorithm, iterations, salt, password, &mut out);
    out
}

/// The credential a server keeps for a salted password.
pub fn credential(
    mechanism: ScramMechanism,
    salted: &[u8],
    salt: &[u8],
    iterations: u32,
) -> ScramCredential {
    let client_key = hmac(mechanism, salted, b"Client Key");
    let stored_key = hash(mechanism, &client_key);
    let server_key = hmac(mechanism, salted, b"Server Key");
    ScramCredential::new(salt, &stored_key, &server_key, iterations)
}

/// Whether `password` is the one `credential` was made from (SASL/PLAIN checks passwords
/// against the SCRAM credentials). Runs PBKDF2.
pub fn password_matches(
    mechanism: ScramMechanism,
    credential: &ScramCredential,
    password: &[u8],
) -> bool {
    let Some((salt, stored_key, _)) = credential.decoded() else {
        return false;
    };
    let salted = salted_password(mechanism, password, &salt, credential.iterations);
    let client_key = hmac(mechanism, &salted, b"Client Key");
    constant_time::verify_slices_are_equal(&hash(mechanism, &client_key), &stored_key).is_ok()
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    rand::fill(&mut out).expect("the system's random source works");
    out
}

/// A user name as SCRAM writes it (`saslname`): `,` and `=` escaped as `=2C` and `=3D`.
pub fn encode_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn decode_name(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The client's first message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    pub user: String,
    pub nonce: String,
    /// `n,,` (or with the authorization id): repeated, base64, in the final message.
    gs2_header: String,
    /// The message without the GS2 header: part of the AuthMessage.
    bare: String,
}

pub fn parse_client_first(message: &[u8]) -> Result<ClientFirst, ScramError> {
    let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let mut parts = text.splitn(3, ',');
    let flag = parts.next().unwrap_or("");
    let authzid = parts.next().ok_or(ScramError::Malformed("no GS2 header"))?;
    let bare = parts.next().ok_or(ScramError::Malformed("no GS2 header"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("bad GS2 flag")),
    }
    let mut user = None;
    let mut nonce = None;
    for (i, attribute) in bare.split(',').enumerate() {
        let (key, value) = attribute
            .split_once('=')
            .ok_or(ScramError::Malformed("attribute without a value"))?;
        match (i, key) {
            (0, "n") => user = Some(decode_name(value)?),
            (1, "r") => nonce = Some(value.to_owned()),
            (0, _) | (1, _) => return Err(ScramError::Malformed("expected n= then r=")),
            // Extensions (Kafka: `tokenauth=true` for delegation tokens).
            (_, "tokenauth") if value.eq_ignore_ascii_case("true") => {
                return Err(ScramError::TokenAuth)
            }
            _ => {}
        }
    }
    let user = user.ok_or(ScramError::Malformed("no user name"))?;
    let nonce = nonce.ok_or(ScramError::Malformed("no nonce"))?;
    if user.is_empty()
        || nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b',')
    {
        return Err(ScramError::Malformed("empty user name or bad nonce"));
    }
    if !authzid.is_empty() {
        let id = authzid
            .strip_prefix("a=")
            .ok_or(ScramError::Malformed("bad authorization id"))?;
        if decode_name(id)? != user {
            return Err(ScramError::AuthorizationId);
        }
    }
    Ok(ClientFirst {
        user,
        nonce,
        gs2_header: format!("{flag},{authzid},"),
        bare: bare.to_owned(),
    })
}

/// The server's state between its first message and the client's final one.
pub struct ServerFirst {
    mechanism: ScramMechanism,
    client: ClientFirst,
    message: String,
    nonce: String,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl std::fmt::Debug for ServerFirst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerFirst")
            .field("mechanism", &self.mechanism)
            .field("user", &self.client.user)
            .finish_non_exhaustive()
    }
}

impl ServerFirst {
    /// Answers `client` with `credential` (a made-up one for an unknown user, so that a
    /// stranger cannot tell unknown users from wrong passwords).
    pub fn new(
        mechanism: ScramMechanism,
        client: ClientFirst,
        credential: &ScramCredential,
    ) -> Result<ServerFirst, ScramError> {
        let (_, stored_key, server_key) = credential
            .decoded()
            .ok_or(ScramError::Malformed("stored credential is not base64"))?;
        let nonce = format!(
            "{}{}",
            client.nonce,
            BASE64.encode(random_bytes(18)).replace(['+', '/'], "-")
        );
        let message = format!(
            "r={nonce},s={},i={}",
            credential.salt, credential.iterations
        );
        Ok(ServerFirst {
            mechanism,
            client,
            message,
            nonce,
            stored_key,
            server_key,
        })
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn user(&self) -> &str {
        &self.client.user
    }

    /// Checks the client's final message: the server's final message when the proof is right.
    pub fn finish(&self, message: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("expected c="))?;
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("expected r="))?;
        if BASE64.decode(binding).ok().as_deref() != Some(self.client.gs2_header.as_bytes()) {
            return Err(ScramError::Malformed(
                "channel binding differs from the header",
            ));
        }
        // Kafka accepts a nonce that ends with the server's: librdkafka sends the client nonce
        // once more in front of it, and the proof covers what it sent.
        if !nonce.ends_with(&self.nonce) {
            return Err(ScramError::Malformed("nonce differs"));
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let auth_message = format!("{},{},{without_proof}", self.client.bare, self.message);
        let signature = hmac(self.mechanism, &self.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(ScramError::InvalidCredentials);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        constant_time::verify_slices_are_equal(
            &hash(self.mechanism, &client_key),
            &self.stored_key,
        )
        .map_err(|_| ScramError::InvalidCredentials)?;
        let server_signature = hmac(self.mechanism, &self.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(server_signature)))
    }
}

/// The client's side of an exchange (the admin commands log in with it).
pub struct Client {
    mechanism: ScramMechanism,
    password: Vec<u8>,
    first_bare: String,
    nonce: String,
}

impl Client {
    pub fn new(mechanism: ScramMechanism, user: &str, password: &str) -> (Client, String) {
        let nonce = BASE64.encode(random_bytes(18)).replace(['+', '/'], "-");
        let first_bare = format!("n={},r={nonce}", encode_name(user));
        let message = format!("n,,{first_bare}");
        let client = Client {
            mechanism,
            password: password.as_bytes().to_vec(),
            first_bare,
            nonce,
        };
        (client, message)
    }

    /// The final message for the server's first, and the server signature to expect.
    pub fn respond(&self, server_first: &[u8]) -> Result<(String, String), ScramError> {
        let text =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attribute in text.split(',') {
            match attribute.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = BASE64.decode(v).ok(),
                Some(("i", v)) => iterations = v.parse::<u32>().ok(),
                Some(("e", _)) => return Err(ScramError::InvalidCredentials),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(ScramError::Malformed("server-first lacks r, s or i"));
        };
        if !nonce.starts_with(&self.nonce) || !(4096..=1_000_000).contains(&iterations) {
            return Err(ScramError::Malformed("server nonce or iterations refused"));
        }
        let salted = salted_password(self.mechanism, &self.password, &salt, iterations);
        let client_key = hmac(self.mechanism, &salted, b"Client Key");
        let stored_key = hash(self.mechanism, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.first_bare);
        let signature = hmac(self.mechanism, &stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac(self.mechanism, &salted, b"Server Key");
        let expected = format!(
            "v={}",
            BASE64.encode(hmac(self.mechanism, &server_key, auth_message.as_bytes()))
        );
        Ok((
            format!("{without_proof},p={}", BASE64.encode(proof)),
            expected,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example (user "user", password "pencil").
    #[test]
    fn rfc7677_example_verifies() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let salted = salted_password(ScramMechanism::Sha256, b"pencil", &salt, 4096);
        let stored = credential(ScramMechanism::Sha256, &salted, &salt, 4096);
        let client = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").expect("first");
        let mut server =
            ServerFirst::new(ScramMechanism::Sha256, client, &stored).expect("server first");
        // The RFC's server nonce, so its proof and signature apply.
        server.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        server.message = format!("r={},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", server.nonce);
        let server_final = server
            .finish(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .expect("the RFC's proof");
        assert_eq!(
            server_final,
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn client_and_server_agree_and_wrong_passwords_fail() {
        for mechanism in ScramMechanism::ALL {
            let salt = random_bytes(16);
            let salted = salted_password(mechanism, b"s3cret", &salt, 4096);
            let stored = credential(mechanism, &salted, &salt, 4096);
            assert!(password_matches(mechanism, &stored, b"s3cret"));
            assert!(!password_matches(mechanism, &stored, b"s3cret "));
            for (password, ok) in [("s3cret", true), ("guess", false)] {
                let (client, first) = Client::new(mechanism, "al,i=ce", password);
                let parsed = parse_client_first(first.as_bytes()).expect("first");
                assert_eq!(parsed.user, "al,i=ce");
                let server = ServerFirst::new(mechanism, parsed, &stored).expect("server first");
                let (last, expected) = client.respond(server.message().as_bytes()).expect("final");
                match server.finish(last.as_bytes()) {
                    Ok(server_final) => {
                        assert!(ok);
                        assert_eq!(server_final, expected);
                    }
                    Err(error) => {
                        assert!(!ok);
                        assert_eq!(error, ScramError::InvalidCredentials);
                    }
                }
            }
        }
    }

    #[test]
    fn malformed_and_unsupported_first_messages_are_refused() {
        for (message, error) in [
            (&b"p=tls-unique,,n=u,r=x"[..], ScramError::ChannelBinding),
            (b"n,a=other,n=u,r=x", ScramError::AuthorizationId),
            (b"n,,n=u,r=x,tokenauth=true", ScramError::TokenAuth),
        ] {
            assert_eq!(parse_client_first(message), Err(error));
        }
        for message in [
            &b""[..],
            b"n,,",
            b"n,,r=x,n=u",
            b"n,,n=,r=x",
            b"n,,n=u=zz,r=x",
            b"x,,n=u,r=x",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(parse_client_first(message), Err(ScramError::Malformed(_))),
                "{message:?}"
            );
        }
        assert!(parse_client_first(b"n,a=u,n=u,r=abc").is_ok());
    }

    #[test]
    fn tampered_final_messages_are_refused() {
        let mechanism = ScramMechanism::Sha512;
        let salt = random_bytes(16);
        let stored = credential(
            mechanism,
            &salted_password(mechanism, b"pw", &salt, 4096),
            &salt,
            4096,
        );
        let (client, first) = Client::new(mechanism, "u", "pw");
        let server = ServerFirst::new(
            mechanism,
            parse_client_first(first.as_bytes()).expect("first"),
            &stored,
        )
        .expect("server first");
        let (last, _) = client.respond(server.message().as_bytes()).expect("final");
        for tampered in [
            last.replace("c=biws", "c=eSws"),
            last.replacen("r=", "r=x", 1),
            last.replacen(",p=", "x,p=", 1),
            last.replace(",p=", ",p=AAAA"),
            last.split(",p=").next().expect("head").to_owned(),
            "garbage".to_owned(),
        ] {
            assert!(server.finish(tampered.as_bytes()).is_err(), "{tampered}");
        }
        assert!(server.finish(last.as_bytes()).is_ok());
    }
}
