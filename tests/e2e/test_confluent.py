"""confluent-kafka (librdkafka 2.16) against skiff: produce/consume with every compression codec,
acks levels, admin operations, ListOffsets, fetch positions, concurrent readers and long poll.

Consumers use assign() only (no consumer groups yet)."""

import threading
import time

import pytest
from confluent_kafka import (OFFSET_END, TIMESTAMP_CREATE_TIME, KafkaError, KafkaException,
                             TopicPartition)
from confluent_kafka.admin import ConfigResource, NewPartitions, NewTopic, ResourceType

import helpers as h


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume_each_compression(broker, codec):
    topic = h.unique_topic(f"codec-{codec}")
    partitions = 4
    h.create_topic(broker.bootstrap, topic, partitions)
    n = 400
    p = h.producer(broker.bootstrap, **{"compression.type": codec, "acks": "all"})
    sent = {}
    reports = {}

    def on_delivery(i):
        def cb(err, msg):
            reports[i] = (err, msg.partition(), msg.offset())
        return cb

    for i in range(n):
        key = f"key-{i % 23}".encode()
        # Compressible, but not trivially: the index varies the text.
        value = (f"record {i} of {codec}: " + "lorem ipsum dolor sit amet " * 8).encode()
        headers = [("idx", str(i).encode()), ("codec", codec.encode())]
        sent[i] = (key, value, tuple(headers))
        p.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery(i))
        p.poll(0)
    assert p.flush(30) == 0
    assert len(reports) == n
    errors = {i: r[0] for i, r in reports.items() if r[0] is not None}
    assert not errors, f"delivery errors: {list(errors.items())[:5]}"
    used = {r[1] for r in reports.values()}
    assert len(used) > 1, "keys should spread over several partitions"

    recs = h.read_partitions(broker.bootstrap, topic, range(partitions))
    assert len(recs) == n, f"consumed {len(recs)} records, produced {n}"
    at = {(r.partition, r.offset): r for r in recs}
    for i, (key, value, headers) in sent.items():
        _, part, off = reports[i]
        r = at.get((part, off))
        assert r is not None, f"record {i}: nothing at acknowledged {part}/{off}"
        assert (r.key, r.value, r.headers) == (key, value, headers), f"record {i} differs"
        assert r.timestamp[0] == TIMESTAMP_CREATE_TIME
    # Per-partition order is produce order, offsets contiguous from 0.
    for part, prs in h.by_partition(recs).items():
        assert [r.offset for r in prs] == list(range(len(prs)))
        idx = [int(r.headers[0][1]) for r in prs]
        assert idx == sorted(idx), f"partition {part}: produce order not preserved"


@pytest.mark.parametrize("acks", ["0", "1"])
def test_acks_0_and_1_deliver(broker, acks):
    topic = h.unique_topic(f"acks{acks}")
    h.create_topic(broker.bootstrap, topic, 2)
    p = h.producer(broker.bootstrap, acks=acks)
    values = [f"acks{acks}-{i}".encode() for i in range(100)]
    reports = h.produce_and_wait(p, topic, values)
    assert all(err is None for err, _ in reports), [e for e, _ in reports if e]
    if acks == "1":
        assert all(m.offset() >= 0 for _, m in reports)
    # acks=0 gets no response, so the data may still be in the broker's flush buffer: poll the
    # log until everything is there (bounded).
    deadline = time.monotonic() + 15
    while True:
        total = sum(h.watermarks(broker.bootstrap, topic, part)[1] for part in range(2))
        if total >= len(values) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    recs = h.read_partitions(broker.bootstrap, topic, range(2))
    assert sorted(r.value for r in recs) == sorted(values)
    if acks == "1":
        assert {(m.partition(), m.offset()) for _, m in reports} == \
            {(r.partition, r.offset) for r in recs}


def test_admin_client(broker):
    a = h.admin(broker.bootstrap)
    topic = h.unique_topic("adm")
    fs = a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1,
                                   config={"retention.ms": "3600000"})], operation_timeout=10)
    fs[topic].result(timeout=15)
    h.wait_topic_partitions(broker.bootstrap, topic, 3)

    fs = a.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    with pytest.raises(KafkaException) as ei:
        fs[topic].result(timeout=15)
    assert ei.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    fs = a.create_topics([NewTopic("not a valid name!", num_partitions=1, replication_factor=1)])
    with pytest.raises(KafkaException) as ei:
        fs["not a valid name!"].result(timeout=15)
    assert ei.value.args[0].code() == KafkaError.TOPIC_EXCEPTION  # INVALID_TOPIC_EXCEPTION (17)

    a.create_partitions([NewPartitions(topic, 6)])[topic].result(timeout=15)
    h.wait_topic_partitions(broker.bootstrap, topic, 6)
    with pytest.raises(KafkaException) as ei:
        a.create_partitions([NewPartitions(topic, 4)])[topic].result(timeout=15)
    assert ei.value.args[0].code() == KafkaError.INVALID_PARTITIONS
    assert h.topic_partition_count(broker.bootstrap, topic) == 6

    res = ConfigResource(ResourceType.TOPIC, topic)
    entries = a.describe_configs([res])[res].result(timeout=15)
    assert entries["retention.ms"].value == "3600000"
    assert not entries["retention.ms"].is_default

    a.delete_topics([topic], operation_timeout=10)[topic].result(timeout=15)
    deadline = time.monotonic() + 10
    while h.topic_partition_count(broker.bootstrap, topic) is not None:
        assert time.monotonic() < deadline, "deleted topic still in metadata"
        time.sleep(0.1)
    with pytest.raises(KafkaException) as ei:
        a.delete_topics([topic])[topic].result(timeout=15)
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


@pytest.fixture
def thirty_records(broker):
    """A 1-partition topic with 30 records whose timestamps are base + i*1000 ms."""
    topic = h.unique_topic("ts")
    h.create_topic(broker.bootstrap, topic, 1)
    base = int(time.time() * 1000) - 3_600_000
    p = h.producer(broker.bootstrap)
    for i in range(30):
        p.produce(topic, value=f"v{i}".encode(), partition=0, timestamp=base + i * 1000)
    assert p.flush(30) == 0
    return topic, base


def test_watermarks_and_offsets_for_times(broker, thirty_records):
    topic, base = thirty_records
    c = h.consumer(broker.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (0, 30)
        queries = {
            base - 10_000: 0,          # before everything -> first offset
            base: 0,                   # exact match
            base + 3000: 3,
            base + 3500: 4,            # between records -> next one
            base + 29_000: 29,         # the last record
            base + 29_001: -1,         # after the last record -> -1 (end)
        }
        got = {}
        for ts in queries:   # one lookup per call: a request holds each partition once
            [tp] = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert tp.error is None, tp.error
            got[ts] = tp.offset
        assert got == queries
    finally:
        c.close()


def test_fetch_from_middle_offset(broker, thirty_records):
    topic, _ = thirty_records
    recs = h.read_partitions(broker.bootstrap, topic, [0], start_offset=17)
    assert [r.offset for r in recs] == list(range(17, 30))
    assert [r.value for r in recs] == [f"v{i}".encode() for i in range(17, 30)]


def test_two_independent_consumers(broker, thirty_records):
    topic, _ = thirty_records
    c1, c2 = h.consumer(broker.bootstrap), h.consumer(broker.bootstrap)
    try:
        tp = [TopicPartition(topic, 0, 0)]
        c1.assign(tp)
        c2.assign(tp)
        got = {1: [], 2: []}
        deadline = time.monotonic() + 20
        while (len(got[1]) < 30 or len(got[2]) < 30) and time.monotonic() < deadline:
            for i, c in ((1, c1), (2, c2)):   # interleaved: both read concurrently
                m = c.poll(0.1)
                if m is not None:
                    assert m.error() is None, m.error()
                    got[i].append((m.offset(), m.value()))
        expected = [(i, f"v{i}".encode()) for i in range(30)]
        assert got[1] == expected
        assert got[2] == expected
    finally:
        c1.close()
        c2.close()


def test_long_poll_consumer_gets_record_produced_while_waiting(broker):
    """A consumer parked at the end of the log (fetch.wait.max.ms=5000) receives a record
    produced after it started waiting well before its fetch wait expires."""
    topic = h.unique_topic("longpoll")
    h.create_topic(broker.bootstrap, topic, 1)
    c = h.consumer(broker.bootstrap, **{"fetch.wait.max.ms": 5000})
    received = []
    stop = threading.Event()

    def consume():
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                received.append((time.monotonic(), m.offset(), m.value()))
                return

    c.assign([TopicPartition(topic, 0, OFFSET_END)])
    t = threading.Thread(target=consume, daemon=True)
    t.start()
    try:
        time.sleep(1.5)  # the consumer is now parked in a Fetch at the end of the log
        assert not received, "record received before anything was produced"
        p = h.producer(broker.bootstrap, acks="1", **{"linger.ms": 0})
        sent_at = time.monotonic()
        h.produce_and_wait(p, topic, [b"wake up"])
        t.join(20)
        assert received, "consumer never received the record"
        at, offset, value = received[0]
        assert (offset, value) == (0, b"wake up")
        assert at - sent_at < 4.0, f"record took {at - sent_at:.2f}s to reach the waiting consumer"
    finally:
        stop.set()
        t.join(5)
        c.close()
