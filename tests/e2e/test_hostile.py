"""Hostile and careless clients: memory stays within the configured budgets, other clients keep
being served, and a connection's requests take effect in the order they were sent.

Memory is the broker process's peak resident set (VmHWM in /proc/<pid>/status), read before and
after the load; the bounds are the budgets the broker was started with plus slack for the
allocator, far below what the same load cost before the budgets existed (GBs).
"""

import os
import socket
import threading
import time

import pytest
from confluent_kafka import TopicPartition

import kafka_wire as w
from helpers import consumer, produce_and_wait, producer, read_partitions, unique_topic

MIB = 1 << 20
FETCH = 1
METADATA = 3
HEARTBEAT = 12


def vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    """Resets VmHWM to the current RSS (Linux >= 4.0), so the next reading is this load's."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear:
        clear.write("5")


def raw_socket(broker, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(30)
    s.connect((broker.host, broker.kafka_port))
    return s


def round_trip_s(broker, topic: str) -> float:
    """Seconds for a fresh client to produce 10 records and read them back."""
    started = time.monotonic()
    p = producer(broker.bootstrap)
    produce_and_wait(p, topic, [f"v{i}".encode() for i in range(10)])
    recs = read_partitions(broker.bootstrap, topic, [0], timeout=60)
    assert [r.value for r in recs] == [f"v{i}".encode() for i in range(10)]
    return time.monotonic() - started


def assert_session_kept(broker) -> None:
    log = broker.log_path.read_text(errors="replace")
    assert "lapsed" not in log, "the broker's session lapsed under the load"
    assert "panicked" not in log


FETCH_BUDGET = 128 * MIB


@pytest.mark.skiff(args=["--fetch-buffer-max-bytes", str(FETCH_BUDGET),
                         "--connection-fetch-buffer-max-bytes", str(32 * MIB),
                         "--recent-cache-max-bytes", str(32 * MIB)])
def test_pipelined_fetches_that_are_never_read_hold_bounded_memory(broker):
    topic = unique_topic("unread")
    value = os.urandom(512 * 1024)
    produce_and_wait(producer(broker.bootstrap, **{"linger.ms": 50}), topic, [value] * 48)
    pid = broker.pid
    reset_peak(pid)
    before_kib = vm_kib(pid, "VmRSS")
    hostile = []
    try:
        # Four connections each pipeline 40 Fetches of up to 55 MiB (24 MiB of data each)
        # and never read a byte.
        for _ in range(4):
            s = raw_socket(broker, rcvbuf=4096)
            frames = b"".join(
                w.frame(w.request_header_v1(FETCH, 4, corr)
                        + w.fetch_v4_body(topic, 0, 0, max_wait_ms=0, min_bytes=1,
                                          max_bytes=55 * MIB))
                for corr in range(40))
            s.sendall(frames)
            hostile.append(s)
        time.sleep(3)
        took = round_trip_s(broker, unique_topic("healthy"))
        time.sleep(2)
        peak_kib = vm_kib(pid, "VmHWM")
    finally:
        for s in hostile:
            s.close()
    grew = (peak_kib - before_kib) * 1024
    print(f"unread fetches: peak RSS grew {grew / MIB:.0f} MiB; healthy round trip {took:.2f} s")
    # Before the budgets: 4 x 40 x 24 MiB of responses queued (GBs).
    assert grew < FETCH_BUDGET + 160 * MIB, f"peak RSS grew by {grew / MIB:.0f} MiB"
    assert took < 20, f"a healthy client's round trip took {took:.1f} s"
    assert_session_kept(broker)


REQUEST_BUDGET = 256 * MIB


@pytest.mark.skiff(args=["--queued-max-request-bytes", str(REQUEST_BUDGET),
                         "--non-produce-request-max-bytes", str(2 * MIB)])
def test_frames_of_tiny_array_elements_decode_within_the_request_budget(broker):
    pid = broker.pid
    # Over the non-produce frame limit: the connection is closed before the frame is read.
    with w.Conn.to(broker) as c:
        c.send_raw(w.i32(32 * MIB) + w.request_header_v1(METADATA, 1, 1))
        assert c.closed_by_peer(10)
    reset_peak(pid)
    before_kib = vm_kib(pid, "VmRSS")

    def metadata_naming(n: int) -> bytes:
        """Metadata v1 naming `n` empty topics: 2 wire bytes each, a ~90-byte struct each."""
        return w.i32(n) + b"\x00\x00" * n

    # Six connections at once send ~1M names in 2 MiB: decoding would take ~90 MB each, more
    # than one request may allocate, so each is refused (connection closed) while decoding.
    closed = []

    def send() -> None:
        with w.Conn.to(broker, timeout=60) as c:
            c.send_raw(w.frame(w.request_header_v1(METADATA, 1, 1)
                               + metadata_naming((2 * MIB - 64) // 2)))
            closed.append(c.closed_by_peer(30))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert closed == [True] * 6, closed
    # 50,000 names decode within the budget; the same name asked 50,000 times is answered
    # once, as Kafka does.
    with w.Conn.to(broker, timeout=60) as c:
        _, payload = c.request(METADATA, 1, metadata_naming(50_000))
        assert len(payload) < 4096, len(payload)
    peak_kib = vm_kib(pid, "VmHWM")
    grew = (peak_kib - before_kib) * 1024
    print(f"tiny elements: peak RSS grew {grew / MIB:.0f} MiB")
    assert grew < 64 * MIB, f"peak RSS grew by {grew / MIB:.0f} MiB"
    took = round_trip_s(broker, unique_topic("healthy"))
    assert took < 20, f"a healthy client's round trip took {took:.1f} s"
    assert_session_kept(broker)


def test_heartbeats_for_made_up_groups_create_no_groups(broker):
    count = 20_000
    with w.Conn.to(broker, timeout=60) as c:
        c.send_raw(b"".join(
            w.frame(w.request_header_v1(HEARTBEAT, 0, corr)
                    + w.string(f"made-up-{corr}") + w.i32(1) + w.string("member"))
            for corr in range(count)))
        errors = set()
        for corr in range(count):
            r = w.Reader(c.recv_frame())
            assert r.i32() == corr
            errors.add(r.i16())
    assert errors == {25}, errors  # UNKNOWN_MEMBER_ID
    with w.Conn.to(broker) as c:
        _, payload = c.request(16, 0, b"")  # ListGroups v0
        r = w.Reader(payload)
        r.i32()
        assert r.i16() == 0
        assert r.i32() == 0, "made-up groups are listed"
    assert_session_kept(broker)


def test_pipelined_async_commits_take_effect_in_the_order_sent(broker):
    topic = unique_topic("commits")
    produce_and_wait(producer(broker.bootstrap), topic, [b"x"] * 60)
    for round_ in range(5):
        group = f"async-{round_}-{unique_topic('g')}"
        c = consumer(broker.bootstrap, **{"group.id": group, "enable.auto.commit": False})
        try:
            done = []
            for offset in range(29, 51):
                c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=True)
            deadline = time.monotonic() + 20
            committed = None
            while time.monotonic() < deadline:
                c.poll(0.1)
                committed = c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
                if committed == 50:
                    break
                done.append(committed)
            assert committed == 50, f"round {round_}: committed {committed} after {done}"
        finally:
            c.close()


JOIN_GROUP = 11


def join_group_v3(group: str, member: str, rebalance_timeout_ms: int) -> bytes:
    """JoinGroup v3 body: one 'consumer' protocol with empty metadata."""
    return (w.string(group) + w.i32(30000) + w.i32(rebalance_timeout_ms) + w.string(member)
            + w.string("consumer") + w.array([w.string("range") + w.nbytes(b"")]))


@pytest.mark.skiff(args=["--group-initial-rebalance-delay-ms", "0",
                         "--queued-max-request-bytes", str(REQUEST_BUDGET)])
def test_requests_queued_behind_a_waiting_join_do_not_starve_others(broker):
    """A connection whose JoinGroup waits for a rebalance pipelines large requests behind it:
    they wait on that connection, holding what they really take, and other clients are served."""
    group = unique_topic("parked")
    leader = w.Conn.to(broker, timeout=60)
    hog = w.Conn.to(broker, timeout=60)
    try:
        # The first member joins and completes generation 1 at once (no initial delay).
        _, payload = leader.request(JOIN_GROUP, 3, join_group_v3(group, "", 60000))
        r = w.Reader(payload)
        r.i32(), r.i32()
        assert r.i16() == 0
        # A second member's join waits for the first to rejoin (up to its 60 s rebalance
        # timeout), and its connection pipelines 30 Metadata requests of 120,000 invalid names
        # (1.4 MB each, ~11 MB decoded) behind it.
        names = 120_000
        metadata = w.i32(names) + w.string("!!!!!!!!!!") * names
        hog.send_raw(w.frame(w.request_header_v1(JOIN_GROUP, 3, 1)
                             + join_group_v3(group, "", 60000)))
        for corr in range(2, 32):
            hog.send_raw(w.frame(w.request_header_v1(METADATA, 1, corr) + metadata))
        time.sleep(2)
        took = round_trip_s(broker, unique_topic("healthy"))
        assert took < 15, f"a healthy client's round trip took {took:.1f} s"
        with w.Conn.to(broker) as c:
            _, payload = c.request(METADATA, 1, w.i32(1) + w.string(unique_topic("m")))
    finally:
        hog.close()
        leader.close()
    assert_session_kept(broker)
