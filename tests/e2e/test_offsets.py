"""Committed offsets for standalone consumers (assign + commit, no group membership yet):
durable across broker restarts, per group, visible to confluent-kafka and kafka-python alike."""

from confluent_kafka import TopicPartition as CTP
from kafka import KafkaConsumer, TopicPartition as KTP
from kafka.structs import OffsetAndMetadata

import helpers as h


def produce_values(bootstrap, topic, count):
    p = h.producer(bootstrap)
    for i in range(count):
        p.produce(topic, value=f"v{i}".encode(), partition=0)
    assert p.flush(30) == 0


def test_confluent_commit_then_resume_after_restart(broker):
    topic = "resume"
    h.create_topic(broker.bootstrap, topic, 1)
    produce_values(broker.bootstrap, topic, 20)
    c = h.consumer(broker.bootstrap, **{"group.id": "resumers"})
    c.assign([CTP(topic, 0, 0)])
    seen = []
    while len(seen) < 7:
        m = c.poll(10)
        assert m is not None, "no record within 10 s"
        seen.append(m.offset())
    c.commit(offsets=[CTP(topic, 0, 7, metadata="checkpoint")], asynchronous=False)
    [committed] = c.committed([CTP(topic, 0)], timeout=10)
    assert (committed.offset, committed.metadata) == (7, "checkpoint")
    c.close()

    broker.restart()    # offsets live in the metadata store, not in the broker's memory

    again = h.consumer(broker.bootstrap, **{"group.id": "resumers"})
    again.assign([CTP(topic, 0)])    # no offset: start from the committed one
    m = again.poll(15)
    assert m is not None and m.offset() == 7 and m.value() == b"v7"
    # Another group has its own (no) offsets.
    other = h.consumer(broker.bootstrap, **{"group.id": "others"})
    [none] = other.committed([CTP(topic, 0)], timeout=10)
    assert none.offset < 0
    again.close()
    other.close()


def test_kafka_python_commit_and_committed(broker):
    topic = "kp-commit"
    h.create_topic(broker.bootstrap, topic, 2)
    produce_values(broker.bootstrap, topic, 10)
    tp = KTP(topic, 0)
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="kp-group",
                      enable_auto_commit=False, consumer_timeout_ms=5000)
    c.assign([tp])
    c.seek(tp, 0)
    got = [m.offset for _, msgs in c.poll(timeout_ms=5000, max_records=4).items() for m in msgs]
    assert got and got[0] == 0
    c.commit({tp: OffsetAndMetadata(4, "kp-meta", -1)})
    assert c.committed(tp) == 4
    c.close()
    fresh = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="kp-group",
                          enable_auto_commit=False, consumer_timeout_ms=5000)
    fresh.assign([tp])
    first = next(iter(fresh))
    assert (first.offset, first.value) == (4, b"v4")
    assert fresh.committed(KTP(topic, 1)) is None
    fresh.close()


def test_commit_to_an_unknown_partition_is_refused(broker):
    topic = "known"
    h.create_topic(broker.bootstrap, topic, 1)
    c = h.consumer(broker.bootstrap, **{"group.id": "strict"})
    try:
        result = c.commit(offsets=[CTP(topic, 5, 1)], asynchronous=False)
        errors = [tp.error for tp in result]
    except Exception as e:   # librdkafka raises for a failed sync commit
        errors = [e]
    assert any(errors), "a commit to a partition that does not exist was accepted"
    c.close()
