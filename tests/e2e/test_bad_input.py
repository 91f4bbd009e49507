"""Malformed, hostile or unsupported input on the Kafka port.

Each case checks the specific reaction Kafka clients rely on, then that the broker process is
still alive and serves a fresh client (a Metadata call through confluent-kafka and a raw
ApiVersions round trip)."""

import random
import socket

import pytest

import helpers as h
import kafka_wire as w
from kafka_wire import Conn

SOCKET_MAX = 65536
pytestmark = pytest.mark.skiff(args=["--socket-request-max-bytes", str(SOCKET_MAX)])


def assert_alive(broker):
    h.assert_broker_serves(broker)
    with Conn.to(broker) as c:
        keys = w.api_versions(c)
    assert w.API_PRODUCE in keys and w.API_FETCH in keys, keys


# ---- framing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [SOCKET_MAX + 1, 2**31 - 1, -1, -(2**31)],
                         ids=["limit+1", "int32-max", "minus-1", "int32-min"])
def test_frame_length_over_limit_closes_connection(broker, length):
    with Conn.to(broker) as c:
        c.send_raw(w.i32(length) + b"\x00" * 64)
        assert c.closed_by_peer(timeout=5), f"connection not closed after length prefix {length}"
    assert_alive(broker)


def test_frame_just_under_limit_is_served(broker):
    h.create_topic(broker.bootstrap, "under-limit", 1)
    batch = w.record_batch([b"u" * (SOCKET_MAX - 1000)])
    body = w.produce_v3_body("under-limit", {0: batch})
    assert len(w.request_header_v1(0, 3, 1)) + len(body) <= SOCKET_MAX
    with Conn.to(broker) as c:
        assert w.produce(c, "under-limit", 0, batch) == (w.ERR_NONE, 0)


def test_truncated_frame_then_close(broker):
    with Conn.to(broker) as c:
        c.send_raw(w.i32(100) + b"\x00\x12\x00\x00\x00\x00\x00\x01\x00\x00")  # 10 of 100 bytes
    assert_alive(broker)
    # Same, but the client stays connected and idle: other connections are unaffected.
    with Conn.to(broker) as idle:
        idle.send_raw(w.i32(100) + b"\x00" * 10)
        assert_alive(broker)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_garbage_bytes(broker, seed):
    rng = random.Random(seed)
    with Conn.to(broker) as c:
        try:
            c.send_raw(rng.randbytes(4096))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the broker may close as soon as it sees a bad prefix
        c.closed_by_peer(timeout=2)   # either outcome is fine; it must not hurt the broker
    # A plausible length prefix followed by garbage.
    with Conn.to(broker) as c:
        c.send_raw(w.i32(64) + rng.randbytes(64))
        c.closed_by_peer(timeout=2)
    assert_alive(broker)


def test_valid_header_with_garbage_body(broker):
    rng = random.Random(7)
    for api_key, version in [(w.API_PRODUCE, 3), (w.API_FETCH, 4), (w.API_METADATA, 1),
                             (w.API_CREATE_TOPICS, 2)]:
        with Conn.to(broker) as c:
            c.send_raw(w.frame(w.request_header_v1(api_key, version, 1) + rng.randbytes(200)))
            c.closed_by_peer(timeout=2)
    assert_alive(broker)


def test_unknown_api_key(broker):
    with Conn.to(broker) as c:
        c.send_raw(w.frame(w.request_header_v1(9999, 0, 42)))
        payload = None
        try:
            payload = c.recv_frame()
        except socket.timeout:
            pytest.fail("broker neither answered nor closed the connection for api key 9999")
        if payload is not None:   # an error response is acceptable if it is for our request
            assert w.Reader(payload).i32() == 42
    assert_alive(broker)


# ---- ApiVersions ------------------------------------------------------------------------------

REQUIRED_APIS = {w.API_PRODUCE, w.API_FETCH, w.API_LIST_OFFSETS, w.API_METADATA, w.API_VERSIONS,
                 w.API_CREATE_TOPICS, w.API_DELETE_TOPICS, w.API_DESCRIBE_CONFIGS,
                 w.API_CREATE_PARTITIONS}


def test_api_versions_v0_and_v3(broker):
    with Conn.to(broker) as c:
        corr, payload = c.request(w.API_VERSIONS, 0, b"")
        rcorr, err, keys0 = w.parse_api_versions_v0(payload)
        assert (rcorr, err) == (corr, 0)
        corr, payload = c.request(w.API_VERSIONS, 3, w.api_versions_v3_body(),
                                  flexible_header=True)
        rcorr, err, keys3, _throttle = w.parse_api_versions_v3(payload)
        assert (rcorr, err) == (corr, 0)
    assert keys0 == keys3
    assert REQUIRED_APIS <= set(keys0), f"missing APIs: {REQUIRED_APIS - set(keys0)}"
    for k, (lo, hi) in keys0.items():
        assert 0 <= lo <= hi, f"api {k}: bad range {lo}..{hi}"
    assert keys0[w.API_VERSIONS][1] >= 3
    # The raw tests below use Produce v3 and Fetch v4.
    assert keys0[w.API_PRODUCE][0] <= 3 <= keys0[w.API_PRODUCE][1]
    assert keys0[w.API_FETCH][0] <= 4 <= keys0[w.API_FETCH][1]


def test_api_versions_unsupported_version(broker):
    """Kafka answers an ApiVersions request of a version it does not know with an ApiVersions v0
    response carrying UNSUPPORTED_VERSION (35) and its own ApiVersions range, and keeps the
    connection open: clients (librdkafka) then retry on the same connection with a lower
    version."""
    with Conn.to(broker) as c:
        # A future client would send a flexible (v2) header and a v3-style body.
        corr, payload = c.request(w.API_VERSIONS, 99, w.api_versions_v3_body(),
                                  flexible_header=True)
        rcorr, err, keys = w.parse_api_versions_v0(payload)
        assert rcorr == corr
        assert err == w.ERR_UNSUPPORTED_VERSION
        assert w.API_VERSIONS in keys, "the error response should advertise ApiVersions' range"
        lo, hi = keys[w.API_VERSIONS]
        assert lo <= 3 <= hi, f"ApiVersions range {lo}..{hi}"
        # Same connection, supported version: works.
        corr, payload = c.request(w.API_VERSIONS, hi, w.api_versions_v3_body(),
                                  flexible_header=True)
        rcorr, err, keys, _ = w.parse_api_versions_v3(payload)
        assert (rcorr, err) == (corr, 0)
        assert REQUIRED_APIS <= set(keys)
    assert_alive(broker)


# ---- Produce with bad record batches ----------------------------------------------------------

@pytest.fixture
def topic_with_three(broker):
    """A 1-partition topic holding 3 records (offsets 0..2)."""
    h.create_topic(broker.bootstrap, "bad-batches", 1)
    with Conn.to(broker) as c:
        assert w.produce(c, "bad-batches", 0, w.record_batch([b"a", b"b", b"c"])) == (0, 0)
    return "bad-batches"


def assert_log_unchanged(broker, topic, expected_values):
    n = len(expected_values)
    assert h.watermarks(broker.bootstrap, topic, 0) == (0, n), "rejected batch changed the log"
    with Conn.to(broker) as c:  # the next valid batch gets the next offset: nothing was stored
        assert w.produce(c, topic, 0, w.record_batch([b"next"])) == (0, n)
    recs = h.read_partitions(broker.bootstrap, topic, [0])
    assert [r.value for r in recs] == expected_values + [b"next"]


def corrupt_payload(batch: bytes) -> bytes:
    b = bytearray(batch)
    b[-1] ^= 0xFF            # record data changed, CRC left as it was
    return bytes(b)


def corrupt_crc(batch: bytes) -> bytes:
    b = bytearray(batch)
    b[w.BATCH_CRC_OFFSET] ^= 0x01
    return bytes(b)


@pytest.mark.parametrize("corrupt", [corrupt_payload, corrupt_crc], ids=["payload", "crc-field"])
def test_produce_corrupted_crc(broker, topic_with_three, corrupt):
    topic = topic_with_three
    bad = corrupt(w.record_batch([b"x" * 50, b"y" * 50]))
    with Conn.to(broker) as c:
        err, _ = w.produce(c, topic, 0, bad)
        assert err == w.ERR_CORRUPT_MESSAGE
        # acks=1 too
        err, _ = w.produce(c, topic, 0, bad, acks=1)
        assert err == w.ERR_CORRUPT_MESSAGE
    assert_log_unchanged(broker, topic, [b"a", b"b", b"c"])
    assert_alive(broker)


def test_produce_unknown_partition(broker, topic_with_three):
    with Conn.to(broker) as c:
        err, _ = w.produce(c, topic_with_three, 7, w.record_batch([b"lost"]))
        assert err == w.ERR_UNKNOWN_TOPIC_OR_PARTITION
        err, _ = w.produce(c, topic_with_three, -1, w.record_batch([b"lost"]))
        assert err == w.ERR_UNKNOWN_TOPIC_OR_PARTITION
    assert_log_unchanged(broker, topic_with_three, [b"a", b"b", b"c"])


def _unknown_magic():
    b = bytearray(w.record_batch([b"m"]))
    b[w.BATCH_MAGIC_OFFSET] = 7
    return bytes(b)


def _truncated():
    batch = w.record_batch([b"t" * 100, b"u" * 100])
    return batch[: len(batch) // 2]          # batch length field promises more than is there


def _garbage():
    b = bytearray(random.Random(99).randbytes(80))
    b[w.BATCH_MAGIC_OFFSET] = 2              # looks like magic 2, is not a valid batch
    return bytes(b)


BAD_BATCHES = {
    "magic-1": lambda: w.legacy_batch_magic1([b"old format"]),
    "unknown-magic": _unknown_magic,
    "truncated": _truncated,
    "garbage": _garbage,
    "too-short": lambda: b"\x00\x01\x02",
}


@pytest.mark.parametrize("make", BAD_BATCHES.values(), ids=BAD_BATCHES.keys())
def test_produce_invalid_batch(broker, topic_with_three, make):
    with Conn.to(broker) as c:
        err, _ = w.produce(c, topic_with_three, 0, make())
        assert err in (w.ERR_CORRUPT_MESSAGE, w.ERR_INVALID_RECORD), f"error code {err}"
    assert_log_unchanged(broker, topic_with_three, [b"a", b"b", b"c"])
    assert_alive(broker)


@pytest.mark.skiff(args=["--message-max-bytes", "10000"])
def test_produce_batch_over_message_max_bytes(broker):
    h.create_topic(broker.bootstrap, "big", 1)
    with Conn.to(broker) as c:
        err, _ = w.produce(c, "big", 0, w.record_batch([b"z" * 20000]))
        assert err == w.ERR_MESSAGE_TOO_LARGE
        assert w.produce(c, "big", 0, w.record_batch([b"z" * 5000])) == (0, 0)
    assert h.watermarks(broker.bootstrap, "big", 0) == (0, 1)
