"""Window-limited producers: an idempotent producer (five requests in flight at most) does not
wait out the flush linger once its window is full and enough is buffered; a plain producer,
whose window is unknown, always does. Counted with the broker's `flushes_without_linger`."""

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
    p = h.producer(broker.bootstrap, **{
        "enable.idempotence": True, "linger.ms": 0, "batch.size": 16384,
        "max.in.flight.requests.per.connection": 1})
    h.produce_and_wait(p, topic, [b"v" * 4000] * 20, partition=0)
    assert broker.stats()["flushes_without_linger"] - before >= 3
    recs = h.read_partitions(broker.bootstrap, topic, [0])
    assert [r.offset for r in recs] == list(range(20)), "every record once, in order"
