"""The broker's connection to etcd, secured: TLS with a CA made in the test and a client
certificate (etcd's `--client-cert-auth`), and etcd's own authentication (a user and password,
`auth enable`). A broker with the right settings serves; one with a wrong password, no CA or no
client certificate refuses to start and says why, without printing the password."""

import json
import os
import ssl
import subprocess
import urllib.request

import pytest
import trustme

import helpers as h
from conftest import SkiffBroker, skiff_bin
from servers import Etcd

PASSWORD = h.secret("etcd-root-Secr3t")


class TlsEtcd(Etcd):
    """etcd serving https with a server certificate and requiring client certificates."""

    def __init__(self, workdir, files: dict):
        super().__init__(workdir)
        self.files = files

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    def extra_flags(self) -> list[str]:
        return ["--cert-file", self.files["server.pem"], "--key-file", self.files["server.key"],
                "--trusted-ca-file", self.files["ca.pem"], "--client-cert-auth"]

    def _healthy(self) -> bool:
        context = ssl.create_default_context(cafile=self.files["ca.pem"])
        context.load_cert_chain(self.files["client.pem"], self.files["client.key"])
        try:
            with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1,
                                        context=context) as r:
                return b"true" in r.read()
        except OSError:
            return False


@pytest.fixture
def pki(tmp_path):
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("skiff-broker")
    files = {}
    for name, blob in [("ca.pem", ca.cert_pem.bytes()),
                       ("server.pem", b"".join(c.bytes() for c in server.cert_chain_pems)),
                       ("server.key", server.private_key_pem.bytes()),
                       ("client.pem", b"".join(c.bytes() for c in client.cert_chain_pems)),
                       ("client.key", client.private_key_pem.bytes())]:
        (tmp_path / name).write_bytes(blob)
        files[name] = str(tmp_path / name)
    return files


def serve_fails(tmp_path, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKIFF_")}
    return subprocess.run([str(skiff_bin()), "serve", "--data-dir", str(tmp_path / "x"),
                           "--listeners", "127.0.0.1:0", "--http-listeners", "127.0.0.1:0",
                           "--etcd-request-timeout-ms", "2000", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def produce_consume(broker) -> None:
    topic = h.unique_topic("etcd-sec")
    h.create_topic(broker.bootstrap, topic, 1)
    h.produce_and_wait(h.producer(broker.bootstrap), topic, [b"a", b"b"], partition=0)
    assert [r.value for r in h.read_partitions(broker.bootstrap, topic, [0])] == [b"a", b"b"]


def test_tls_to_etcd_with_a_client_certificate(tmp_path, pki):
    etcd = TlsEtcd(tmp_path / "etcd", pki)
    etcd.start()
    try:
        tls = ["--etcd-endpoints", etcd.endpoint, "--etcd-ca-location", pki["ca.pem"],
               "--etcd-cert-location", pki["client.pem"], "--etcd-key-location",
               pki["client.key"]]
        broker = SkiffBroker(tmp_path / "broker", args=tls)
        broker.start()
        try:
            produce_consume(broker)
            status, body = broker.http_get("/v1/brokers")
            assert status == 200 and json.loads(body)
        finally:
            broker.cleanup()
        # Without the client certificate etcd refuses the connection; without the CA the
        # broker does not trust etcd: either way it does not start, and says etcd.
        for args in (tls[:4], tls[:2] + tls[4:]):
            run = serve_fails(tmp_path, *args)
            assert run.returncode != 0 and "etcd" in run.stderr, run.stderr
    finally:
        etcd.stop()


def gateway(etcd, path: str, body: dict, token: str | None = None) -> dict:
    """etcd's JSON gateway (v3 API over HTTP)."""
    request = urllib.request.Request(f"{etcd.endpoint}/v3/{path}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", token)
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def test_etcd_authentication_with_a_user_and_password(tmp_path, etcd):
    gateway(etcd, "auth/user/add", {"name": "root", "password": PASSWORD})
    gateway(etcd, "auth/role/add", {"name": "root"})
    gateway(etcd, "auth/user/grant", {"user": "root", "role": "root"})
    gateway(etcd, "auth/enable", {})
    creds = ["--etcd-endpoints", etcd.endpoint, "--etcd-user", "root"]
    broker = SkiffBroker(tmp_path / "broker", args=creds)
    broker.extra_env = {"SKIFF_ETCD_PASSWORD": PASSWORD}
    broker.start()
    try:
        produce_consume(broker)
    finally:
        broker.cleanup()
    assert PASSWORD not in broker.log_path.read_text()
    # A wrong password: no start, a clear reason, no password printed.
    run = serve_fails(tmp_path, *creds, "--etcd-password", "wrong-password-9")
    assert run.returncode != 0 and "etcd" in run.stderr, run.stderr
    assert "wrong-password-9" not in run.stderr
    # No credentials against an etcd that requires them: refused too.
    run = serve_fails(tmp_path, "--etcd-endpoints", etcd.endpoint)
    assert run.returncode != 0, run.stderr
    # A user without a password is a settings error.
    run = serve_fails(tmp_path, *creds)
    assert run.returncode != 0 and "--etcd-password" in run.stderr, run.stderr
