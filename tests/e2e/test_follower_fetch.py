"""Fetch from follower (KIP-392) on three brokers in three racks over one etcd and one bucket.

Every broker reads the same bucket, so any broker can serve any partition's reads. With
`--replica-selector-class rack-aware`, a partition's leader sends a consumer that names its rack
(`client.rack`) to a broker in that rack; that broker serves the reads from its view of the
partition, which it keeps from the metadata store. The consumer must get exactly what was
acknowledged, at the acknowledged offsets, catching up and tailing alike.
"""

import time

import pytest

import helpers as h
import kafka_wire as kw
from servers import broker_args
from test_cluster import leaders, wait_for

RACKS = {1: "az-a", 2: "az-b", 3: "az-c"}
PARTITIONS = 6


@pytest.fixture
def racks(start_broker, etcd, s3):
    return {
        node: start_broker(
            name=f"node{node}", flush_linger_ms=20,
            args=broker_args(etcd, s3) + [
                "--node-id", str(node), "--broker-rack", rack,
                "--replica-selector-class", "rack-aware",
                "--replica-view-refresh-ms", "100"])
        for node, rack in RACKS.items()
    }


def produce(bootstrap, topic, values, partitions=PARTITIONS) -> dict[bytes, tuple[int, int]]:
    acked = {}

    def on_delivery(err, msg):
        assert err is None, err
        acked[msg.value()] = (msg.partition(), msg.offset())

    p = h.producer(bootstrap)
    for i, v in enumerate(values):
        p.produce(topic, value=v, key=str(i).encode(), partition=i % partitions,
                  on_delivery=on_delivery)
    assert p.flush(30) == 0
    return acked


def replica_reads(broker) -> int:
    return broker.stats()["replica_reads"]


def test_a_consumer_reads_from_the_broker_in_its_rack(racks):
    topic = "zoned"
    h.create_topic(racks[1].bootstrap, topic, PARTITIONS)
    h.wait_leaders(racks[1].bootstrap, topic)
    led = leaders(racks[1], topic)
    assert set(led.values()) - {2}, f"node 2 leads every partition: {led}"
    md = h.admin(racks[3].bootstrap).list_topics(topic, timeout=10)
    for p, meta in md.topics[topic].partitions.items():
        assert meta.leader == led[p]
        assert sorted(meta.replicas) == [1, 2, 3], "every broker may serve reads"
        assert meta.replicas[0] == led[p], "the leader is listed first"

    acked = produce(racks[1].bootstrap, topic, [f"v{i}".encode() for i in range(600)])
    assert len(acked) == 600

    # A consumer in az-b: leaders in other racks send it to node 2, which serves them.
    c = h.consumer(racks[1].bootstrap, **{"client.rack": "az-b"})
    try:
        recs = h.read_partitions(racks[1].bootstrap, topic, range(PARTITIONS), c=c)
        assert {r.value: (r.partition, r.offset) for r in recs} == acked
        assert len(recs) == 600, "a record read twice"
        assert replica_reads(racks[2]) > 0, "node 2 never served a partition it does not lead"
        assert replica_reads(racks[1]) == 0 and replica_reads(racks[3]) == 0, \
            "a broker outside the consumer's rack served it as a replica"
        # The partitions a leader flushed together are in one object: node 2 read their
        # sections for a fetch with one GET, not one per partition.
        stats = racks[2].stats()
        assert stats["prefetch_reads"] > 0, stats
        assert stats["sections_prefetched"] > stats["prefetch_reads"], stats

        # Tailing: records produced now reach the consumer through node 2's views, which
        # catch up with the leaders' commits.
        more = produce(racks[3].bootstrap, topic, [f"w{i}".encode() for i in range(60)])
        got = {}
        deadline = time.monotonic() + 30
        while len(got) < 60 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            assert not m.error(), m.error()
            got[m.value()] = (m.partition(), m.offset())
        assert got == more
    finally:
        c.close()

    # A consumer that names no rack reads from the leaders.
    before = {node: replica_reads(b) for node, b in racks.items()}
    again = h.read_partitions(racks[2].bootstrap, topic, range(PARTITIONS))
    assert len(again) == 660
    assert {node: replica_reads(b) for node, b in racks.items()} == before


def test_any_broker_answers_a_consumers_fetch_v11_and_only_the_leader_older_ones(racks):
    topic = "any-broker"
    h.create_topic(racks[1].bootstrap, topic, 1)
    h.wait_leaders(racks[1].bootstrap, topic)
    leader = leaders(racks[1], topic)[0]
    other = next(node for node in RACKS if node != leader)
    third = next(node for node in RACKS if node not in (leader, other))
    acked = produce(racks[1].bootstrap, topic, [f"r{i}".encode() for i in range(10)], 1)
    values = sorted(acked, key=lambda v: acked[v][1])

    with kw.Conn.to(racks[other]) as conn:
        # Fetch v10 predates KIP-392: a consumer must read from the leader.
        _, payload = conn.request(kw.API_FETCH, 10, kw.fetch_v10_body(topic, 0, 0))
        _, parts = kw.parse_fetch(payload, 10)
        assert parts[(topic, 0)][0] == kw.ERR_NOT_LEADER_OR_FOLLOWER

        # Fetch v11 from a consumer: served, from offset 3, exactly as the leader holds it.
        _, payload = conn.request(kw.API_FETCH, 11, kw.fetch_v10_body(topic, 0, 3, rack=""))
        _, parts = kw.parse_fetch(payload, 11)
        err, hw, preferred, records = parts[(topic, 0)]
        assert (err, hw, preferred) == (0, 10, -1)
        assert [(o, v) for o, _k, v in kw.decode_records(records) if o >= 3] == \
            [(i, values[i]) for i in range(3, 10)]

        # Past the end the leader's log has: out of range there too.
        _, payload = conn.request(kw.API_FETCH, 11, kw.fetch_v10_body(topic, 0, 11, rack=""))
        _, parts = kw.parse_fetch(payload, 11)
        assert parts[(topic, 0)][0] == 1, "OFFSET_OUT_OF_RANGE"

        # A long poll at the end wakes for a record the leader commits meanwhile.
        started = time.monotonic()
        conn.send_raw(kw.frame(kw.request_header_v1(kw.API_FETCH, 11, 99)
                               + kw.fetch_v10_body(topic, 0, 10, max_wait_ms=10_000, rack="")))
        produce(racks[leader].bootstrap, topic, [b"late"], 1)
        payload = conn.recv_frame()
        _, parts = kw.parse_fetch(payload, 11)
        err, hw, _, records = parts[(topic, 0)]
        assert (err, hw) == (0, 11)
        assert [v for _o, _k, v in kw.decode_records(records)] == [b"late"]
        assert time.monotonic() - started < 8, "the long poll waited for its deadline"

    # The leader sends a consumer in another broker's rack there, with no records.
    with kw.Conn.to(racks[leader]) as conn:
        _, payload = conn.request(kw.API_FETCH, 11,
                                  kw.fetch_v10_body(topic, 0, 0, rack=RACKS[third]))
        _, parts = kw.parse_fetch(payload, 11)
        err, hw, preferred, records = parts[(topic, 0)]
        assert (err, hw, preferred, records) == (0, 11, third, b"")
        # In its own rack, or in one no broker is in, the leader serves.
        for rack in (RACKS[leader], "az-nowhere"):
            _, payload = conn.request(kw.API_FETCH, 11, kw.fetch_v10_body(topic, 0, 0, rack=rack))
            _, parts = kw.parse_fetch(payload, 11)
            err, hw, preferred, records = parts[(topic, 0)]
            assert (err, preferred) == (0, -1)
            assert len(kw.decode_records(records)) == 11


def test_only_brokers_serving_follower_reads_are_replicas_and_serve_them(start_broker, etcd, s3):
    # Node 1 serves follower reads (rack-aware); node 2 keeps Kafka's default (leader).
    nodes = {
        node: start_broker(
            name=f"node{node}", flush_linger_ms=20,
            args=broker_args(etcd, s3) + ["--node-id", str(node), "--broker-rack", RACKS[node],
                                          "--replica-selector-class", selector])
        for node, selector in ((1, "rack-aware"), (2, "leader"))
    }
    topic = "mixed"
    h.create_topic(nodes[1].bootstrap, topic, PARTITIONS)
    h.wait_leaders(nodes[1].bootstrap, topic)
    led = leaders(nodes[1], topic)
    by_leader = {node: [p for p, n in led.items() if n == node] for node in nodes}
    assert by_leader[1] and by_leader[2], f"one broker leads every partition: {led}"
    produce(nodes[1].bootstrap, topic, [f"m{i}".encode() for i in range(60)])

    # Every broker lists the same replicas, whatever its own setting: the leader, then node 1.
    for b in nodes.values():
        md = h.admin(b.bootstrap).list_topics(topic, timeout=10)
        for p, meta in md.topics[topic].partitions.items():
            assert list(meta.replicas) == ([1] if led[p] == 1 else [2, 1]), (p, meta.replicas)

    with kw.Conn.to(nodes[2]) as conn:
        p = by_leader[1][0]
        _, payload = conn.request(kw.API_FETCH, 11, kw.fetch_v10_body(topic, p, 0, rack=""))
        _, parts = kw.parse_fetch(payload, 11)
        assert parts[(topic, p)][0] == kw.ERR_NOT_LEADER_OR_FOLLOWER, \
            "a broker without follower reads served a partition it does not lead"
    with kw.Conn.to(nodes[1]) as conn:
        p = by_leader[2][0]
        _, payload = conn.request(kw.API_FETCH, 11, kw.fetch_v10_body(topic, p, 0, rack=""))
        _, parts = kw.parse_fetch(payload, 11)
        err, hw, preferred, records = parts[(topic, p)]
        assert (err, hw, preferred) == (0, 10, -1)
        assert len(kw.decode_records(records)) == 10
        # A consumer in node 2's rack stays on node 1: node 2 does not serve follower reads.
        p = by_leader[1][0]
        _, payload = conn.request(kw.API_FETCH, 11,
                                  kw.fetch_v10_body(topic, p, 0, rack=RACKS[2]))
        _, parts = kw.parse_fetch(payload, 11)
        err, _, preferred, records = parts[(topic, p)]
        assert (err, preferred) == (0, -1)
        assert len(kw.decode_records(records)) == 10


@pytest.mark.timeout(180)
def test_views_keep_up_across_an_etcd_restart(racks, etcd):
    """A broker's views learn of commits from a watch per topic; etcd's restart ends it, the
    views fall back to reading the store, and a new watch takes over."""
    topic = "watched"
    h.create_topic(racks[1].bootstrap, topic, 1)
    h.wait_leaders(racks[1].bootstrap, topic)
    leader = leaders(racks[1], topic)[0]
    other = racks[next(node for node in RACKS if node != leader)]
    produce(racks[leader].bootstrap, topic, [b"before"], 1)

    def fetch_from(offset):
        with kw.Conn.to(other) as conn:
            _, payload = conn.request(kw.API_FETCH, 11,
                                      kw.fetch_v10_body(topic, 0, offset, rack=""))
        err, hw, _, records = kw.parse_fetch(payload, 11)[1][(topic, 0)]
        return err, hw, [v for _o, _k, v in kw.decode_records(records) if _o >= offset]

    assert fetch_from(0) == (0, 1, [b"before"])
    assert other.stats()["replica_view_watches"] == 1

    etcd.stop()
    etcd.start()
    produce(racks[leader].bootstrap, topic, [b"after"], 1)
    # The view catches up (from the store while no watch runs, then from the new watch).
    wait_for(lambda: fetch_from(1) == (0, 2, [b"after"]), 30, "the view to show the new record")
    produce(racks[leader].bootstrap, topic, [b"later"], 1)
    wait_for(lambda: fetch_from(2) == (0, 3, [b"later"]), 30, "the view to show another")
    assert other.stats()["replica_view_watches"] == 1
    assert "watch for replica views ended" in other.log_path.read_text(errors="replace"), \
        "the restart did not end the watch: this test did not test the fallback"
