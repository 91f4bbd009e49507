"""Limits hold at the wire: connection count and idle connections."""

import socket
import time

import pytest

import kafka_wire as w
from kafka_wire import Conn


def api_versions_answered(conn: Conn, timeout: float) -> bool:
    """Sends ApiVersions v0; True if answered within `timeout`, False if not (no answer yet)."""
    corr = conn.next_corr()
    conn.sock.settimeout(timeout)
    conn.send_raw(w.frame(w.request_header_v1(w.API_VERSIONS, 0, corr)))
    try:
        payload = conn.recv_frame()
    except socket.timeout:
        return False
    assert payload is not None, "connection closed instead of answering"
    rcorr, err, _ = w.parse_api_versions_v0(payload)
    assert (rcorr, err) == (corr, 0)
    return True


@pytest.mark.skiff(args=["--max-connections", "2"])
def test_connections_over_the_limit_wait_for_a_free_slot(broker):
    first, second = Conn.to(broker), Conn.to(broker)
    try:
        assert api_versions_answered(first, 5)
        assert api_versions_answered(second, 5)
        # The kernel accepts the third connection into the backlog, but the broker does not
        # serve it while two are open.
        third = Conn.to(broker)
        try:
            assert not api_versions_answered(third, 1.0), "served a connection over the limit"
            first.close()
            third.sock.settimeout(10)
            payload = third.recv_frame()
            assert payload is not None, "the waiting connection was dropped"
            assert w.parse_api_versions_v0(payload)[1] == 0
        finally:
            third.close()
    finally:
        first.close()
        second.close()


@pytest.mark.skiff(args=["--connections-max-idle-ms", "500"])
def test_idle_connections_are_closed(broker):
    with Conn.to(broker) as c:
        assert api_versions_answered(c, 5)
        c.sock.settimeout(10)
        started = time.monotonic()
        assert c.recv_frame() is None, "expected the broker to close an idle connection"
        assert time.monotonic() - started < 8
    # A half-sent frame counts as idle too, and the broker keeps serving others.
    with Conn.to(broker) as c:
        c.send_raw(b"\x00\x00\x00\x40\x00\x12")
        c.sock.settimeout(10)
        assert c.recv_frame() is None
    with Conn.to(broker) as c:
        assert api_versions_answered(c, 5)
