#!/usr/bin/env python3
"""Fetch from follower (KIP-392): what it costs a broker to serve partitions another broker leads.

Two brokers on a real etcd and an S3-compatible server (moto), in racks az-a (node 1) and az-b
(node 2), with `--replica-selector-class rack-aware`. A topic is produced through both leaders;
then the same data is consumed twice from the start — by a consumer that names no rack (each
leader serves its partitions) and by one in az-b (node 2 serves every partition, those node 1
leads from its replica views) — and tailed at a paced rate both ways; then a consumer in az-b
waits at the end with nothing produced, and nobody reads. Reported per phase: broker CPU per GiB
consumed, GETs per GiB, metadata-store requests per second, and for the tail the end-to-end
latency (producer's timestamp → consumer) p50/p99.

    bench/follower_fetch.py [--skiff BIN] [--count N] [--tail-rate R] [--tail-seconds S]
"""

import argparse
import atexit
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
sys.path.insert(0, str(HERE))
from servers import Etcd, MotoS3, broker_args  # noqa: E402
import produce_consume as pc  # noqa: E402
from cluster import leaders  # noqa: E402

GIB = 1024 ** 3
RACKS = {1: "az-a", 2: "az-b"}


def snapshot(brokers):
    return {node: (pc.cpu_seconds(proc.pid), pc.stats(http))
            for node, (proc, _, http) in brokers.items()}


def delta(before, after, seconds, gib):
    out = {}
    for node in before:
        (cpu0, s0), (cpu1, s1) = before[node], after[node]
        meta = lambda s: sum(s["metadata_store"][k] for k in ("gets", "ranges", "txns"))  # noqa: E731
        out[node] = {
            "cpu_s": round(cpu1 - cpu0, 2),
            "cpu_s_per_gib": round((cpu1 - cpu0) / gib, 2) if gib else None,
            "gets_per_gib": round((s1["object_store"]["gets"] - s0["object_store"]["gets"]) / gib)
            if gib else s1["object_store"]["gets"] - s0["object_store"]["gets"],
            "metadata_requests_per_s": round((meta(s1) - meta(s0)) / seconds, 1),
            "replica_reads": s1["replica_reads"] - s0["replica_reads"],
            "replica_view_loads": s1["replica_view_loads"] - s0["replica_view_loads"],
            # GETs that read several sections of one flush object for a fetch (0 on builds
            # without them).
            "prefetch_reads": s1.get("prefetch_reads", 0) - s0.get("prefetch_reads", 0),
            "sections_prefetched": s1.get("sections_prefetched", 0)
            - s0.get("sections_prefetched", 0),
            # Sections read alone, one GET each.
            "range_reads": s1["range_reads"] - s0["range_reads"],
        }
    return out


def catch_up(bootstrap, topic, partitions, count, rack):
    client = {"client.rack": rack} if rack else {}
    return pc.consume(bootstrap, topic, partitions, count, client)


def tail(bootstrap, topic, partitions, rate, seconds, rack):
    """A consumer at the end of the log while records arrive at `rate`; end-to-end latencies."""
    conf = {"bootstrap.servers": bootstrap, "group.id": "bench-unused",
            "enable.auto.commit": False, "fetch.wait.max.ms": 500}
    if rack:
        conf["client.rack"] = rack
    consumer = Consumer(conf)
    consumer.assign([TopicPartition(topic, p, -1) for p in range(partitions)])  # end
    # Positions resolved before producing.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(
            tp.offset >= 0 for tp in consumer.position(
                [TopicPartition(topic, p) for p in range(partitions)])):
        consumer.poll(0.1)
    latencies = []
    count = int(rate * seconds)
    done = threading.Event()

    def produce():
        pc.produce(bootstrap, topic, partitions, count, 1024, 5, rate)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    give_up = time.monotonic() + seconds + 60
    while len(latencies) < count and time.monotonic() < give_up:
        for m in consumer.consume(1000, timeout=0.5):
            if m.error() is None:
                latencies.append(time.time() * 1000 - m.timestamp()[1])
    producer.join()
    consumer.close()
    if len(latencies) < count:
        raise SystemExit(f"tail received {len(latencies)} of {count}")
    return pc.percentile(latencies, 0.5), pc.percentile(latencies, 0.99)


def wait_at_end(bootstrap, topic, partitions, seconds, rack):
    """A consumer long-polling at the end of the log while nothing is produced."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-unused",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 500,
                         "client.rack": rack})
    consumer.assign([TopicPartition(topic, p, -1) for p in range(partitions)])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for m in consumer.consume(1000, timeout=0.5):
            if m.error() is None:
                raise SystemExit("a record arrived while nothing was produced")
    consumer.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skiff", default="target/release/skiff")
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--tail-rate", type=float, default=2000)
    parser.add_argument("--tail-seconds", type=float, default=10)
    parser.add_argument("--refresh-ms", type=int, default=250)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="skiff-follower-bench-"))
    atexit.register(shutil.rmtree, workdir, True)
    log = open(workdir / "brokers.log", "wb")
    etcd, s3 = Etcd(workdir / "etcd").start(), MotoS3(workdir / "moto").start()
    brokers = {}
    try:
        for node, rack in RACKS.items():
            brokers[node] = pc.start_broker(
                args.skiff, workdir / f"node{node}", 250, log,
                (*broker_args(etcd, s3), "--node-id", str(node), "--broker-rack", rack,
                 "--replica-selector-class", "rack-aware", "--compactor-enable", "false",
                 "--replica-view-refresh-ms", str(args.refresh_ms)))
        bootstrap = brokers[1][1]
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("bench", num_partitions=args.partitions,
                                      replication_factor=1)])["bench"].result(15)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            led = leaders(brokers[1][2], "bench")
            if len(led) == args.partitions and all(v > 0 for v in led.values()):
                break
            time.sleep(0.1)
        _, _, failures = pc.produce(bootstrap, "bench", args.partitions, args.count, 1024, 5, 0)
        if failures:
            raise SystemExit(f"{len(failures)} produce failures")
        gib = args.count * 1024 / GIB
        result = {"records": args.count, "partitions": args.partitions,
                  "leaders": sorted(led.values()), "refresh_ms": args.refresh_ms}
        for name, rack in (("catch_up_leaders", None), ("catch_up_rack_az_b", "az-b")):
            before, t0 = snapshot(brokers), time.monotonic()
            seconds = catch_up(bootstrap, "bench", args.partitions, args.count, rack)
            after = snapshot(brokers)
            result[name] = {"mib_s": round(args.count * 1024 / 2**20 / seconds, 1),
                            "brokers": delta(before, after, time.monotonic() - t0, gib)}
        for name, rack in (("tail_leaders", None), ("tail_rack_az_b", "az-b")):
            before, t0 = snapshot(brokers), time.monotonic()
            p50, p99 = tail(bootstrap, "bench", args.partitions, args.tail_rate,
                            args.tail_seconds, rack)
            after = snapshot(brokers)
            result[name] = {"e2e_p50_ms": round(p50), "e2e_p99_ms": round(p99),
                            "brokers": delta(before, after, time.monotonic() - t0, 0)}
        # A consumer at the end of a quiet log, served from views: what waiting costs.
        before, t0 = snapshot(brokers), time.monotonic()
        wait_at_end(bootstrap, "bench", args.partitions, 10, "az-b")
        result["waiting_rack_az_b"] = {
            "brokers": delta(before, snapshot(brokers), time.monotonic() - t0, 0)}
        # Idle, nobody reading: what the views cost afterwards.
        before, t0 = snapshot(brokers), time.monotonic()
        time.sleep(5)
        result["idle"] = {"brokers": delta(before, snapshot(brokers), time.monotonic() - t0, 0)}
        print(json.dumps(result, indent=1))
    finally:
        for proc, _, _ in brokers.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        s3.stop()
        etcd.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
