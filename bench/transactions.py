#!/usr/bin/env python3
"""Transactions benchmark on the embedded store (run by hand, never in CI).

1. Transactional produce: for transactions of 1, 100 and 10,000 records of SIZE bytes over
   PARTITIONS partitions, one producer runs transactions back to back; throughput, and the
   commit latency (commit_transaction's wall time: flushing what is queued, EndTxn, and the
   coordinator writing the markers) p50 / p99, and the metadata-store requests per transaction
   (from the broker's /v1/stats counters, less the idle broker's own rate over the same time:
   controller passes, membership, marker rescans, the embedded compactor).
2. Consume: everything produced in step 1 (plus aborted transactions mixed in) read from the
   start by a read_uncommitted and a read_committed consumer, alternately, three times each:
   medians and their ratio (target: read_committed within 10 %).

    cargo build --release --bin skiff
    .venv/bin/python bench/transactions.py
"""

import argparse
import atexit
import json
import shutil
import statistics
import urllib.request
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from produce_consume import MIB, cpu_seconds, percentile, start_broker  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402


def transactional_run(bootstrap, topic, partitions, size, per_txn, transactions, abort_every):
    producer = Producer({
        "bootstrap.servers": bootstrap, "transactional.id": f"bench-{per_txn}",
        "linger.ms": 5, "batch.size": 1_000_000, "queue.buffering.max.kbytes": 1_048_576,
    })
    producer.init_transactions(30)
    payload = b"x" * size
    latencies, committed = [], 0
    started = time.perf_counter()
    for t in range(transactions):
        producer.begin_transaction()
        for i in range(per_txn):
            while True:
                try:
                    producer.produce(topic, payload, partition=(t + i) % partitions)
                    break
                except BufferError:
                    producer.poll(0.01)
        began = time.perf_counter()
        if abort_every and t % abort_every == abort_every - 1:
            producer.flush(60)
            producer.abort_transaction(60)
        else:
            producer.commit_transaction(60)
            committed += per_txn
        latencies.append((time.perf_counter() - began) * 1000)
    elapsed = time.perf_counter() - started
    return elapsed, latencies, committed


def metadata_counts(http: str) -> dict:
    with urllib.request.urlopen(f"http://{http}/v1/stats", timeout=5) as response:
        return json.load(response)["metadata_store"]


def metadata_per_txn(before: dict, after: dict, idle_per_s: dict, elapsed: float, transactions: int) -> str:
    net = {k: (after[k] - before[k] - idle_per_s[k] * elapsed) / transactions
           for k in ("txns", "txn_ops", "gets", "ranges")}
    return (f"metadata per txn: {net['txns']:.1f} txns ({net['txn_ops']:.0f} ops), "
            f"{net['gets']:.1f} gets, {net['ranges']:.1f} ranges")


def consume_all(bootstrap, topic, partitions, isolation, expected):
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "bench-unused", "enable.auto.commit": False,
        "isolation.level": isolation, "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 8_388_608,
    })
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = 0
    started = time.perf_counter()
    deadline = time.monotonic() + 300
    while seen < expected and time.monotonic() < deadline:
        for message in consumer.consume(10_000, timeout=1.0):
            if message.error() is None:
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    if seen < expected:
        raise SystemExit(f"{isolation}: consumed {seen} of {expected}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skiff", default="target/release/skiff")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--flush-linger-ms", type=int, default=250)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="skiff-bench-txn-"))
    # Gigabytes of objects per run: gone at exit, however the run ends.
    atexit.register(shutil.rmtree, workdir, True)
    log = open(workdir / "skiff.log", "wb")
    proc, bootstrap, http = start_broker(args.skiff, workdir / "data", args.flush_linger_ms, log)
    try:
        topic = "bench-txn"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
        time.sleep(1)
        idle_before, idle_seconds = metadata_counts(http), 5.0
        time.sleep(idle_seconds)
        idle_after = metadata_counts(http)
        idle_per_s = {k: (idle_after[k] - idle_before[k]) / idle_seconds for k in idle_after}
        total_committed = total_all = 0
        print(f"flush linger {args.flush_linger_ms} ms, {args.size} B records, "
              f"{args.partitions} partitions")
        for per_txn, transactions in [(1, 100), (100, 60), (10_000, 10)]:
            cpu_before, meta_before = cpu_seconds(proc.pid), metadata_counts(http)
            elapsed, latencies, committed = transactional_run(
                bootstrap, topic, args.partitions, args.size, per_txn, transactions, 0)
            cpu, meta_after = cpu_seconds(proc.pid) - cpu_before, metadata_counts(http)
            mib = per_txn * transactions * args.size / MIB
            total_committed += committed
            total_all += per_txn * transactions
            print(f"txn of {per_txn:>6} records x {transactions:>3}: {mib / elapsed:7.2f} MiB/s, "
                  f"{transactions / elapsed:6.1f} txn/s, commit p50 {percentile(latencies, 0.50):6.0f} ms "
                  f"p99 {percentile(latencies, 0.99):6.0f} ms, broker CPU {cpu / transactions * 1000:.1f} ms/txn")
            print("    " + metadata_per_txn(meta_before, meta_after, idle_per_s, elapsed, transactions))
        # Aborted transactions mixed in, so read_committed has records to drop.
        _, _, committed = transactional_run(bootstrap, topic, args.partitions, args.size, 100, 40, 4)
        total_committed += committed
        total_all += 100 * 40
        times = {"read_uncommitted": [], "read_committed": []}
        for _ in range(3):
            for isolation, expected in [("read_uncommitted", total_all),
                                        ("read_committed", total_committed)]:
                times[isolation].append(
                    consume_all(bootstrap, topic, args.partitions, isolation, expected))
        rates = {k: total_all * args.size / MIB / statistics.median(v) for k, v in times.items()}
        print(f"consume {total_all} records ({total_all - total_committed} aborted): "
              f"read_uncommitted {rates['read_uncommitted']:.1f} MiB/s, read_committed "
              f"{rates['read_committed']:.1f} MiB/s of the log (medians of 3), ratio "
              f"{rates['read_committed'] / rates['read_uncommitted']:.2f}")
    finally:
        proc.terminate()
        proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
