"""Hand-encoded Kafka wire protocol for raw-socket tests.

Only the few non-flexible request versions the tests need, written out field by field so that
a test failure can be read against the Kafka protocol guide:

  request  = int32 length, header v1 (int16 api_key, int16 api_version, int32 correlation_id,
             int16-length client_id), body
  response = int32 length, int32 correlation_id (header v0), body

Record batches (magic 2) are built with kafka-python's DefaultRecordBatchBuilder.
"""

from __future__ import annotations

import socket
import struct
import time

from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.legacy_records import LegacyRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

API_PRODUCE = 0
API_FETCH = 1
API_LIST_OFFSETS = 2
API_METADATA = 3
API_VERSIONS = 18
API_CREATE_TOPICS = 19
API_DELETE_TOPICS = 20
API_DESCRIBE_CONFIGS = 32
API_CREATE_PARTITIONS = 37

ERR_NONE = 0
ERR_CORRUPT_MESSAGE = 2
ERR_UNKNOWN_TOPIC_OR_PARTITION = 3
ERR_NOT_LEADER_OR_FOLLOWER = 6
ERR_MESSAGE_TOO_LARGE = 10
ERR_UNSUPPORTED_VERSION = 35
ERR_INVALID_RECORD = 87

# Offsets inside a magic-2 record batch header.
BATCH_CRC_OFFSET = 17          # uint32 CRC-32C over everything from `attributes` to the end
BATCH_MAGIC_OFFSET = 16


# ---- primitive encoders -----------------------------------------------------------------------

def i8(v: int) -> bytes:
    return struct.pack(">b", v)


def i16(v: int) -> bytes:
    return struct.pack(">h", v)


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def i64(v: int) -> bytes:
    return struct.pack(">q", v)


def string(s: str | None) -> bytes:
    if s is None:
        return i16(-1)
    b = s.encode()
    return i16(len(b)) + b


def nbytes(b: bytes | None) -> bytes:
    if b is None:
        return i32(-1)
    return i32(len(b)) + b


def array(items: list[bytes]) -> bytes:
    return i32(len(items)) + b"".join(items)


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def compact_string(s: str) -> bytes:
    b = s.encode()
    return uvarint(len(b) + 1) + b


def request_header_v1(api_key: int, api_version: int, correlation_id: int,
                      client_id: str = "skiff-e2e-raw") -> bytes:
    return i16(api_key) + i16(api_version) + i32(correlation_id) + string(client_id)


def request_header_v2(api_key: int, api_version: int, correlation_id: int,
                      client_id: str = "skiff-e2e-raw") -> bytes:
    # Flexible header: same as v1 plus an (empty) tagged-field section.
    return request_header_v1(api_key, api_version, correlation_id, client_id) + uvarint(0)


def frame(payload: bytes) -> bytes:
    return i32(len(payload)) + payload


# ---- decoding ---------------------------------------------------------------------------------

class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"truncated response: need {n} bytes at {self.pos}, "
                             f"have {len(self.data) - self.pos}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def i8(self) -> int:
        return struct.unpack(">b", self._take(1))[0]

    def i16(self) -> int:
        return struct.unpack(">h", self._take(2))[0]

    def i32(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def i64(self) -> int:
        return struct.unpack(">q", self._take(8))[0]

    def string(self) -> str | None:
        n = self.i16()
        return None if n < 0 else self._take(n).decode()

    def nbytes(self) -> bytes | None:
        n = self.i32()
        return None if n < 0 else self._take(n)

    def uvarint(self) -> int:
        shift = 0
        result = 0
        while True:
            b = self._take(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()               # tag
            self._take(self.uvarint())   # size + data

    def remaining(self) -> int:
        return len(self.data) - self.pos


# ---- connection -------------------------------------------------------------------------------

class Conn:
    """A blocking raw connection. recv_frame returns None when the peer closed the connection."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self._corr = 0

    @classmethod
    def to(cls, broker, timeout: float = 10.0) -> "Conn":
        return cls("127.0.0.1", broker.kafka_port, timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def next_corr(self) -> int:
        self._corr += 1
        return self._corr

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_exact(self, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except (ConnectionResetError, BrokenPipeError):
                return None
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def recv_frame(self) -> bytes | None:
        head = self._recv_exact(4)
        if head is None:
            return None
        (n,) = struct.unpack(">i", head)
        return self._recv_exact(n)

    def request(self, api_key: int, api_version: int, body: bytes,
                flexible_header: bool = False) -> tuple[int, bytes]:
        """Send one request, return (correlation_id, frame payload). Raises if the connection
        closes instead of answering."""
        corr = self.next_corr()
        hdr = (request_header_v2 if flexible_header else request_header_v1)(
            api_key, api_version, corr)
        self.send_raw(frame(hdr + body))
        payload = self.recv_frame()
        if payload is None:
            raise ConnectionError(f"connection closed instead of a response to api {api_key} "
                                  f"v{api_version}")
        return corr, payload

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True if the broker closes the connection within `timeout` (any bytes it sends first
        are read and discarded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True
        return False


# ---- record batches ---------------------------------------------------------------------------

def record_batch(values: list[bytes | None], keys: list[bytes | None] | None = None,
                 timestamp_ms: int | None = None, compression: int = 0) -> bytes:
    """A magic-2 record batch (as a producer sends it: base offset 0, valid CRC)."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=False,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                  batch_size=1 << 30)
    ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
    keys = keys or [None] * len(values)
    for i, (k, v) in enumerate(zip(keys, values)):
        b.append(i, timestamp=ts, key=k, value=v, headers=[])
    return bytes(b.build())


def legacy_batch_magic1(values: list[bytes]) -> bytes:
    """A magic-1 (pre-0.11) message set."""
    b = LegacyRecordBatchBuilder(magic=1, compression_type=0, batch_size=1 << 30)
    ts = int(time.time() * 1000)
    for i, v in enumerate(values):
        b.append(i, timestamp=ts, key=None, value=v)
    return bytes(b.build())


def decode_records(data: bytes | None) -> list[tuple[int, bytes | None, bytes | None]]:
    """[(offset, key, value)] of every record in a Fetch response's records field."""
    out = []
    if not data:
        return out
    mr = MemoryRecords(data)
    while True:
        batch = mr.next_batch()
        if batch is None:
            break
        for rec in batch:
            out.append((rec.offset, rec.key, rec.value))
    return out


# ---- Produce v3 -------------------------------------------------------------------------------

def produce_v3_body(topic: str, partition_batches: dict[int, bytes], acks: int = -1,
                    timeout_ms: int = 10000) -> bytes:
    parts = [i32(p) + nbytes(batch) for p, batch in partition_batches.items()]
    return string(None) + i16(acks) + i32(timeout_ms) + array([string(topic) + array(parts)])


def parse_produce_v3(payload: bytes) -> tuple[int, dict[tuple[str, int], tuple[int, int]]]:
    """-> (correlation_id, {(topic, partition): (error_code, base_offset)})."""
    r = Reader(payload)
    corr = r.i32()
    out = {}
    for _ in range(r.i32()):
        name = r.string()
        for _ in range(r.i32()):
            p = r.i32()
            err = r.i16()
            base = r.i64()
            r.i64()  # log_append_time_ms
            out[(name, p)] = (err, base)
    r.i32()  # throttle_time_ms
    assert r.remaining() == 0, f"{r.remaining()} unexpected trailing bytes in Produce v3 response"
    return corr, out


def produce(conn: Conn, topic: str, partition: int, batch: bytes, acks: int = -1,
            timeout_ms: int = 10000) -> tuple[int, int]:
    """Produce one batch to one partition; returns (error_code, base_offset)."""
    corr, payload = conn.request(API_PRODUCE, 3,
                                 produce_v3_body(topic, {partition: batch}, acks, timeout_ms))
    rcorr, res = parse_produce_v3(payload)
    assert rcorr == corr, f"correlation id {rcorr} != {corr}"
    assert (topic, partition) in res, f"no response for {topic}/{partition}: {res}"
    return res[(topic, partition)]


# ---- Fetch v4 ---------------------------------------------------------------------------------

def fetch_v4_body(topic: str, partition: int, offset: int, max_wait_ms: int, min_bytes: int = 1,
                  max_bytes: int = 1 << 20) -> bytes:
    part = i32(partition) + i64(offset) + i32(max_bytes)
    return (i32(-1) + i32(max_wait_ms) + i32(min_bytes) + i32(max_bytes) + i8(0)
            + array([string(topic) + array([part])]))


def parse_fetch_v4(payload: bytes) -> tuple[int, dict[tuple[str, int], tuple[int, int, bytes]]]:
    """-> (correlation_id, {(topic, partition): (error_code, high_watermark, records)})."""
    corr, parts = parse_fetch(payload, 4)
    return corr, {key: (err, hw, records) for key, (err, hw, _, records) in parts.items()}


def fetch_v10_body(topic: str, partition: int, offset: int, max_wait_ms: int = 0,
                   min_bytes: int = 1, max_bytes: int = 1 << 20, leader_epoch: int = -1,
                   rack: str | None = None) -> bytes:
    """A consumer's Fetch v10 (sessionless), or v11 when `rack` is given (v11 adds rack_id)."""
    part = i32(partition) + i32(leader_epoch) + i64(offset) + i64(-1) + i32(max_bytes)
    body = (i32(-1) + i32(max_wait_ms) + i32(min_bytes) + i32(max_bytes) + i8(0)
            + i32(0) + i32(-1)  # session id, session epoch: no session
            + array([string(topic) + array([part])])
            + array([]))  # forgotten topics
    return body + (string(rack) if rack is not None else b"")


def parse_fetch(payload: bytes, version: int
                ) -> tuple[int, dict[tuple[str, int], tuple[int, int, int, bytes]]]:
    """A Fetch response, v4 to v11 (the non-flexible versions these tests send) -> (correlation_id,
    {(topic, partition): (error_code, high_watermark, preferred_read_replica, records)});
    preferred_read_replica is -1 before v11, which added it."""
    r = Reader(payload)
    corr = r.i32()
    r.i32()  # throttle_time_ms
    if version >= 7:
        assert r.i16() == 0, "fetch-level error"
        r.i32()  # session id
    out = {}
    for _ in range(r.i32()):
        name = r.string()
        for _ in range(r.i32()):
            p = r.i32()
            err = r.i16()
            hw = r.i64()
            r.i64()  # last_stable_offset
            if version >= 5:
                r.i64()  # log_start_offset
            n_aborted = r.i32()
            for _ in range(max(n_aborted, 0)):
                r.i64()
                r.i64()
            preferred = r.i32() if version >= 11 else -1
            records = r.nbytes()
            out[(name, p)] = (err, hw, preferred, records or b"")
    assert r.remaining() == 0, f"{r.remaining()} unexpected trailing bytes in Fetch v{version}"
    return corr, out


# ---- ApiVersions ------------------------------------------------------------------------------

def parse_api_versions_v0(payload: bytes) -> tuple[int, int, dict[int, tuple[int, int]]]:
    """Strict v0 parse: -> (correlation_id, error_code, {api_key: (min, max)})."""
    r = Reader(payload)
    corr = r.i32()
    err = r.i16()
    keys = {}
    n = r.i32()
    assert n >= 0, "null api_keys array in ApiVersions v0 response"
    for _ in range(n):
        k, lo, hi = r.i16(), r.i16(), r.i16()
        keys[k] = (lo, hi)
    assert r.remaining() == 0, (
        f"ApiVersions v0 response has {r.remaining()} trailing bytes (not v0 format?)")
    return corr, err, keys


def parse_api_versions_v3(payload: bytes) -> tuple[int, int, dict[int, tuple[int, int]], int]:
    """-> (correlation_id, error_code, {api_key: (min, max)}, throttle_time_ms). The response
    header of ApiVersions is always v0 (no tagged fields), even for flexible versions."""
    r = Reader(payload)
    corr = r.i32()
    err = r.i16()
    keys = {}
    n = r.uvarint() - 1
    for _ in range(n):
        k, lo, hi = r.i16(), r.i16(), r.i16()
        r.skip_tagged_fields()
        keys[k] = (lo, hi)
    throttle = r.i32()
    r.skip_tagged_fields()
    assert r.remaining() == 0, f"ApiVersions v3 response has {r.remaining()} trailing bytes"
    return corr, err, keys, throttle


def api_versions_v3_body(software_name: str = "skiff-e2e", software_version: str = "1.0") -> bytes:
    return compact_string(software_name) + compact_string(software_version) + uvarint(0)


def api_versions(conn: Conn) -> dict[int, tuple[int, int]]:
    corr, payload = conn.request(API_VERSIONS, 0, b"")
    rcorr, err, keys = parse_api_versions_v0(payload)
    assert rcorr == corr and err == 0, f"ApiVersions v0 failed: corr {rcorr}/{corr} err {err}"
    return keys


def sasl_authenticate(conn: Conn, auth: bytes, version: int = 0
                      ) -> tuple[int, str | None, bytes | None, int] | None:
    """SaslAuthenticate v0 or v1 (not flexible): (error code, message, auth bytes, session
    lifetime ms; 0 for v0), or None when the broker closed the connection instead."""
    corr = conn.next_corr()
    conn.send_raw(frame(request_header_v1(36, version, corr) + nbytes(auth)))
    payload = conn.recv_frame()
    if payload is None:
        return None
    r = Reader(payload[4:])
    code, message, auth_bytes = r.i16(), r.string(), r.nbytes()
    return code, message, auth_bytes, r.i64() if version >= 1 else 0
