"""Kafka transactions with confluent-kafka (librdkafka 2.16) against skiff: commit and abort as
seen by read_committed and read_uncommitted consumers, a consume-transform-produce loop with its
offsets sent in the transaction (pending until it commits), a zombie producer fenced by a new
instance, an abandoned transaction aborted by the broker after its timeout, transactional and
idempotent producers recovering from a sequence gap by bumping their epoch (KIP-360), and
Kafka's hanging-transaction tools (kafka-python)."""

import json
import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, KafkaError, KafkaException, Producer,
                             TopicPartition)

from kafka import KafkaAdminClient
from kafka import TopicPartition as KafkaTopicPartition

import helpers as h

# Transaction checks run often so a timed-out transaction is aborted within the test.
TXN_ARGS = ["--transaction-abort-timed-out-transaction-cleanup-interval-ms", "200"]


def txn_producer(bootstrap: str, txn_id: str, **conf) -> Producer:
    p = h.producer(bootstrap, **{"transactional.id": txn_id, "linger.ms": 5, **conf})
    p.init_transactions(30)
    return p


def read_values(bootstrap: str, topic: str, partitions: int, isolation: str,
                expected: int, timeout: float = 30.0, settle: float = 1.0) -> list[bytes]:
    """Values of every record a consumer with `isolation` sees from the start, once `expected`
    arrived and nothing more came for `settle` seconds."""
    c = h.consumer(bootstrap, **{"isolation.level": isolation})
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        quiet_since = None
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                if len(out) >= expected:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since >= settle:
                        return out
                continue
            quiet_since = None
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(m.error())
            out.append(m.value())
        raise AssertionError(f"{isolation}: got {len(out)} of {expected} records: {out[:10]}")
    finally:
        c.close()


@pytest.mark.skiff(args=TXN_ARGS)
def test_read_committed_sees_committed_transactions_only(broker):
    topic = h.unique_topic("txn")
    h.create_topic(broker.bootstrap, topic, 3)
    p = txn_producer(broker.bootstrap, h.unique_topic("tid"))
    for name, commit in [("a", True), ("b", False), ("c", True)]:
        p.begin_transaction()
        for i in range(30):
            p.produce(topic, key=f"{i}".encode(), value=f"{name}{i}".encode(), partition=i % 3)
        if commit:
            p.commit_transaction(30)
        else:
            # Written first (abort_transaction drops what is still queued in the client).
            assert p.flush(30) == 0
            p.abort_transaction(30)
    committed = read_values(broker.bootstrap, topic, 3, "read_committed", 60)
    assert sorted(committed) == sorted(f"{n}{i}".encode() for n in "ac" for i in range(30))
    everything = read_values(broker.bootstrap, topic, 3, "read_uncommitted", 90)
    assert sorted(everything) == sorted(f"{n}{i}".encode() for n in "abc" for i in range(30))


@pytest.mark.skiff(args=TXN_ARGS)
def test_an_open_transaction_holds_read_committed_back_until_it_ends(broker):
    topic = h.unique_topic("txn-open")
    h.create_topic(broker.bootstrap, topic, 1)
    plain = h.producer(broker.bootstrap)
    tid = h.unique_topic("tid")
    p = txn_producer(broker.bootstrap, tid)
    p.begin_transaction()
    p.produce(topic, value=b"in-txn")
    p.flush(30)
    h.produce_and_wait(plain, topic, [b"after"])
    c = h.consumer(broker.bootstrap, **{"isolation.level": "read_committed"})
    # ListOffsets(latest) for read_committed is the LSO: the open transaction's first offset.
    assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (0, 0)
    uncommitted = h.consumer(broker.bootstrap, **{"isolation.level": "read_uncommitted"})
    assert uncommitted.get_watermark_offsets(
        TopicPartition(topic, 0), timeout=10, cached=False) == (0, 2), "the HW"
    uncommitted.close()
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    assert c.poll(2.0) is None, "nothing is stable yet"
    # The admin API names what holds the partition back.
    status, body = broker.http_get("/v1/transactions")
    assert status == 200
    admin = json.loads(body)
    open_here = [o for o in admin["open_in_partitions"] if o["topic"] == topic]
    assert [(o["partition"], o["first_offset"]) for o in open_here] == [(0, 0)]
    assert any(t["state"] == "Ongoing" and {"topic": topic, "partition": 0} in t["partitions"]
               for t in admin["transactional_ids"])
    check_hanging_transaction_tools(broker, topic, tid)
    p.commit_transaction(30)
    values = []
    deadline = time.monotonic() + 15
    while len(values) < 2 and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            values.append(m.value())
    c.close()
    assert values == [b"in-txn", b"after"]


def check_hanging_transaction_tools(broker, topic: str, tid: str) -> None:
    """kafka-python's KIP-664 tools (ListTransactions, DescribeTransactions,
    DescribeProducers) name the open transaction and the offset it holds the partition at."""
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)
    try:
        listed = [t for ts in admin.list_transactions().values() for t in ts
                  if t.transactional_id == tid]
        assert [t.state.value for t in listed] == ["Ongoing"], listed
        ongoing = admin.list_transactions(state_filters=["Ongoing"], duration_filter_ms=0,
                                          transactional_id_pattern="tid-.*")
        assert tid in [t.transactional_id for ts in ongoing.values() for t in ts], ongoing
        described = admin.describe_transactions([tid])[tid]
        assert described.state.value == "Ongoing"
        assert described.producer_id == listed[0].producer_id
        assert described.topic_partitions == {KafkaTopicPartition(topic, 0)}
        assert described.transaction_start_time_ms > 0
        producers = admin.describe_producers([KafkaTopicPartition(topic, 0)])
        states = producers[KafkaTopicPartition(topic, 0)].active_producers
        held = [s for s in states if s.producer_id == described.producer_id]
        assert [s.current_transaction_start_offset for s in held] == [0], states
        # The plain producer's record after it is no transaction.
        assert all(s.current_transaction_start_offset == -1 for s in states
                   if s.producer_id != described.producer_id), states
    finally:
        admin.close()


@pytest.mark.skiff(args=TXN_ARGS)
def test_consume_transform_produce_is_exactly_once(broker):
    source = h.unique_topic("ctp-in")
    sink = h.unique_topic("ctp-out")
    h.create_topic(broker.bootstrap, source, 2)
    h.create_topic(broker.bootstrap, sink, 2)
    n = 200
    # Half to each partition, named: a keyless producer's sticky partitioner may put all of
    # them in one, and then the other partition has no position to commit.
    src = h.producer(broker.bootstrap)
    for part in (0, 1):
        h.produce_and_wait(src, source, [f"v{i}".encode() for i in range(part, n, 2)],
                           partition=part)
    group = h.unique_topic("ctp-group")
    c = h.consumer(broker.bootstrap, **{"group.id": group, "isolation.level": "read_committed",
                                        "enable.auto.commit": False})
    c.subscribe([source])
    p = txn_producer(broker.bootstrap, h.unique_topic("ctp-tid"))
    seen = 0
    deadline = time.monotonic() + 60
    p.begin_transaction()
    in_txn = 0
    while seen < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        p.produce(sink, value=m.value().upper(), partition=m.partition())
        seen += 1
        in_txn += 1
        if in_txn == 25 or seen == n:
            p.send_offsets_to_transaction(c.position(c.assignment()),
                                          c.consumer_group_metadata(), 30)
            p.commit_transaction(30)
            p.begin_transaction()
            in_txn = 0
    p.abort_transaction(30)
    assert seen == n
    # The group's committed offsets are the transaction's: everything consumed.
    committed = c.committed([TopicPartition(source, 0), TopicPartition(source, 1)], timeout=10)
    c.close()
    highs = [h.watermarks(broker.bootstrap, source, part)[1] for part in (0, 1)]
    assert highs == [n // 2, n // 2]
    assert [tp.offset for tp in committed] == highs
    out = read_values(broker.bootstrap, sink, 2, "read_committed", n)
    assert sorted(out) == sorted(f"V{i}".encode() for i in range(n))


@pytest.mark.skiff(args=TXN_ARGS)
def test_offsets_sent_in_a_transaction_count_only_once_it_commits(broker):
    """Offsets sent in a transaction are pending until it ends: the group keeps answering its
    last committed offset, a read_committed consumer (OffsetFetch with require_stable) is told
    the offset is unstable; an abort drops them, a commit makes them the group's."""
    source = h.unique_topic("txo-in")
    h.create_topic(broker.bootstrap, source, 1)
    h.produce_and_wait(h.producer(broker.bootstrap), source, [b"v%d" % i for i in range(10)],
                       partition=0)
    group = h.unique_topic("txo-group")
    plain = h.consumer(broker.bootstrap, **{"group.id": group, "enable.auto.commit": False,
                                            "isolation.level": "read_uncommitted"})
    stable = h.consumer(broker.bootstrap, **{"group.id": group, "enable.auto.commit": False,
                                             "isolation.level": "read_committed"})
    tp = TopicPartition(source, 0)

    def committed(c, timeout: float = 10) -> int:
        return c.committed([tp], timeout=timeout)[0].offset

    try:
        plain.commit(offsets=[TopicPartition(source, 0, 3)], asynchronous=False)
        assert committed(plain) == 3 and committed(stable) == 3
        p = txn_producer(broker.bootstrap, h.unique_topic("tid"))
        meta = plain.consumer_group_metadata()

        p.begin_transaction()
        p.send_offsets_to_transaction([TopicPartition(source, 0, 7)], meta, 30)
        assert committed(plain) == 3
        with pytest.raises(KafkaException) as unstable:
            committed(stable, timeout=3)
        assert unstable.value.args[0].code() in (KafkaError.UNSTABLE_OFFSET_COMMIT,
                                                 KafkaError._TIMED_OUT), unstable.value
        p.abort_transaction(30)
        assert committed(plain) == 3 and committed(stable) == 3

        p.begin_transaction()
        p.send_offsets_to_transaction([TopicPartition(source, 0, 9)], meta, 30)
        p.commit_transaction(30)
        assert committed(stable) == 9 and committed(plain) == 9
    finally:
        plain.close()
        stable.close()


@pytest.mark.skiff(args=TXN_ARGS)
def test_a_new_instance_fences_the_zombie(broker):
    topic = h.unique_topic("txn-zombie")
    h.create_topic(broker.bootstrap, topic, 1)
    txn_id = h.unique_topic("tid")
    zombie = txn_producer(broker.bootstrap, txn_id)
    zombie.begin_transaction()
    zombie.produce(topic, value=b"zombie")
    zombie.flush(30)
    # The new instance aborts the zombie's open transaction and bumps the epoch.
    fresh = txn_producer(broker.bootstrap, txn_id)
    fresh.begin_transaction()
    fresh.produce(topic, value=b"fresh")
    fresh.commit_transaction(30)
    with pytest.raises(KafkaException) as failure:
        zombie.commit_transaction(10)
    assert failure.value.args[0].fatal() or not failure.value.args[0].retriable()
    assert read_values(broker.bootstrap, topic, 1, "read_committed", 1) == [b"fresh"]


@pytest.mark.skiff(args=TXN_ARGS)
def test_an_abandoned_transaction_is_aborted_after_its_timeout(broker):
    topic = h.unique_topic("txn-timeout")
    h.create_topic(broker.bootstrap, topic, 1)
    p = txn_producer(broker.bootstrap, h.unique_topic("tid"),
                     **{"transaction.timeout.ms": 2000, "message.timeout.ms": 2000})
    p.begin_transaction()
    p.produce(topic, value=b"abandoned")
    p.flush(30)
    h.produce_and_wait(h.producer(broker.bootstrap), topic, [b"plain"])
    # The broker aborts it: read_committed consumers move on without its record.
    assert read_values(broker.bootstrap, topic, 1, "read_committed", 1, timeout=30) == [b"plain"]
    with pytest.raises(KafkaException):
        p.commit_transaction(10)


@pytest.mark.skiff(args=TXN_ARGS)
def test_a_producer_recovers_from_a_sequence_gap_by_bumping_its_epoch(broker):
    """KIP-360: a batch the broker refused leaves a gap in the producer's sequence numbers;
    librdkafka aborts, bumps its epoch with InitProducerId (its current id and epoch), and
    goes on without restarting. Only the last transaction's records are visible."""
    table, out = h.unique_topic("txn-table"), h.unique_topic("txn-out")
    h.create_topic(broker.bootstrap, table, 1, config={"cleanup.policy": "compact"})
    h.create_topic(broker.bootstrap, out, 1)
    tid = h.unique_topic("tid")
    p = txn_producer(broker.bootstrap, tid)
    p.begin_transaction()
    p.produce(out, value=b"lost", partition=0)
    p.produce(table, key=b"k", value=b"first", partition=0)
    p.flush(30)
    p.produce(table, value=b"keyless", partition=0)  # refused: INVALID_RECORD, sequence 1 lost
    with pytest.raises(KafkaException) as failure:
        p.commit_transaction(30)
    assert failure.value.args[0].txn_requires_abort(), failure.value
    p.abort_transaction(30)
    committed_at = None
    for attempt in range(3):
        p.begin_transaction()
        p.produce(out, value=b"kept%d" % attempt, partition=0)
        p.produce(table, key=b"k", value=b"second%d" % attempt, partition=0)
        try:
            p.commit_transaction(30)
            committed_at = attempt
            break
        except KafkaException as e:
            assert e.args[0].txn_requires_abort() and not e.args[0].fatal(), e
            p.abort_transaction(30)
    assert committed_at is not None, "never recovered"
    assert read_values(broker.bootstrap, out, 1, "read_committed", 1) == [b"kept%d" % committed_at]
    status, body = broker.http_get("/v1/transactions")
    [record] = [t for t in json.loads(body)["transactional_ids"] if t["transactional_id"] == tid]
    assert record["producer_epoch"] >= 1, record


def test_an_idempotent_producer_recovers_from_a_sequence_gap_by_bumping_its_epoch(broker):
    """KIP-360 without transactions: a refused batch leaves a gap in an idempotent producer's
    sequence numbers; librdkafka bumps its epoch (InitProducerId with its current id and epoch)
    and the next records are stored in order, with no fatal error and no restart."""
    topic = h.unique_topic("idem-gap")
    h.create_topic(broker.bootstrap, topic, 1, config={"cleanup.policy": "compact"})
    p = h.producer(broker.bootstrap, **{"enable.idempotence": True, "linger.ms": 5})
    results = []

    def delivered(err, msg):
        results.append((msg.value(), err.code() if err else None, msg.offset()))

    p.produce(topic, key=b"k", value=b"first", partition=0, on_delivery=delivered)
    p.flush(30)
    p.produce(topic, value=b"keyless", partition=0, on_delivery=delivered)  # INVALID_RECORD
    p.flush(30)
    for i in range(3):
        p.produce(topic, key=b"k", value=b"next%d" % i, partition=0, on_delivery=delivered)
        p.flush(30)
    assert results == [(b"first", None, 0), (b"keyless", KafkaError.INVALID_RECORD, None),
                       (b"next0", None, 1), (b"next1", None, 2), (b"next2", None, 3)], results
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        [state] = admin.describe_producers([KafkaTopicPartition(topic, 0)]).values()
        [producer] = state.active_producers
        assert (producer.producer_epoch, producer.last_sequence) == (1, 2), producer
    finally:
        admin.close()


def test_a_timeout_over_the_maximum_is_refused(start_broker):
    broker = start_broker(args=["--transaction-max-timeout-ms", "5000"])
    p = h.producer(broker.bootstrap, **{"transactional.id": h.unique_topic("tid"),
                                        "transaction.timeout.ms": 60000})
    with pytest.raises(KafkaException) as failure:
        p.init_transactions(10)
    assert failure.value.args[0].code() == KafkaError.INVALID_TRANSACTION_TIMEOUT
