#!/usr/bin/env python3
"""Metadata at scale: what many topics cost a cluster at rest and per Metadata request.

Three brokers on a real etcd and moto; N topics of P partitions are created, and once every
partition has a leader the cluster is left idle for a while. Reported:
- etcd read requests (Range) per second while idle, all brokers together: the controllers'
  reconcile passes and anything else that polls;
- broker CPU per second while idle (sum of the three);
- Metadata for all topics: median and p90 latency over 20 requests (confluent AdminClient).

    bench/metadata_scale.py [--topics N] [--partitions P] [--idle S]
"""

import argparse
import atexit
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
sys.path.insert(0, str(HERE))
from servers import Etcd, MotoS3, broker_args  # noqa: E402
import produce_consume as pc  # noqa: E402


def etcd_ranges(etcd: Etcd) -> float:
    """Range requests served so far."""
    with urllib.request.urlopen(f"{etcd.endpoint}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for m in re.finditer(r'^grpc_server_handled_total\{[^}]*grpc_method="Range"[^}]*\} (\S+)$',
                         text, re.M):
        total += float(m.group(1))
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--topics", type=int, default=1000)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--binary", default=str(HERE.parent / "target" / "release" / "skiff"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="skiff-metadata-"))
    # Gigabytes of objects per run: gone at exit, however the run ends.
    atexit.register(shutil.rmtree, work, True)
    etcd = Etcd(work / "etcd").start()
    s3 = MotoS3(work / "moto").start()
    log = open(work / "brokers.log", "wb")
    brokers = []
    try:
        for n in (1, 2, 3):
            brokers.append(pc.start_broker(args.binary, work / f"b{n}", 250, log,
                                           (*broker_args(etcd, s3), "--node-id", str(n))))
        admin = AdminClient({"bootstrap.servers": brokers[0][1]})
        names = [f"t{i:05d}" for i in range(args.topics)]
        started = time.monotonic()
        for i in range(0, len(names), 100):
            futures = admin.create_topics([NewTopic(t, num_partitions=args.partitions,
                                                    replication_factor=1)
                                           for t in names[i:i + 100]], operation_timeout=30)
            for f in futures.values():
                f.result(600)
        created = time.monotonic() - started
        deadline = time.monotonic() + 300
        while True:
            md = admin.list_topics(timeout=60)
            ours = [md.topics[t] for t in names if t in md.topics]
            if len(ours) == len(names) and all(p.leader >= 0 for t in ours
                                               for p in t.partitions.values()):
                break
            if time.monotonic() > deadline:
                raise SystemExit("partitions never all got leaders")
            time.sleep(1)
        led = time.monotonic() - started
        ranges0, cpu0, t0 = etcd_ranges(etcd), sum(pc.cpu_seconds(b[0].pid) for b in brokers), \
            time.monotonic()
        time.sleep(args.idle)
        dt = time.monotonic() - t0
        ranges = (etcd_ranges(etcd) - ranges0) / dt
        cpu = (sum(pc.cpu_seconds(b[0].pid) for b in brokers) - cpu0) / dt
        latencies = []
        client = AdminClient({"bootstrap.servers": brokers[1][1]})
        for _ in range(20):
            t = time.monotonic()
            md = client.list_topics(timeout=60)
            latencies.append((time.monotonic() - t) * 1000)
            assert len(md.topics) >= args.topics
        latencies.sort()
        print(f"topics={args.topics} partitions/topic={args.partitions}: created in {created:.1f} s, "
              f"all led after {led:.1f} s")
        print(f"idle: etcd Range {ranges:.1f}/s, broker CPU {cpu * 100:.1f}% of a core (3 brokers)")
        print(f"Metadata(all topics): median {statistics.median(latencies):.1f} ms, "
              f"p90 {latencies[int(len(latencies) * 0.9)]:.1f} ms")
    finally:
        for proc, _, _ in brokers:
            proc.kill()
        s3.stop()
        etcd.stop()


if __name__ == "__main__":
    main()
