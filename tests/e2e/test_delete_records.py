"""DeleteRecords through real admin clients: the log start offset moves forward, consumers start
there, reads below it are out of range, and it survives a restart (embedded and on etcd + S3)."""

import pytest
from confluent_kafka import TopicPartition
from kafka import KafkaAdminClient
from kafka import TopicPartition as KafkaTopicPartition

import helpers as h
from servers import broker_args


def produce_values(b, topic: str, count: int) -> None:
    h.produce_and_wait(h.producer(b.bootstrap, **{"linger.ms": 5}), topic,
                       [f"v{i}".encode() for i in range(count)], partition=0)


def delete_records(b, topic: str, partition: int, offset: int) -> int:
    """confluent-kafka's delete_records; -> the new low watermark."""
    admin = h.admin(b.bootstrap)  # kept alive until the answer arrives
    futures = admin.delete_records([TopicPartition(topic, partition, offset)])
    (future,) = futures.values()
    return future.result(timeout=30).low_watermark


def check_delete_records(b) -> None:
    topic = h.unique_topic("delete-records")
    h.create_topic(b.bootstrap, topic, 2)
    produce_values(b, topic, 10)
    low, high = h.watermarks(b.bootstrap, topic, 0)
    assert (low, high) == (0, 10), (low, high)

    assert delete_records(b, topic, 0, 4) == 4
    assert h.watermarks(b.bootstrap, topic, 0) == (4, 10)
    # A consumer from the beginning starts at the new log start.
    recs = h.read_partitions(b.bootstrap, topic, [0])
    assert [r.offset for r in recs] == list(range(4, 10))
    assert [r.value for r in recs] == [f"v{i}".encode() for i in range(4, 10)]
    # A committed position below it is out of range: auto.offset.reset=earliest moves it up.
    c = h.consumer(b.bootstrap, **{"auto.offset.reset": "earliest"})
    try:
        below = h.read_partitions(b.bootstrap, topic, [0], start_offset=2, c=c)
        assert below and below[0].offset == 4, [r.offset for r in below][:3]
    finally:
        c.close()
    # Lower offsets change nothing; past the high watermark is refused.
    assert delete_records(b, topic, 0, 1) == 4
    with pytest.raises(Exception, match="OFFSET_OUT_OF_RANGE|out of range"):
        delete_records(b, topic, 0, 11)
    # kafka-python, and -1: everything up to the high watermark.
    kp = KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=30000)
    try:
        result = kp.delete_records({KafkaTopicPartition(topic, 0): -1})
        assert [v["low_watermark"] for v in result.values()] == [10], result
    finally:
        kp.close()
    assert h.watermarks(b.bootstrap, topic, 0) == (10, 10)
    # Producing goes on from the high watermark; the other partition is untouched.
    produce_values(b, topic, 2)
    assert h.watermarks(b.bootstrap, topic, 1)[0] == 0
    b.restart()
    # A restarted broker claims its partitions in its first controller pass, just after it answers
    # health; librdkafka's watermark query does not wait for a leader, so the test does.
    h.wait_leaders(b.bootstrap, topic)
    assert h.watermarks(b.bootstrap, topic, 0)[0] == 10


def test_delete_records_embedded(broker):
    check_delete_records(broker)


def test_delete_records_on_etcd_and_s3(start_broker, etcd, s3):
    check_delete_records(start_broker(args=broker_args(etcd, s3)))
