"""Consumer groups (classic protocol) with real clients: members split a topic's partitions,
a member leaving or dying hands its partitions to the others, committed offsets resume."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import kafka.errors
import pytest
from confluent_kafka import Consumer
from kafka import KafkaConsumer

import helpers as h

GROUP_ARGS = ["--group-initial-rebalance-delay-ms", "300"]
PARTITIONS = 6


class Cluster:
    """Three brokers over etcd and S3, seen as one: clients bootstrap from all of them, and
    /v1/groups merges every broker's answer (members are known to the group's coordinator)."""

    def __init__(self, brokers):
        self.brokers = brokers

    @property
    def bootstrap(self):
        return ",".join(b.bootstrap for b in self.brokers)

    def http_get(self, path):
        if path != "/v1/groups":
            return self.brokers[0].http_get(path)
        merged = {}
        for b in self.brokers:
            status, body = b.http_get(path)
            assert status == 200, body
            for g in json.loads(body)["groups"]:
                if g["group_id"] not in merged or g["state"] is not None:
                    merged[g["group_id"]] = g
        return 200, json.dumps({"groups": list(merged.values())}).encode()


@pytest.fixture(params=["embedded", "cluster"])
def broker(request, start_broker):
    """Every group test runs on the embedded default and on a 3-broker cluster, where each
    group's coordinator is one of the three."""
    if request.param == "embedded":
        return start_broker(args=GROUP_ARGS)
    from servers import broker_args
    etcd, s3 = request.getfixturevalue("etcd"), request.getfixturevalue("s3")
    return Cluster([start_broker(name=f"node{n}", flush_linger_ms=20,
                                 args=broker_args(etcd, s3) + GROUP_ARGS + ["--node-id", str(n)])
                    for n in (1, 2, 3)])


def group_consumer(bootstrap, group, **conf):
    base = {"bootstrap.servers": bootstrap, "group.id": group,
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 300}
    base.update(conf)
    return Consumer(base)


def produce(bootstrap, topic, count, start=0):
    p = h.producer(bootstrap)
    for i in range(start, start + count):
        p.produce(topic, value=f"v{i}".encode(), partition=i % PARTITIONS)
    assert p.flush(30) == 0


def drain(consumers, expected, timeout=60):
    """Polls all consumers round-robin until `expected` records arrived; returns
    {consumer index: [values]}."""
    got = {i: [] for i in range(len(consumers))}
    deadline = time.monotonic() + timeout
    while sum(len(v) for v in got.values()) < expected:
        assert time.monotonic() < deadline, f"only {sum(len(v) for v in got.values())} of {expected}"
        for i, c in enumerate(consumers):
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                got[i].append(m.value().decode())
    return got


@pytest.mark.parametrize("strategy", ["range", "roundrobin"])
def test_members_split_partitions_and_take_over_when_one_leaves(broker, strategy):
    topic, group = "grouped", "splitters"
    h.create_topic(broker.bootstrap, topic, PARTITIONS)
    members = [group_consumer(broker.bootstrap, group,
                              **{"partition.assignment.strategy": strategy}) for _ in range(3)]
    for c in members:
        c.subscribe([topic])
    # "Each record once" holds while membership is stable: wait until all three share the
    # partitions (a member joining later would take partitions whose reads were not committed).
    deadline = time.monotonic() + 60
    while not all(c.assignment() for c in members):
        assert time.monotonic() < deadline, "not every member got partitions"
        for c in members:
            assert c.poll(0.1) is None, "a record before anything was produced"
    produce(broker.bootstrap, topic, 300)
    got = drain(members, 300)
    values = [v for vs in got.values() for v in vs]
    assert sorted(values) == sorted(f"v{i}" for i in range(300)), "each record exactly once"
    assert sum(1 for vs in got.values() if vs) >= 2, f"one member did all the work: {got.keys()}"
    assignments = [{tp.partition for tp in c.assignment()} for c in members]
    assert set().union(*assignments) == set(range(PARTITIONS))
    assert sum(len(a) for a in assignments) == PARTITIONS, f"overlap: {assignments}"
    for c in members:
        c.commit(asynchronous=False)
    status, body = broker.http_get("/v1/groups")
    assert status == 200
    [described] = [g for g in json.loads(body)["groups"] if g["group_id"] == group]
    assert described["state"] == "Stable" and len(described["members"]) == 3
    listed = sorted(p for m in described["members"] for a in m["assignment"] for p in a["partitions"])
    assert listed == list(range(PARTITIONS))
    assert sum(o["committed_offset"] for o in described["offsets"]) == 300
    assert all(o["lag"] == 0 for o in described["offsets"])
    members[0].close()   # leaves the group: the others take its partitions
    rest = members[1:]
    deadline = time.monotonic() + 30
    while set().union(*({tp.partition for tp in c.assignment()} for c in rest)) != set(range(PARTITIONS)):
        assert time.monotonic() < deadline, "the leaver's partitions were not reassigned"
        for c in rest:
            assert c.poll(0.1) is None, "a record before anything new was produced"
    produce(broker.bootstrap, topic, 120, start=300)
    got = drain(rest, 120)
    later = sorted(v for vs in got.values() for v in vs)
    assert later == sorted(f"v{i}" for i in range(300, 420)), "after a leave, nothing lost or repeated"
    for c in rest:
        c.close()


def test_a_killed_member_is_replaced_after_its_session_and_offsets_resume(broker):
    topic, group = "crashy", "survivors"
    h.create_topic(broker.bootstrap, topic, PARTITIONS)
    produce(broker.bootstrap, topic, 60)
    # A member in another process, killed with SIGKILL once it has joined and committed.
    script = textwrap.dedent(f"""
        import sys, time
        from confluent_kafka import Consumer
        c = Consumer({{"bootstrap.servers": "{broker.bootstrap}", "group.id": "{group}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False,
                      "session.timeout.ms": 6000, "heartbeat.interval.ms": 300}})
        c.subscribe(["{topic}"])
        while not c.assignment():
            c.poll(0.2)
        print("joined", flush=True)
        while True:
            c.poll(0.2)
    """)
    victim = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert victim.stdout.readline().strip() == b"joined"
    survivor = group_consumer(broker.bootstrap, group)
    survivor.subscribe([topic])
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    # After the victim's session expires, the survivor owns every partition and reads all.
    got = drain([survivor], 60, timeout=60)
    assert sorted(got[0]) == sorted(f"v{i}" for i in range(60))
    assert {tp.partition for tp in survivor.assignment()} == set(range(PARTITIONS))
    survivor.commit(asynchronous=False)
    survivor.close()
    # A restarted member resumes after the committed offsets: it reads only new records.
    produce(broker.bootstrap, topic, 12, start=60)
    again = group_consumer(broker.bootstrap, group)
    again.subscribe([topic])
    got = drain([again], 12, timeout=60)
    assert sorted(got[0]) == sorted(f"v{i}" for i in range(60, 72))
    assert again.poll(2) is None, "re-read records before the committed offset"
    again.close()


def test_cooperative_sticky_and_kafka_python_groups(broker):
    topic = "coop"
    h.create_topic(broker.bootstrap, topic, PARTITIONS)
    produce(broker.bootstrap, topic, 60)
    coop = [group_consumer(broker.bootstrap, "coop-group",
                           **{"partition.assignment.strategy": "cooperative-sticky"})
            for _ in range(2)]
    for c in coop:
        c.subscribe([topic])
    got = drain(coop, 60)
    assert sorted(v for vs in got.values() for v in vs) == sorted(f"v{i}" for i in range(60))
    for c in coop:
        c.close()
    # kafka-python's own group protocol implementation, subscribing with a group id.
    kp = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id="kp-members",
                       auto_offset_reset="earliest", consumer_timeout_ms=10000,
                       enable_auto_commit=False)
    values = sorted(m.value.decode() for m in kp)
    assert values == sorted(f"v{i}" for i in range(60))
    kp.commit()
    kp.close()


class KafkaPythonMember(threading.Thread):
    """A kafka-python group member polling in its own thread, as applications run it (one
    consumer per thread; kafka-python's group protocol runs inside poll())."""

    def __init__(self, bootstrap, topic, group, **conf):
        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                      auto_offset_reset="earliest", enable_auto_commit=False,
                                      session_timeout_ms=6000, heartbeat_interval_ms=300, **conf)
        self.values = []
        self.assigned = set()
        self.stopping = threading.Event()
        self.error = None

    def run(self):
        try:
            while not self.stopping.is_set():
                polled = self.consumer.poll(timeout_ms=200)
                for records in polled.values():
                    self.values.extend(r.value.decode() for r in records)
                if polled:
                    # Partitions may move at the next rebalance: commit what was read.
                    self.consumer.commit()
                self.assigned = {tp.partition for tp in self.consumer.assignment()}
            try:
                self.consumer.commit()
            except kafka.errors.RebalanceInProgressError:
                # Another member left or joined meanwhile: the broker refuses a commit during a
                # rebalance, as Kafka does; what was read is committed by the next owner.
                pass
            self.consumer.close()
        except Exception as e:  # surfaced by stop()
            self.error = e

    def stop(self):
        self.stopping.set()
        self.join(30)
        assert not self.is_alive() and self.error is None, self.error


def test_kafka_python_and_librdkafka_members_share_one_group(broker):
    """Two kafka-python members (its own protocol code, JoinGroup v5 with MEMBER_ID_REQUIRED)
    and one librdkafka member split a topic; when a kafka-python member leaves, the others take
    its partitions with nothing lost or repeated."""
    topic, group = "mixed", "mixed-members"
    h.create_topic(broker.bootstrap, topic, PARTITIONS)
    kps = [KafkaPythonMember(broker.bootstrap, topic, group) for _ in range(2)]
    for kp in kps:
        kp.start()
    rd = group_consumer(broker.bootstrap, group)
    rd.subscribe([topic])
    rd_values = []

    def assignments(members):
        return [kp.assigned for kp in members] + [{tp.partition for tp in rd.assignment()}]

    def poll_rd():
        m = rd.poll(0.1)
        if m is not None and m.error() is None:
            rd_values.append(m.value().decode())

    def settle(members, what):
        deadline = time.monotonic() + 60
        while True:
            split = assignments(members)
            if all(split) and set().union(*split) == set(range(PARTITIONS)) \
                    and sum(map(len, split)) == PARTITIONS:
                return split
            assert time.monotonic() < deadline, f"{what}: {split} {broker.http_get('/v1/groups')}"
            poll_rd()

    settle(kps, "every member gets its own partitions")
    produce(broker.bootstrap, topic, 300)
    deadline = time.monotonic() + 60
    while len(rd_values) + sum(len(kp.values) for kp in kps) < 300:
        assert time.monotonic() < deadline, "not every record arrived"
        poll_rd()
    values = sorted(rd_values + [v for kp in kps for v in kp.values])
    assert values == sorted(f"v{i}" for i in range(300)), "each record exactly once"
    assert all(kp.values for kp in kps) and rd_values, "a member read nothing"
    rd.commit(asynchronous=False)
    # Wait until the kafka-python members committed what they read.
    deadline = time.monotonic() + 30
    while True:
        status, body = broker.http_get("/v1/groups")
        [described] = [g for g in json.loads(body)["groups"] if g["group_id"] == group]
        if sum(o["committed_offset"] for o in described["offsets"]) == 300:
            break
        assert time.monotonic() < deadline, f"commits missing: {described['offsets']}"
        poll_rd()
    kps[0].stop()          # commits, then leaves the group
    rest = kps[1:]
    settle(rest, "the leaver's partitions move to the others")
    before = len(rd_values) + len(rest[0].values)
    produce(broker.bootstrap, topic, 120, start=300)
    deadline = time.monotonic() + 60
    while len(rd_values) + len(rest[0].values) < before + 120:
        assert time.monotonic() < deadline, "not every later record arrived"
        poll_rd()
    later = sorted((rd_values + rest[0].values))
    assert later == sorted([v for v in values if v not in kps[0].values] +
                           [f"v{i}" for i in range(300, 420)]), "after a leave, lost or repeated"
    rest[0].stop()
    rd.close()


def test_kafka_python_sticky_members_split_a_topic(broker):
    """kafka-python's (eager) sticky assignor: two members share six partitions, each record
    read once."""
    from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
    topic, group = "sticky", "sticky-members"
    h.create_topic(broker.bootstrap, topic, PARTITIONS)
    members = [KafkaPythonMember(broker.bootstrap, topic, group,
                                 partition_assignment_strategy=[StickyPartitionAssignor])
               for _ in range(2)]
    for m in members:
        m.start()
    deadline = time.monotonic() + 60
    while not (all(m.assigned for m in members)
               and sum(len(m.assigned) for m in members) == PARTITIONS
               and set().union(*(m.assigned for m in members)) == set(range(PARTITIONS))):
        assert time.monotonic() < deadline, [m.assigned for m in members]
        time.sleep(0.1)
    produce(broker.bootstrap, topic, 120)
    deadline = time.monotonic() + 60
    while sum(len(m.values) for m in members) < 120:
        assert time.monotonic() < deadline, "not every record arrived"
        time.sleep(0.1)
    for m in members:
        m.stop()
    assert sorted(v for m in members for v in m.values) == sorted(f"v{i}" for i in range(120))
    assert all(m.values for m in members)


def test_admin_tools_list_describe_and_delete_groups(broker):
    from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions
    topic = "admin-groups"
    h.create_topic(broker.bootstrap, topic, PARTITIONS)
    produce(broker.bootstrap, topic, 10)
    member = group_consumer(broker.bootstrap, "described")
    member.subscribe([topic])
    assert len(drain([member], 10)[0]) == 10
    member.commit(asynchronous=False)
    admin = h.admin(broker.bootstrap)
    listed = {g.group_id: g for g in admin.list_consumer_groups().result(15).valid}
    assert "described" in listed
    desc = admin.describe_consumer_groups(["described"])["described"].result(15)
    assert desc.state == ConsumerGroupState.STABLE and len(desc.members) == 1
    offsets = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions("described")])["described"].result(15)
    assert sum(tp.offset for tp in offsets.topic_partitions if tp.offset >= 0) == 10
    member.close()
    admin.delete_consumer_groups(["described"])["described"].result(15)
    listed = {g.group_id for g in admin.list_consumer_groups().result(15).valid}
    assert "described" not in listed


def test_kcat_balanced_consumer(broker):
    topic = "kcat-group"
    h.create_topic(broker.bootstrap, topic, PARTITIONS)
    produce(broker.bootstrap, topic, 8)
    out = subprocess.run(["kcat", "-b", broker.bootstrap, "-G", "kcat-members", topic, "-e",
                          "-o", "beginning", "-f", "%s\\n"],
                         capture_output=True, timeout=60, check=True)
    assert sorted(out.stdout.decode().split()) == sorted(f"v{i}" for i in range(8))


def test_static_member_restart_keeps_its_partitions_without_a_rebalance(broker):
    import json
    topic, group = "static", "static-group"
    h.create_topic(broker.bootstrap, topic, PARTITIONS)
    produce(broker.bootstrap, topic, 60)

    def describe():
        status, body = broker.http_get("/v1/groups")
        assert status == 200
        [g] = [g for g in json.loads(body)["groups"] if g["group_id"] == group]
        return g

    pod = group_consumer(broker.bootstrap, group, **{"group.instance.id": "pod-0"})
    other = group_consumer(broker.bootstrap, group)
    for c in (pod, other):
        c.subscribe([topic])
    drain([pod, other], 60)
    before = describe()
    assert before["state"] == "Stable" and len(before["members"]) == 2
    pod_partitions = {tp.partition for tp in pod.assignment()}
    other_partitions = {tp.partition for tp in other.assignment()}
    assert pod_partitions and other_partitions
    pod.close()                 # a static member leaves no LeaveGroup behind (KIP-345)
    restarted = group_consumer(broker.bootstrap, group, **{"group.instance.id": "pod-0"})
    restarted.subscribe([topic])
    deadline = time.monotonic() + 30
    while not restarted.assignment():
        assert time.monotonic() < deadline, "the restarted static member got no assignment"
        restarted.poll(0.1)
        other.poll(0.1)
    after = describe()
    assert after["generation"] == before["generation"], "a rebalance happened"
    assert {tp.partition for tp in restarted.assignment()} == pod_partitions
    assert {tp.partition for tp in other.assignment()} == other_partitions
    restarted.close()
    other.close()


class CallbackMember:
    """A confluent-kafka member whose rebalance callbacks are recorded in order, as
    ("assign" | "revoke", sorted partitions); with cooperative-sticky they are incremental."""

    def __init__(self, bootstrap, topic, group, **conf):
        self.consumer = group_consumer(bootstrap, group, **conf)
        self.calls = []
        self.values = []
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer, partitions):
        self.calls.append(("assign", sorted(tp.partition for tp in partitions)))

    def _on_revoke(self, consumer, partitions):
        self.calls.append(("revoke", sorted(tp.partition for tp in partitions)))

    def poll(self):
        m = self.consumer.poll(0.1)
        if m is not None and m.error() is None:
            self.values.append(m.value().decode())

    def owned(self):
        return {tp.partition for tp in self.consumer.assignment()}


def test_cooperative_sticky_newcomer_gets_nothing_until_the_owner_revokes(broker):
    """KIP-429 as Kafka runs it with librdkafka: a second cooperative-sticky member joining a
    stable group first completes a rebalance with an EMPTY assignment (the first member keeps
    what it may keep and gives up the rest, assigned to nobody in that generation), and only a
    second rebalance, once the first member revoked, hands it the moved partitions."""
    topic, group = "coop-moves", "coop-movers"
    h.create_topic(broker.bootstrap, topic, PARTITIONS)
    conf = {"partition.assignment.strategy": "cooperative-sticky"}
    first = CallbackMember(broker.bootstrap, topic, group, **conf)

    def wait_for(condition, what, members):
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline, \
                f"{what}: {[m.calls for m in members]} {broker.http_get('/v1/groups')}"
            for m in members:
                m.poll()

    wait_for(lambda: first.owned() == set(range(PARTITIONS)), "the first member owns all", [first])
    assert first.calls == [("assign", list(range(PARTITIONS)))]
    second = CallbackMember(broker.bootstrap, topic, group, **conf)
    both = [first, second]

    def settled():
        split = [m.owned() for m in both]
        return (all(split) and set().union(*split) == set(range(PARTITIONS))
                and sum(map(len, split)) == PARTITIONS
                and any(kind == "assign" and parts for kind, parts in second.calls))

    wait_for(settled, "the partitions are shared", both)
    assert first.values == [] and second.values == [], "a record before anything was produced"
    moved = sorted(second.owned())
    # The newcomer's first rebalance gives it nothing; a later one the moved partitions.
    assigns = [parts for kind, parts in second.calls if kind == "assign"]
    assert assigns[0] == [], f"first assignment of the newcomer is not empty: {second.calls}"
    assert sorted(p for parts in assigns for p in parts) == moved, second.calls
    assert all(kind == "assign" for kind, _ in second.calls), second.calls
    # The first member gives up exactly the moved partitions, incrementally, and gains nothing.
    assert [parts for kind, parts in first.calls if kind == "revoke"] == [moved], first.calls
    assert [parts for kind, parts in first.calls[1:] if kind == "assign" and parts] == [], first.calls
    # Membership is stable now: every record is read once.
    produce(broker.bootstrap, topic, 120)
    deadline = time.monotonic() + 60
    while len(first.values) + len(second.values) < 120:
        assert time.monotonic() < deadline, "not every record arrived"
        for m in both:
            m.poll()
    assert sorted(first.values + second.values) == sorted(f"v{i}" for i in range(120))
    assert first.values and second.values, "a member read nothing"
    for m in both:
        m.consumer.close()
