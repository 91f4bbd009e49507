"""retention.ms and retention.bytes: each leader moves its partitions' log start past records older than the topic's
retention, whole flushes at a time, as Kafka deletes whole segments (embedded and on etcd + S3)."""

import time

from confluent_kafka.admin import ConfigResource

import helpers as h
from servers import broker_args

HOUR_MS = 3_600_000


def produce_at(b, topic: str, values: list[bytes], timestamp_ms: int) -> None:
    p = h.producer(b.bootstrap)
    h.produce_and_wait(p, topic, values, partition=0, timestamp=timestamp_ms)


def wait_for_low_watermark(b, topic: str, expected: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    low = None
    while time.monotonic() < deadline:
        low, _ = h.watermarks(b.bootstrap, topic, 0)
        if low == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"{topic}: log start {low}, expected {expected}")


def check_retention(b) -> None:
    now_ms = int(time.time() * 1000)
    short = h.unique_topic("short-retention")
    default = h.unique_topic("default-retention")
    h.create_topic(b.bootstrap, short, 1, config={"retention.ms": str(HOUR_MS)})
    h.create_topic(b.bootstrap, default, 1)
    for topic in (short, default):
        produce_at(b, topic, [b"old-%d" % i for i in range(5)], now_ms - 2 * HOUR_MS)
        produce_at(b, topic, [b"new-%d" % i for i in range(3)], now_ms)
    # Past an hour: the first flush goes, the second stays.
    wait_for_low_watermark(b, short, 5)
    recs = h.read_partitions(b.bootstrap, short, [0])
    assert [r.value for r in recs] == [b"new-%d" % i for i in range(3)]
    # The 7-day default keeps everything.
    time.sleep(1.5)
    assert h.watermarks(b.bootstrap, default, 0) == (0, 8)
    # Shortening a topic's retention takes effect on the next pass.
    admin = h.admin(b.bootstrap)
    futures = admin.alter_configs([ConfigResource("topic", default,
                                                  set_config={"retention.ms": str(HOUR_MS)})])
    for future in futures.values():
        future.result(timeout=30)
    wait_for_low_watermark(b, default, 5)
    # retention.bytes: the oldest flushes go while what stays still holds that many bytes; a
    # limit of 1 byte keeps only the newest flush.
    sized = h.unique_topic("size-retention")
    h.create_topic(b.bootstrap, sized, 1, config={"retention.bytes": "1"})
    for flush in range(3):
        produce_at(b, sized, [b"flush-%d-%d" % (flush, i) for i in range(2)], now_ms)
    wait_for_low_watermark(b, sized, 4)
    assert [r.value for r in h.read_partitions(b.bootstrap, sized, [0])] == [b"flush-2-0",
                                                                          b"flush-2-1"]


def test_retention_embedded(start_broker):
    check_retention(start_broker(args=["--log-retention-check-interval-ms", "300"]))


def test_retention_on_etcd_and_s3(start_broker, etcd, s3):
    check_retention(start_broker(args=broker_args(etcd, s3)
                                 + ["--log-retention-check-interval-ms", "300"]))


def test_broker_retention_defaults_apply_to_topics_without_their_own(start_broker):
    """--log-retention-ms (Kafka's log.retention.ms) is the default of every topic's
    retention.ms; DescribeConfigs reports it; a compacted-only topic keeps everything."""
    b = start_broker(args=["--log-retention-ms", str(HOUR_MS),
                           "--log-retention-check-interval-ms", "300"])
    now_ms = int(time.time() * 1000)
    plain, table = h.unique_topic("default-hour"), h.unique_topic("compact-only")
    h.create_topic(b.bootstrap, plain, 1)
    h.create_topic(b.bootstrap, table, 1, config={"cleanup.policy": "compact"})
    p = h.producer(b.bootstrap)
    for topic in (plain, table):
        h.produce_and_wait(p, topic, [b"old-%d" % i for i in range(4)], partition=0,
                           timestamp=now_ms - 2 * HOUR_MS, key=b"k")
    wait_for_low_watermark(b, plain, 4)
    time.sleep(1.0)
    assert h.watermarks(b.bootstrap, table, 0)[0] == 0, "retention.ms does not apply to compact"
    admin = h.admin(b.bootstrap)
    (future,) = admin.describe_configs([ConfigResource("topic", plain)]).values()
    configs = future.result(timeout=30)
    assert configs["retention.ms"].value == str(HOUR_MS)
    assert configs["retention.ms"].is_default
