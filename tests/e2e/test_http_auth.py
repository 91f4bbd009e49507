"""The HTTP admin API and the console with security on: a broker with SASL listeners asks every
HTTP caller for a SASL user's password (HTTP Basic) by default, leaves only the probes and the
Prometheus scrape open, shows each caller only what its ACLs let it describe, and makes the
console's Kafka requests as the caller, so the broker's ACLs judge them (checked with plain
HTTP requests and with the console in Chromium, logged in through Playwright)."""

import http.client
import json
import socket
import ssl
import time
import urllib.error
import urllib.request

import pytest
import trustme

from confluent_kafka import TopicPartition
from confluent_kafka.admin import (AclOperation, AclPermissionType, NewTopic,
                                   ResourcePatternType, ResourceType)

import helpers as h
from conftest import SkiffBroker
from test_acls import USERS, acl_broker, admin, allow, conf, create_acls, pki_files  # noqa: F401
from test_console import CHROMIUM, FLAGS
from test_sasl import PASSWORDS, SaslBroker, metric, set_user, skiff
from test_tls import failures as tls_failures

ADMIN = ("admin", USERS["admin"])
ALICE = ("alice", USERS["alice"])


def get(broker, path: str, auth=None) -> tuple[int, dict]:
    status, body = broker.http_get(path, auth=auth, timeout=30)
    return status, json.loads(body) if body.startswith(b"{") else {}


def setup_cluster(b) -> None:
    """Topics alice-a and bob-b with a record each; groups alice-g and bob-g with offsets in
    them; alice may describe what starts with alice- and nothing else."""
    su = admin(b, "admin")
    for f in su.create_topics([NewTopic("alice-a", 1), NewTopic("bob-b", 1)]).values():
        f.result(timeout=15)
    c = conf(b, "admin")
    p = h.producer(c.pop("bootstrap.servers"), **c)
    for topic in ["alice-a", "bob-b"]:
        h.produce_and_wait(p, topic, [f"{topic}-record".encode()], partition=0)
    for group, topic in [("alice-g", "alice-a"), ("bob-g", "bob-b"), ("alice-g", "bob-b")]:
        c = conf(b, "admin", **{"group.id": group})
        consumer = h.consumer(c.pop("bootstrap.servers"), **c)
        consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
        consumer.close()
    create_acls(b, [
        allow(ResourceType.TOPIC, "alice-", "User:alice", AclOperation.DESCRIBE,
              ResourcePatternType.PREFIXED),
        allow(ResourceType.GROUP, "alice-", "User:alice", AclOperation.DESCRIBE,
              ResourcePatternType.PREFIXED),
    ])


def test_the_admin_api_asks_who_calls_and_shows_what_acls_allow(acl_broker):
    b = acl_broker
    setup_cluster(b)
    # No credentials: 401 with the challenges; the probes and the scrape stay open.
    status, body = get(b, "/v1/topics")
    assert status == 401 and "authentication required" in body["error"]
    for path in ["/health", "/ready", "/metrics"]:
        assert b.http_get(path)[0] == 200, path
    # Wrong password, unknown user, malformed header: 401, logged without the password.
    failures = metric(b, "skiff_http_authentications_total", scheme="basic", result="failure")
    assert get(b, "/v1/topics", auth=("alice", "Wrong-Guess-77"))[0] == 401
    assert get(b, "/v1/topics", auth=("nobody", "Wrong-Guess-78"))[0] == 401
    assert get(b, "/v1/topics", auth="not-a-jwt")[0] == 401  # no OAUTHBEARER here
    assert metric(b, "skiff_http_authentications_total", scheme="basic",
                  result="failure") == failures + 2
    log = b.log_path.read_text()
    assert "HTTP authentication failed" in log
    assert "Wrong-Guess-77" not in log and "Wrong-Guess-78" not in log

    # A super user sees everything; alice what her ACLs let her describe.
    names = lambda body: sorted(t["name"] for t in body["topics"])  # noqa: E731
    status, body = get(b, "/v1/topics", auth=ADMIN)
    assert status == 200 and names(body) == ["alice-a", "bob-b"]
    status, body = get(b, "/v1/topics", auth=ALICE)
    assert status == 200 and names(body) == ["alice-a"]
    status, body = get(b, "/v1/groups", auth=ALICE)
    assert status == 200
    assert [g["group_id"] for g in body["groups"]] == ["alice-g"]
    # Her group's offsets in a topic she may not describe are left out too.
    assert [o["topic"] for o in body["groups"][0]["offsets"]] == ["alice-a"]
    assert len(get(b, "/v1/groups", auth=ADMIN)[1]["groups"]) == 2
    # The broker-wide views need DESCRIBE on the cluster.
    for path in ["/v1/stats", "/v1/compactor"]:
        status, body = get(b, path, auth=ALICE)
        assert status == 403 and "CLUSTER_AUTHORIZATION_FAILED" in body["error"], (path, body)
        assert get(b, path, auth=ADMIN)[0] == 200, path
    assert get(b, "/v1/brokers", auth=ALICE)[0] == 200
    assert metric(b, "skiff_http_authentications_total", scheme="basic",
                  result="success") >= 8
    # A changed password, then a deleted user, take effect at once (checked passwords are
    # remembered against the credential they opened).
    from confluent_kafka.admin import (ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialDeletion,
                                       UserScramCredentialUpsertion)
    su = admin(b, "admin")
    changes = [UserScramCredentialUpsertion(
        "alice", ScramCredentialInfo(m, 4096), b"alice-New-pw-2")
        for m in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512)]
    for f in su.alter_user_scram_credentials(changes).values():
        f.result(timeout=15)
    assert get(b, "/v1/topics", auth=ALICE)[0] == 401
    assert get(b, "/v1/topics", auth=("alice", "alice-New-pw-2"))[0] == 200
    deletions = [UserScramCredentialDeletion("alice", m)
                 for m in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512)]
    for f in su.alter_user_scram_credentials(deletions).values():
        f.result(timeout=15)
    assert get(b, "/v1/topics", auth=("alice", "alice-New-pw-2"))[0] == 401


def test_the_console_acts_as_its_caller(acl_broker):
    b = acl_broker
    setup_cluster(b)
    # alice may not create topics: the broker's own refusal comes back.
    status, body = b.http_request("POST", "/v1/topics", {"name": "alice-new"}, auth=ALICE,
                                  timeout=30)
    assert status == 400 and "AUTHORIZATION_FAILED" in body.decode(), body
    # Nor read records without READ; with it, she can.
    status, body = get(b, "/v1/records?topic=alice-a&partition=0", auth=ALICE)
    assert status == 400 and "AUTHORIZATION_FAILED" in body["error"], body
    create_acls(b, [allow(ResourceType.TOPIC, "alice-a", "User:alice", AclOperation.READ)])
    status, body = get(b, "/v1/records?topic=alice-a&partition=0", auth=ALICE)
    assert status == 200, body
    assert [bytes.fromhex(r["value"]) for r in body["records"]] == [b"alice-a-record"]
    # A super user creates and deletes.
    status, _ = b.http_request("POST", "/v1/topics", {"name": "admin-new", "partitions": 2},
                               auth=ADMIN, timeout=30)
    assert status == 200
    su = admin(b, "admin")
    assert len(su.list_topics("admin-new", timeout=10).topics["admin-new"].partitions) == 2
    status, body = b.http_request("DELETE", "/v1/topics/admin-new", auth=ALICE, timeout=30)
    assert status == 400 and "AUTHORIZATION_FAILED" in body.decode(), body


def test_the_console_in_a_browser_asks_for_a_login(acl_broker, tmp_path):
    from playwright.sync_api import sync_playwright
    b = acl_broker
    setup_cluster(b)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=[f for f in FLAGS if f != "--headless"])
        try:
            # Without a login: 401 with a Basic challenge (a person's browser asks for one).
            anonymous = browser.new_context()
            response = anonymous.request.get(f"http://{b.http}/")
            assert response.status == 401
            assert 'Basic realm="skiff"' in response.headers["www-authenticate"]
            anonymous.close()
            # alice logs in: her topic is listed, bob's is not; creating one is refused.
            context = browser.new_context(http_credentials={"username": ALICE[0],
                                                            "password": ALICE[1]},
                                          viewport={"width": 1280, "height": 1600})
            page = context.new_page()
            page.on("dialog", lambda dialog: dialog.accept())
            assert page.goto(f"http://{b.http}/").status == 200
            page.wait_for_selector("a[href='#topics/alice-a']")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                assert page.query_selector("a[href='#topics/bob-b']") is None
                time.sleep(0.5)
            page.fill("#create-topic input[name=name]", "alice-new")
            page.click("#create-topic button")
            page.wait_for_selector("text=AUTHORIZATION_FAILED")
            page.screenshot(path=str(tmp_path / "console-as-alice.png"), full_page=True)
            context.close()
        finally:
            browser.close()


class SaslSslOnlyBroker(SkiffBroker):
    """One SASL_SSL listener and nothing else."""

    def __init__(self, workdir, keystore: str):
        super().__init__(workdir, name="sasl-ssl-only")
        self.keystore = keystore

    def command(self) -> list[str]:
        cmd = super().command()
        for flag in ("--listeners", "--advertised-listeners"):
            cmd[cmd.index(flag) + 1] = f"SASL_SSL://{self.bootstrap}"
        return cmd + ["--ssl-keystore-location", self.keystore,
                      "--sasl-enabled-mechanisms", "SCRAM-SHA-512"]


def test_the_console_reaches_a_sasl_ssl_only_broker_trusting_its_own_certificate(tmp_path):
    import trustme
    ca = trustme.CA()
    keystore, ca_file = tmp_path / "server.pem", tmp_path / "ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(keystore))
    ca.cert_pem.write_to_path(str(ca_file))
    b = SaslSslOnlyBroker(tmp_path / "b", str(keystore))
    b.extra_args = ["--ssl-reload-interval-ms", "200"]
    run = skiff("user", "bootstrap", "carol", "--password-stdin", "--data-dir", str(b.data_dir),
                stdin="carol-Secr3t-pw\n")
    assert run.returncode == 0, run.stderr
    carol = ("carol", "carol-Secr3t-pw")
    b.start()
    try:
        status, body = b.http_request("POST", "/v1/topics", {"name": "tls-only"}, auth=carol,
                                      timeout=30)
        assert status == 200, body
        login = {"security.protocol": "SASL_SSL", "ssl.ca.location": str(ca_file),
                 "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": carol[0],
                 "sasl.password": carol[1]}
        h.produce_and_wait(h.producer(b.bootstrap, **login), "tls-only", [b"over", b"tls"],
                           partition=0)
        status, body = get(b, "/v1/records?topic=tls-only&partition=0", auth=carol)
        assert status == 200, body
        assert [bytes.fromhex(r["value"]) for r in body["records"]] == [b"over", b"tls"]
        # A renewed certificate: the console trusts the new one as soon as it is served.
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(keystore))
        deadline = time.monotonic() + 10
        while "TLS certificates reloaded" not in b.log_path.read_text():
            assert time.monotonic() < deadline, "the renewed certificate was not loaded"
            time.sleep(0.2)
        status, body = get(b, "/v1/records?topic=tls-only&partition=0", auth=carol)
        assert status == 200, body
    finally:
        b.cleanup()


@pytest.mark.parametrize("second_name", ["127.0.0.1", "localhost"])
def test_the_console_follows_leaders_to_brokers_with_their_own_certificates(
        tmp_path, etcd, s3, second_name):
    # Two brokers, each serving its own certificate from one CA: the console of the first
    # trusts its own certificate as served and the other's by --ssl-truststore-location, when
    # it names the address the other advertises (127.0.0.1); one for another name is refused.
    import trustme
    from confluent_kafka.admin import AdminClient
    from servers import broker_args
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    run = skiff("user", "bootstrap", "carol", "--password-stdin", "--etcd-endpoints",
                etcd.endpoint, stdin="carol-Secr3t-pw\n")
    assert run.returncode == 0, run.stderr
    carol = ("carol", "carol-Secr3t-pw")
    brokers = []
    try:
        for name, identity in (("a", "127.0.0.1"), ("b", second_name)):
            keystore = tmp_path / f"{name}.pem"
            ca.issue_cert(identity).private_key_and_cert_chain_pem.write_to_path(str(keystore))
            b = SaslSslOnlyBroker(tmp_path / name, str(keystore))
            b.extra_args = broker_args(etcd, s3) + ["--ssl-truststore-location", str(ca_file)]
            brokers.append(b.start())
        a, second = brokers
        login = {"security.protocol": "SASL_SSL", "ssl.ca.location": str(ca_file),
                 "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": carol[0],
                 "sasl.password": carol[1]}
        client = AdminClient({"bootstrap.servers": a.bootstrap, **login})
        client.create_topics([NewTopic("spread", 4)])["spread"].result(timeout=15)
        deadline = time.monotonic() + 30
        while True:
            md = client.list_topics("spread", timeout=10)
            leaders = {p.id: p.leader for p in md.topics["spread"].partitions.values()}
            if len(set(leaders.values())) == 2 and -1 not in leaders.values():
                break
            assert time.monotonic() < deadline, f"leaders never spread: {leaders}"
            time.sleep(0.5)
        [second_id] = [i for i, b in md.brokers.items() if b.port == second.kafka_port]
        if second_name == "127.0.0.1":
            p = h.producer(a.bootstrap, **login)
            for partition in range(4):
                h.produce_and_wait(p, "spread", [f"p{partition}".encode()], partition=partition)
        for partition, leader in sorted(leaders.items()):
            status, body = get(a, f"/v1/records?topic=spread&partition={partition}", auth=carol)
            if second_name == "127.0.0.1":
                assert status == 200, body
                assert [bytes.fromhex(r["value"]) for r in body["records"]] == \
                    [f"p{partition}".encode()], partition
            elif leader == second_id:
                assert status == 400 and "not valid for name" in body["error"], body
            else:
                assert status == 200, body
    finally:
        for b in brokers:
            b.cleanup()


def https_pki(tmp_path) -> dict:
    """A CA, the broker's certificate from it (with its key), and a CA nobody trusts."""
    ca = trustme.CA()
    files = {"ca": tmp_path / "ca.pem", "server": tmp_path / "server.pem",
             "other": tmp_path / "other-ca.pem"}
    files["ca"].write_bytes(ca.cert_pem.bytes())
    files["server"].write_bytes(
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.bytes())
    files["other"].write_bytes(trustme.CA().cert_pem.bytes())
    return {name: str(path) for name, path in files.items()}


def test_the_admin_api_and_console_over_https(tmp_path):
    """`--http-listeners https://…`: the HTTP port serves the SASL_SSL listener's certificate,
    so passwords never cross in the clear; plain HTTP, clients that do not trust the
    certificate and handshakes that never finish are refused, counted, and slow nobody."""
    pki = https_pki(tmp_path)
    b = SaslBroker(tmp_path / "https", pki["server"], [])
    b.http_ca = pki["ca"]
    b.start()  # its /health answered over HTTPS, the certificate checked against the CA
    try:
        set_user(b, "alice", PASSWORDS["alice"])
        alice = ("alice", PASSWORDS["alice"])
        assert get(b, "/v1/topics")[0] == 401
        status, body = get(b, "/v1/topics", auth=alice)
        assert status == 200 and "topics" in body, (status, body)
        status, page = b.http_get("/", auth=alice)
        assert status == 200 and b"<html" in page.lower()

        before = tls_failures(b)
        # Plain HTTP on the HTTPS port gets no HTTP answer.
        with pytest.raises((OSError, http.client.HTTPException)):
            urllib.request.urlopen(f"http://{b.http}/health", timeout=5).read()
        # A client that does not trust the broker's CA refuses it.
        untrusting = ssl.create_default_context(cafile=pki["other"])
        with pytest.raises(urllib.error.URLError) as refused:
            urllib.request.urlopen(f"https://{b.http}/health", timeout=5, context=untrusting)
        assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value), refused.value
        # Handshakes that never finish hold up nobody and are closed after 10 s.
        stalled = []
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", b.http_port), timeout=5)
            s.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello
            stalled.append(s)
        started = time.monotonic()
        status, _ = get(b, "/v1/brokers", auth=alice)
        assert status == 200 and time.monotonic() - started < 5
        for s in stalled:
            s.settimeout(30)
            assert s.recv(4096) == b"", "a stalled handshake was not closed"
            s.close()
        assert time.monotonic() - started < 20
        assert tls_failures(b) >= before + 2 + len(stalled)
        assert b.is_running()
    finally:
        b.cleanup()


def test_https_needs_a_certificate(tmp_path):
    run = skiff("serve", "--data-dir", str(tmp_path / "d"), "--listeners", "127.0.0.1:0",
                "--http-listeners", "https://127.0.0.1:0")
    assert run.returncode != 0 and "--ssl-keystore-location" in run.stderr, run.stderr
    run = skiff("serve", "--data-dir", str(tmp_path / "d"), "--listeners", "127.0.0.1:0",
                "--http-listeners", "ftp://127.0.0.1:0")
    assert run.returncode != 0 and "https://IP:PORT" in run.stderr, run.stderr


def test_a_dead_metadata_store_is_a_503_not_a_wrong_password(tmp_path, start_broker, etcd, s3):
    from servers import broker_args
    run = skiff("user", "bootstrap", "dave", "--password-stdin", "--etcd-endpoints",
                etcd.endpoint, stdin="dave-Secr3t-pw\n")
    assert run.returncode == 0, run.stderr
    b = start_broker(args=broker_args(etcd, s3) + [
        "--http-authentication", "required", "--sasl-enabled-mechanisms", "PLAIN",
        "--etcd-request-timeout-ms", "1000"])
    dave = ("dave", "dave-Secr3t-pw")
    assert get(b, "/v1/brokers", auth=dave)[0] == 200
    etcd.stop()
    try:
        status, body = get(b, "/v1/brokers", auth=dave)
        assert status == 503 and "cannot be read" in body["error"], (status, body)
    finally:
        etcd.start()
    deadline = time.monotonic() + 30
    while get(b, "/v1/brokers", auth=dave)[0] != 200:
        assert time.monotonic() < deadline, "never answered again after etcd came back"
        time.sleep(0.5)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_standalone_compactors_views_ask_for_the_same_logins(tmp_path, etcd, s3, scheme):
    from servers import broker_args
    from test_compactor import SkiffCompactor
    for user in ("root", "erin"):
        run = skiff("user", "bootstrap", user, "--password-stdin", "--etcd-endpoints",
                    etcd.endpoint, stdin=f"{user}-Secr3t-pw\n")
        assert run.returncode == 0, run.stderr
    tls = []
    if scheme == "https":
        pki = https_pki(tmp_path)
        tls = ["--ssl-keystore-location", pki["server"]]
    comp = SkiffCompactor(tmp_path / "compactor", name="compactor", args=broker_args(etcd, s3) + [
        "--http-authentication", "required", "--sasl-enabled-mechanisms", "SCRAM-SHA-512",
        "--authorizer", "standard", "--super-users", "User:root", *tls])
    if scheme == "https":
        comp.http_ca = pki["ca"]
    comp.start()
    try:
        for path in ["/health", "/metrics"]:
            assert comp.http_get(path)[0] == 200, path
        for path in ["/v1/compactor", "/v1/object-store", "/v1/metadata-store"]:
            assert comp.http_get(path)[0] == 401, path
            assert comp.http_get(path, auth=("erin", "erin-Secr3t-pw"))[0] == 403, path
            assert comp.http_get(path, auth=("root", "root-Secr3t-pw"))[0] == 200, path
        assert comp.http_get("/v1/compactor", auth=("root", "wrong-Secr3t"))[0] == 401
    finally:
        comp.cleanup()
