"""Three brokers over one etcd and one S3-compatible bucket: leadership spreads, moves on
failure in about a session timeout, and a paused ("zombie") leader can never commit again.

Every check compares what the producer was told (delivery reports) with what a consumer reads
afterwards: each acknowledged record at its acknowledged offset, offsets contiguous, and no value
stored twice. The producer is idempotent (librdkafka's `enable.idempotence`): a request the dead
leader committed but never answered is resent, and the new leader recognises it from the producer
state committed with it, so even kill -9 leaves no duplicate.
"""

import json
import os
import signal
import time

import pytest

import helpers as h
from servers import broker_args

SESSION_MS = 2000
PARTITIONS = 6


@pytest.fixture
def cluster(start_broker, etcd, s3):
    brokers = []
    for node in (1, 2, 3):
        brokers.append(start_broker(
            name=f"node{node}", flush_linger_ms=20,
            args=broker_args(etcd, s3) + ["--node-id", str(node),
                                          "--broker-session-timeout-ms", str(SESSION_MS)]))
    return brokers


def leaders(broker, topic) -> dict[int, int]:
    status, body = broker.http_get("/v1/topics")
    assert status == 200
    for t in json.loads(body)["topics"]:
        if t["name"] == topic:
            return {p["partition"]: p["leader"] for p in t["partitions"]}
    return {}


def epochs(broker, topic) -> dict[int, int]:
    status, body = broker.http_get("/v1/topics")
    assert status == 200
    for t in json.loads(body)["topics"]:
        if t["name"] == topic:
            return {p["partition"]: p["leader_epoch"] for p in t["partitions"]}
    return {}


def live_ids(broker) -> set[int]:
    status, body = broker.http_get("/v1/brokers")
    assert status == 200
    return {b["node_id"] for b in json.loads(body)["brokers"]}


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Recorder:
    """A continuously producing acks=all client that remembers every delivery report."""

    def __init__(self, bootstrap, topic, prefix="r"):
        self.topic = topic
        self.prefix = prefix
        self.acked = {}        # value -> (partition, offset)
        self.failed = {}
        self.sent = 0
        self.p = h.producer(bootstrap, **{
            "enable.idempotence": True, "message.timeout.ms": 60000, "linger.ms": 5,
            "retry.backoff.ms": 50, "retry.backoff.max.ms": 500,
            "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500,
            "topic.metadata.refresh.interval.ms": 1000,
        })

    def _report(self, err, msg):
        value = msg.value().decode()
        if err is None:
            self.acked[value] = (msg.partition(), msg.offset())
        else:
            self.failed[value] = err

    def produce_for(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(20):
                value = f"{self.prefix}{self.sent:07d}"
                try:
                    self.p.produce(self.topic, value=value.encode(),
                                   partition=self.sent % PARTITIONS, on_delivery=self._report)
                except BufferError:
                    break
                self.sent += 1
            self.p.poll(0.01)

    def finish(self):
        assert self.p.flush(90) == 0, "producer could not deliver everything"
        assert not self.failed, list(self.failed.items())[:3]
        assert len(self.acked) == self.sent


def check_log(bootstrap, rec: Recorder):
    recs = h.read_partitions(bootstrap, rec.topic, range(PARTITIONS), timeout=60)
    stored = {}
    for r in recs:
        stored.setdefault(r.value.decode(), []).append((r.partition, r.offset))
    for value, where in rec.acked.items():
        assert where in stored.get(value, []), f"{value} acknowledged at {where}, stored at {stored.get(value)}"
    for p in range(PARTITIONS):
        offsets = sorted(r.offset for r in recs if r.partition == p)
        assert offsets == list(range(len(offsets))), f"partition {p}: gaps in offsets"
    assert set(stored) == set(rec.acked), "records nobody produced, or acknowledged ones missing"
    twice = {v: where for v, where in stored.items() if len(where) > 1}
    assert not twice, f"{len(twice)} values stored twice, e.g. {list(twice.items())[:3]}"
    return stored


def test_partitions_spread_and_any_broker_bootstraps(cluster):
    topic = "spread"
    h.create_topic(cluster[1].bootstrap, topic, PARTITIONS)
    assigned = leaders(cluster[0], topic)
    assert set(assigned) == set(range(PARTITIONS))
    assert set(assigned.values()) <= {1, 2, 3}
    assert len(set(assigned.values())) >= 2, f"all partitions on one broker: {assigned}"
    md = h.admin(cluster[2].bootstrap).list_topics(topic, timeout=10)
    assert sorted(md.brokers) == [1, 2, 3]
    assert {p: m.leader for p, m in md.topics[topic].partitions.items()} == assigned
    rec = Recorder(cluster[0].bootstrap, topic)
    rec.produce_for(2)
    rec.finish()
    check_log(cluster[2].bootstrap, rec)


@pytest.mark.timeout(180)
def test_kill9_of_a_leader_moves_its_partitions(cluster):
    topic = "failover"
    h.create_topic(cluster[0].bootstrap, topic, PARTITIONS)
    victim = cluster[2]
    before = leaders(cluster[0], topic)
    assert 3 in before.values(), f"node 3 leads nothing: {before}"
    rec = Recorder(cluster[0].bootstrap, topic)
    rec.produce_for(1.5)
    acked_before_kill = len(rec.acked)
    victim.kill9()
    killed_at = time.monotonic()
    moved_at = wait_for(lambda: 3 not in leaders(cluster[0], topic).values()
                        and -1 not in leaders(cluster[0], topic).values(),
                        SESSION_MS / 1000 * 5, "partitions of the killed broker to move")
    rec.produce_for(2)
    rec.finish()
    assert len(rec.acked) > acked_before_kill
    print(f"failover: leaders moved {moved_at - killed_at:.2f} s after kill -9 "
          f"(session timeout {SESSION_MS} ms)")
    check_log(cluster[0].bootstrap, rec)
    # The killed broker comes back and gets its share again, without moving any data.
    victim.restart()
    wait_for(lambda: 3 in leaders(cluster[0], topic).values(), 30, "node 3 to lead again")
    check_log(cluster[1].bootstrap, rec)


@pytest.mark.timeout(180)
def test_a_paused_leader_is_fenced_when_it_wakes(start_broker, etcd, s3):
    args = broker_args(etcd, s3) + ["--broker-session-timeout-ms", str(SESSION_MS)]
    # The zombie-to-be buffers for 3 s, so it holds unflushed produce data when it is paused.
    zombie = start_broker(name="zombie", flush_linger_ms=3000, args=args + ["--node-id", "1"])
    topic = "zombie"
    h.create_topic(zombie.bootstrap, topic, PARTITIONS)
    assert set(leaders(zombie, topic).values()) == {1}
    others = [start_broker(name=f"node{n}", flush_linger_ms=20, args=args + ["--node-id", str(n)])
              for n in (2, 3)]
    rec = Recorder(zombie.bootstrap, topic)
    # Produce until requests sit in the zombie's 3 s buffer (the idempotent producer first
    # fetches its id, and the joining brokers take over most partitions meanwhile).
    deadline = time.monotonic() + 15
    while zombie.stats()["buffered_bytes"] == 0:
        assert time.monotonic() < deadline, "the zombie never buffered a produce request"
        rec.produce_for(0.1)
    os.kill(zombie.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: 1 not in live_ids(others[0]), SESSION_MS / 1000 * 5, "session lapse")
        wait_for(lambda: set(leaders(others[0], topic).values()) <= {2, 3}, 10,
                 "survivors to claim every partition")
    finally:
        os.kill(zombie.pid, signal.SIGCONT)
    # Woken, the zombie holds records it accepted under its old epoch. It must not commit them:
    # it either notices its lapsed session and the new leaders first (and refuses them before
    # committing) or its commit fails the compare. librdkafka resends them to the new leaders.
    rec.produce_for(2)
    rec.finish()
    wait_for(lambda: zombie.stats()["fenced_appends"] > 0, 10, "the zombie to refuse its appends")
    check_log(others[0].bootstrap, rec)
    # Its session lapsed, so it registers again with a new one and gets its share back.
    wait_for(lambda: 1 in live_ids(others[0]), 15, "the woken broker to register again")
    wait_for(lambda: 1 in leaders(others[0], topic).values(), 15, "the woken broker to lead again")
    more = Recorder(others[0].bootstrap, topic, prefix="after-")
    more.produce_for(1)
    more.finish()
    stored = h.read_partitions(zombie.bootstrap, topic, range(PARTITIONS), timeout=60)
    assert len(stored) == len(rec.acked) + len(more.acked)


@pytest.mark.timeout(180)
def test_a_paused_broker_whose_node_id_was_taken_exits(start_broker, etcd, s3):
    """A broker paused past its session while a new process starts with the same node id (a
    restarted pod whose predecessor hung): the new process takes over under new epochs, and the
    old one, once woken, neither commits what it buffered nor keeps serving: it exits."""
    args = broker_args(etcd, s3) + ["--broker-session-timeout-ms", str(SESSION_MS),
                                    "--node-id", "1"]
    old = start_broker(name="old", flush_linger_ms=3000, args=args)
    topic = "same-id"
    h.create_topic(old.bootstrap, topic, PARTITIONS)
    rec = Recorder(old.bootstrap, topic)
    deadline = time.monotonic() + 15
    while old.stats()["buffered_bytes"] == 0:
        assert time.monotonic() < deadline, "the old process never buffered a produce request"
        rec.produce_for(0.1)
    before = epochs(old, topic)
    os.kill(old.pid, signal.SIGSTOP)
    try:
        new = start_broker(name="new", flush_linger_ms=20, args=args)   # waits out the lease
        # Same node id, so "leader 1" says nothing: the new process claims under new epochs.
        wait_for(lambda: all(e > before[p] for p, e in epochs(new, topic).items()), 15,
                 "the new process to claim every partition again")
    finally:
        os.kill(old.pid, signal.SIGCONT)
    rec.p.poll(0)
    wait_for(lambda: not old.is_running(), 20, "the displaced process to exit")
    assert old.proc.returncode != 0
    rec.produce_for(1)
    rec.finish()
    check_log(new.bootstrap, rec)


@pytest.mark.timeout(180)
def test_join_and_graceful_leave_move_leadership_without_errors(start_broker, etcd, s3):
    args = broker_args(etcd, s3) + ["--broker-session-timeout-ms", str(SESSION_MS)]
    first = start_broker(name="node1", args=args + ["--node-id", "1"])
    topic = "rebalance"
    h.create_topic(first.bootstrap, topic, PARTITIONS)
    rec = Recorder(first.bootstrap, topic)
    rec.produce_for(1)
    second = start_broker(name="node2", args=args + ["--node-id", "2"])
    wait_for(lambda: 2 in leaders(first, topic).values(), 15, "the new broker to lead some")
    rec.produce_for(1)
    second.stop()                 # SIGTERM: flush, then leave
    wait_for(lambda: set(leaders(first, topic).values()) == {1}, 15, "node 1 to lead all again")
    rec.produce_for(1)
    rec.finish()                  # no record failed: only retriable errors happened
    check_log(first.bootstrap, rec)


@pytest.mark.timeout(180)
def test_etcd_restart(cluster, etcd):
    topic = "etcd-restart"
    h.create_topic(cluster[0].bootstrap, topic, PARTITIONS)
    rec = Recorder(cluster[0].bootstrap, topic)
    rec.produce_for(1)
    etcd.stop()
    rec.produce_for(1)            # commits fail retriably while etcd is down
    etcd.start()
    rec.produce_for(2)
    rec.finish()
    check_log(cluster[1].bootstrap, rec)
    assert all(b.is_running() for b in cluster)


@pytest.mark.timeout(180)
def test_group_coordinator_kill9_members_rejoin_and_offsets_survive(cluster):
    from confluent_kafka import Consumer
    topic, group = "group-failover", "fo-group"
    h.create_topic(cluster[0].bootstrap, topic, PARTITIONS)
    rec = Recorder(cluster[0].bootstrap, topic)
    rec.produce_for(1)
    rec.finish()
    conf = {"bootstrap.servers": ",".join(b.bootstrap for b in cluster), "group.id": group,
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 300}
    c = Consumer(conf)
    c.subscribe([topic])
    seen = set()
    deadline = time.monotonic() + 60
    while len(seen) < len(rec.acked):
        assert time.monotonic() < deadline, f"read {len(seen)} of {len(rec.acked)}"
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            seen.add(m.value().decode())
    c.commit(asynchronous=False)

    def coordinator():
        for b in cluster:
            if b.is_running():
                status, body = b.http_get("/v1/groups")
                if status == 200 and any(g["group_id"] == group for g in json.loads(body)["groups"]):
                    return b
        return None
    victim = coordinator()
    assert victim is not None, "no broker coordinates the group"
    victim.kill9()
    # New records after the coordinator died: the member finds the new coordinator, rejoins,
    # and reads them (partitions the victim led move too).
    more = Recorder(next(b for b in cluster if b.is_running()).bootstrap, topic, prefix="after-")
    more.produce_for(1)
    more.finish()
    fresh = set()
    deadline = time.monotonic() + 90
    while len(fresh) < len(more.acked):
        assert time.monotonic() < deadline, f"after failover read {len(fresh)} of {len(more.acked)}"
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            value = m.value().decode()
            assert value not in seen, f"{value} re-read: committed offsets lost"
            fresh.add(value)
    assert coordinator() not in (None, victim)
    c.close()
