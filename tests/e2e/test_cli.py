"""The admin commands of the `skiff` binary (`skiff topic|group|cluster …`) against running
brokers: every command's JSON output parsed and checked against what a real Kafka client
(confluent-kafka) sees, exit codes, and errors in plain words."""

import json
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import ConfigResource

import helpers as h
from conftest import skiff_bin

GROUP_ARGS = ["--group-initial-rebalance-delay-ms", "300"]


def skiff(bootstrap, *args, expect=0):
    """Runs `skiff <args> --bootstrap-server …`; returns (stdout, stderr) after checking the
    exit code."""
    run = subprocess.run([str(skiff_bin()), *args, "--bootstrap-server", bootstrap],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == expect, (args, run.returncode, run.stdout, run.stderr)
    return run.stdout, run.stderr


def skiff_json(bootstrap, *args, expect=0):
    out, _ = skiff(bootstrap, *args, "--output", "json", expect=expect)
    return json.loads(out)


class Brokers:
    def __init__(self, brokers):
        self.brokers = brokers
        self.bootstrap = ",".join(b.bootstrap for b in brokers)


@pytest.fixture(params=["embedded", "cluster"])
def brokers(request, start_broker):
    if request.param == "embedded":
        return Brokers([start_broker(args=GROUP_ARGS)])
    from servers import broker_args
    etcd, s3 = request.getfixturevalue("etcd"), request.getfixturevalue("s3")
    return Brokers([start_broker(name=f"node{n}", flush_linger_ms=20,
                                 args=broker_args(etcd, s3) + GROUP_ARGS + ["--node-id", str(n)])
                    for n in (1, 2, 3)])


def topic_configs(bootstrap, topic) -> dict[str, str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = h.admin(bootstrap)
    described = admin.describe_configs([resource])[resource].result(timeout=10)
    return {name: entry.value for name, entry in described.items()}


def test_topic_commands_create_describe_alter_grow_and_delete(broker):
    b = broker.bootstrap
    one, two = h.unique_topic("cli-a"), h.unique_topic("cli-b")
    created = skiff_json(b, "topic", "create", one, two, "--partitions", "3",
                         "--config", "retention.ms=3600000", "--config", "cleanup.policy=delete")
    assert [(r["name"], r["status"]) for r in created] == [(one, "created"), (two, "created")]
    # What a Kafka client sees.
    assert h.topic_partition_count(b, one) == 3
    assert topic_configs(b, one)["retention.ms"] == "3600000"

    # Again: refused, exit 1, the reason on stderr; with --if-not-exists it is fine.
    out, err = skiff(b, "topic", "create", one, expect=1)
    assert "TOPIC_ALREADY_EXISTS" in err and one in err
    assert skiff_json(b, "topic", "create", one, "--if-not-exists")[0]["status"] == "exists"
    # A dry run creates nothing.
    dry = h.unique_topic("cli-dry")
    assert skiff_json(b, "topic", "create", dry, "--dry-run")[0]["status"] == "valid"
    listed = {t["name"]: t for t in skiff_json(b, "topic", "list")}
    assert listed[one]["partitions"] == 3 and listed[two]["partitions"] == 3
    assert dry not in listed

    p = h.producer(b)
    for i in range(10):
        p.produce(one, value=b"v%d" % i, partition=i % 2)
    assert p.flush(30) == 0
    [described] = skiff_json(b, "topic", "describe", one)
    assert described["name"] == one
    marks = {x["partition"]: (x["log_start_offset"], x["high_watermark"])
             for x in described["partitions"]}
    assert marks == {0: (0, 5), 1: (0, 5), 2: (0, 0)}
    configs = {c["name"]: c for c in described["configs"]}
    assert configs["retention.ms"]["value"] == "3600000"
    assert configs["retention.ms"]["source"] == "DYNAMIC_TOPIC_CONFIG"
    # Defaults are shown only when asked for.
    assert "segment.bytes" not in configs
    [every] = skiff_json(b, "topic", "describe", one, "--all-configs")
    assert len(every["configs"]) > len(described["configs"])

    altered = skiff_json(b, "topic", "alter-config", one, "--set", "retention.ms=7200000",
                         "--delete", "cleanup.policy")
    assert altered == [{"name": one, "status": "altered", "error": None}]
    seen = topic_configs(b, one)
    assert seen["retention.ms"] == "7200000"
    _, err = skiff(b, "topic", "alter-config", one, "--set", "retention.ms=soon", expect=1)
    assert "INVALID_CONFIG" in err
    assert topic_configs(b, one)["retention.ms"] == "7200000"

    assert skiff_json(b, "topic", "add-partitions", one, "--partitions", "5")[0]["status"] == "grown"
    h.wait_topic_partitions(b, one, 5)
    _, err = skiff(b, "topic", "add-partitions", one, "--partitions", "2", expect=1)
    assert "INVALID_PARTITIONS" in err

    deleted = skiff_json(b, "topic", "delete", one, two)
    assert {r["name"]: r["status"] for r in deleted} == {one: "deleted", two: "deleted"}
    deadline = time.time() + 10
    while time.time() < deadline:
        topics = h.admin(b).list_topics(timeout=10).topics
        if one not in topics and two not in topics:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the deleted topics are still listed")
    _, err = skiff(b, "topic", "describe", one, expect=1)
    assert "UNKNOWN_TOPIC_OR_PARTITION" in err


def test_group_commands_describe_lag_and_reset_offsets(brokers):
    b = brokers.bootstrap
    topic, group = h.unique_topic("cli-g"), h.unique_topic("cli-group")
    h.create_topic(b, topic, partitions=2)
    base_s = int(time.time()) - 3600
    p = h.producer(b)
    for i in range(40):
        p.produce(topic, value=b"%d" % i, partition=i % 2, timestamp=(base_s + i) * 1000)
    assert p.flush(30) == 0

    c = h.consumer(b, **{"group.id": group})
    c.subscribe([topic])
    taken = 0
    deadline = time.time() + 30
    while taken < 20 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            taken += 1
    assert taken == 20
    committed = {0: 7, 1: 12}
    c.commit(offsets=[TopicPartition(topic, p, o) for p, o in committed.items()],
             asynchronous=False)

    listed = {g["group"]: g for g in skiff_json(b, "group", "list")}
    assert listed[group]["state"] == "Stable"
    [described] = skiff_json(b, "group", "describe", group)
    assert described["state"] == "Stable" and len(described["members"]) == 1
    member = described["members"][0]
    assert sorted(member["assignment"]) == [[topic, 0], [topic, 1]]
    lags = {o["partition"]: o for o in described["offsets"]}
    for partition in (0, 1):
        assert lags[partition]["committed_offset"] == committed[partition]
        assert lags[partition]["log_end_offset"] == 20
        assert lags[partition]["lag"] == 20 - committed[partition]
        assert lags[partition]["member_id"] == member["member_id"]

    # Not while the group has members.
    _, err = skiff(b, "group", "reset-offsets", group, "--topic", topic, "--to-earliest",
                   "--execute", expect=1)
    assert "inactive" in err and "Stable" in err
    c.close()

    # A dry run plans, changes nothing.
    plan = skiff_json(b, "group", "reset-offsets", group, "--topic", topic, "--to-earliest")
    assert not plan["executed"]
    assert {o["partition"]: o["new_offset"] for o in plan["offsets"]} == {0: 0, 1: 0}
    [after] = skiff_json(b, "group", "describe", group)
    assert {o["partition"]: o["committed_offset"] for o in after["offsets"]} == committed

    # Each way of saying where, executed; the group's offsets as the coordinator keeps them.
    def reset(*how):
        done = skiff_json(b, "group", "reset-offsets", group, *how, "--execute")
        assert done["executed"]
        [now] = skiff_json(b, "group", "describe", group)
        return {o["partition"]: o["committed_offset"] for o in now["offsets"]}

    assert reset("--topic", topic, "--to-earliest") == {0: 0, 1: 0}
    assert reset("--topic", f"{topic}:1", "--to-latest") == {0: 0, 1: 20}
    assert reset("--all-topics", "--shift-by", "5") == {0: 5, 1: 20}  # kept within the log
    assert reset("--topic", topic, "--to-offset", "1000") == {0: 20, 1: 20}
    # Record i has timestamp base + i s; partition 0 holds the even ones, so the first at or
    # after base + 10 s there is record 10, its 5th (and in partition 1 record 11, its 5th).
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base_s + 10))
    assert reset("--topic", topic, "--to-datetime", t) == {0: 5, 1: 5}

    # A consumer of the group starts where the reset put it.
    c = h.consumer(b, **{"group.id": group, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0)])
    first = None
    deadline = time.time() + 30
    while first is None and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            first = m
    c.close()
    assert first is not None and first.offset() == 5 and first.value() == b"10"

    deleted = skiff_json(b, "group", "delete", group)
    assert deleted == [{"name": group, "status": "deleted", "error": None}]
    assert group not in {g["group"] for g in skiff_json(b, "group", "list")}
    _, err = skiff(b, "group", "delete", group, expect=1)
    assert "GROUP_ID_NOT_FOUND" in err


def test_cluster_info_and_plain_errors(brokers):
    info = skiff_json(brokers.bootstrap, "cluster", "info")
    assert sorted(x["node_id"] for x in info["brokers"]) == list(range(1, len(brokers.brokers) + 1))
    ports = {int(x.bootstrap.rsplit(":", 1)[1]) for x in brokers.brokers}
    assert {x["port"] for x in info["brokers"]} == ports
    assert info["controller_id"] in {x["node_id"] for x in info["brokers"]}
    out, _ = skiff(brokers.bootstrap, "cluster", "info")
    assert "CONTROLLER" in out and "HOST" in out

    # Nobody listening: one line saying so, exit 1.
    _, err = skiff("127.0.0.1:1", "topic", "list", expect=1)
    assert err.startswith("error: ") and "cannot connect to 127.0.0.1:1" in err
    # A command line that does not parse: exit 2 with usage.
    _, err = skiff(brokers.bootstrap, "group", "reset-offsets", "g", "--topic", "t", expect=2)
    assert "--to-earliest" in err


def test_produce_and_consume_from_the_command_line(broker):
    b = broker.bootstrap
    topic, twin = h.unique_topic("cli-rec"), h.unique_topic("cli-twin")
    h.create_topic(b, topic, partitions=4)
    h.create_topic(b, twin, partitions=4)
    keys = [f"user-{i}" for i in range(12)]

    # Keyed lines from stdin land where Kafka's partitioner (librdkafka's murmur2_random,
    # the Java client's default) puts the same keys.
    lines = "".join(f"{k}:value of {k}\n" for k in keys)
    run = subprocess.run([str(skiff_bin()), "produce", topic, "-K", ":", "-H", "trace=a",
                          "-H", "trace=b", "--output", "json", "--bootstrap-server", b],
                         input=lines, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert sum(p["records"] for p in json.loads(run.stdout)) == len(keys)
    p = h.producer(b, **{"partitioner": "murmur2_random"})
    expected = {}

    def report(err, msg):
        assert err is None, err
        expected[msg.key().decode()] = msg.partition()

    for k in keys:
        p.produce(twin, key=k, value=b"x", on_delivery=report)
    assert p.flush(30) == 0
    assert len(set(expected.values())) > 1

    c = h.consumer(b)
    c.assign([TopicPartition(topic, n, 0) for n in range(4)])
    seen = {}
    deadline = time.time() + 30
    while len(seen) < len(keys) and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            seen[m.key().decode()] = (m.partition(), m.value(), m.headers())
    c.close()
    assert {k: v[0] for k, v in seen.items()} == expected
    for k, (_, value, headers) in seen.items():
        assert value == f"value of {k}".encode()
        # The same header name twice, in order (what kcat -H does too).
        assert headers == [("trace", b"a"), ("trace", b"b")]

    # What a client produced — compressed, with headers and binary bytes — read back exactly.
    other = h.unique_topic("cli-read")
    h.create_topic(b, other, partitions=1)
    p = h.producer(b, **{"compression.type": "zstd", "linger.ms": 50})
    sent = [(f"k{i}".encode(), bytes([i, 255 - i]) * 3, [("h", b"%d" % i)]) for i in range(20)]
    for i, (k, v, hs) in enumerate(sent):
        p.produce(other, key=k, value=v, headers=hs, timestamp=1_700_000_000_000 + i)
    assert p.flush(30) == 0
    out, _ = skiff(b, "consume", other, "--bytes-as", "hex")
    read = [json.loads(line) for line in out.splitlines()]
    assert [r["offset"] for r in read] == list(range(20))
    for r, (k, v, hs) in zip(read, sent):
        assert bytes.fromhex(r["key"]) == k and bytes.fromhex(r["value"]) == v
        assert [(bytes.fromhex(hk).decode(), bytes.fromhex(hv)) for hk, hv in r["headers"]] == hs
        assert r["timestamp"] == 1_700_000_000_000 + r["offset"]
    # The last three, each value as it is and a newline; then only two records.
    run = subprocess.run([str(skiff_bin()), "consume", other, "--offset", "-3", "--format", "text",
                          "--bootstrap-server", b], capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout == b"".join(v + b"\n" for _, v, _ in sent[-3:])
    out, _ = skiff(b, "consume", other, "--offset", "5", "--count", "2")
    assert [json.loads(line)["offset"] for line in out.splitlines()] == [5, 6]

    _, err = skiff(b, "consume", h.unique_topic("cli-none"), expect=1)
    assert "UNKNOWN_TOPIC_OR_PARTITION" in err
    _, err = skiff(b, "produce", other, "--value", "x", "--partition", "7", expect=1)
    assert "no partition 7" in err


def doctor(*args):
    run = subprocess.run([str(skiff_bin()), "doctor", *args], capture_output=True, text=True,
                         timeout=120)
    checks = {}
    for line in run.stdout.splitlines():
        status, rest = line.split(None, 1)
        check = rest[:24].strip()
        checks[check] = (status, rest[24:].strip())
    return run.returncode, checks


def keystore(tmp_path) -> Path:
    """A PEM keystore (certificate and key) for 127.0.0.1, made with trustme."""
    import trustme
    path = tmp_path / "server.pem"
    trustme.CA().issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(path))
    return path


def test_doctor_checks_a_configuration_and_says_what_is_wrong(tmp_path, etcd, s3):
    from servers import broker_args, MotoS3
    # Embedded default: everything fine.
    rc, checks = doctor("--data-dir", str(tmp_path / "embedded"))
    assert rc == 0, checks
    assert {c: s for c, (s, _) in checks.items()} == {
        "settings": "ok", "kafka listener PLAINTEXT": "ok", "http listener": "ok",
        "advertised PLAINTEXT": "ok",
        "metadata store": "ok", "object store": "ok", "clock": "ok"}

    # etcd and the S3 server, as a cluster broker would use them.
    rc, checks = doctor("--data-dir", str(tmp_path / "cluster"), *broker_args(etcd, s3))
    assert rc == 0, checks
    assert checks["metadata store"][0] == "ok" and "etcd at" in checks["metadata store"][1]
    assert checks["object store"][0] == "ok" and "s3://" in checks["object store"][1]
    assert checks["clock"][0] == "ok", checks["clock"]
    # The probe is gone again.
    assert s3.keys("cluster/doctor/") == []

    # Each thing wrong, named: a bucket that does not exist, etcd not running, an address
    # clients cannot use.
    wrong = broker_args(etcd, s3)
    wrong[wrong.index(f"s3://{MotoS3.BUCKET}/cluster")] = "s3://no-such-bucket/x"
    rc, checks = doctor("--data-dir", str(tmp_path / "wrong"), *wrong,
                        "--listeners", "PLAINTEXT://0.0.0.0:0,SSL://127.0.0.1:0",
                        "--ssl-keystore-location", str(keystore(tmp_path)))
    assert rc == 1
    assert checks["object store"][0] == "FAIL"
    assert "the bucket does not exist" in checks["object store"][1]
    assert checks["advertised PLAINTEXT"][0] == "FAIL"
    assert "--advertised-listeners PLAINTEXT://" in checks["advertised PLAINTEXT"][1]
    assert checks["advertised SSL"][0] == "ok"
    assert checks["tls certificate"][0] == "ok" and "valid until" in checks["tls certificate"][1]
    assert checks["metadata store"][0] == "ok"
    # OAUTHBEARER whose identity provider does not answer.
    rc, checks = doctor("--data-dir", str(tmp_path / "oauth"), "--listeners",
                        "SASL_PLAINTEXT://127.0.0.1:0", "--advertised-listeners",
                        "SASL_PLAINTEXT://127.0.0.1:9092",
                        "--sasl-enabled-mechanisms", "OAUTHBEARER",
                        "--sasl-oauthbearer-jwks-endpoint-url", "http://127.0.0.1:9/jwks.json")
    assert rc == 1 and checks["oauthbearer keys"][0] == "FAIL", checks
    assert "cannot fetch http://127.0.0.1:9/jwks.json" in checks["oauthbearer keys"][1]
    # An advertised address no client can use is refused with the settings.
    rc, checks = doctor("--data-dir", str(tmp_path / "wrong"), "--advertised-listeners",
                        "0.0.0.0:9092")
    assert rc == 1 and checks["settings"][0] == "FAIL"
    assert "--advertised-listeners" in checks["settings"][1]
    etcd.stop()
    rc, checks = doctor("--data-dir", str(tmp_path / "no-etcd"), *broker_args(etcd, s3))
    assert rc == 1
    assert checks["metadata store"][0] == "FAIL", checks["metadata store"]
    assert checks["object store"][0] == "ok"
    # Settings that cannot work stop it at once.
    rc, checks = doctor("--data-dir", str(tmp_path / "bad"), "--flush-max-in-flight", "0")
    assert rc == 1 and checks["settings"][0] == "FAIL"
    assert "--flush-max-in-flight" in checks["settings"][1]
