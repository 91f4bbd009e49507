"""Transactions across three brokers (one etcd, one S3-compatible bucket) while brokers die:
a consume-transform-produce loop with its offsets sent in each transaction must produce every
input record exactly once in the output, as read_committed consumers see it, when (a) the
leader of output partitions is killed -9 mid-transaction, (b) the transaction coordinator is
killed -9 right after EndTxn was answered (its markers may still be pending: the next
coordinator finishes them), and (c) the client dies and a new instance with the same
transactional id takes over."""

import signal
import time

import pytest
from confluent_kafka import KafkaException, TopicPartition

import helpers as h
import kafka_wire as w
from servers import broker_args
from test_cluster import leaders, live_ids, wait_for
from test_transactions import read_values, txn_producer

SESSION_MS = 2000
PARTITIONS = 3
N = 600


@pytest.fixture
def cluster(start_broker, etcd, s3):
    brokers = []
    for node in (1, 2, 3):
        brokers.append(start_broker(
            name=f"node{node}", flush_linger_ms=100,
            args=broker_args(etcd, s3) + [
                "--node-id", str(node), "--broker-session-timeout-ms", str(SESSION_MS),
                "--transaction-abort-timed-out-transaction-cleanup-interval-ms", "200"]))
    return brokers


def coordinator_of(broker, key: str, key_type: int) -> int:
    """The node id FindCoordinator (v1) names for `key` (key type 0: group, 1: transaction)."""
    with w.Conn.to(broker) as conn:
        _, payload = conn.request(10, 1, w.string(key) + w.i8(key_type))
    r = w.Reader(payload)
    r.i32()  # correlation id
    r.i32()  # throttle
    error = r.i16()
    r.string()
    node = r.i32()
    assert error == 0, f"FindCoordinator error {error}"
    return node


def transaction_coordinator(broker, txn_id: str) -> int:
    return coordinator_of(broker, txn_id, 1)


def group_coordinated_elsewhere(broker, victim: int) -> str:
    """A group id whose coordinator is not `victim`. librdkafka 2.16 caches the group's
    coordinator for send_offsets_to_transaction and waits for it without asking again once it
    left the cluster's metadata (seen here: a minute and more), so the tests kill other brokers
    than the group's coordinator; a group coordinator's death is covered by test_groups."""
    while True:
        group = h.unique_topic("g")
        if coordinator_of(broker, group, 0) != victim:
            return group


CLIENT = {"message.timeout.ms": 60000, "transaction.timeout.ms": 60000,
          "retry.backoff.ms": 50, "retry.backoff.max.ms": 500,
          "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500,
          "topic.metadata.refresh.interval.ms": 1000, "socket.timeout.ms": 10000}


class Pipeline:
    """A consume-transform-produce loop, recovering as a Kafka Streams-like application does:
    abort and rewind to the committed offsets on an abortable error, retry a retriable commit,
    and start a new instance (same transactional id) after a fatal one."""

    def __init__(self, bootstrap, source, sink, group, txn_id):
        self.bootstrap, self.source, self.sink, self.txn_id = bootstrap, source, sink, txn_id
        self.c = h.consumer(bootstrap, **{"group.id": group, "isolation.level": "read_committed",
                                          "enable.auto.commit": False, **{
                                              k: v for k, v in CLIENT.items()
                                              if k.startswith(("retry", "reconnect", "topic"))}})
        self.partitions = [TopicPartition(source, p) for p in range(PARTITIONS)]
        self.p = txn_producer(bootstrap, txn_id, **CLIENT)
        self.commits = 0
        self.restarts = 0
        # The next offset to process per partition: the group's committed offsets at first.
        self.next = {p: 0 for p in range(PARTITIONS)}
        self.c.assign([TopicPartition(source, p, 0) for p in range(PARTITIONS)])
        self.rewind()

    def rewind(self):
        for tp in self.c.committed(self.partitions, timeout=30):
            self.next[tp.partition] = max(tp.offset, 0)
            self.c.seek(TopicPartition(self.source, tp.partition, self.next[tp.partition]))

    def new_instance(self):
        self.restarts += 1
        self.p = txn_producer(self.bootstrap, self.txn_id, **CLIENT)

    def commit(self) -> bool:
        """Commits the open transaction; False when it had to be aborted (the input rewound)."""
        while True:
            try:
                offsets = [TopicPartition(self.source, p, o) for p, o in self.next.items()]
                self.p.send_offsets_to_transaction(offsets, self.c.consumer_group_metadata(), 60)
                self.p.commit_transaction(60)
                self.commits += 1
                return True
            except KafkaException as e:
                error = e.args[0]
                if error.retriable():
                    time.sleep(0.2)
                    continue
                if error.txn_requires_abort():
                    self.p.abort_transaction(60)
                else:
                    self.new_instance()
                self.rewind()
                return False

    def run(self, highs, batch=25, timeout=180, between=None, mid=None):
        """`between` is called after each commit, `mid` halfway through each transaction once
        its records so far are acknowledged (written to their partitions, not yet committed)."""
        deadline = time.monotonic() + timeout
        self.p.begin_transaction()
        pending = 0
        while True:
            assert time.monotonic() < deadline, f"the pipeline did not finish: at {self.next}"
            m = self.c.poll(0.1)
            if m is not None and not m.error() and m.offset() >= self.next[m.partition()]:
                self.p.produce(self.sink, value=m.value().upper(), partition=m.partition())
                self.next[m.partition()] = m.offset() + 1
                pending += 1
                if mid and pending == batch // 2:
                    self.p.flush(60)
                    mid(self)
            done = all(self.next[p] >= highs[p] for p in range(PARTITIONS))
            if pending >= batch or (done and pending):
                self.commit()
                pending = 0
                if between:
                    between(self)
                self.p.begin_transaction()
            elif done:
                self.p.abort_transaction(30)
                return


def prepare(cluster, tag):
    source, sink = h.unique_topic(f"{tag}-in"), h.unique_topic(f"{tag}-out")
    h.create_topic(cluster[0].bootstrap, source, PARTITIONS)
    h.create_topic(cluster[0].bootstrap, sink, PARTITIONS)
    h.produce_and_wait(h.producer(cluster[0].bootstrap), source,
                       [f"v{i:05d}".encode() for i in range(N)])
    c = h.consumer(cluster[0].bootstrap)
    highs = {p: c.get_watermark_offsets(TopicPartition(source, p), timeout=10, cached=False)[1]
             for p in range(PARTITIONS)}
    c.close()
    assert sum(highs.values()) == N
    return source, sink, highs


def check_exactly_once(cluster, survivor, pipeline, sink, highs):
    out = read_values(survivor.bootstrap, sink, PARTITIONS, "read_committed", N, timeout=90,
                      settle=2.0)
    expected = sorted(f"V{i:05d}".encode() for i in range(N))
    assert len(out) == len(set(out)), "a record was produced twice"
    assert sorted(out) == expected, "records lost or invented"
    committed = pipeline.c.committed(pipeline.partitions, timeout=30)
    assert {tp.partition: tp.offset for tp in committed} == highs


def killer(victim_of, when_commits):
    """A `between` hook that kills -9 the broker `victim_of(pipeline)` names once."""
    state = {"done": False}

    def hook(pipeline):
        if not state["done"] and pipeline.commits >= when_commits:
            victim = victim_of(pipeline)
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(10)
            state["done"] = True
            state["victim"] = victim
    return hook, state


def test_exactly_once_when_an_output_leader_is_killed(cluster):
    source, sink, highs = prepare(cluster, "eos-leader")
    # A leader of output partitions that is not the transaction coordinator: a transactional id
    # is chosen for it (the output's leaders may all be one broker, which once was the
    # coordinator of the id the test had drawn).
    h.wait_leaders(cluster[0].bootstrap, sink)
    out_leaders = leaders(cluster[0], sink)
    for _ in range(50):
        txn_id = h.unique_topic("eos-leader-tid")
        coordinator = transaction_coordinator(cluster[0], txn_id)
        others = [n for n in out_leaders.values() if n != coordinator]
        if others:
            break
    else:
        raise AssertionError(f"every id is coordinated by the leaders {set(out_leaders.values())}")
    victim_node = others[0]
    bootstrap = ",".join(b.bootstrap for b in cluster if b is not cluster[victim_node - 1])
    group = group_coordinated_elsewhere(cluster[0], victim_node)
    pipeline = Pipeline(bootstrap, source, sink, group, txn_id)
    # Killed mid-transaction: the open transaction's records so far are in its partitions;
    # their new leader must load the open transaction with them, take the rest, and apply the
    # commit marker.
    hook, state = killer(lambda _: cluster[victim_node - 1], when_commits=3)
    pipeline.run(highs, mid=hook)
    assert state["done"]
    survivor = next(b for b in cluster if b.is_running())
    wait_for(lambda: victim_node not in live_ids(survivor), 30, "the dead broker's session to lapse")
    check_exactly_once(cluster, survivor, pipeline, sink, highs)


def test_exactly_once_when_the_coordinator_dies_after_end_txn(cluster):
    source, sink, highs = prepare(cluster, "eos-coord")
    txn_id = h.unique_topic("eos-coord-tid")
    coordinator = transaction_coordinator(cluster[0], txn_id)
    bootstrap = ",".join(b.bootstrap for b in cluster if b is not cluster[coordinator - 1])
    group = group_coordinated_elsewhere(cluster[0], coordinator)
    pipeline = Pipeline(bootstrap, source, sink, group, txn_id)
    # Killed right after a commit was answered: its markers may still be requests (they are
    # flushed at once, so often they are not), which the next coordinator must see through.
    # The unit test a_transaction_prepared_by_a_dead_coordinator_is_finished_by_the_next
    # covers that step deterministically.
    hook, state = killer(lambda _: cluster[coordinator - 1], when_commits=2)
    pipeline.run(highs, between=hook)
    assert state["done"]
    survivor = next(b for b in cluster if b.is_running())
    check_exactly_once(cluster, survivor, pipeline, sink, highs)


def test_exactly_once_when_the_client_dies_and_a_new_instance_takes_over(cluster):
    source, sink, highs = prepare(cluster, "eos-client")
    txn_id = h.unique_topic("eos-client-tid")
    group = h.unique_topic("g")
    first = Pipeline(cluster[0].bootstrap, source, sink, group, txn_id)
    # The first instance commits a few transactions, then dies with one open (never ended).
    first.p.begin_transaction()
    taken = 0
    while first.commits < 3:
        m = first.c.poll(0.1)
        if m is None or m.error():
            continue
        first.p.produce(sink, value=m.value().upper(), partition=m.partition())
        first.next[m.partition()] = m.offset() + 1
        taken += 1
        if taken % 25 == 0:
            first.commit()
            first.p.begin_transaction()
    for _ in range(30):
        m = first.c.poll(0.1)
        if m is not None and not m.error():
            first.p.produce(sink, value=m.value().upper(), partition=m.partition())
    first.p.flush(30)
    first.c.close()
    # ("dies": never heard from again.) A new instance fences it and resumes from the
    # committed offsets; the open transaction's records are aborted, never seen.
    second = Pipeline(cluster[1].bootstrap, source, sink, group, txn_id)
    second.run(highs)
    check_exactly_once(cluster, cluster[2], second, sink, highs)
