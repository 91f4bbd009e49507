"""Kafka ACLs with the standard authorizer (`--authorizer standard`), with real clients over
SASL_PLAINTEXT: ACLs created, listed and deleted with confluent-kafka's AdminClient and with
`skiff acl`; every decision checked with a client that is refused or allowed: topic read,
write, create and describe (Metadata lists only what a principal may describe), consumer
groups, transactional ids, idempotent producers, the admin APIs (configs, ListOffsets,
DeleteRecords, CreatePartitions, DeleteGroups, ElectLeaders), an ACL on the cluster, literal
and prefixed patterns (match and non-match), a deny overriding an allow, super users, and
`--allow-everyone-if-no-acl-found`."""

import subprocess

import pytest
import trustme
from confluent_kafka import ElectionType, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                   AclPermissionType, AdminClient, AlterConfigOpType,
                                   ConfigEntry, ConfigResource, NewPartitions, NewTopic,
                                   OffsetSpec, ResourcePatternType, ResourceType)

import helpers as h
from conftest import skiff_bin
from test_sasl import SaslBroker, metric, set_user

USERS = {user: h.secret(password) for user, password in
         {"admin": "admin-pw-1", "alice": "alice-pw-1", "bob": "bob-pw-1",
          "eve": "eve-pw-1"}.items()}


@pytest.fixture
def acl_broker(tmp_path, pki_files):
    broker = SaslBroker(tmp_path / "acl", pki_files, [])
    broker.start()
    try:
        for user, password in USERS.items():
            set_user(broker, user, password)
        # Users exist: from now on every request is checked.
        broker.stop()
        broker.extra_args = ["--authorizer", "standard", "--super-users", "User:admin"]
        broker.start()
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture
def pki_files(tmp_path):
    import trustme
    path = tmp_path / "server.pem"
    trustme.CA().issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(path))
    return str(path)


def conf(broker, user: str, **extra) -> dict:
    return {"bootstrap.servers": broker.sasl_plaintext, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": user,
            "sasl.password": USERS[user], **extra}


def admin(broker, user: str) -> AdminClient:
    return AdminClient(conf(broker, user))


def allow(resource_type, name, principal, operation, pattern=ResourcePatternType.LITERAL,
          permission=AclPermissionType.ALLOW) -> AclBinding:
    return AclBinding(resource_type, name, pattern, principal, "*", operation, permission)


def create_acls(broker, bindings) -> None:
    a = admin(broker, "admin")  # kept alive until the answers arrive
    for f in a.create_acls(bindings).values():
        f.result(timeout=15)


def produce_error(broker, user: str, topic: str, **extra):
    """The delivery error of one record (None when it was written)."""
    c = conf(broker, user, **extra)
    p = h.producer(c.pop("bootstrap.servers"), **c, **{"message.timeout.ms": 10000})
    errors = []
    p.produce(topic, b"v", partition=0, on_delivery=lambda err, msg: errors.append(err))
    p.flush(15)
    assert errors, "no delivery report"
    return errors[0]


def consume_error(broker, user: str, topic: str, group: str):
    """The first error a consumer in `group` reading `topic` gets (None: it read a record)."""
    c = conf(broker, user, **{"group.id": group, "auto.offset.reset": "earliest"})
    consumer = h.consumer(c.pop("bootstrap.servers"), **c)
    consumer.subscribe([topic])
    try:
        for _ in range(40):
            m = consumer.poll(0.5)
            if m is None:
                continue
            return m.error()
        raise AssertionError("neither a record nor an error")
    finally:
        consumer.close()


def test_topic_acls_decide_reads_writes_creates_and_metadata(acl_broker):
    b = acl_broker
    su = admin(b, "admin")
    for f in su.create_topics([NewTopic(t, 1) for t in
                               ["orders", "team-a.events", "team-b.events", "secret"]]).values():
        f.result(timeout=15)
    create_acls(b, [
        allow(ResourceType.TOPIC, "orders", "User:alice", AclOperation.READ),
        allow(ResourceType.TOPIC, "orders", "User:alice", AclOperation.WRITE),
        allow(ResourceType.GROUP, "alice-", "User:alice", AclOperation.READ,
              ResourcePatternType.PREFIXED),
        allow(ResourceType.TOPIC, "team-a.", "User:bob", AclOperation.ALL,
              ResourcePatternType.PREFIXED),
        allow(ResourceType.TOPIC, "*", "User:eve", AclOperation.ALL),
        allow(ResourceType.GROUP, "eve-group", "User:eve", AclOperation.READ),
        allow(ResourceType.TOPIC, "secret", "User:eve", AclOperation.READ,
              permission=AclPermissionType.DENY),
    ])
    # Metadata: each principal sees what it may describe.
    def topics(user):
        a = admin(b, user)
        return sorted(a.list_topics(timeout=10).topics)
    assert topics("alice") == ["orders"]
    assert topics("bob") == ["team-a.events"]
    assert topics("eve") == ["orders", "secret", "team-a.events", "team-b.events"]
    # A listing narrowed to what a principal may describe is no one's failure: nothing counted.
    assert metric(b, "skiff_authorization_denials_total") == 0

    # Writes: literal and prefixed allows, prefixed non-match, no ACL at all.
    assert produce_error(b, "alice", "orders") is None
    assert produce_error(b, "alice", "team-a.events").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce_error(b, "bob", "team-a.events") is None
    assert produce_error(b, "bob", "team-b.events").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce_error(b, "eve", "secret") is None, "the deny is on READ only"
    # Refusals a client hears of are logged (Kafka's authorizer log) and counted.
    log = b.log_path.read_text()
    assert "authorization denied" in log
    denied = [line for line in log.splitlines() if "authorization denied" in line]
    assert any("User:alice" in line and "TOPIC:team-a.events" in line for line in denied), denied
    assert any("User:bob" in line and "TOPIC:team-b.events" in line for line in denied), denied
    assert metric(b, "skiff_authorization_denials_total", resource_type="TOPIC") >= 2
    # Nobody asked to create a topic: no CREATE refusal (asked only when one would be created).
    assert metric(b, "skiff_authorization_denials_total", operation="CREATE") == 0

    # Reads: the deny wins over eve's wildcard allow.
    error = consume_error(b, "eve", "secret", "eve-group")
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Groups: alice may use groups named alice-*, not others.
    assert consume_error(b, "alice", "orders", "alice-readers") is None
    error = consume_error(b, "alice", "orders", "other-group")
    assert error is not None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED

    # Creating topics: bob may create under his prefix (ALL), alice nothing.
    for user, name, code in [("bob", "team-a.new", None),
                             ("alice", "alice-topic", KafkaError.TOPIC_AUTHORIZATION_FAILED),
                             ("bob", "team-b.new", KafkaError.TOPIC_AUTHORIZATION_FAILED)]:
        a = admin(b, user)
        f = a.create_topics([NewTopic(name, 1)])[name]
        if code is None:
            f.result(timeout=15)
        else:
            with pytest.raises(KafkaException) as failed:
                f.result(timeout=15)
            assert failed.value.args[0].code() == code
    # Auto-creation through Metadata needs CREATE as well.
    assert produce_error(b, "alice", "orders-auto").code() in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError._MSG_TIMED_OUT,
        KafkaError.UNKNOWN_TOPIC_OR_PART)
    assert "orders-auto" not in su.list_topics(timeout=10).topics

    # Deleting: only with DELETE.
    alice = admin(b, "alice")
    f = alice.delete_topics(["orders"])["orders"]
    with pytest.raises(KafkaException) as failed:
        f.result(timeout=15)
    assert failed.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # ACL changes need ALTER on the cluster: alice may not, the super user may.
    f = alice.create_acls([allow(ResourceType.TOPIC, "secret", "User:alice",
                                            AclOperation.READ)])
    with pytest.raises(KafkaException):
        list(f.values())[0].result(timeout=15)


def test_transactional_and_idempotent_producers_need_their_acls(acl_broker):
    b = acl_broker
    su = admin(b, "admin")
    for f in su.create_topics([NewTopic("txn-topic", 1)]).values():
        f.result(timeout=15)
    create_acls(b, [
        allow(ResourceType.TOPIC, "txn-topic", "User:alice", AclOperation.WRITE),
        allow(ResourceType.TOPIC, "txn-topic", "User:bob", AclOperation.WRITE),
        allow(ResourceType.TRANSACTIONAL_ID, "alice-tx", "User:alice", AclOperation.WRITE),
    ])
    # alice: her transactional id works.
    c = conf(b, "alice", **{"transactional.id": "alice-tx"})
    p = h.producer(c.pop("bootstrap.servers"), **c)
    p.init_transactions(30)
    p.begin_transaction()
    p.produce("txn-topic", b"in-txn", partition=0)
    p.commit_transaction(30)
    # bob: a transactional id he has no ACL for is refused.
    c = conf(b, "bob", **{"transactional.id": "alice-tx"})
    p = h.producer(c.pop("bootstrap.servers"), **c)
    with pytest.raises(KafkaException) as failed:
        p.init_transactions(15)
    assert failed.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    # An idempotent producer needs WRITE on some topic (bob has it): allowed through an
    # alternative, so no refusal is logged or counted for it.
    # (Counted by operation: the refused transactional producer above may still be retrying.)
    def idempotent_denials():
        return metric(b, "skiff_authorization_denials_total", operation="IDEMPOTENT_WRITE")
    denied = idempotent_denials()
    assert produce_error(b, "bob", "txn-topic", **{"enable.idempotence": True}) is None
    assert idempotent_denials() == denied
    assert produce_error(b, "eve", "txn-topic", **{"enable.idempotence": True}) is not None


def refusal(future):
    """The Kafka error code `future` fails with, or None when it succeeds."""
    try:
        future.result(timeout=15)
        return None
    except KafkaException as failed:
        return failed.args[0].code()


def test_admin_apis_keep_to_the_acls(acl_broker):
    # Each admin API against a principal with no ACL (alice) and one granted exactly the
    # operation Kafka asks for (bob), including an ACL on the cluster itself.
    b = acl_broker
    su = admin(b, "admin")
    for f in su.create_topics([NewTopic("ops", 1)]).values():
        f.result(timeout=15)
    h.produce_and_wait(_producer(b, "admin"), "ops", [b"a", b"b", b"c"], partition=0)
    alice, bob = admin(b, "alice"), admin(b, "bob")
    topic = ConfigResource(ConfigResource.Type.TOPIC, "ops")
    change = ConfigResource(ConfigResource.Type.TOPIC, "ops", incremental_configs=[
        ConfigEntry("retention.ms", "86400000",
                    incremental_operation=AlterConfigOpType.SET)])
    asks = {
        "DescribeConfigs": (lambda a: a.describe_configs([topic])[topic],
                            AclOperation.DESCRIBE_CONFIGS),
        "IncrementalAlterConfigs": (lambda a: a.incremental_alter_configs([change])[change],
                                    AclOperation.ALTER_CONFIGS),
        "ListOffsets": (lambda a: a.list_offsets(
            {TopicPartition("ops", 0): OffsetSpec.latest()})[TopicPartition("ops", 0)],
                        AclOperation.DESCRIBE),
        "DeleteRecords": (lambda a: a.delete_records(
            [TopicPartition("ops", 0, 1)])[TopicPartition("ops", 0, 1)], AclOperation.DELETE),
        "CreatePartitions": (lambda a: a.create_partitions([NewPartitions("ops", 2)])["ops"],
                             AclOperation.ALTER),
    }
    # alice may describe the topic (librdkafka looks up a partition's leader in Metadata before
    # a ListOffsets or DeleteRecords), nothing more: the broker itself refuses the rest.
    create_acls(b, [allow(ResourceType.TOPIC, "ops", "User:alice", AclOperation.DESCRIBE)])
    for api, (ask, _) in asks.items():
        expected = None if api == "ListOffsets" else KafkaError.TOPIC_AUTHORIZATION_FAILED
        assert refusal(ask(alice)) == expected, api
    create_acls(b, [allow(ResourceType.TOPIC, "ops", "User:bob", operation)
                    for _, operation in asks.values()])
    for api, (ask, _) in asks.items():
        assert refusal(ask(bob)) is None, api
    assert su.describe_configs([topic])[topic].result(timeout=15)["retention.ms"].value == \
        "86400000"
    assert len(su.list_topics(timeout=10).topics["ops"].partitions) == 2

    # Groups: deleting one needs DELETE on it.
    assert consume_error(b, "admin", "ops", "ops-readers") is None
    assert refusal(alice.delete_consumer_groups(["ops-readers"])["ops-readers"]) == \
        KafkaError.GROUP_AUTHORIZATION_FAILED
    create_acls(b, [allow(ResourceType.GROUP, "ops-readers", "User:bob", AclOperation.DELETE)])
    assert refusal(bob.delete_consumer_groups(["ops-readers"])["ops-readers"]) is None

    # The cluster: changing ACLs needs ALTER on it, granted like any other resource.
    grant = allow(ResourceType.TOPIC, "ops", "User:alice", AclOperation.READ)
    denied = metric(b, "skiff_authorization_denials_total", resource_type="CLUSTER")
    assert refusal(alice.create_acls([grant])[grant]) == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    # Logged and counted as every refusal.
    assert metric(b, "skiff_authorization_denials_total", resource_type="CLUSTER") == denied + 1
    assert any("User:alice" in line and "api=CreateAcls" in line and "ALTER CLUSTER" in line
               for line in b.log_path.read_text().splitlines()
               if "authorization denied" in line)
    create_acls(b, [allow(ResourceType.BROKER, "kafka-cluster", "User:alice",
                          AclOperation.ALTER)])
    assert refusal(alice.create_acls([grant])[grant]) is None
    # Electing leaders is ALTER on the cluster too: bob may not, alice now may.
    ops0 = [TopicPartition("ops", 0)]
    assert refusal(bob.elect_leaders(ElectionType.PREFERRED, ops0)) == \
        KafkaError.CLUSTER_AUTHORIZATION_FAILED
    elected = alice.elect_leaders(ElectionType.PREFERRED, ops0).result(timeout=15)
    # Allowed: the election ran and found the leader preferred already (one broker).
    assert [e.code() for e in elected.values()] == [KafkaError.ELECTION_NOT_NEEDED], elected
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    listed = su.describe_acls(everything).result(timeout=15)
    assert ("ops", "User:alice", "READ") in {(a.name, a.principal, a.operation.name)
                                             for a in listed}


def _producer(broker, user: str):
    c = conf(broker, user)
    return h.producer(c.pop("bootstrap.servers"), **c)


def test_acls_are_managed_with_skiff_acl_and_listed_for_describers(acl_broker):
    b = acl_broker
    env = {"SKIFF_SASL_PASSWORD": USERS["admin"]}
    login = ["--bootstrap-server", b.sasl_plaintext, "--security-protocol", "SASL_PLAINTEXT",
             "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "admin"]

    def skiff(*args, env=env):
        return subprocess.run([str(skiff_bin()), "acl", *args, *login], capture_output=True,
                              text=True, timeout=60, env=env)

    run = skiff("create", "--topic", "logs-", "--resource-pattern-type", "prefixed",
                "--allow-principal", "User:alice", "--operation", "READ", "--operation",
                "DESCRIBE")
    assert run.returncode == 0, run.stderr
    run = skiff("create", "--group", "g", "--deny-principal", "User:eve", "--operation", "ALL")
    assert run.returncode == 0, run.stderr
    su = admin(b, "admin")
    listed = su.describe_acls(AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
        AclPermissionType.ANY)).result(timeout=15)
    assert sorted((a.name, a.principal, a.operation.name, a.permission_type.name)
                  for a in listed) == [
        ("g", "User:eve", "ALL", "DENY"),
        ("logs-", "User:alice", "DESCRIBE", "ALLOW"),
        ("logs-", "User:alice", "READ", "ALLOW")]
    run = skiff("list", "--topic", "logs-app", "--resource-pattern-type", "match",
                "--output", "json")
    import json
    assert [(r["name"], r["operation"]) for r in json.loads(run.stdout)] == [
        ("logs-", "DESCRIBE"), ("logs-", "READ")]
    run = skiff("delete", "--principal", "User:alice")
    assert run.returncode == 0 and "2 ACLs deleted" in run.stderr, run.stderr
    # A principal without DESCRIBE on the cluster cannot list them: Kafka's error, exit 1.
    run = subprocess.run([str(skiff_bin()), "acl", "list", *login[:-1], "alice"],
                         capture_output=True, text=True, timeout=60,
                         env={"SKIFF_SASL_PASSWORD": USERS["alice"]})
    assert run.returncode == 1 and "CLUSTER_AUTHORIZATION_FAILED" in run.stderr, run.stderr


def test_without_an_authorizer_the_acl_apis_say_so(tmp_path, pki_files):
    b = SaslBroker(tmp_path / "none", pki_files, [])
    b.start()
    try:
        a = AdminClient({"bootstrap.servers": b.bootstrap})
        f = a.create_acls([allow(ResourceType.TOPIC, "t", "User:x", AclOperation.READ)])
        with pytest.raises(KafkaException) as failed:
            list(f.values())[0].result(timeout=15)
        assert failed.value.args[0].code() == KafkaError.SECURITY_DISABLED
    finally:
        b.cleanup()


def test_allow_everyone_if_no_acl_found(tmp_path, pki_files):
    b = SaslBroker(tmp_path / "open", pki_files,
                   ["--authorizer", "standard", "--allow-everyone-if-no-acl-found", "true"])
    b.start()
    try:
        # PLAINTEXT (User:ANONYMOUS): topics without ACLs are open; one with an ACL is not.
        h.create_topic(b.bootstrap, "open", 1)
        h.create_topic(b.bootstrap, "closed", 1)
        a = AdminClient({"bootstrap.servers": b.bootstrap})
        for f in a.create_acls([allow(ResourceType.TOPIC, "closed", "User:someone",
                                      AclOperation.READ)]).values():
            f.result(timeout=15)
        assert sorted(a.list_topics(timeout=10).topics) == ["open"]
        p = h.producer(b.bootstrap)
        h.produce_and_wait(p, "open", [b"x"], partition=0)
    finally:
        b.cleanup()


def test_client_certificates_name_principals(tmp_path):
    """On an SSL listener with client certificates the principal is the certificate's subject
    (RFC 2253, as Kafka's DEFAULT rule), or what --ssl-principal-mapping-rules makes of it."""
    from cryptography import x509
    from test_tls import TlsBroker
    ca = trustme.CA()
    files = {"ca.pem": ca.cert_pem.bytes(),
             "server.pem": ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.bytes()}
    subjects = {}
    for who in ["reader", "stranger"]:
        cert = ca.issue_cert(f"{who}@skiff.test")
        files[f"{who}.pem"] = b"".join(c.bytes() for c in cert.cert_chain_pems)
        files[f"{who}.key"] = cert.private_key_pem.bytes()
        subjects[who] = x509.load_pem_x509_certificate(
            cert.cert_chain_pems[0].bytes()).subject.rfc4514_string()
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
    path = lambda name: str(tmp_path / name)  # noqa: E731
    # Certificates' OU=Testing cert #<id>,...: the rule keeps the id, lower-cased.
    rules = r"RULE:^OU=Testing cert #([^,]+),.*$/cert-$1/L,DEFAULT"
    for mapping, principal in [
            ("DEFAULT", f"User:{subjects['reader']}"),
            (rules, "User:cert-" + subjects["reader"].split("#")[1].split(",")[0].lower())]:
        b = TlsBroker(tmp_path / f"tls-{len(principal)}", args=[
            "--ssl-keystore-location", path("server.pem"), "--ssl-client-auth", "required",
            "--ssl-truststore-location", path("ca.pem"), "--ssl-principal-mapping-rules",
            mapping, "--authorizer", "standard", "--allow-everyone-if-no-acl-found", "false",
            "--super-users", principal])
        b.start()
        try:
            def client(who):
                return {"bootstrap.servers": b.bootstrap, "security.protocol": "SSL",
                        "ssl.ca.location": path("ca.pem"),
                        "ssl.certificate.location": path(f"{who}.pem"),
                        "ssl.key.location": path(f"{who}.key")}
            # The reader is a super user by its certificate's principal: it may do anything.
            a = AdminClient(client("reader"))
            for f in a.create_topics([NewTopic("certs", 1)]).values():
                f.result(timeout=15)
            c = client("reader")
            p = h.producer(c.pop("bootstrap.servers"), **c)
            h.produce_and_wait(p, "certs", [b"x"], partition=0)
            # Another certificate of the same CA gets in, but has no rights.
            c = client("stranger")
            assert sorted(AdminClient(c).list_topics(timeout=10).topics) == []
        finally:
            b.cleanup()


def raw_login(broker, user: str):
    """A raw connection to the SASL_PLAINTEXT listener, logged in with PLAIN."""
    import kafka_wire as w
    from test_sasl import sasl_authenticate, sasl_handshake
    conn = w.Conn("127.0.0.1", broker.sasl_port, timeout=10)
    assert sasl_handshake(conn, "PLAIN")[0] == 0
    assert sasl_authenticate(conn, f"\0{user}\0{USERS[user]}".encode())[0] == 0
    return conn


def delete_topic_by_id(conn, topic_id: str) -> int:
    """DeleteTopics v6 naming one topic by id (32 hex digits); its error code."""
    import kafka_wire as w
    body = (w.uvarint(2) + w.uvarint(0) + bytes.fromhex(topic_id) + w.uvarint(0)
            + w.i32(10000) + w.uvarint(0))
    _, payload = conn.request(20, 6, body, flexible_header=True)
    r = w.Reader(payload[4:])
    r.skip_tagged_fields()
    r.i32()                          # throttle
    assert r.uvarint() == 2          # one result
    n = r.uvarint()
    if n:
        r._take(n - 1)               # name
    r._take(16)                      # topic id
    return r.i16()


def test_topics_by_id_and_raw_produce_keep_to_the_acls(acl_broker):
    """A topic named by id is checked by its name (a deny on it holds); a Produce to a topic
    that does not exist creates it only with CREATE."""
    import json
    import kafka_wire as w
    b = acl_broker
    su = admin(b, "admin")
    for f in su.create_topics([NewTopic("payments", 1), NewTopic("scratch", 1)]).values():
        f.result(timeout=15)
    create_acls(b, [
        allow(ResourceType.TOPIC, "*", "User:alice", AclOperation.DELETE),
        allow(ResourceType.TOPIC, "payments", "User:alice", AclOperation.DELETE,
              permission=AclPermissionType.DENY),
        allow(ResourceType.TOPIC, "team-a.", "User:bob", AclOperation.WRITE,
              ResourcePatternType.PREFIXED),
    ])
    topics = json.loads(b.http_get("/v1/topics", auth=("admin", USERS["admin"]))[1])["topics"]
    ids = {t["name"]: t["id"] for t in topics}
    with raw_login(b, "alice") as conn:
        assert delete_topic_by_id(conn, ids["payments"]) == 29   # TOPIC_AUTHORIZATION_FAILED
        assert delete_topic_by_id(conn, ids["scratch"]) == 0
    assert sorted(su.list_topics(timeout=10).topics) == ["payments"]
    with raw_login(b, "eve") as conn:
        # eve may not even see it: as Kafka, the id is unknown to her.
        assert delete_topic_by_id(conn, ids["payments"]) == 100  # UNKNOWN_TOPIC_ID
    # bob may write under team-a. but not create: a raw Produce does not create the topic.
    with raw_login(b, "bob") as conn:
        code, _ = w.produce(conn, "team-a.fresh", 0, w.record_batch([b"x"]))
        assert code == 3, code                                    # UNKNOWN_TOPIC_OR_PARTITION
    assert "team-a.fresh" not in su.list_topics(timeout=10).topics


def describe_producers(conn, topics: dict[str, list[int]]) -> dict[tuple[str, int], tuple]:
    """DescribeProducers v0 (flexible; no client library has it): (topic, partition) →
    (error code, producer ids)."""
    import kafka_wire as w
    body = w.uvarint(len(topics) + 1)
    for name, partitions in topics.items():
        body += (w.compact_string(name) + w.uvarint(len(partitions) + 1)
                 + b"".join(w.i32(p) for p in partitions) + w.uvarint(0))
    _, payload = conn.request(61, 0, body + w.uvarint(0), flexible_header=True)
    r = w.Reader(payload[4:])
    r.skip_tagged_fields()
    r.i32()                                          # throttle
    out = {}
    for _ in range(r.uvarint() - 1):
        name = r._take(r.uvarint() - 1).decode()
        for _ in range(r.uvarint() - 1):
            partition, error = r.i32(), r.i16()
            n = r.uvarint()
            if n:
                r._take(n - 1)                       # error message
            producers = []
            for _ in range(r.uvarint() - 1):
                producers.append(r.i64())            # producer id
                r.i32(), r.i32(), r.i64(), r.i32(), r.i64()
                r.skip_tagged_fields()
            r.skip_tagged_fields()
            out[(name, partition)] = (error, producers)
        r.skip_tagged_fields()
    return out


def offset_delete(conn, group: str, topics: dict[str, list[int]]) -> tuple[int, dict]:
    """OffsetDelete v0 (confluent-kafka has no call for it): (error code, {(topic, partition):
    error code})."""
    import kafka_wire as w
    body = w.string(group) + w.array([
        w.string(name) + w.array([w.i32(p) for p in partitions])
        for name, partitions in topics.items()])
    _, payload = conn.request(47, 0, body)
    r = w.Reader(payload[4:])
    error = r.i16()
    r.i32()                                          # throttle
    out = {}
    for _ in range(max(r.i32(), 0)):
        name = r.string()
        for _ in range(r.i32()):
            partition = r.i32()
            out[(name, partition)] = r.i16()
    return error, out


def test_offset_delete_and_describe_producers_keep_to_the_acls(acl_broker):
    """The two APIs no client library here calls, raw: DescribeProducers needs READ on each
    topic, OffsetDelete DELETE on the group and READ on each topic (Kafka's rules)."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    b = acl_broker
    su = admin(b, "admin")
    for f in su.create_topics([NewTopic("orders", 1), NewTopic("ledger", 1)]).values():
        f.result(timeout=15)
    c = conf(b, "admin", **{"enable.idempotence": True})
    p = h.producer(c.pop("bootstrap.servers"), **c)
    for topic in ["orders", "ledger"]:
        h.produce_and_wait(p, topic, [b"a", b"b"], partition=0)
    for group in ["g-alice", "g-bob"]:
        c = conf(b, "admin", **{"group.id": group})
        consumer = h.consumer(c.pop("bootstrap.servers"), **c)
        consumer.commit(offsets=[TopicPartition("orders", 0, 2), TopicPartition("ledger", 0, 1)],
                        asynchronous=False)
        consumer.close()
    create_acls(b, [
        allow(ResourceType.TOPIC, "orders", "User:alice", AclOperation.READ),
        allow(ResourceType.GROUP, "g-alice", "User:alice", AclOperation.DELETE),
    ])
    with raw_login(b, "alice") as conn:
        described = describe_producers(conn, {"orders": [0], "ledger": [0]})
        assert described[("orders", 0)][0] == 0 and len(described[("orders", 0)][1]) == 1
        assert described[("ledger", 0)] == (29, [])   # TOPIC_AUTHORIZATION_FAILED
        # No DELETE on the group: nothing is deleted.
        assert offset_delete(conn, "g-bob", {"orders": [0]})[0] == 30  # GROUP_AUTHORIZATION_FAILED
        error, partitions = offset_delete(conn, "g-alice", {"orders": [0], "ledger": [0]})
        assert error == 0 and partitions == {("orders", 0): 0, ("ledger", 0): 29}, partitions

    def committed(group: str) -> dict[str, int]:
        listed = su.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
        return {tp.topic: tp.offset for tp in listed[group].result(15).topic_partitions}
    assert committed("g-alice") == {"ledger": 1}    # orders' offset deleted, ledger's kept
    assert committed("g-bob") == {"orders": 2, "ledger": 1}
