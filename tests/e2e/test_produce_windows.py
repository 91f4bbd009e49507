"""Window-limited producers: an idempotent producer (five requests in flight at most) does not
wait out the flush linger once its window is full and enough is buffered; a plain producer,
whose window is unknown, always does. Counted with the broker's `flushes_without_linger`."""

import time

import pytest

import helpers as h

# A linger long enough that only an early flush explains a quick acknowledgement, and a
# threshold a few requests reach.
LINGER_MS = 3000
ARGS = ["--flush-window-min-bytes", "16384"]
# 4 records a batch, one batch a request (one partition): 15 requests, 5 in flight at once.
RECORDS = 60


def produce(broker, topic: str, idempotent: bool) -> None:
    p = h.producer(broker.bootstrap, **{
        "enable.idempotence": idempotent, "linger.ms": 0, "batch.size": 16384,
        "max.in.flight.requests.per.connection": 5})
    value = b"v" * 4000
    h.produce_and_wait(p, topic, [value] * RECORDS, partition=0)


def one_in_flight(broker):
    """An idempotent producer of 16 KB batches (the Java client's batch.size), one request in
    flight at a time."""
    return h.producer(broker.bootstrap, **{
        "enable.idempotence": True, "linger.ms": 0, "batch.size": 16384,
        "max.in.flight.requests.per.connection": 1})


@pytest.mark.skiff(flush_linger_ms=LINGER_MS, args=ARGS)
def test_an_idempotent_producer_with_a_full_window_skips_the_linger(broker):
    topic = h.unique_topic("window")
    h.create_topic(broker.bootstrap, topic, 1)
    before = broker.stats()["flushes_without_linger"]
    produce(broker, topic, idempotent=True)
    assert broker.stats()["flushes_without_linger"] > before
    recs = h.read_partitions(broker.bootstrap, topic, [0])
    assert [r.offset for r in recs] == list(range(RECORDS)), "every record once, in order"


@pytest.mark.skiff(flush_linger_ms=LINGER_MS, args=ARGS)
def test_a_plain_producer_waits_for_the_linger(broker):
    topic = h.unique_topic("plain")
    h.create_topic(broker.bootstrap, topic, 1)
    before = broker.stats()["flushes_without_linger"]
    produce(broker, topic, idempotent=False)
    assert broker.stats()["flushes_without_linger"] == before
    assert len(h.read_partitions(broker.bootstrap, topic, [0])) == RECORDS


@pytest.mark.skiff(flush_linger_ms=LINGER_MS, args=["--flush-window-min-bytes", "40000"])
def test_a_window_of_one_request_needs_a_fifth_of_the_bytes(broker):
    # One request in flight at a time (~16 KB each): under the 40,000 bytes five would need,
    # over the fifth of it that one request's window needs.
    topic = h.unique_topic("window-one")
    h.create_topic(broker.bootstrap, topic, 1)
    before = broker.stats()["flushes_without_linger"]
    h.produce_and_wait(one_in_flight(broker), topic, [b"v" * 4000] * 20, partition=0)
    assert broker.stats()["flushes_without_linger"] - before >= 3
    recs = h.read_partitions(broker.bootstrap, topic, [0])
    assert [r.offset for r in recs] == list(range(20)), "every record once, in order"


# The default threshold (2 MiB): one 16 KB request in flight never reaches a fifth of it.
@pytest.mark.skiff(flush_linger_ms=500)
def test_a_saturated_producer_of_small_batches_skips_the_linger(broker):
    # The Java client's default batch.size: 4 records a request, one request in flight, 15
    # requests. Each flush holds one request whenever it happens; after four full ones in a
    # row the producer is saturated and the rest flush at once.
    topic = h.unique_topic("small-batches")
    h.create_topic(broker.bootstrap, topic, 1)
    before = broker.stats()["flushes_without_linger"]
    h.produce_and_wait(one_in_flight(broker), topic, [b"v" * 4000] * RECORDS, partition=0)
    assert broker.stats()["flushes_without_linger"] - before >= 8
    recs = h.read_partitions(broker.bootstrap, topic, [0])
    assert [r.offset for r in recs] == list(range(RECORDS)), "every record once, in order"


@pytest.mark.skiff(flush_linger_ms=500)
def test_a_paced_idempotent_producer_keeps_the_linger(broker):
    # One small record every 25 ms, one request in flight: while the linger holds its
    # request, ~20 records gather in the client, and its next request is as full as its
    # last. Flushed early, the next request holds one record: not saturated, so the linger
    # holds again for four rounds. Over ~10 rounds, at most a few early flushes.
    topic = h.unique_topic("paced")
    h.create_topic(broker.bootstrap, topic, 1)
    before = broker.stats()
    p = h.producer(broker.bootstrap, **{
        "enable.idempotence": True, "linger.ms": 0,
        "max.in.flight.requests.per.connection": 1})
    count = 200
    for i in range(count):
        p.produce(topic, value=b"p" * 200, partition=0)
        p.poll(0)
        time.sleep(0.025)
    assert p.flush(30) == 0
    after = broker.stats()
    flushes = after["flushes"] - before["flushes"]
    early = after["flushes_without_linger"] - before["flushes_without_linger"]
    assert flushes >= 8, f"{flushes} flushes: the linger held the paced producer"
    assert early <= 3, f"{early} early flushes of {flushes}"
    recs = h.read_partitions(broker.bootstrap, topic, [0])
    assert [r.offset for r in recs] == list(range(count)), "every record once, in order"
