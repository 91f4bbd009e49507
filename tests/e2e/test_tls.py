"""TLS on the Kafka listener (`SSL://`, Kafka's SSL security protocol) with real clients:
confluent-kafka and kcat verify the broker's certificate against a CA made in the test
(trustme); with `--ssl-client-auth required` only clients with a certificate from the trusted
CA get in. Plaintext clients, untrusted CAs, missing, foreign or expired client certificates,
garbage on the TLS port and handshakes that never finish are refused (or closed after 10 s),
counted, and harm nobody else; clients refuse a broker whose certificate has expired."""

import datetime
import json
import socket
import ssl as ssl_module
import subprocess
import time

import pytest
import trustme
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

import helpers as h
from conftest import SkiffBroker, skiff_bin


class TlsBroker(SkiffBroker):
    """A broker whose Kafka listener is `SSL://` (the fixture's own flags name it PLAINTEXT)."""

    def command(self) -> list[str]:
        return [str(skiff_bin()), "serve", "--data-dir", str(self.data_dir),
                "--listeners", f"SSL://{self.bootstrap}",
                "--advertised-listeners", f"SSL://{self.bootstrap}",
                "--http-listeners", self.http_listener, "--flush-linger-ms", "5", *self.extra_args]


@pytest.fixture
def pki(tmp_path):
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@skiff.test")
    stranger = trustme.CA().issue_cert("stranger@skiff.test")
    # Valid yesterday, from the trusted CA.
    now = datetime.datetime.now(datetime.timezone.utc)
    lapsed = {"not_before": now - datetime.timedelta(days=2),
              "not_after": now - datetime.timedelta(days=1)}
    expired = ca.issue_cert("expired@skiff.test", **lapsed)
    expired_server = ca.issue_cert("127.0.0.1", "localhost", **lapsed)
    files = {}
    for name, blob in [("ca.pem", ca.cert_pem.bytes()),
                       ("server.pem", server.private_key_and_cert_chain_pem.bytes()),
                       ("server.crt", b"".join(c.bytes() for c in server.cert_chain_pems)),
                       ("server.key", server.private_key_pem.bytes()),
                       ("client.pem", b"".join(c.bytes() for c in client.cert_chain_pems)),
                       ("client.key", client.private_key_pem.bytes()),
                       ("stranger.pem", b"".join(c.bytes() for c in stranger.cert_chain_pems)),
                       ("stranger.key", stranger.private_key_pem.bytes()),
                       ("expired.pem", b"".join(c.bytes() for c in expired.cert_chain_pems)),
                       ("expired.key", expired.private_key_pem.bytes()),
                       ("expired-server.pem",
                        expired_server.private_key_and_cert_chain_pem.bytes()),
                       ("other-ca.pem", trustme.CA().cert_pem.bytes())]:
        path = tmp_path / name
        path.write_bytes(blob)
        files[name] = str(path)
    return files


def start(tmp_path, *args) -> TlsBroker:
    broker = TlsBroker(tmp_path / "tls", args=list(args))
    broker.start()
    return broker


def ssl(pki, **extra) -> dict:
    return {"security.protocol": "SSL", "ssl.ca.location": pki["ca.pem"], **extra}


def refused(bootstrap: str, conf: dict) -> str:
    """The error a client gets asking for metadata with `conf`."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000, **conf})
    with pytest.raises(KafkaException) as failed:
        admin.list_topics(timeout=5)
    return str(failed.value)


def failures(broker) -> float:
    status, body = broker.http_get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith("skiff_tls_handshake_failures_total "):
            return float(line.split()[1])
    raise AssertionError("no skiff_tls_handshake_failures_total")


def test_clients_speak_tls_and_others_are_refused(tmp_path, pki):
    broker = start(tmp_path, "--ssl-keystore-location", pki["server.pem"])
    try:
        b = broker.bootstrap
        topic = h.unique_topic("tls")
        values = [b"secret-%d" % i for i in range(50)]
        h.produce_and_wait(h.producer(b, **ssl(pki)), topic, values, partition=0)
        got = h.read_partitions(b, topic, [0], c=h.consumer(b, **ssl(pki)))
        assert [r.value for r in got] == values
        # kcat (librdkafka 2.0) over TLS too.
        run = subprocess.run(["kcat", "-b", b, "-X", "security.protocol=SSL",
                              "-X", f"ssl.ca.location={pki['ca.pem']}", "-L", "-J"],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert topic in {t["topic"] for t in json.loads(run.stdout)["topics"]}

        before = failures(broker)
        # A plaintext client, and one that trusts another CA: refused at the handshake.
        refused(b, {})
        refused(b, ssl(pki, **{"ssl.ca.location": pki["other-ca.pem"]}))
        # Garbage on the TLS port: the broker closes the connection.
        with socket.create_connection(("127.0.0.1", broker.kafka_port), timeout=5) as s:
            s.sendall(b"\x00\x00\x00\x40" + b"not a TLS hello!" * 4)
            s.settimeout(5)
            assert s.recv(4096)[:1] in (b"", b"\x15"), "no TLS alert or close"  # 0x15: alert
        deadline = time.time() + 10
        while failures(broker) < before + 3 and time.time() < deadline:
            time.sleep(0.2)
        assert failures(broker) >= before + 3
        # Nobody else was harmed.
        h.produce_and_wait(h.producer(b, **ssl(pki)), topic, [b"after"], partition=0)
        assert broker.is_running()
    finally:
        broker.cleanup()


def test_client_certificates_when_required(tmp_path, pki):
    # The chain and the key in files of their own, as a Kubernetes TLS Secret holds them.
    broker = start(tmp_path, "--ssl-keystore-location", pki["server.crt"],
                   "--ssl-key-location", pki["server.key"],
                   "--ssl-truststore-location", pki["ca.pem"], "--ssl-client-auth", "required")
    try:
        b = broker.bootstrap
        trusted = ssl(pki, **{"ssl.certificate.location": pki["client.pem"],
                              "ssl.key.location": pki["client.key"]})
        topic = h.unique_topic("mtls")
        h.produce_and_wait(h.producer(b, **trusted), topic, [b"a", b"b"], partition=0)
        got = h.read_partitions(b, topic, [0], c=h.consumer(b, **trusted))
        assert [r.value for r in got] == [b"a", b"b"]
        # No certificate, or one from a CA the broker does not trust: refused.
        refused(b, ssl(pki))
        refused(b, ssl(pki, **{"ssl.certificate.location": pki["stranger.pem"],
                               "ssl.key.location": pki["stranger.key"]}))
        # One from the trusted CA that has expired: refused too.
        before = failures(broker)
        refused(b, ssl(pki, **{"ssl.certificate.location": pki["expired.pem"],
                               "ssl.key.location": pki["expired.key"]}))
        assert failures(broker) > before
        assert broker.is_running()
    finally:
        broker.cleanup()


def test_clients_refuse_an_expired_server_certificate(tmp_path, pki):
    broker = start(tmp_path, "--ssl-keystore-location", pki["expired-server.pem"])
    try:
        refused(broker.bootstrap, ssl(pki))
        # Why, as OpenSSL's own verification says it.
        context = ssl_module.create_default_context(cafile=pki["ca.pem"])
        with socket.create_connection(("127.0.0.1", broker.kafka_port), timeout=5) as raw:
            with pytest.raises(ssl_module.SSLCertVerificationError) as failed:
                context.wrap_socket(raw, server_hostname="127.0.0.1")
        assert "expired" in failed.value.verify_message, failed.value.verify_message
    finally:
        broker.cleanup()


def test_a_client_that_never_finishes_its_handshake_is_closed(tmp_path, pki):
    broker = start(tmp_path, "--ssl-keystore-location", pki["server.pem"])
    try:
        before = failures(broker)
        stalled = []
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", broker.kafka_port), timeout=5)
            # The start of a TLS record (a handshake of 512 bytes), and nothing more.
            s.sendall(b"\x16\x03\x01\x02\x00\x01")
            stalled.append(s)
        # Meanwhile others are served as usual.
        topic = h.unique_topic("stall")
        h.produce_and_wait(h.producer(broker.bootstrap, **ssl(pki)), topic, [b"x"], partition=0)
        started = time.monotonic()
        for s in stalled:
            s.settimeout(30)
            assert s.recv(4096) == b"", "a stalled handshake was not closed"
            s.close()
        # The broker waits 10 s for a handshake to finish (`tls::HANDSHAKE_TIMEOUT`).
        assert time.monotonic() - started < 20
        assert failures(broker) >= before + 3
        assert broker.is_running()
    finally:
        broker.cleanup()


def test_tls_settings_are_checked_at_start(tmp_path, pki):
    def serve(*args, listeners="SSL://127.0.0.1:0"):
        return subprocess.run([str(skiff_bin()), "serve", "--data-dir", str(tmp_path / "d"),
                               "--listeners", listeners, "--http-listeners",
                               "127.0.0.1:0", *args], capture_output=True, text=True, timeout=60)

    run = serve()
    assert run.returncode != 0 and "--ssl-keystore-location" in run.stderr
    run = serve("--ssl-keystore-location", pki["ca.pem"])
    assert run.returncode != 0 and "private key" in run.stderr
    run = serve("--ssl-keystore-location", pki["server.pem"], "--ssl-client-auth", "required")
    assert run.returncode != 0 and "--ssl-truststore-location" in run.stderr
    # A SASL_SSL listener needs the keystore too; a listener name without a protocol is named.
    run = serve(listeners="SASL_SSL://127.0.0.1:0")
    assert run.returncode != 0 and "--ssl-keystore-location" in run.stderr
    run = serve(listeners="INTERNAL://127.0.0.1:0")
    assert run.returncode != 0 and "add INTERNAL:PROTOCOL" in run.stderr


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path):
    import ssl as tls
    ca = trustme.CA()
    first, second = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    keystore, ca_file = tmp_path / "rotating.pem", tmp_path / "rotating-ca.pem"
    first.private_key_and_cert_chain_pem.write_to_path(str(keystore))
    ca.cert_pem.write_to_path(str(ca_file))
    broker = start(tmp_path, "--ssl-keystore-location", str(keystore),
                   "--ssl-reload-interval-ms", "200")

    def der(cert) -> bytes:
        return tls.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())

    def served() -> bytes:
        context = tls.create_default_context(cafile=str(ca_file))
        with socket.create_connection(("127.0.0.1", broker.kafka_port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            return conn.getpeercert(binary_form=True)

    try:
        b = broker.bootstrap
        conf = {"security.protocol": "SSL", "ssl.ca.location": str(ca_file)}
        assert served() == der(first)
        topic = h.unique_topic("renewed")
        p = h.producer(b, **conf)
        h.produce_and_wait(p, topic, [b"before"], partition=0)
        # The Secret is rewritten with a renewed certificate: new connections get it, the
        # producer's open connection goes on.
        second.private_key_and_cert_chain_pem.write_to_path(str(keystore))
        deadline = time.monotonic() + 10
        while served() != der(second):
            assert time.monotonic() < deadline, "the renewed certificate was never served"
            time.sleep(0.2)
        h.produce_and_wait(p, topic, [b"after"], partition=0)
        got = h.read_partitions(b, topic, [0], c=h.consumer(b, **conf))
        assert [r.value for r in got] == [b"before", b"after"]
        # A half-written or broken file keeps the certificate that works, loudly.
        keystore.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
        time.sleep(1.0)
        assert served() == der(second)
        assert "cannot be used; still serving the previous ones" in broker.log_path.read_text()
    finally:
        broker.cleanup()


def test_the_https_port_names_callers_by_their_client_certificates(tmp_path, pki):
    """`--http-listeners https://…` with `--ssl-client-auth`: the HTTP port asks for a client
    certificate but never insists (probes have none), and one from the trusted CA names the
    caller as it names an SSL client, so ACLs judge certificate-only deployments' HTTP
    callers too; other certificates are refused in the handshake."""
    import urllib.error
    import urllib.request
    from cryptography import x509
    from confluent_kafka.admin import NewTopic
    with open(pki["client.pem"], "rb") as f:
        subject = x509.load_pem_x509_certificate(f.read()).subject.rfc4514_string()
    broker = TlsBroker(tmp_path / "tls", args=[
        "--ssl-keystore-location", pki["server.pem"], "--ssl-client-auth", "required",
        "--ssl-truststore-location", pki["ca.pem"], "--http-authentication", "required",
        "--authorizer", "standard", "--super-users", f"User:{subject}"])
    broker.http_ca = pki["ca.pem"]
    broker.start()  # its /health answered over HTTPS to a caller without a certificate
    try:
        client = ssl(pki, **{"ssl.certificate.location": pki["client.pem"],
                             "ssl.key.location": pki["client.key"]})
        admin = AdminClient({"bootstrap.servers": broker.bootstrap, **client})
        for f in admin.create_topics([NewTopic("by-cert", 1)]).values():
            f.result(timeout=15)

        def get(path: str, who: str | None = None, headers: dict | None = None
                ) -> tuple[int, dict]:
            context = ssl_module.create_default_context(cafile=pki["ca.pem"])
            if who:
                context.load_cert_chain(pki[f"{who}.pem"], pki[f"{who}.key"])
            request = urllib.request.Request(f"https://{broker.http}{path}",
                                             headers=headers or {})
            try:
                with urllib.request.urlopen(request, timeout=10, context=context) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read() or b"{}")

        assert get("/v1/topics")[0] == 401
        status, body = get("/v1/topics", "client")
        assert status == 200 and [t["name"] for t in body["topics"]] == ["by-cert"], body
        # A certificate from a CA nobody trusts, or an expired one: refused in the handshake
        # (TLS 1.3 tells the client with its first read).
        for who in ["stranger", "expired"]:
            with pytest.raises(OSError) as refused:
                get("/v1/topics", who)
            assert "alert" in str(refused.value).lower(), refused.value
        # Users' passwords (SCRAM, the default mechanisms) work beside certificates: carol,
        # with no ACLs, sees no topic.
        import base64
        from confluent_kafka.admin import (ScramCredentialInfo, ScramMechanism,
                                           UserScramCredentialUpsertion)
        password = h.secret("carol-Secr3t-pw")
        upsert = UserScramCredentialUpsertion(
            "carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), password.encode())
        for f in admin.alter_user_scram_credentials([upsert]).values():
            f.result(timeout=15)
        basic = base64.b64encode(f"carol:{password}".encode()).decode()
        status, body = get("/v1/topics", headers={"Authorization": f"Basic {basic}"})
        assert status == 200 and body["topics"] == [], (status, body)
        # The console's Kafka pages log in as their caller: a certificate cannot be replayed.
        status, body = get("/v1/records?topic=by-cert&partition=0", "client")
        assert status == 403 and "client certificate" in body["error"], (status, body)
        _, metrics = broker.http_get("/metrics")
        assert 'skiff_http_authentications_total{scheme="certificate",result="success"}' \
            in metrics.decode()
    finally:
        broker.cleanup()
