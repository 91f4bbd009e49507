"""Protocol behaviours of valid requests that clients hide from their users, checked on a raw
connection: Fetch long polling (waits for max_wait_ms, wakes early on new data), acks=0 gets no
response, and pipelined requests are answered in order."""

import threading
import time

import helpers as h
import kafka_wire as w
from kafka_wire import Conn


def fetch(c, topic, partition, offset, max_wait_ms):
    corr, payload = c.request(w.API_FETCH, 4, w.fetch_v4_body(topic, partition, offset, max_wait_ms))
    rcorr, res = w.parse_fetch_v4(payload)
    assert rcorr == corr
    return res[(topic, partition)]


def test_fetch_returns_existing_data_immediately(broker):
    h.create_topic(broker.bootstrap, "fetch-now", 1)
    with Conn.to(broker) as c:
        assert w.produce(c, "fetch-now", 0, w.record_batch([b"a", b"b"], keys=[b"k", None])) == (0, 0)
        t0 = time.monotonic()
        err, hw, records = fetch(c, "fetch-now", 0, 0, max_wait_ms=5000)
        took = time.monotonic() - t0
    assert (err, hw) == (0, 2)
    assert w.decode_records(records) == [(0, b"k", b"a"), (1, None, b"b")]
    assert took < 2.0, f"fetch with data available took {took:.2f}s"


def test_fetch_at_end_waits_max_wait(broker):
    h.create_topic(broker.bootstrap, "fetch-wait", 1)
    with Conn.to(broker) as c:
        assert w.produce(c, "fetch-wait", 0, w.record_batch([b"only"])) == (0, 0)
        t0 = time.monotonic()
        err, hw, records = fetch(c, "fetch-wait", 0, 1, max_wait_ms=1000)
        took = time.monotonic() - t0
    assert (err, hw) == (0, 1)
    assert w.decode_records(records) == []
    assert 0.8 <= took < 3.0, f"empty fetch with max_wait_ms=1000 returned after {took:.2f}s"


def test_fetch_long_poll_wakes_on_produce(broker):
    h.create_topic(broker.bootstrap, "fetch-wake", 1)
    result = {}

    def waiter():
        try:
            with Conn.to(broker, timeout=20) as c:
                result["fetch"] = fetch(c, "fetch-wake", 0, 0, max_wait_ms=10000)
                result["done"] = time.monotonic()
        except Exception as e:  # reported by the main thread
            result["error"] = repr(e)

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    time.sleep(1.0)
    assert "error" not in result, result["error"]
    assert "fetch" not in result, "fetch on an empty partition returned before max_wait_ms"
    with Conn.to(broker) as c:
        produced_at = time.monotonic()
        assert w.produce(c, "fetch-wake", 0, w.record_batch([b"wake"]), acks=1) == (0, 0)
    t.join(15)
    assert "error" not in result, result["error"]
    assert "fetch" in result, "long-poll fetch never returned"
    err, hw, records = result["fetch"]
    assert (err, hw) == (0, 1)
    assert w.decode_records(records) == [(0, None, b"wake")]
    assert result["done"] - produced_at < 3.0, (
        f"fetch woke {result['done'] - produced_at:.2f}s after the produce (max_wait was 10 s)")


def test_acks_zero_gets_no_response(broker):
    h.create_topic(broker.bootstrap, "acks0", 1)
    with Conn.to(broker) as c:
        for i in range(3):
            corr = c.next_corr()
            c.send_raw(w.frame(w.request_header_v1(w.API_PRODUCE, 3, corr) + w.produce_v3_body(
                "acks0", {0: w.record_batch([f"fire-{i}".encode()])}, acks=0)))
        # The next frame on the connection must be the answer to this request, not to a produce.
        corr, payload = c.request(w.API_VERSIONS, 0, b"")
        rcorr, err, _ = w.parse_api_versions_v0(payload)
        assert (rcorr, err) == (corr, 0)
    deadline = time.monotonic() + 10
    while h.watermarks(broker.bootstrap, "acks0", 0)[1] < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    recs = h.read_partitions(broker.bootstrap, "acks0", [0])
    assert [r.value for r in recs] == [b"fire-0", b"fire-1", b"fire-2"]


def test_pipelined_requests_answered_in_order(broker):
    """Kafka clients pipeline requests on one connection; responses must come back in request
    order (they are matched by correlation id, but librdkafka and the Java client insist on
    order)."""
    h.create_topic(broker.bootstrap, "pipeline", 2)
    with Conn.to(broker) as c:
        sent = []
        for i in range(20):
            corr = c.next_corr()
            if i % 3 == 2:
                c.send_raw(w.frame(w.request_header_v1(w.API_VERSIONS, 0, corr)))
                sent.append((corr, None))
            else:
                part = i % 2
                c.send_raw(w.frame(w.request_header_v1(w.API_PRODUCE, 3, corr) + w.produce_v3_body(
                    "pipeline", {part: w.record_batch([f"p{i}".encode()])}, acks=-1)))
                sent.append((corr, part))
        next_offset = {0: 0, 1: 0}
        for corr, part in sent:
            payload = c.recv_frame()
            assert payload is not None, "connection closed mid-pipeline"
            if part is None:
                rcorr, err, _ = w.parse_api_versions_v0(payload)
                assert (rcorr, err) == (corr, 0)
            else:
                rcorr, res = w.parse_produce_v3(payload)
                assert rcorr == corr, f"response {rcorr} arrived when {corr} was due"
                assert res[("pipeline", part)] == (0, next_offset[part])
                next_offset[part] += 1


def test_a_ready_response_is_sent_while_a_later_request_still_waits(broker):
    """A pipelining client always has a next request queued behind the one being answered: a
    response that is ready must reach it then, not when the queue behind it happens to drain
    (a produce acknowledgement once waited in the broker's write buffer for the long poll after
    it)."""
    h.create_topic(broker.bootstrap, "pipeline-ready", 1)
    h.create_topic(broker.bootstrap, "pipeline-idle", 1)
    with Conn.to(broker, timeout=60) as c:
        produce_corr, fetch_corr = c.next_corr(), c.next_corr()
        c.send_raw(
            w.frame(w.request_header_v1(w.API_PRODUCE, 3, produce_corr) + w.produce_v3_body(
                "pipeline-ready", {0: w.record_batch([b"first"])}, acks=-1))
            + w.frame(w.request_header_v1(w.API_FETCH, 4, fetch_corr)
                      + w.fetch_v4_body("pipeline-idle", 0, 0, 40_000)))
        # The fetch waits up to 40 s for a record on an empty topic; the produce's answer is
        # due after one flush.
        c.sock.settimeout(20)
        payload = c.recv_frame()
        assert payload is not None, "connection closed"
        rcorr, res = w.parse_produce_v3(payload)
        assert (rcorr, res[("pipeline-ready", 0)]) == (produce_corr, (0, 0))
        # A record on the idle topic ends the long poll: the fetch answers with it.
        with Conn.to(broker) as other:
            assert w.produce(other, "pipeline-idle", 0, w.record_batch([b"second"])) == (0, 0)
        c.sock.settimeout(30)
        rcorr, res = w.parse_fetch_v4(c.recv_frame())
        assert rcorr == fetch_corr
        err, hw, records = res[("pipeline-idle", 0)]
        assert (err, hw) == (0, 1)
        assert w.decode_records(records) == [(0, None, b"second")]
