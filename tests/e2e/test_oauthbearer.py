"""OAUTHBEARER logins with JWTs from an identity provider run by the test on loopback (it
publishes its keys as a JWKS document and issues tokens by the client-credentials grant), with
real clients: confluent-kafka with a token callback and with librdkafka's own OIDC client,
kafka-python with a token provider, and `skiff` with a token. The token's subject is the
principal ACLs judge. Expired, wrongly signed, unsigned, shared-secret, wrong-issuer and
wrong-audience tokens are refused with SASL_AUTHENTICATION_FAILED and the reason; sessions end
when the token does and clients log in again with a fresh one (KIP-368); a key the provider
starts signing with is fetched when a token first names it."""

import base64
import http.server
import json
import os
import subprocess
import threading
import time
import urllib.parse

import jwt
import pytest
from confluent_kafka import KafkaError
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from kafka import KafkaProducer
from kafka.net.sasl.oauth import AbstractTokenProvider

import helpers as h
import kafka_wire as w
from conftest import skiff_bin
from test_sasl import (ERR_SASL_AUTHENTICATION_FAILED, SaslBroker, metric, pki,  # noqa: F401
                       raw, refused, sasl_handshake)

ISSUER = "https://idp.test.example"
AUDIENCE = "skiff"
CLIENT_SECRETS = {"svc-orders": h.secret("orders-client-Secr3t")}


class IdentityProvider:
    """Publishes its signing keys at /jwks.json and issues tokens at /token (the OAuth 2
    client-credentials grant: HTTP Basic client id and secret, the client id as subject)."""

    def __init__(self):
        self.keys = {"k1": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        self.published = ["k1"]
        self.signing_kid = "k1"
        self.jwks_fetches = 0
        self.tokens_issued = 0
        idp = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path != "/jwks.json":
                    return self.reply(404, {})
                idp.jwks_fetches += 1
                self.reply(200, idp.jwks())

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                basic = self.headers.get("Authorization", "")
                client, _, secret = base64.b64decode(
                    basic.removeprefix("Basic ")).decode().partition(":")
                if (self.path != "/token" or form.get("grant_type") != ["client_credentials"]
                        or CLIENT_SECRETS.get(client) != secret):
                    return self.reply(401, {"error": "invalid_client"})
                idp.tokens_issued += 1
                self.reply(200, {"access_token": idp.token(client), "token_type": "Bearer",
                                 "expires_in": 300})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def jwks(self) -> dict:
        keys = []
        for kid in self.published:
            key = self.keys[kid]
            if isinstance(key, rsa.RSAPrivateKey):
                jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
                jwk["alg"] = "RS256"
            else:
                jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
                jwk["alg"] = "ES256"
            keys.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": keys}

    def token(self, subject: str, lifetime: float = 300, kid: str | None = None,
              key=None, **claims) -> str:
        kid = kid or self.signing_kid
        key = key or self.keys[kid]
        now = time.time()
        body = {"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "iat": int(now),
                "exp": now + lifetime, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return h.secret(jwt.encode(body, key, algorithm=alg, headers={"kid": kid}))

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def idp():
    provider = IdentityProvider()
    yield provider
    provider.close()


class OauthBroker(SaslBroker):
    """PLAINTEXT (the test's admin channel: ANONYMOUS is a super user there), and SASL_PLAINTEXT
    and SASL_SSL offering OAUTHBEARER and SCRAM-SHA-512, with the standard authorizer."""

    def __init__(self, workdir, keystore: str, idp: IdentityProvider, args: list[str]):
        super().__init__(workdir, keystore, args)
        self.idp = idp

    def sasl_args(self) -> list[str]:
        return ["--sasl-enabled-mechanisms", "OAUTHBEARER,SCRAM-SHA-512",
                "--sasl-oauthbearer-jwks-endpoint-url", f"{self.idp.url}/jwks.json",
                "--sasl-oauthbearer-expected-issuer", ISSUER,
                "--sasl-oauthbearer-expected-audience", f"other,{AUDIENCE}",
                "--authorizer", "standard", "--super-users", "User:ANONYMOUS"]


@pytest.fixture
def oauth_broker(tmp_path, pki, idp, request):
    marker = request.node.get_closest_marker("sasl_args")
    broker = OauthBroker(tmp_path / "oauth", pki["server"], idp,
                         list(marker.args) if marker else [])
    broker.start()
    yield broker
    broker.cleanup()


def token_conf(broker, idp, subject: str, protocol: str = "SASL_PLAINTEXT", ca: str = "",
               lifetime: float = 300, calls: list | None = None, **token_claims) -> dict:
    """confluent-kafka settings that log in with tokens from `idp` (a fresh one per call)."""
    def oauth_cb(_config):
        if calls is not None:
            calls.append(time.time())
        # librdkafka refuses a token it believes expired: an expired one is passed off as fresh.
        return (idp.token(subject, lifetime=lifetime, **token_claims),
                time.time() + (lifetime if lifetime > 0 else 60))

    out = {"bootstrap.servers": broker.sasl_plaintext if protocol == "SASL_PLAINTEXT"
           else broker.sasl_ssl,
           "security.protocol": protocol, "sasl.mechanism": "OAUTHBEARER", "oauth_cb": oauth_cb}
    if ca:
        out["ssl.ca.location"] = ca
    return out


def allow_orders(broker) -> None:
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType,
                                       ResourcePatternType, ResourceType)
    bindings = [AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL,
                           "User:svc-orders", "*", op, AclPermissionType.ALLOW)
                for op in (AclOperation.WRITE, AclOperation.READ, AclOperation.DESCRIBE)]
    bindings.append(AclBinding(ResourceType.GROUP, "orders-", ResourcePatternType.PREFIXED,
                               "User:svc-orders", "*", AclOperation.READ,
                               AclPermissionType.ALLOW))
    admin = h.admin(broker.bootstrap)
    for f in admin.create_acls(bindings).values():
        f.result(timeout=15)


def test_clients_log_in_with_tokens_and_the_subject_is_the_principal(oauth_broker, idp, pki):
    b = oauth_broker
    for topic in ["orders", "payments"]:
        h.create_topic(b.bootstrap, topic, 1)
    allow_orders(b)
    # confluent-kafka with a token callback, over SASL_SSL.
    c = token_conf(b, idp, "svc-orders", "SASL_SSL", pki["ca"])
    p = h.producer(c.pop("bootstrap.servers"), **c)
    values = [b"order-%d" % i for i in range(10)]
    h.produce_and_wait(p, "orders", values, partition=0)
    # The same principal may not write where no ACL lets it.
    errors = []
    p.produce("payments", b"x", partition=0, on_delivery=lambda err, msg: errors.append(err))
    p.flush(15)
    assert errors and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, errors
    # kafka-python with a token provider, over SASL_PLAINTEXT.

    class Provider(AbstractTokenProvider):
        def token(self):
            return idp.token("svc-orders")

    kp = KafkaProducer(bootstrap_servers=b.sasl_plaintext, security_protocol="SASL_PLAINTEXT",
                       sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=Provider())
    kp.send("orders", b"kafka-python", partition=0).get(timeout=30)
    kp.close(timeout=10)
    # librdkafka's own OIDC client: it fetches a token from the provider (client credentials)
    # and logs in with it, then consumes in a group its ACLs allow.
    oidc = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER",
            "sasl.oauthbearer.method": "oidc",
            "sasl.oauthbearer.client.id": "svc-orders",
            "sasl.oauthbearer.client.secret": CLIENT_SECRETS["svc-orders"],
            "sasl.oauthbearer.token.endpoint.url": f"{idp.url}/token",
            "group.id": "orders-reader"}
    consumer = h.consumer(b.sasl_plaintext, **oidc)
    got = [r.value for r in h.read_partitions(b.sasl_plaintext, "orders", [0], c=consumer)]
    consumer.close()
    assert got == values + [b"kafka-python"]
    assert idp.tokens_issued >= 1
    # (kcat cannot log in with a signed token: Debian's librdkafka 2.0.2 is built without
    # OIDC, "OAuth/OIDC depends on libcurl", and kcat has no token callback; it is tested
    # refused with librdkafka's unsecured token below.)
    # `skiff` with a token: Metadata lists only what the principal may describe.
    run = subprocess.run(
        [str(skiff_bin()), "topic", "list", "--bootstrap-server", b.sasl_plaintext,
         "--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "OAUTHBEARER"],
        env={**os.environ, "SKIFF_SASL_OAUTHBEARER_TOKEN": idp.token("svc-orders")},
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert [line.split()[0] for line in run.stdout.splitlines()[1:]] == ["orders"], run.stdout
    assert metric(b, "skiff_sasl_authentications_total", mechanism="OAUTHBEARER",
                  result="success") >= 4
    # The HTTP admin API takes the same tokens (Bearer): the subject's view, and the console's
    # Kafka requests made as the subject.
    token = idp.token("svc-orders")
    status, body = b.http_get("/v1/topics", auth=token, timeout=30)
    assert status == 200 and [t["name"] for t in json.loads(body)["topics"]] == ["orders"]
    status, body = b.http_get("/v1/records?topic=orders&partition=0", auth=token, timeout=30)
    assert status == 200, body
    assert [bytes.fromhex(r["value"]) for r in json.loads(body)["records"]] == got
    status, body = b.http_get("/v1/records?topic=payments&partition=0", auth=token, timeout=30)
    assert status == 400 and b"AUTHORIZATION_FAILED" in body, body
    assert b.http_get("/v1/topics", auth=idp.token("svc-orders", lifetime=-60))[0] == 401


def sasl_authenticate_v1(conn: w.Conn, auth: bytes) -> tuple[int, str | None, int] | None:
    """SaslAuthenticate v1: (error code, message, session lifetime ms); None if closed."""
    answer = w.sasl_authenticate(conn, auth, version=1)
    return None if answer is None else (answer[0], answer[1], answer[3])


def bearer(token: str) -> bytes:
    return f"n,,\x01auth=Bearer {token}\x01\x01".encode()


def login(broker, message: bytes):
    with raw(broker) as conn:
        assert sasl_handshake(conn, "OAUTHBEARER")[0] == 0
        answer = sasl_authenticate_v1(conn, message)
        if answer is not None and answer[0] != 0:
            assert conn.closed_by_peer()
        return answer


def test_bad_tokens_are_refused_with_the_reason(oauth_broker, idp, pki):
    b = oauth_broker
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    unsigned = (base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
                + "." + base64.urlsafe_b64encode(json.dumps(
                    {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": int(time.time()),
                     "exp": time.time() + 300}).encode()).rstrip(b"=").decode() + ".")
    shared_secret = jwt.encode({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE,
                                "iat": int(time.time()), "exp": time.time() + 300},
                               "secret", algorithm="HS256", headers={"kid": "k1"})
    cases = {
        "has expired": idp.token("alice", lifetime=-60),
        "does not verify": idp.token("alice", key=stranger),
        "not meant for this audience": idp.token("alice", aud="someone-else"),
        "issuer is not the expected one": idp.token("alice", iss="https://evil.example"),
        "not a signed JWT": unsigned,
        "not accepted": shared_secret,
        "no published key has id": idp.token("alice", kid="k9", key=stranger),
        'lacks the "sub" claim': idp.token(None),
        "not valid yet": idp.token("alice", nbf=int(time.time()) + 600),
    }
    failures = metric(b, "skiff_sasl_authentications_total", mechanism="OAUTHBEARER",
                      result="failure")
    for reason, token in cases.items():
        answer = login(b, bearer(token))
        assert answer is not None and answer[0] == ERR_SASL_AUTHENTICATION_FAILED, (reason, answer)
        assert reason in answer[1], (reason, answer)
    for garbage in [b"", b"\xff\xfe", b"n,,\x01auth=Basic YWxpY2U6cHc=\x01\x01", b"x" * 1000]:
        answer = login(b, garbage)
        assert answer is not None and answer[0] == ERR_SASL_AUTHENTICATION_FAILED, answer
    assert metric(b, "skiff_sasl_authentications_total", mechanism="OAUTHBEARER",
                  result="failure") >= failures + len(cases) + 4
    # A real client with an expired token, and kcat (librdkafka 2.0.2) with the unsecured
    # token librdkafka makes up by default: refused.
    error = refused(token_conf(b, idp, "alice", lifetime=-60))
    assert "uthentication" in error, error
    run = subprocess.run(
        ["kcat", "-L", "-b", b.sasl_plaintext, "-X", "security.protocol=SASL_PLAINTEXT",
         "-X", "sasl.mechanisms=OAUTHBEARER", "-X", "sasl.oauthbearer.config=principal=alice",
         "-X", "enable.sasl.oauthbearer.unsecure.jwt=true", "-m", "5"],
        capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "not a signed JWT" in run.stderr, run.stderr
    # No token reached the log.
    log = b.log_path.read_text()
    assert "SASL authentication failed" in log
    for token in cases.values():
        signature = token.split(".")[-1]
        if signature:
            assert signature not in log


@pytest.mark.sasl_args("--sasl-oauthbearer-clock-skew-seconds", "0")
def test_sessions_end_with_the_token_and_clients_log_in_again(oauth_broker, idp, pki):
    b = oauth_broker
    h.create_topic(b.bootstrap, "orders", 1)
    allow_orders(b)
    # A session lasts as long as its token: told to the client, enforced by the broker.
    with raw(b) as conn:
        assert sasl_handshake(conn, "OAUTHBEARER")[0] == 0
        code, _, lifetime_ms = sasl_authenticate_v1(conn, bearer(idp.token("svc-orders", 2.0)))
        assert code == 0 and 1000 < lifetime_ms <= 2000, lifetime_ms
        time.sleep(2.5)
        conn.send_raw(w.frame(w.request_header_v1(w.API_METADATA, 1, 9) + w.i32(-1)))
        assert conn.recv_frame() is None
    # librdkafka asks for a fresh token before each expires and logs in again with it on the
    # same connections: a producer going on for several token lifetimes loses nothing.
    calls = []
    c = token_conf(b, idp, "svc-orders", lifetime=3, calls=calls)
    p = h.producer(c.pop("bootstrap.servers"), **c)
    n = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        h.produce_and_wait(p, "orders", [b"v%d" % n], partition=0, timeout=30)
        n += 1
        time.sleep(0.05)
    assert h.watermarks(b.bootstrap, "orders", 0)[1] == n
    assert len(calls) >= 3, calls


def test_a_new_signing_key_is_fetched_when_a_token_first_names_it(oauth_broker, idp):
    b = oauth_broker
    started = time.monotonic()
    fetches = idp.jwks_fetches
    assert fetches >= 1  # at start
    idp.keys["k2"] = ec.generate_private_key(ec.SECP256R1())
    idp.published.append("k2")
    idp.signing_kid = "k2"
    # Fetched again at most once every 5 s for unknown keys: within a few seconds of start
    # the login may be refused, then it succeeds without a restart.
    deadline = started + 20
    while True:
        answer = login(b, bearer(idp.token("alice")))
        if answer is not None and answer[0] == 0:
            break
        assert "no published key has id" in answer[1], answer
        assert time.monotonic() < deadline, "the new key was never fetched"
        time.sleep(1)
    assert idp.jwks_fetches > fetches
    # A key the provider never published is still refused.
    answer = login(b, bearer(idp.token("alice", kid="k3",
                                       key=ec.generate_private_key(ec.SECP256R1()))))
    assert answer[0] == ERR_SASL_AUTHENTICATION_FAILED
