"""Client-side helpers shared by the e2e tests (confluent-kafka based)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def producer(bootstrap: str, **conf) -> Producer:
    base = {
        "bootstrap.servers": bootstrap,
        "client.id": "skiff-e2e-producer",
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 30000,
    }
    base.update(conf)
    return Producer(base)


def consumer(bootstrap: str, **conf) -> Consumer:
    """An assign()-only consumer. librdkafka insists on a group.id string, but with assign() and
    no commits the group is never joined (consumer groups are not implemented by skiff yet)."""
    base = {
        "bootstrap.servers": bootstrap,
        "client.id": "skiff-e2e-consumer",
        "group.id": "skiff-e2e-unused-group",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "check.crcs": True,
    }
    base.update(conf)
    return Consumer(base)


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "client.id": "skiff-e2e-admin"})


def create_topic(bootstrap: str, topic: str, partitions: int = 1, config: dict | None = None,
                 timeout: float = 15.0) -> None:
    a = admin(bootstrap)
    fs = a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                   config=config or {})],
                         operation_timeout=timeout, request_timeout=timeout)
    fs[topic].result(timeout=timeout)
    wait_topic_partitions(bootstrap, topic, partitions, timeout=timeout)


def topic_partition_count(bootstrap: str, topic: str, timeout: float = 10.0) -> int | None:
    """Partition count from Metadata, or None if the topic is unknown.

    Asks for all topics: librdkafka's Metadata request for one named topic sets
    allow_auto_topic_creation, which would (correctly) re-create a just-deleted topic."""
    md = admin(bootstrap).list_topics(timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return len(t.partitions)


def wait_topic_partitions(bootstrap: str, topic: str, partitions: int,
                          timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = topic_partition_count(bootstrap, topic)
        if seen == partitions:
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {topic}: expected {partitions} partitions in metadata, saw {seen}")


def wait_leaders(bootstrap: str, topic: str, timeout: float = 15.0) -> None:
    """Waits until Metadata names a leader for every partition of `topic` (a broker that just
    started claims its partitions in its first controller pass, after it answers health)."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        t = admin(bootstrap).list_topics(timeout=5).topics.get(topic)
        if t is not None and t.error is None and t.partitions and all(
                p.leader >= 0 and p.error is None for p in t.partitions.values()):
            return
        seen = t
        time.sleep(0.1)
    raise AssertionError(f"topic {topic}: no leader for every partition: {seen}")


def assert_broker_serves(broker, timeout: float = 10.0) -> None:
    """The process is alive and answers a Metadata request from a fresh client."""
    assert broker.is_running(), f"broker process exited (code {broker.proc.returncode})"
    md = admin(broker.bootstrap).list_topics(timeout=timeout)
    assert len(md.brokers) >= 1, "Metadata lists no broker"


def watermarks(bootstrap: str, topic: str, partition: int, timeout: float = 10.0) -> tuple[int, int]:
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout,
                                       cached=False)
    finally:
        c.close()


@dataclass(frozen=True)
class Rec:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple
    timestamp: tuple


def read_partitions(bootstrap: str, topic: str, partitions, timeout: float = 30.0,
                    start_offset: int = OFFSET_BEGINNING, c: Consumer | None = None) -> list[Rec]:
    """Read every record of the given partitions from `start_offset` up to the high watermark
    observed at call time. Fails (rather than hanging) if the data does not arrive in time."""
    own = c is None
    c = c or consumer(bootstrap)
    try:
        partitions = list(partitions)
        highs = {}
        for p in partitions:
            _low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            highs[p] = high
        c.assign([TopicPartition(topic, p, start_offset) for p in partitions])
        out: list[Rec] = []
        pos = {p: None for p in partitions}

        def done() -> bool:
            for p in partitions:
                if highs[p] <= 0:
                    continue
                if start_offset >= 0 and start_offset >= highs[p]:
                    continue
                if pos[p] is None or pos[p] < highs[p]:
                    return False
            return True

        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out reading {topic}: positions {pos}, high watermarks {highs}")
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                raise KafkaException(m.error())
            headers = tuple((k, v) for k, v in (m.headers() or []))
            out.append(Rec(m.partition(), m.offset(), m.key(), m.value(), headers, m.timestamp()))
            pos[m.partition()] = m.offset() + 1
        return out
    finally:
        if own:
            c.close()


def by_partition(recs: list[Rec]) -> dict[int, list[Rec]]:
    out: dict[int, list[Rec]] = {}
    for r in recs:
        out.setdefault(r.partition, []).append(r)
    return out


def produce_and_wait(p: Producer, topic: str, values, timeout: float = 30.0, **kw) -> list:
    """Produce values (bytes) and wait for all delivery reports. Returns [(err, msg)] in order."""
    reports: list = [None] * len(values)

    def cb_for(i):
        def cb(err, msg):
            reports[i] = (err, msg)
        return cb

    for i, v in enumerate(values):
        p.produce(topic, value=v, on_delivery=cb_for(i), **kw)
        p.poll(0)
    remaining = p.flush(timeout)
    assert remaining == 0, f"{remaining} messages still undelivered after {timeout}s"
    assert all(r is not None for r in reports), "missing delivery reports"
    return reports


# Secrets tests gave brokers (passwords, tokens, keys): at the end of the run no log written
# during it may contain one (conftest's `no_secret_in_any_log`).
SECRETS: set[str] = set()


def secret(value: str) -> str:
    """Registers `value` as a secret no log of the run may show; returns it."""
    SECRETS.add(value)
    return value
