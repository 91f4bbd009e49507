"""A broker on the cluster stores: metadata in a real etcd, objects in an S3-compatible bucket."""

import time

import pytest

import helpers as h
from servers import S3Door, broker_args


@pytest.mark.parametrize("unsigned", [None, "true"])
def test_produce_consume_through_etcd_and_s3(start_broker, etcd, s3, unsigned):
    # Over plain HTTP object bodies are signed unless --s3-unsigned-payload says otherwise
    # (the S3 server checks the SHA-256 the signature names).
    extra = ["--s3-unsigned-payload", unsigned] if unsigned else []
    b = start_broker(args=broker_args(etcd, s3) + extra, flush_linger_ms=50)
    assert f"unsigned_payload=Some({unsigned or 'false'})" in b.log_tail(200)
    topic = "on-s3"
    h.create_topic(b.bootstrap, topic, 4)
    p = h.producer(b.bootstrap)
    delivered = []
    for i in range(400):
        p.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=i % 4,
                  on_delivery=lambda err, msg: delivered.append((err, msg.partition(), msg.offset())))
    assert p.flush(30) == 0
    assert all(err is None for err, _, _ in delivered), delivered[:3]
    assert len(delivered) == 400

    wal = s3.keys("cluster/wal/")
    assert wal, "no flush objects in the bucket"
    assert len(wal) == b.stats()["objects_written"]
    assert len(wal) < 100, f"{len(wal)} objects for 400 records: not batching partitions"

    recs = h.read_partitions(b.bootstrap, topic, range(4))
    assert sorted(r.value for r in recs) == sorted(f"v{i}".encode() for i in range(400))

    # The broker keeps nothing locally: a fresh data directory on the same etcd and bucket
    # serves the same log.
    b.stop()
    fresh = start_broker(args=broker_args(etcd, s3), name="fresh")
    h.wait_leaders(fresh.bootstrap, topic)
    again = h.read_partitions(fresh.bootstrap, topic, range(4))
    assert sorted(r.value for r in again) == sorted(r.value for r in recs)


def test_a_frozen_bucket_fails_produces_retriably_and_loses_nothing(start_broker, etcd, s3):
    b = start_broker(args=broker_args(etcd, s3), flush_linger_ms=20)
    topic = "s3-outage"
    h.create_topic(b.bootstrap, topic, 1)
    acked, failed = {}, []

    def on_delivery(err, msg):
        if err is None:
            acked[msg.value()] = msg.offset()
        else:
            failed.append(err)

    p = h.producer(b.bootstrap, **{"message.timeout.ms": 60000, "retry.backoff.ms": 100})
    for i in range(50):
        p.produce(topic, value=f"before-{i}".encode(), on_delivery=on_delivery)
    assert p.flush(30) == 0
    s3.freeze()
    try:
        for i in range(50):
            p.produce(topic, value=f"during-{i}".encode(), on_delivery=on_delivery)
        p.poll(5)   # uploads time out meanwhile; the producer retries
    finally:
        s3.thaw()
    assert p.flush(60) == 0
    assert not failed, failed[:3]
    assert len(acked) == 100
    recs = h.read_partitions(b.bootstrap, topic, [0])
    by_value = {r.value: r.offset for r in recs}
    for value, offset in acked.items():
        assert by_value.get(value) == offset, f"{value!r} acknowledged at {offset}, stored at {by_value.get(value)}"
    offsets = [r.offset for r in recs]
    assert offsets == list(range(100)), "gaps or duplicates: no commit can have been ambiguous"
    assert b.stats()["upload_failures"] > 0, "the outage never reached the broker"
    assert b.is_running()


def test_s3_server_stopped_and_restarted_mid_produce(start_broker, etcd, s3):
    """The S3 endpoint goes away (connections reset, then refused) while an idempotent acks=all
    producer keeps producing, and comes back 4 s later: every record is acknowledged once, at the
    offset it is stored at, with no gap and no duplicate."""
    door = S3Door(s3.port).start()
    args = [a if a != s3.endpoint else door.endpoint for a in broker_args(etcd, s3)]
    b = start_broker(args=args, flush_linger_ms=20)
    topic = "s3-restart"
    h.create_topic(b.bootstrap, topic, 2)
    acked, failed = {}, []

    def on_delivery(err, msg):
        if err is None:
            acked[msg.value()] = (msg.partition(), msg.offset())
        else:
            failed.append(err)

    p = h.producer(b.bootstrap, **{"enable.idempotence": True, "message.timeout.ms": 90000,
                                   "retry.backoff.ms": 100, "retry.backoff.max.ms": 1000})
    sent = 0

    def produce_for(seconds):
        nonlocal sent
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            p.produce(topic, value=f"r{sent:06d}".encode(), partition=sent % 2,
                      on_delivery=on_delivery)
            sent += 1
            p.poll(0.005)

    try:
        produce_for(1)
        door.stop()
        produce_for(4)
    finally:
        door.start()
    produce_for(1)
    assert p.flush(90) == 0
    assert not failed, failed[:3]
    assert len(acked) == sent
    assert b.stats()["upload_failures"] > 0, "the outage never reached the broker"
    recs = h.read_partitions(b.bootstrap, topic, [0, 1])
    stored = {}
    for r in recs:
        stored.setdefault(r.value, []).append((r.partition, r.offset))
    for value, where in acked.items():
        assert stored.get(value) == [where], f"{value!r} acknowledged at {where}, stored at {stored.get(value)}"
    assert len(recs) == sent, "records stored twice or never acknowledged"
    for part in (0, 1):
        offsets = [r.offset for r in recs if r.partition == part]
        assert offsets == list(range(len(offsets))), f"partition {part}: gaps"
    assert b.is_running()
    door.stop()


def test_the_index_in_etcd_stays_bounded(start_broker, etcd, s3):
    from servers import etcd_keys
    fanout = 4
    b = start_broker(args=broker_args(etcd, s3) + ["--index-rollup-fanout", str(fanout)],
                     flush_linger_ms=1)
    topic = "long-log"
    h.create_topic(b.bootstrap, topic, 1)
    # acks=all with one record per request and linger 0: one flush, one index entry, per record.
    p = h.producer(b.bootstrap, **{"linger.ms": 0, "max.in.flight.requests.per.connection": 1})
    count = 300
    for i in range(count):
        p.produce(topic, value=f"v{i}".encode(), partition=0)
        p.flush(10)
    keys, size = etcd_keys(etcd, f"/skiff/index/{topic}/")
    rollups, rollup_size = etcd_keys(etcd, f"/skiff/rollups/{topic}/")
    print(f"{count} flushes: {keys} tail keys ({size} B), {rollups} rollup keys ({rollup_size} B)")
    assert b.stats()["flushes"] >= count // 2, "records were not flushed one by one"
    assert keys <= 2 * fanout + 1 and rollups <= 2 * fanout + 1
    assert s3.keys("cluster/index/"), "no index objects in the bucket"
    recs = h.read_partitions(b.bootstrap, topic, [0])
    assert [r.value for r in recs] == [f"v{i}".encode() for i in range(count)]
    assert [r.offset for r in recs] == list(range(count))


@pytest.mark.timeout(180)
def test_offsets_of_idle_groups_expire_and_live_ones_stay(start_broker, etcd, s3):
    """offsets.retention.minutes: a group without members whose last commit is older than the
    retention loses its offsets, but only after the coordinator itself has seen it empty for a
    whole retention (a coordinator that just started cannot know how long it has been empty);
    a recent commit, or a group with a live member, keeps them."""
    import json
    from confluent_kafka import Consumer, TopicPartition
    from servers import etcd_keys, etcd_put
    topic = "retained"
    old = json.dumps({"offset": 5, "leader_epoch": -1, "metadata": None,
                      "commit_timestamp_ms": 1_000}).encode()
    # Two groups whose last commit was long ago (staged in etcd: the retention is a minute).
    for group in ("idle", "busy"):
        etcd_put(etcd, f"/skiff/groups/{group}/offsets/{topic}/0000000000", old)
    b = start_broker(args=broker_args(etcd, s3) + [
        "--offsets-retention-minutes", "1", "--offsets-retention-check-interval-ms", "300",
        "--group-initial-rebalance-delay-ms", "0"])
    started = time.monotonic()
    h.create_topic(b.bootstrap, topic, 1)
    # "busy" has a live member; "recent" committed just now.
    member = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "busy",
                       "session.timeout.ms": 6000, "enable.auto.commit": False})
    member.subscribe([topic])
    deadline = time.monotonic() + 30
    while not member.assignment():
        assert time.monotonic() < deadline, "the member never joined"
        member.poll(0.1)
    while time.monotonic() - started < 5:
        member.poll(0.1)
    assert etcd_keys(etcd, "/skiff/groups/idle/")[0] == 1, "expired before a retention passed"
    deadline = started + 90
    committed_recent = False
    while etcd_keys(etcd, "/skiff/groups/idle/")[0] != 0:
        assert time.monotonic() < deadline, "the idle group's offsets never expired"
        member.poll(0.2)
        if not committed_recent and time.monotonic() - started > 45:
            # A group without members that committed well within the retention.
            recent = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "recent"})
            recent.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
            recent.close()
            committed_recent = True
    assert committed_recent
    assert time.monotonic() - started >= 55, "expired sooner than a retention after start-up"
    assert etcd_keys(etcd, "/skiff/groups/busy/")[0] == 1, "a live group lost its offsets"
    assert etcd_keys(etcd, "/skiff/groups/recent/")[0] == 1, "a recent commit expired"
    member.close()


def test_bucket_credentials_from_the_aws_environment(start_broker, etcd, s3):
    # No key flags: the standard AWS_* variables give them (as a pod's environment or a
    # Kubernetes Secret mounted as variables would); without them the client would ask the
    # cloud's instance metadata, which is not here, and every upload would fail.
    args = broker_args(etcd, s3)
    for flag in ("--s3-access-key-id", "--s3-secret-access-key"):
        at = args.index(flag)
        del args[at:at + 2]
    b = start_broker(args=args, start=False)
    b.extra_env.update({"AWS_ACCESS_KEY_ID": "env-key-id",
                        "AWS_SECRET_ACCESS_KEY": h.secret("env-Secr3t-access-key")})
    b.start()
    topic = "env-credentials"
    h.create_topic(b.bootstrap, topic, 1)
    values = [b"v%d" % i for i in range(20)]
    h.produce_and_wait(h.producer(b.bootstrap), topic, values, partition=0)
    assert s3.keys("cluster/wal/"), "no flush objects in the bucket"
    assert [r.value for r in h.read_partitions(b.bootstrap, topic, [0])] == values
