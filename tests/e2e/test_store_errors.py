"""A metadata store that stops answering makes requests fail retriably, never look empty.

etcd is paused (SIGSTOP) so every store request times out after --etcd-request-timeout-ms;
then it resumes and the same requests find what was committed before.
"""

import json
import os
import signal
import time

from confluent_kafka import TopicPartition

import helpers as h
import kafka_wire as w
from servers import broker_args

OFFSET_FETCH = 9
FIND_COORDINATOR = 10


def offset_fetch_v1(conn: w.Conn, group: str, topic: str) -> tuple[int, int]:
    """-> (committed offset, error code) of partition 0, with OffsetFetch v1 (no top-level
    error code: a consumer reads an empty answer as "nothing committed")."""
    body = w.string(group) + w.array([w.string(topic) + w.array([w.i32(0)])])
    _, payload = conn.request(OFFSET_FETCH, 1, body)
    r = w.Reader(payload)
    r.i32()  # correlation id
    assert r.i32() == 1, "one topic asked for, one answered"
    assert r.string() == topic
    assert r.i32() == 1
    assert r.i32() == 0
    offset = r.i64()
    r.string()  # metadata
    return offset, r.i16()


def test_store_outage_gives_retriable_errors_not_empty_answers(start_broker, etcd, s3):
    b = start_broker(args=broker_args(etcd, s3) + ["--etcd-request-timeout-ms", "1000"])
    topic, group = "outage", "outage-group"
    h.create_topic(b.bootstrap, topic, 1)
    c = h.consumer(b.bootstrap, **{"group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, 7)], asynchronous=False)
    finally:
        c.close()
    with w.Conn.to(b, timeout=30) as conn:
        assert offset_fetch_v1(conn, group, topic) == (7, 0)
        os.kill(etcd.proc.pid, signal.SIGSTOP)
        try:
            offset, error = offset_fetch_v1(conn, group, topic)
            assert (offset, error) != (-1, 0), "a store error answered as 'nothing committed'"
            assert error in (14, 15), error  # COORDINATOR_LOAD_IN_PROGRESS / NOT_AVAILABLE
            assert b.http_get("/v1/groups", timeout=30)[0] == 503
            assert b.http_get("/v1/topics", timeout=30)[0] == 503
        finally:
            os.kill(etcd.proc.pid, signal.SIGCONT)
        assert offset_fetch_v1(conn, group, topic) == (7, 0)
    status, body = b.http_get("/v1/groups", timeout=30)
    assert status == 200
    groups = json.loads(body)["groups"]
    assert [g["offsets"][0]["committed_offset"] for g in groups if g["group_id"] == group] == [7]


def readiness(b) -> tuple[int, list[str]]:
    status, body = b.http_get("/ready", timeout=30)
    return status, json.loads(body).get("problems", [])


def wait_readiness(b, want: int, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        status, problems = readiness(b)
        if status == want:
            return problems
        assert time.monotonic() < deadline, (status, problems)
        time.sleep(0.2)


def test_readiness_follows_the_metadata_store_and_the_bucket(start_broker, etcd, s3):
    """/ready (the Helm chart's readiness probe) answers 503 with the reason while etcd does not
    answer or the bucket refuses the broker's uploads, and 200 again once they recover;
    /health (liveness) stays 200 throughout: the process is fine, restarting it would not help."""
    b = start_broker(args=broker_args(etcd, s3) + ["--etcd-request-timeout-ms", "1000"])
    assert readiness(b) == (200, [])
    os.kill(etcd.proc.pid, signal.SIGSTOP)
    try:
        problems = wait_readiness(b, 503)
        assert any("metadata store" in p for p in problems), problems
        assert b.http_get("/health")[0] == 200
    finally:
        os.kill(etcd.proc.pid, signal.SIGCONT)
    wait_readiness(b, 200)

    topic = h.unique_topic("ready")
    h.create_topic(b.bootstrap, topic, 1)
    s3.freeze()
    try:
        p = h.producer(b.bootstrap, **{"message.timeout.ms": 8000, "retries": 0})
        p.produce(topic, value=b"x")
        problems = wait_readiness(b, 503)
        assert problems == ["object store: the latest flush-object upload failed"]
        assert b.http_get("/health")[0] == 200
        p.flush(15)
    finally:
        s3.thaw()
    h.produce_and_wait(h.producer(b.bootstrap), topic, [b"after"])
    wait_readiness(b, 200)
