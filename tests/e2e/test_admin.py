"""Admin APIs through real clients: altering topic configs (confluent-kafka and kafka-python) and
seeing the change in DescribeConfigs and on produce, the broker resource's configs, and the
replica-management APIs a diskless broker answers as Kafka does for single-replica partitions
(ElectLeaders, DescribeLogDirs, AlterReplicaLogDirs, List/AlterPartitionReassignments)."""

import time

import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, KafkaError, KafkaException
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from kafka import KafkaAdminClient, TopicPartition
from kafka import errors as kerrors
from kafka.admin import ConfigResource as KConfigResource
from kafka.admin import ConfigResourceType

import helpers as h


def _describe(a, topic):
    res = ConfigResource(ResourceType.TOPIC, topic)
    return a.describe_configs([res])[res].result(timeout=15)


def _incremental(a, topic, *entries):
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=op) for name, op, value in entries])
    return a.incremental_alter_configs([res])[res].result(timeout=15)


def test_confluent_incremental_alter_configs_take_effect(broker):
    a = h.admin(broker.bootstrap)
    topic = h.unique_topic("alter")
    h.create_topic(broker.bootstrap, topic)
    p = h.producer(broker.bootstrap)
    [(err, _)] = h.produce_and_wait(p, topic, [b"x" * 4000])
    assert err is None, err

    entries = _describe(a, topic)
    assert not entries["max.message.bytes"].is_read_only
    assert entries["max.message.bytes"].is_default

    _incremental(a, topic,
                 ("max.message.bytes", AlterConfigOpType.SET, "1000"),
                 ("message.timestamp.type", AlterConfigOpType.SET, "LogAppendTime"),
                 ("cleanup.policy", AlterConfigOpType.APPEND, "compact"))
    entries = _describe(a, topic)
    assert entries["max.message.bytes"].value == "1000"
    assert not entries["max.message.bytes"].is_default
    assert entries["max.message.bytes"].source == 1  # DYNAMIC_TOPIC_CONFIG
    assert entries["cleanup.policy"].value == "delete,compact"

    # The partition's leader applies the new limit and timestamp type to the next produce.
    [(err, _)] = h.produce_and_wait(p, topic, [b"x" * 4000], key=b"k")
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    [(err, msg)] = h.produce_and_wait(p, topic, [b"small"], key=b"k")
    assert err is None, err
    recs = h.read_partitions(broker.bootstrap, topic, [0], start_offset=msg.offset())
    assert recs[0].timestamp[0] == TIMESTAMP_LOG_APPEND_TIME

    # SUBTRACT and DELETE; then Kafka's errors for a bad value and an unknown topic.
    _incremental(a, topic,
                 ("cleanup.policy", AlterConfigOpType.SUBTRACT, "compact"),
                 ("max.message.bytes", AlterConfigOpType.DELETE, None))
    entries = _describe(a, topic)
    assert entries["cleanup.policy"].value == "delete"
    assert entries["max.message.bytes"].is_default
    with pytest.raises(KafkaException) as ei:
        _incremental(a, topic, ("retention.ms", AlterConfigOpType.SET, "soon"))
    assert ei.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert "soon" in ei.value.args[0].str()
    with pytest.raises(KafkaException) as ei:
        _incremental(a, h.unique_topic("missing"), ("retention.ms", AlterConfigOpType.SET, "1"))
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_confluent_alter_configs_replaces_the_whole_set(broker):
    a = h.admin(broker.bootstrap)
    topic = h.unique_topic("replace")
    h.create_topic(broker.bootstrap, topic, config={"retention.ms": "3600000",
                                                    "segment.ms": "60000"})
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"max.message.bytes": "2048"})
    a.alter_configs([res])[res].result(timeout=15)
    entries = _describe(a, topic)
    assert entries["max.message.bytes"].value == "2048"
    assert entries["retention.ms"].is_default and entries["retention.ms"].value == "604800000"
    assert entries["segment.ms"].is_default

    # validate_only changes nothing.
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "1000"})
    a.alter_configs([res], validate_only=True)[res].result(timeout=15)
    assert _describe(a, topic)["retention.ms"].is_default


def test_confluent_broker_resource(broker):
    a = h.admin(broker.bootstrap)
    res = ConfigResource(ResourceType.BROKER, "1")
    entries = a.describe_configs([res])[res].result(timeout=15)
    for name in ["broker.id", "node.id", "listeners", "advertised.listeners", "num.partitions",
                 "auto.create.topics.enable", "message.max.bytes", "socket.request.max.bytes",
                 "fetch.max.bytes", "log.retention.ms", "group.max.session.timeout.ms"]:
        assert name in entries, name
    assert entries["advertised.listeners"].value == f"PLAINTEXT://{broker.bootstrap}"
    assert all(e.is_read_only for e in entries.values())
    # Unset settings are null, as Kafka reports them, not empty strings.
    assert entries["broker.rack"].value is None
    assert entries["replica.selector.class"].value.endswith("LeaderSelector")

    res = ConfigResource(ResourceType.BROKER, "1", incremental_configs=[
        ConfigEntry("log.retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as ei:
        a.incremental_alter_configs([res])[res].result(timeout=15)
    assert ei.value.args[0].code() == KafkaError.INVALID_REQUEST
    assert "Cannot update these configs dynamically" in ei.value.args[0].str()
    h.assert_broker_serves(broker)


@pytest.fixture
def kadmin(broker):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    yield admin
    admin.close()


def test_kafka_python_alter_configs(broker, kadmin):
    kadmin.create_topics({"kp-alter": {"num_partitions": 2, "replication_factor": 1}})
    res = KConfigResource(ConfigResourceType.TOPIC, "kp-alter",
                          configs={"retention.ms": "3600000"})
    out = kadmin.alter_configs([res])
    assert out["topic"]["kp-alter"] == "OK", out
    cfg = kadmin.describe_configs([KConfigResource(ConfigResourceType.TOPIC, "kp-alter")])
    assert cfg["topic"]["kp-alter"]["retention.ms"]["value"] == "3600000"
    # The legacy AlterConfigs path too (kafka-python fills in the other modified keys).
    res = KConfigResource(ConfigResourceType.TOPIC, "kp-alter",
                          configs={"segment.ms": "60000"})
    out = kadmin.alter_configs([res], incremental=False)
    assert out["topic"]["kp-alter"] == "OK", out
    cfg = kadmin.describe_configs([KConfigResource(ConfigResourceType.TOPIC, "kp-alter")])
    assert cfg["topic"]["kp-alter"]["retention.ms"]["value"] == "3600000"
    assert cfg["topic"]["kp-alter"]["segment.ms"]["value"] == "60000"


def test_kafka_python_replica_admin_apis(broker, kadmin):
    kadmin.create_topics({"kp-replicas": {"num_partitions": 2, "replication_factor": 1}})
    p = h.producer(broker.bootstrap)
    reports = h.produce_and_wait(p, "kp-replicas", [b"v" * 100] * 10)
    assert all(err is None for err, _ in reports)

    # Every partition already has its leader: nothing to elect, which the client accepts.
    r = kadmin.elect_leaders(0, {"kp-replicas": [0, 1]})
    codes = [pr.error_code for t in r.replica_election_results for pr in t.partition_result]
    assert codes == [kerrors.ElectionNotNeededError.errno] * 2
    with pytest.raises(kerrors.UnknownTopicOrPartitionError):
        kadmin.elect_leaders(0, {"kp-replicas": [7]})

    assert kadmin.list_partition_reassignments() == {}
    out = kadmin.alter_partition_reassignments({TopicPartition("kp-replicas", 0): [2],
                                                TopicPartition("kp-replicas", 1): None})
    assert out[TopicPartition("kp-replicas", 0)] is kerrors.InvalidReplicationAssignmentError
    assert out[TopicPartition("kp-replicas", 1)] is kerrors.NoReassignmentInProgressError

    deadline = time.monotonic() + 10
    while True:
        [broker_dirs] = kadmin.describe_log_dirs()
        [log_dir] = broker_dirs["log_dirs"]
        sizes = {p["partition_index"]: p["partition_size"]
                 for t in log_dir["topics"] if t["name"] == "kp-replicas" for p in t["partitions"]}
        if sum(sizes.values()) > 1000 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert log_dir["log_dir"] == "/skiff/object-store"
    assert log_dir["error_code"] == 0
    assert sorted(sizes) == [0, 1]
    assert sum(sizes.values()) > 1000, sizes  # ten 100-byte values plus batch overhead

    out = kadmin.alter_replica_log_dirs({("kp-replicas", 0, 1): "/data/kafka"})
    assert list(out.values()) == [kerrors.LogDirNotFoundError]


def test_kafka_python_infers_a_kafka_4_broker(broker, kadmin):
    """kafka-python infers the broker's version from the API versions it advertises
    (ListOffsets v10 means 4.0) and picks its request versions accordingly."""
    version = kadmin.get_broker_version_data(1).broker_version
    assert version >= (4, 0), version
