"""SASL on the Kafka listeners, with real clients: one broker with PLAINTEXT, SASL_PLAINTEXT and
SASL_SSL listeners at once (each advertising its own address), users created with
`skiff user set` and with confluent-kafka's AdminClient (AlterUserScramCredentials), and logins
with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 from confluent-kafka (librdkafka 2.16), kcat
(librdkafka 2.0.2, which uses SaslHandshake v0's bare tokens for nothing but still needs it
listed) and kafka-python. Wrong passwords, unknown users, unknown mechanisms, plaintext
clients, garbage, oversized messages, logins that never finish and a flood of failed logins
are refused with Kafka's errors or a closed connection, counted, logged without the secret, and
slow nobody who is logged in. Sessions expire (`--connections-max-reauth-ms`) and clients
re-authenticate on the same connection (KIP-368)."""

import subprocess
import threading
import time

import pytest
import trustme
from confluent_kafka import KafkaException
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)
from kafka import KafkaConsumer, KafkaProducer

import helpers as h
import kafka_wire as w
from conftest import SkiffBroker, free_port, skiff_bin

PASSWORDS = {"alice": h.secret("alice-Secr3t-pw"), "bob": h.secret("bob-Secr3t-pw")}
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

API_SASL_HANDSHAKE = 17
ERR_SASL_AUTHENTICATION_FAILED = 58
ERR_ILLEGAL_SASL_STATE = 34
ERR_UNSUPPORTED_SASL_MECHANISM = 33


class SaslBroker(SkiffBroker):
    """PLAINTEXT on the fixture's port (for setting users up), SASL_PLAINTEXT and SASL_SSL on
    ports of their own."""

    def __init__(self, workdir, keystore: str, args: list[str]):
        super().__init__(workdir, args=args, name="sasl")
        self.keystore = keystore
        self.sasl_port = free_port()
        self.sasl_ssl_port = free_port()

    @property
    def sasl_plaintext(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def sasl_ssl(self) -> str:
        return f"127.0.0.1:{self.sasl_ssl_port}"

    def command(self) -> list[str]:
        listeners = (f"PLAINTEXT://{self.bootstrap},SASL_PLAINTEXT://{self.sasl_plaintext},"
                     f"SASL_SSL://{self.sasl_ssl}")
        return [str(skiff_bin()), "serve", "--data-dir", str(self.data_dir),
                "--listeners", listeners, "--advertised-listeners", listeners,
                "--http-listeners", self.http_listener, "--flush-linger-ms", "5",
                "--ssl-keystore-location", self.keystore, *self.sasl_args(), *self.extra_args]

    def sasl_args(self) -> list[str]:
        return ["--sasl-enabled-mechanisms", ",".join(MECHANISMS)]


@pytest.fixture
def pki(tmp_path):
    ca = trustme.CA()
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (tmp_path / "server.pem").write_bytes(
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.bytes())
    return {"ca": str(tmp_path / "ca.pem"), "server": str(tmp_path / "server.pem")}


@pytest.fixture
def sasl_broker(tmp_path, pki, request):
    marker = request.node.get_closest_marker("sasl_args")
    broker = SaslBroker(tmp_path / "sasl", pki["server"], list(marker.args) if marker else [])
    broker.start()
    for user, password in PASSWORDS.items():
        set_user(broker, user, password)
    yield broker
    broker.cleanup()


def skiff(*args, env: dict | None = None, stdin: str | None = None):
    return subprocess.run([str(skiff_bin()), *args], capture_output=True, text=True, timeout=60,
                          env=env, input=stdin)


def set_user(broker, user: str, password: str) -> None:
    run = skiff("user", "set", user, "--password-stdin", "--bootstrap-server", broker.bootstrap,
                stdin=password + "\n")
    assert run.returncode == 0, run.stderr


def conf(broker, protocol: str, mechanism: str, user: str, password: str, ca: str) -> dict:
    out = {"bootstrap.servers": broker.sasl_plaintext if protocol == "SASL_PLAINTEXT"
           else broker.sasl_ssl,
           "security.protocol": protocol, "sasl.mechanism": mechanism,
           "sasl.username": user, "sasl.password": password}
    if protocol == "SASL_SSL":
        out["ssl.ca.location"] = ca
    return out


def refused(client_conf: dict) -> str:
    """What a client is told trying to get metadata with `client_conf` (the failure, and the
    errors librdkafka reports on the side, where authentication failures go)."""
    errors = []
    admin = AdminClient({**client_conf, "socket.timeout.ms": 3000,
                         "error_cb": lambda e: errors.append(str(e))})
    with pytest.raises(KafkaException) as failed:
        admin.list_topics(timeout=4)
    admin.poll(0.5)  # serves error_cb
    del admin
    return " ".join([str(failed.value), *errors])


def metric(broker, name: str, **labels) -> float:
    _, body = broker.http_get("/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_every_mechanism_logs_in_and_produces_and_consumes(sasl_broker, pki, protocol):
    b = sasl_broker
    topic = h.unique_topic("sasl")
    h.create_topic(b.bootstrap, topic, 1)
    sent = []
    for mechanism in MECHANISMS:
        c = conf(b, protocol, mechanism, "alice", PASSWORDS["alice"], pki["ca"])
        # Metadata on a SASL listener names that listener's addresses.
        md = AdminClient(c).list_topics(timeout=10)
        port = b.sasl_port if protocol == "SASL_PLAINTEXT" else b.sasl_ssl_port
        assert [(x.host, x.port) for x in md.brokers.values()] == [("127.0.0.1", port)]
        values = [f"{mechanism}-{i}".encode() for i in range(20)]
        h.produce_and_wait(h.producer(c.pop("bootstrap.servers"), **c), topic, values,
                           partition=0)
        sent += values
    c = conf(b, protocol, "SCRAM-SHA-512", "bob", PASSWORDS["bob"], pki["ca"])
    consumer = h.consumer(c.pop("bootstrap.servers"), **c)
    got = [r.value for r in h.read_partitions(b.sasl_plaintext, topic, [0], c=consumer)]
    consumer.close()
    assert got == sent
    # The PLAINTEXT listener still names its own address.
    md = h.admin(b.bootstrap).list_topics(timeout=10)
    assert [(x.host, x.port) for x in md.brokers.values()] == [("127.0.0.1", b.kafka_port)]
    assert metric(b, "skiff_sasl_authentications_total", result="success") >= 4


def test_kcat_and_kafka_python_log_in(sasl_broker, pki):
    b = sasl_broker
    topic = h.unique_topic("clients")
    h.create_topic(b.bootstrap, topic, 1)
    # kcat (librdkafka 2.0.2): PLAIN and SCRAM-SHA-256 over SASL_PLAINTEXT, SCRAM-SHA-512 over
    # SASL_SSL.
    kcat_conf = {
        "plain": ["-b", b.sasl_plaintext, "-X", "security.protocol=SASL_PLAINTEXT",
                  "-X", "sasl.mechanisms=PLAIN"],
        "scram256": ["-b", b.sasl_plaintext, "-X", "security.protocol=SASL_PLAINTEXT",
                     "-X", "sasl.mechanisms=SCRAM-SHA-256"],
        "scram": ["-b", b.sasl_ssl, "-X", "security.protocol=SASL_SSL",
                  "-X", "sasl.mechanisms=SCRAM-SHA-512", "-X", f"ssl.ca.location={pki['ca']}"],
    }
    for name, args in kcat_conf.items():
        creds = ["-X", "sasl.username=alice", "-X", f"sasl.password={PASSWORDS['alice']}"]
        run = subprocess.run(["kcat", "-P", "-t", topic, "-p", "0", *args, *creds],
                             input=f"kcat-{name}\n", capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
    # kafka-python: SCRAM-SHA-256 over SASL_SSL.
    producer = KafkaProducer(bootstrap_servers=b.sasl_ssl, security_protocol="SASL_SSL",
                             ssl_cafile=pki["ca"], sasl_mechanism="SCRAM-SHA-256",
                             sasl_plain_username="bob", sasl_plain_password=PASSWORDS["bob"])
    producer.send(topic, b"kafka-python", partition=0).get(timeout=30)
    producer.close(timeout=10)
    consumer = KafkaConsumer(topic, bootstrap_servers=b.sasl_plaintext,
                             security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                             sasl_plain_username="bob", sasl_plain_password=PASSWORDS["bob"],
                             auto_offset_reset="earliest", consumer_timeout_ms=10000)
    try:
        got = [m.value for m in consumer]
    finally:
        consumer.close()
    assert got == [b"kcat-plain", b"kcat-scram256", b"kcat-scram", b"kafka-python"]
    run = subprocess.run(["kcat", "-C", "-e", "-t", topic, *kcat_conf["scram"],
                          "-X", "sasl.username=bob", "-X", f"sasl.password={PASSWORDS['bob']}"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["kcat-plain", "kcat-scram256", "kcat-scram", "kafka-python"]


def test_users_are_managed_with_the_admin_apis(sasl_broker, pki):
    b = sasl_broker
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    upsert = UserScramCredentialUpsertion(
        "carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"carol-pw")
    for f in admin.alter_user_scram_credentials([upsert]).values():
        f.result(timeout=15)
    described = admin.describe_user_scram_credentials(["carol"])["carol"].result(timeout=15)
    infos = described.scram_credential_infos
    assert [(i.mechanism, i.iterations) for i in infos] == [(ScramMechanism.SCRAM_SHA_256, 4096)]
    c = conf(b, "SASL_PLAINTEXT", "SCRAM-SHA-256", "carol", "carol-pw", pki["ca"])
    assert AdminClient(c).list_topics(timeout=10).brokers
    # skiff user list and delete, as a SCRAM client over SASL_SSL (TLS checked against the CA).
    env = {"SKIFF_SASL_PASSWORD": PASSWORDS["alice"]}
    login = ["--bootstrap-server", b.sasl_ssl, "--security-protocol", "SASL_SSL",
             "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "alice",
             "--ssl-ca-location", pki["ca"], "--output", "json"]
    run = skiff("user", "list", *login, env=env)
    assert run.returncode == 0, run.stderr
    import json
    users = {u["user"]: sorted(m["mechanism"] for m in u["mechanisms"])
             for u in json.loads(run.stdout)}
    assert users == {"alice": ["SCRAM-SHA-256", "SCRAM-SHA-512"],
                     "bob": ["SCRAM-SHA-256", "SCRAM-SHA-512"], "carol": ["SCRAM-SHA-256"]}
    run = skiff("user", "delete", "carol", "--mechanism", "SCRAM-SHA-256", *login, env=env)
    assert run.returncode == 0, run.stderr
    assert "SASL_AUTHENTICATION_FAILED" in refused(c) or "uthentication" in refused(c)
    # Deleting what is not there: Kafka's error, exit 1.
    run = skiff("user", "delete", "carol", "--mechanism", "SCRAM-SHA-256", *login, env=env)
    assert run.returncode == 1 and "RESOURCE_NOT_FOUND" in run.stderr, run.stderr
    # A wrong password for the CLI: a clear error, exit 1.
    run = skiff("user", "list", *login, env={"SKIFF_SASL_PASSWORD": "nope"})
    assert run.returncode == 1 and "SASL_AUTHENTICATION_FAILED" in run.stderr, run.stderr
    deletion = UserScramCredentialDeletion("bob", ScramMechanism.SCRAM_SHA_512)
    for f in admin.alter_user_scram_credentials([deletion]).values():
        f.result(timeout=15)
    c = conf(b, "SASL_PLAINTEXT", "SCRAM-SHA-512", "bob", PASSWORDS["bob"], pki["ca"])
    refused(c)


def sasl_handshake(conn: w.Conn, mechanism: str) -> tuple[int, list[str]]:
    _, payload = conn.request(API_SASL_HANDSHAKE, 1, w.string(mechanism))
    r = w.Reader(payload[4:])
    code = r.i16()
    return code, [r.string() for _ in range(r.i32())]


def sasl_authenticate(conn: w.Conn, auth: bytes) -> tuple[int, str | None] | None:
    """SaslAuthenticate v0; None when the broker closed the connection instead."""
    answer = w.sasl_authenticate(conn, auth)
    return None if answer is None else answer[:2]


def raw(broker) -> w.Conn:
    return w.Conn("127.0.0.1", broker.sasl_port, timeout=10)


@pytest.mark.sasl_args("--sasl-login-timeout-ms", "2000")
def test_bad_logins_get_kafka_errors_and_harm_nobody(sasl_broker, pki):
    b = sasl_broker
    failures_before = metric(b, "skiff_sasl_authentications_total", result="failure")
    # Wrong password and unknown user, through librdkafka: an authentication error.
    for mechanism in MECHANISMS:
        for user, password in [("alice", "wrong-password-1"), ("mallory", "wrong-password-2")]:
            error = refused(conf(b, "SASL_PLAINTEXT", mechanism, user, password, pki["ca"]))
            assert "uthentication" in error, error
    # A mechanism the broker does not offer: UNSUPPORTED_SASL_MECHANISM, with the ones it does.
    with raw(b) as conn:
        code, offered = sasl_handshake(conn, "GSSAPI")
        assert code == ERR_UNSUPPORTED_SASL_MECHANISM and offered == MECHANISMS
        assert conn.closed_by_peer()
    # SaslAuthenticate before SaslHandshake: ILLEGAL_SASL_STATE, then closed.
    with raw(b) as conn:
        assert sasl_authenticate(conn, b"\0alice\0x") == (ERR_ILLEGAL_SASL_STATE,
                                                          "SaslAuthenticate before SaslHandshake")
        assert conn.closed_by_peer()
    # Any other request before logging in: closed (as Kafka).
    with raw(b) as conn:
        conn.send_raw(w.frame(w.request_header_v1(w.API_METADATA, 1, 1) + w.i32(-1)))
        assert conn.recv_frame() is None
    # Garbage and an oversized message after the handshake: refused, closed.
    for garbage in [b"\xff" * 100, b"n,,n=alice,r=", b"x" * (600 * 1024)]:
        with raw(b) as conn:
            assert sasl_handshake(conn, "SCRAM-SHA-256")[0] == 0
            answer = sasl_authenticate(conn, garbage)
            assert answer is None or answer[0] == ERR_SASL_AUTHENTICATION_FAILED
            assert conn.closed_by_peer()
    # A plaintext Kafka client on the SASL port, a SASL client without TLS on the SASL_SSL port.
    refused({"bootstrap.servers": b.sasl_plaintext})
    refused({"bootstrap.servers": b.sasl_ssl, "security.protocol": "SASL_PLAINTEXT",
             "sasl.mechanism": "PLAIN", "sasl.username": "alice",
             "sasl.password": PASSWORDS["alice"]})
    # A login that never finishes is closed after --sasl-login-timeout-ms, even if it keeps
    # asking for ApiVersions.
    with raw(b) as conn:
        assert sasl_handshake(conn, "SCRAM-SHA-512")[0] == 0
        started = time.monotonic()
        assert conn.closed_by_peer(timeout=8)
        assert time.monotonic() - started < 6
    assert metric(b, "skiff_sasl_authentications_total", result="failure") > failures_before + 6

    # A flood of thousands of failed logins while a logged-in producer goes on: every record
    # acknowledged.
    topic = h.unique_topic("flood")
    h.create_topic(b.bootstrap, topic, 1)
    stop = threading.Event()
    attempts = [0]

    def flood():
        while not stop.is_set():
            try:
                with raw(b) as conn:
                    sasl_handshake(conn, "PLAIN")
                    sasl_authenticate(conn, b"\0alice\0guess")
                attempts[0] += 1
            except OSError:
                pass

    threads = [threading.Thread(target=flood) for _ in range(16)]
    for t in threads:
        t.start()
    try:
        c = conf(b, "SASL_SSL", "SCRAM-SHA-256", "bob", PASSWORDS["bob"], pki["ca"])
        p = h.producer(c.pop("bootstrap.servers"), **c)
        rounds = 0
        deadline = time.monotonic() + 60
        while attempts[0] < 2000 and time.monotonic() < deadline:
            h.produce_and_wait(p, topic, [b"r%d-%d" % (rounds, i) for i in range(50)],
                               partition=0, timeout=30)
            rounds += 1
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert attempts[0] >= 2000, attempts
    assert h.watermarks(b.bootstrap, topic, 0)[1] == 50 * rounds
    # Failed logins are logged, never with the password.
    log = b.log_path.read_text()
    assert "SASL authentication failed" in log
    for secret in ["wrong-password-1", "wrong-password-2", "guess", *PASSWORDS.values()]:
        assert secret not in log, f"{secret!r} in the broker's log"


@pytest.mark.sasl_args("--connections-max-reauth-ms", "2000")
def test_sessions_expire_and_clients_reauthenticate(sasl_broker, pki):
    b = sasl_broker
    topic = h.unique_topic("reauth")
    h.create_topic(b.bootstrap, topic, 1)
    successes = metric(b, "skiff_sasl_authentications_total", result="success")
    c = conf(b, "SASL_SSL", "SCRAM-SHA-512", "alice", PASSWORDS["alice"], pki["ca"])
    p = h.producer(c.pop("bootstrap.servers"), **c)
    deadline = time.monotonic() + 7
    n = 0
    while time.monotonic() < deadline:
        h.produce_and_wait(p, topic, [b"v%d" % n], partition=0, timeout=30)
        n += 1
        time.sleep(0.05)
    assert h.watermarks(b.bootstrap, topic, 0)[1] == n
    # librdkafka logged in again on its connections as each session neared its end.
    assert metric(b, "skiff_sasl_authentications_total", result="success") >= successes + 3
    # A client that does not re-authenticate is closed at its first request after expiry.
    with raw(b) as conn:
        assert sasl_handshake(conn, "PLAIN")[0] == 0
        assert sasl_authenticate(conn, f"\0alice\0{PASSWORDS['alice']}".encode())[0] == 0
        corr, payload = conn.request(w.API_VERSIONS, 0, b"")
        time.sleep(2.5)
        conn.send_raw(w.frame(w.request_header_v1(w.API_METADATA, 1, 9) + w.i32(-1)))
        assert conn.recv_frame() is None


class SaslOnlyBroker(SkiffBroker):
    """One SASL_PLAINTEXT listener and nothing else: no client gets in without a login."""

    def command(self) -> list[str]:
        cmd = super().command()
        for flag in ("--listeners", "--advertised-listeners"):
            cmd[cmd.index(flag) + 1] = f"SASL_PLAINTEXT://{self.bootstrap}"
        return cmd


def test_the_first_user_is_set_offline_when_no_listener_is_open(tmp_path, etcd, s3,
                                                                 start_broker):
    from servers import broker_args
    run = skiff("user", "bootstrap", "root", "--password-stdin", "--etcd-endpoints",
                etcd.endpoint, stdin="root-Secr3t-pw\n")
    assert run.returncode == 0, run.stderr
    b = SaslOnlyBroker(tmp_path / "sasl-only", name="sasl-only", args=broker_args(etcd, s3) + [
        "--sasl-enabled-mechanisms", "SCRAM-SHA-512", "--authorizer", "standard",
        "--super-users", "User:root"])
    b.start()
    try:
        login = {"bootstrap.servers": b.bootstrap, "security.protocol": "SASL_PLAINTEXT",
                 "sasl.mechanism": "SCRAM-SHA-512"}
        root = AdminClient({**login, "sasl.username": "root", "sasl.password": "root-Secr3t-pw"})
        # The bootstrapped super user adds the next user through the broker.
        upsert = UserScramCredentialUpsertion(
            "alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"alice-Secr3t-pw")
        for f in root.alter_user_scram_credentials([upsert]).values():
            f.result(timeout=15)
        topic = h.unique_topic("first-user")
        from confluent_kafka.admin import NewTopic
        root.create_topics([NewTopic(topic, 1)])[topic].result(timeout=15)
        # alice logs in, but nothing lets her write; a wrong password for root is refused.
        alice = {**login, "sasl.username": "alice", "sasl.password": "alice-Secr3t-pw"}
        p = h.producer(alice.pop("bootstrap.servers"), **alice, **{"message.timeout.ms": 10000})
        errors = []
        p.produce(topic, b"x", partition=0, on_delivery=lambda err, msg: errors.append(err))
        p.flush(15)
        assert errors and errors[0].code() == 29, errors  # TOPIC_AUTHORIZATION_FAILED
        error = refused({**login, "sasl.username": "root", "sasl.password": "wrong-Secr3t"})
        assert "uthentication" in error, error
    finally:
        b.cleanup()
    # A running embedded broker holds its store: bootstrap says so and changes nothing.
    embedded = start_broker()
    run = skiff("user", "bootstrap", "mallory", "--password", "pw-Secr3t-1",
                "--data-dir", str(embedded.data_dir))
    assert run.returncode != 0 and "another broker" in run.stderr, run.stderr
