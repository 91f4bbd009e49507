#!/usr/bin/env python3
"""Cluster-mode benchmark: one broker on a real etcd and an S3-compatible server (moto), the
same load as produce_consume.py, plus what cluster mode costs: PUTs per GiB, etcd transactions
per second, etcd keys and bytes left after the run, and leader failover time (kill -9 of a
leader → first successful produce to its partition on the new leader), median of several runs.

moto is a Python server holding objects in memory: absolute throughput here is moto's, not
Skiff's; the request counts are what a real bucket would be billed for.

    bench/cluster.py [--count N] [--failovers K] [--results bench/RESULTS.md]
"""

import argparse
import atexit
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
sys.path.insert(0, str(HERE))
from servers import Etcd, MotoS3, broker_args, etcd_keys  # noqa: E402
import produce_consume as pc  # noqa: E402

GIB = 1024 ** 3


def etcd_txns(etcd: Etcd) -> float:
    """Committed raft proposals so far (every write transaction is one)."""
    with urllib.request.urlopen(f"{etcd.endpoint}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(r"^etcd_server_proposals_committed_total (\S+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def start(binary, workdir, name, etcd, s3, extra, log):
    return pc.start_broker(binary, workdir / name, 250, log, (*broker_args(etcd, s3), *extra))


def leaders(http, topic):
    with urllib.request.urlopen(f"http://{http}/v1/topics", timeout=5) as r:
        for t in json.load(r)["topics"]:
            if t["name"] == topic:
                return {p["partition"]: p["leader"] for p in t["partitions"]}
    return {}


def failover_once(binary, workdir, etcd, s3, run, log, session_ms):
    """Three brokers; kill -9 the leader of partition 0; time until a produce to it succeeds."""
    brokers = [start(binary, workdir, f"f{run}-{n}", etcd, s3,
                     ["--node-id", str(100 * run + n), "--broker-session-timeout-ms", str(session_ms)],
                     log) for n in (1, 2, 3)]
    topic = f"failover-{run}"
    admin = AdminClient({"bootstrap.servers": brokers[0][1]})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(15)
    owner = leaders(brokers[0][2], topic)[0]
    victim = brokers[owner - (100 * run + 1)]   # node ids are 100*run + 1..3, in order
    survivor = next(b for b in brokers if b is not victim)
    p = Producer({"bootstrap.servers": survivor[1], "acks": "all", "linger.ms": 0,
                  "retry.backoff.ms": 20, "retry.backoff.max.ms": 100,
                  "topic.metadata.refresh.interval.ms": 200, "message.timeout.ms": 60000})
    p.produce(topic, b"warm-up", partition=0)
    p.flush(10)
    victim[0].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    delivered = []
    p.produce(topic, b"after", partition=0, on_delivery=lambda e, m: delivered.append((e, time.monotonic())))
    p.flush(60)
    err, at = delivered[0]
    for proc, _, _ in brokers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    if err is not None:
        raise SystemExit(f"produce after failover failed: {err}")
    return at - killed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skiff", default="target/release/skiff")
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--failovers", type=int, default=5)
    parser.add_argument("--session-ms", type=int, default=2000)
    parser.add_argument("--results")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="skiff-cluster-bench-"))
    # Gigabytes of objects per run: gone at exit, however the run ends.
    atexit.register(shutil.rmtree, workdir, True)
    log = open(workdir / "brokers.log", "wb")
    etcd, s3 = Etcd(workdir / "etcd").start(), MotoS3(workdir / "moto").start()
    try:
        proc, bootstrap, http = start(args.skiff, workdir, "main", etcd, s3, [], log)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("bench", num_partitions=args.partitions,
                                      replication_factor=1)])["bench"].result(15)
        total = args.count * 1024
        cpu0, stats0, txn0, t0 = pc.cpu_seconds(proc.pid), pc.stats(http), etcd_txns(etcd), time.monotonic()
        produce_s, latencies, failures = pc.produce(bootstrap, "bench", args.partitions, args.count, 1024, 5, 0)
        cpu1, stats1, txn1, t1 = pc.cpu_seconds(proc.pid), pc.stats(http), etcd_txns(etcd), time.monotonic()
        if failures:
            raise SystemExit(f"{len(failures)} produce failures: {failures[0]}")
        consume_s = pc.consume(bootstrap, "bench", args.partitions, args.count)
        wal = len(s3.keys("cluster/wal/"))
        index_objects = len(s3.keys("cluster/index/"))
        keys, key_bytes = etcd_keys(etcd, "/skiff/")
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        failovers = [failover_once(args.skiff, workdir, etcd, s3, run, log, args.session_ms)
                     for run in range(1, args.failovers + 1)]
        result = {
            "records": args.count, "partitions": args.partitions,
            "produce_mib_s": total / 2**20 / produce_s,
            "ack_p50_ms": pc.percentile(latencies, 0.5) * 1000,
            "ack_p99_ms": pc.percentile(latencies, 0.99) * 1000,
            "consume_mib_s": total / 2**20 / consume_s,
            "puts_per_gib": (stats1["objects_written"] - stats0["objects_written"]) / (total / GIB),
            "objects_in_bucket": wal + index_objects,
            "etcd_txn_per_s": (txn1 - txn0) / (t1 - t0),
            "etcd_keys_after": keys, "etcd_bytes_after": key_bytes,
            "cpu_s_per_gib_produced": (cpu1 - cpu0) / (total / GIB),
            "failover_s_median": statistics.median(failovers),
            "failover_s_all": [round(f, 2) for f in failovers],
            "session_ms": args.session_ms,
        }
    finally:
        s3.stop()
        etcd.stop()
        log.close()
    print(json.dumps(result, indent=2))
    if args.results:
        with open(args.results, "a") as f:
            f.write(f"\n**Cluster mode** ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, one broker on etcd + moto S3, "
                    f"{args.partitions} partitions, 1 KiB records, max rate): produce {result['produce_mib_s']:.1f} MiB/s, "
                    f"ack p50/p99 {result['ack_p50_ms']:.0f}/{result['ack_p99_ms']:.0f} ms, consume {result['consume_mib_s']:.1f} MiB/s, "
                    f"{result['puts_per_gib']:.0f} PUTs/GiB, {result['etcd_txn_per_s']:.1f} etcd txn/s, "
                    f"{result['etcd_keys_after']} etcd keys ({result['etcd_bytes_after']} B) after the run, "
                    f"broker CPU {result['cpu_s_per_gib_produced']:.2f} s/GiB produced; failover (kill -9 → first produce on the new leader, "
                    f"{args.session_ms} ms session) median {result['failover_s_median']:.2f} s of {result['failover_s_all']}.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
