"""The object store is written in flushes, not per request: data of all partitions buffered during
--flush-linger-ms goes into one object, nothing is written while idle, and /v1/stats agrees with
what is on disk."""

import time

import pytest

import helpers as h
import kafka_wire as w
from kafka_wire import Conn

LINGER_MS = 300
PARTITIONS = 8
CLIENTS = 64            # concurrent producers, one produce request each
RECORDS_PER_REQUEST = 5


def assert_stats_match_disk(broker):
    st = broker.stats()
    files = len(broker.object_files())
    assert st["flushes"] == st["objects_written"], st
    assert st["objects_written"] == files, f"stats say {st['objects_written']}, disk has {files}"
    return st


@pytest.mark.skiff(flush_linger_ms=LINGER_MS)
def test_burst_to_many_partitions_writes_one_object_per_flush(broker):
    time.sleep(1.0)
    assert broker.object_files() == [], "objects written by an idle broker"
    st = assert_stats_match_disk(broker)
    assert st["objects_written"] == 0

    topic = "burst"
    h.create_topic(broker.bootstrap, topic, PARTITIONS)
    baseline = len(broker.object_files())

    # 64 clients each send one produce request (acks=all) to one of 8 partitions, all within a
    # few milliseconds, i.e. inside one linger window.
    conns = [Conn.to(broker, timeout=20) for _ in range(CLIENTS)]
    try:
        t0 = time.monotonic()
        for i, c in enumerate(conns):
            batch = w.record_batch([f"c{i}-r{j}".encode() for j in range(RECORDS_PER_REQUEST)])
            c.send_raw(w.frame(w.request_header_v1(w.API_PRODUCE, 3, 1) + w.produce_v3_body(
                topic, {i % PARTITIONS: batch}, acks=-1)))
        send_time = time.monotonic() - t0
        results = []
        for i, c in enumerate(conns):
            payload = c.recv_frame()
            assert payload is not None, f"client {i}: connection closed"
            _, res = w.parse_produce_v3(payload)
            results.append(res[(topic, i % PARTITIONS)])
    finally:
        for c in conns:
            c.close()
    assert all(err == 0 for err, _ in results), results
    for part in range(PARTITIONS):
        bases = sorted(base for i, (_, base) in enumerate(results) if i % PARTITIONS == part)
        per_part = CLIENTS // PARTITIONS
        assert bases == [k * RECORDS_PER_REQUEST for k in range(per_part)], (part, bases)

    new_objects = len(broker.object_files()) - baseline
    assert new_objects >= 1, "acknowledged data but no object on disk"
    # One flush holds every partition: 64 requests to 8 partitions sent within one linger window
    # fit in 1 object (2-3 if the burst straddled a window on a slow machine), never one per
    # request or per partition.
    assert new_objects <= 3, (f"{CLIENTS} produce requests to {PARTITIONS} partitions sent in "
                              f"{send_time * 1000:.0f} ms made {new_objects} objects")

    # Every flush timed its stages once; the oldest record waited about one linger.
    stages = broker.stats()["flush_stages"]
    flushes = broker.stats()["flushes"]
    assert {k: v["count"] for k, v in stages.items()} == {
        "buffered": flushes, "prepare": flushes, "upload": flushes, "commit": flushes,
        "rollup": flushes}, stages
    assert stages["buffered"]["max_ms"] >= LINGER_MS * 0.9, stages

    # Idle: nothing more is written.
    st = assert_stats_match_disk(broker)
    files_before = broker.object_files()
    time.sleep(1.2)
    assert broker.object_files() == files_before, "objects written while idle"
    assert broker.stats()["flushes"] == st["flushes"], "empty flushes while idle"

    # And the data is all there.
    recs = h.read_partitions(broker.bootstrap, topic, range(PARTITIONS))
    assert len(recs) == CLIENTS * RECORDS_PER_REQUEST
    assert {r.value for r in recs} == {f"c{i}-r{j}".encode() for i in range(CLIENTS)
                                       for j in range(RECORDS_PER_REQUEST)}


@pytest.mark.skiff(flush_linger_ms=LINGER_MS)
def test_sequential_flushes_count(broker):
    """Requests separated by more than the linger time are separate flushes: one object each."""
    h.create_topic(broker.bootstrap, "seq", 2)
    baseline = broker.stats()["objects_written"]
    with Conn.to(broker) as c:
        for i in range(3):
            # two partitions in one request: still one object
            corr, payload = c.request(w.API_PRODUCE, 3, w.produce_v3_body(
                "seq", {0: w.record_batch([b"a%d" % i]), 1: w.record_batch([b"b%d" % i])}))
            _, res = w.parse_produce_v3(payload)
            assert res == {("seq", 0): (0, i), ("seq", 1): (0, i)}
    st = assert_stats_match_disk(broker)
    assert st["objects_written"] - baseline == 3


@pytest.mark.skiff(flush_linger_ms=10000, args=["--flush-max-bytes", "65536"])
def test_flush_max_bytes_flushes_before_linger(broker):
    h.create_topic(broker.bootstrap, "big-flush", 1)
    batch = w.record_batch([bytes([i % 251]) * 1000 for i in range(100)])   # ~100 KB
    with Conn.to(broker, timeout=20) as c:
        t0 = time.monotonic()
        assert w.produce(c, "big-flush", 0, batch, acks=1) == (0, 0)
        took = time.monotonic() - t0
    assert took < 5.0, f"produce over --flush-max-bytes waited {took:.1f}s (linger is 10 s)"
    assert len(broker.object_files()) >= 1
    assert_stats_match_disk(broker)
