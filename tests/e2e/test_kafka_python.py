"""kafka-python 3.0 (a pure-Python, independent protocol implementation) against skiff.

Consumers never use consumer groups (not implemented yet): KafkaConsumer without group_id either
subscribes with auto-assignment of all partitions or uses assign().
"""

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import (InvalidPartitionsError, InvalidTopicError, TopicAlreadyExistsError,
                          UnknownTopicOrPartitionError)


@pytest.mark.parametrize("producer_conf", [{}, {"enable_idempotence": False}],
                         ids=["producer-defaults", "no-idempotence"])
def test_beginner_tutorial_flow(broker, producer_conf):
    """The quickstart every newcomer types: produce 10 messages to an auto-created topic, read
    them back from the beginning. With producer defaults kafka-python 3.0 enables idempotence
    (InitProducerId); the second variant isolates plain produce from that."""
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, **producer_conf)
    futures = [producer.send("test-topic", f"message {i}".encode()) for i in range(10)]
    producer.flush(timeout=30)
    metas = [f.get(timeout=30) for f in futures]
    producer.close(timeout=10)
    assert [(m.topic, m.partition) for m in metas] == [("test-topic", 0)] * 10
    assert [m.offset for m in metas] == list(range(10))

    consumer = KafkaConsumer("test-topic", bootstrap_servers=broker.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=10000)
    try:
        got = []
        for msg in consumer:          # stops after consumer_timeout_ms without a message
            got.append(msg)
            if len(got) == 10:
                break
        extra = consumer.poll(timeout_ms=1000)
    finally:
        consumer.close()
    assert [m.value for m in got] == [f"message {i}".encode() for i in range(10)]
    assert [m.offset for m in got] == list(range(10))
    assert all(m.partition == 0 and m.topic == "test-topic" for m in got)
    assert not any(extra.values()), f"unexpected extra records: {extra}"


def test_keys_headers_timestamps_round_trip(broker):
    topic = "roundtrip"
    ts0 = int(time.time() * 1000) - 60_000
    sent = [
        (b"k0", b"v0", [("h1", b"x")]),
        (None, b"null key", []),
        (b"k2", b"", [("dup", b""), ("dup", b"second")]),   # empty value, repeated header key
        (b"k3", None, []),                                   # tombstone (null value)
        (b"\x00\xffbin", bytes(range(256)), [("bin", bytes(range(256)))]),
        (b"k5", b"x" * 100_000, []),                         # a large value
    ]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    futures = [producer.send(topic, key=k, value=v, headers=h, partition=0, timestamp_ms=ts0 + i)
               for i, (k, v, h) in enumerate(sent)]
    producer.flush(timeout=30)
    offsets = [f.get(timeout=30).offset for f in futures]
    producer.close(timeout=10)
    assert offsets == list(range(len(sent)))

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=10000)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        got = []
        for msg in consumer:
            got.append(msg)
            if len(got) == len(sent):
                break
    finally:
        consumer.close()
    assert len(got) == len(sent)
    for i, (msg, (k, v, h)) in enumerate(zip(got, sent)):
        assert msg.offset == i
        assert msg.key == k, f"record {i} key"
        assert msg.value == v, f"record {i} value"
        assert list(msg.headers) == h, f"record {i} headers"
        assert msg.timestamp == ts0 + i, f"record {i} timestamp"
        assert msg.timestamp_type == 0, "CreateTime expected"


def _partition_count(admin, topic):
    [t] = admin.describe_topics([topic])
    assert t["error_code"] == 0, t
    return len(t["partitions"])


def test_admin_topics_partitions_configs(broker):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    try:
        res = admin.create_topics({"orders": {"num_partitions": 3, "replication_factor": 1,
                                              "configs": {"retention.ms": "3600000"}}})
        assert [(t["name"], t["error_code"]) for t in res["topics"]] == [("orders", 0)]
        assert "orders" in admin.list_topics()
        assert _partition_count(admin, "orders") == 3

        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics({"orders": {"num_partitions": 1, "replication_factor": 1}})
        assert _partition_count(admin, "orders") == 3, "failed re-create must not change topic"

        for bad in ["bad topic!", "a/b", "..", "x" * 250]:
            with pytest.raises(InvalidTopicError):
                admin.create_topics({bad: {"num_partitions": 1, "replication_factor": 1}})

        # CreatePartitions only grows.
        admin.create_partitions({"orders": 5})
        assert _partition_count(admin, "orders") == 5
        with pytest.raises(InvalidPartitionsError):
            admin.create_partitions({"orders": 2})
        with pytest.raises(InvalidPartitionsError):
            admin.create_partitions({"orders": 5})
        assert _partition_count(admin, "orders") == 5

        # DescribeConfigs: the value set at creation comes back, and is reported as set on the
        # topic (not a default), so the default "modified" filter shows it too.
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "orders")],
                                     config_filter="all")
        cfg = res["topic"]["orders"]
        assert cfg["retention.ms"]["value"] == "3600000"
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "orders")])
        assert res["topic"]["orders"]["retention.ms"]["value"] == "3600000"

        res = admin.delete_topics(["orders"])
        assert [(t["name"], t["error_code"]) for t in res["topics"]] == [("orders", 0)]
        deadline = time.monotonic() + 10
        while "orders" in admin.list_topics() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "orders" not in admin.list_topics()
        with pytest.raises(UnknownTopicOrPartitionError):
            admin.delete_topics(["orders"])
    finally:
        admin.close()


def test_subscribe_without_group_reads_all_partitions(broker):
    """KafkaConsumer(topic) without group_id auto-assigns every partition of the topic."""
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    admin.create_topics({"multi": {"num_partitions": 3, "replication_factor": 1}})
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    futures = [producer.send("multi", f"m{i}".encode(), partition=i % 3) for i in range(30)]
    producer.flush(timeout=30)
    metas = [f.get(timeout=30) for f in futures]
    producer.close(timeout=10)
    for p in range(3):
        assert [m.offset for m in metas if m.partition == p] == list(range(10))

    consumer = KafkaConsumer("multi", bootstrap_servers=broker.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=10000)
    try:
        got = []
        for msg in consumer:
            got.append(msg)
            if len(got) == 30:
                break
    finally:
        consumer.close()
    assert sorted(m.value for m in got) == sorted(f"m{i}".encode() for i in range(30))
    for p in range(3):
        part = [m for m in got if m.partition == p]
        assert [m.offset for m in part] == list(range(10))
        assert [m.value for m in part] == [f"m{i}".encode() for i in range(p, 30, 3)]
