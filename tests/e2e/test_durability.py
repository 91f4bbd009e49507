"""Acknowledged data survives crashes.

A confluent-kafka producer (acks=all) produces records with unique ids while the broker is killed
with SIGKILL three times and restarted on the same data dir. After the last restart the whole log
is read back and checked:

  1. every acknowledged record is present at exactly the partition/offset its delivery report
     gave (nothing acknowledged is lost or moved, no acknowledged offset is reused);
  2. offsets of every partition are contiguous from 0 to the high watermark (no gaps);
  3. every record in the log is one the producer sent (no garbage);
  4. with an idempotent producer no value appears twice: a request the broker stored but could
     not answer before it died is resent, and the restarted broker recognises it from the
     producer state committed with it. Without idempotence a value may appear twice only if
     the producer could legitimately have sent it twice: its delivery failed, or it was still in
     flight when the broker was killed (its produce() call came before a kill and its delivery
     report after it). A value produced and acknowledged between two kills appears once;
  5. the producer made progress after every restart, and in the end every record was delivered
     (with message.timeout.ms far above the restart time, a healthy broker fails none).
"""

import collections
import time

import pytest
from confluent_kafka import KafkaError

import helpers as h

PARTITIONS = 3
KILLS = 3


@pytest.mark.timeout(300)
@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "plain"])
def test_acked_records_survive_sigkill(broker, idempotent):
    topic = "durable"
    h.create_topic(broker.bootstrap, topic, PARTITIONS)

    epoch = 0                 # number of kills so far
    produced_epoch = {}       # value -> epoch of its produce() call
    acked = {}                # value -> (partition, offset)
    acked_epoch = {}          # value -> epoch in which its delivery report was seen
    failed = {}               # value -> KafkaError

    def on_delivery(err, msg):
        v = msg.value().decode()
        if err is None:
            acked[v] = (msg.partition(), msg.offset())
            acked_epoch[v] = epoch
        else:
            failed[v] = err

    p = h.producer(broker.bootstrap, **{
        "acks": "all",
        "enable.idempotence": idempotent,
        "message.timeout.ms": 30000,
        "linger.ms": 5,
        "retry.backoff.ms": 50,
        "retry.backoff.max.ms": 500,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "max.in.flight.requests.per.connection": 5,
    })
    seq = 0

    def produce_for(seconds):
        nonlocal seq
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(20):
                v = f"id-{seq:07d}"
                try:
                    p.produce(topic, value=v.encode(), partition=seq % PARTITIONS,
                              on_delivery=on_delivery)
                except BufferError:
                    break
                produced_epoch[v] = epoch
                seq += 1
            p.poll(0.01)

    acks_per_epoch = []
    for _ in range(KILLS):
        before = len(acked)
        produce_for(1.5)
        acks_per_epoch.append(len(acked) - before)
        broker.kill9()
        epoch += 1
        produce_for(0.3)       # keep producing into the client's queue while the broker is down
        broker.start()
    before = len(acked)
    produce_for(1.5)
    remaining = p.flush(60)
    acks_per_epoch.append(len(acked) - before)
    assert remaining == 0, f"{remaining} records neither delivered nor failed after 60 s"
    assert len(acked) + len(failed) == len(produced_epoch), "missing delivery reports"
    assert all(n > 0 for n in acks_per_epoch), f"no progress in some epoch: {acks_per_epoch}"

    recs = h.read_partitions(broker.bootstrap, topic, range(PARTITIONS), timeout=60)
    print(f"produced {len(produced_epoch)}, acked {len(acked)}, failed {len(failed)}, "
          f"acks per epoch {acks_per_epoch}, log size {len(recs)}")
    log = {part: [] for part in range(PARTITIONS)}
    for part, prs in h.by_partition(recs).items():
        # 2. contiguous offsets
        offsets = [r.offset for r in prs]
        assert offsets == list(range(len(prs))), (
            f"partition {part}: offsets not contiguous from 0 "
            f"(first gap near {next(i for i, o in enumerate(offsets) if o != i)})")
        log[part] = [r.value.decode() for r in prs]

    # 1. every acknowledged record at its acknowledged position
    lost = []
    for v, (part, off) in acked.items():
        if off >= len(log[part]) or log[part][off] != v:
            lost.append((v, part, off, log[part][off] if off < len(log[part]) else None))
    assert not lost, (f"{len(lost)} of {len(acked)} acknowledged records missing or moved, e.g. "
                      f"(value, partition, offset, found): {lost[:5]}")

    # 3. no garbage
    counts = collections.Counter(v for part in log.values() for v in part)
    unknown = [v for v in counts if v not in produced_epoch]
    assert not unknown, f"records the producer never sent: {unknown[:5]}"

    # 4. duplicates only where a retry across a crash (or a failed delivery) explains them
    def may_duplicate(v):
        return v in failed or acked_epoch.get(v, epoch) != produced_epoch[v]

    dups = {v: n for v, n in counts.items() if n > 1}
    print(f"duplicated values: {len(dups)}, in flight across a kill: "
          f"{sum(1 for v in produced_epoch if may_duplicate(v))}")
    bad_dups = [(v, n) for v, n in dups.items() if idempotent or not may_duplicate(v)]
    assert not bad_dups, f"duplicated although never in flight across a crash: {bad_dups[:5]}"

    # 5. availability: nothing failed for good
    kinds = collections.Counter(e.name() if isinstance(e, KafkaError) else str(e)
                                for e in failed.values())
    assert not failed, f"{len(failed)} deliveries failed: {dict(kinds)}"
    assert len(acked) > 1000, f"only {len(acked)} records acknowledged; test too weak"


def test_graceful_stop_keeps_acked_data(broker):
    topic = "graceful"
    h.create_topic(broker.bootstrap, topic, 2)
    p = h.producer(broker.bootstrap, acks="1")
    values = [f"g-{i}".encode() for i in range(500)]
    reports = h.produce_and_wait(p, topic, values)
    assert all(err is None for err, _ in reports)
    code = broker.stop()
    assert code in (0, -15), f"unexpected exit code {code} after SIGTERM"
    broker.start()
    recs = h.read_partitions(broker.bootstrap, topic, range(2))
    assert {(m.partition(), m.offset(), m.value()) for _, m in reports} == \
        {(r.partition, r.offset, r.value) for r in recs}
