#!/usr/bin/env python3
"""Compactor benchmark on the embedded store (run by hand, never in CI).

1. Produces COUNT records of SIZE bytes over PARTITIONS partitions with the compactor off.
2. Restarts the broker (cold caches) and consumes everything from the flush objects: fetch
   throughput and broker CPU per GiB.
3. Restarts it with the compactor on (a 2 s freshness): everything is due at once. Compaction
   throughput = produced MiB / broker CPU seconds until /v1/compactor shows every partition in
   Parquet (the broker is otherwise idle), object-store requests per GiB compacted (from the
   broker's metered object store), Parquet bytes vs flush-object bytes.
4. Restarts it (cold, compactor off) and consumes everything again, now from Parquet: fetch
   throughput and CPU per GiB, and the ratio to step 2.
5. Sets retention.ms=1 on the topic and runs garbage collection at test speed: bucket bytes
   before and after retention.

    cargo build --release --bin skiff
    .venv/bin/python bench/compaction.py --count 500000 --size 1024 --partitions 8
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from produce_consume import (GIB, MIB, consume, cpu_seconds,  # noqa: E402
                             start_broker, start_profile, stats, stop_profile)
from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import (AdminClient, AlterConfigOpType,  # noqa: E402
                                  ConfigEntry, ConfigResource, NewTopic)

FAST_GC = ("--compactor-gc-interval-ms", "1000", "--compactor-gc-grace-ms", "1000",
           "--compactor-orphan-age-ms", "20000", "--object-commit-timeout-ms", "10000")


def get(http: str, path: str) -> dict:
    with urllib.request.urlopen(f"http://{http}{path}", timeout=10) as r:
        return json.load(r)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def stop(proc) -> None:
    proc.terminate()
    proc.wait(30)


def produce_unique(bootstrap: str, topic: str, partitions: int, count: int, size: int,
                   compression: str = "lz4") -> float:
    """COUNT distinct JSON-like values of SIZE bytes (half random hex, so about as compressible as
    real payloads; identical values would flatter Parquet's dictionary encoding)."""
    producer = Producer({
        "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
        "batch.size": 1_000_000, "queue.buffering.max.kbytes": 1_048_576,
        "queue.buffering.max.messages": 1_000_000, "compression.type": compression,
    })
    failures = []
    started = time.perf_counter()
    for i in range(count):
        body = os.urandom(size // 4).hex()
        value = (f'{{"id":{i},"user":"user-{i % 977}","kind":"order","data":"{body}"}}'
                 .encode()[:size].ljust(size, b" "))
        while True:
            try:
                producer.produce(topic, value, key=b"k%d" % (i % 10_000),
                                 partition=i % partitions,
                                 on_delivery=lambda e, m: e is not None and failures.append(e))
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(120)
    assert not failures, failures[:3]
    return time.perf_counter() - started


def consume_phase(binary, data, log, topic, partitions, count, produced_bytes, label,
                  profile=None):
    proc, kafka, http = start_broker(binary, data, 5, log, ("--compactor-enable", "false"))
    try:
        time.sleep(1.0)  # leadership claimed
        perf = start_profile(profile, label.replace(" ", "-"), proc.pid)
        cpu0 = cpu_seconds(proc.pid)
        elapsed = consume(kafka, topic, partitions, count)
        cpu = cpu_seconds(proc.pid) - cpu0
        stop_profile(perf)
        s = stats(http)
        print(f"consume from {label}: {produced_bytes / MIB / elapsed:.1f} MiB/s, "
              f"broker CPU {cpu / (produced_bytes / GIB):.2f} s/GiB, "
              f"parquet row groups read {s.get('parquet_row_groups_read', 0)}, "
              f"object GETs {s['object_store']['gets']}", flush=True)
        return produced_bytes / MIB / elapsed, cpu / (produced_bytes / GIB)
    finally:
        stop(proc)


def medians(runs: list) -> tuple:
    """(throughput, CPU per GiB): the medians of several consume phases."""
    return tuple(statistics.median(r[i] for r in runs) for i in (0, 1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/skiff")
    ap.add_argument("--count", type=int, default=500_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1,
                    help="consume from flush objects, then from Parquet, this many times each "
                         "(a fresh broker each time) and compare medians (this machine's noise)")
    ap.add_argument("--compression", default="lz4",
                    help="the producer's compression.type (flush objects keep its batches as sent)")
    ap.add_argument("--profile", metavar="DIR",
                    help="record each consume phase's broker with `perf record -g` into DIR")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="skiff-bench-compaction-"))
    data = workdir / "data"
    log = open(workdir / "skiff.log", "ab")
    topic = "bench-compaction"
    produced_bytes = args.count * args.size
    print(f"{platform.node()} {time.strftime('%Y-%m-%d %H:%M')}: {args.count} x {args.size} B, "
          f"{args.partitions} partitions, {produced_bytes / MIB:.0f} MiB", flush=True)
    try:
        # 1. Produce with the compactor off.
        proc, kafka, http = start_broker(args.binary, data, 250, log,
                                         ("--compactor-enable", "false"))
        admin = AdminClient({"bootstrap.servers": kafka})  # alive until answered
        admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
        time.sleep(1.0)
        elapsed = produce_unique(kafka, topic, args.partitions, args.count, args.size,
                                 args.compression)
        print(f"produce: {produced_bytes / MIB / elapsed:.1f} MiB/s", flush=True)
        stop(proc)
        wal_bytes = dir_bytes(data / "objects" / "wal")

        # 2. Consume from flush objects.
        wal_rate, wal_cpu = medians([
            consume_phase(args.binary, data, log, topic, args.partitions, args.count,
                          produced_bytes, "flush objects", args.profile) for _ in range(args.repeat)])

        # 3. Compact.
        proc, kafka, http = start_broker(args.binary, data, 250, log,
                                         ("--compactor-freshness-ms", "2000",
                                          "--compactor-pass-max-bytes", str(256 * MIB)))
        # A fresh process: its counters start at zero, and the compaction starts at once.
        before = {k: 0 for k in ("gets", "puts", "lists", "deletes")}
        cpu0 = 0.0
        started = time.monotonic()
        while True:
            parts = [p for p in get(http, "/v1/compactor")["partitions"] if p["topic"] == topic]
            if parts and all(p["parquet_end"] == p["high_watermark"] for p in parts):
                break
            assert time.monotonic() - started < 900, parts
            time.sleep(0.2)
        wall = time.monotonic() - started
        cpu = cpu_seconds(proc.pid) - cpu0
        after = stats(http)["object_store"]
        parquet_bytes = dir_bytes(data / "objects" / "parquet")
        local = get(http, "/v1/compactor")["local"]
        gib = produced_bytes / GIB
        requests = {k: after[k] - before[k] for k in ("gets", "puts", "lists", "deletes")}
        print(f"compaction: {wall:.1f} s wall, {cpu:.1f} CPU s, "
              f"{produced_bytes / MIB / cpu:.1f} MiB/s per core; "
              f"requests per GiB: " + ", ".join(f"{k} {v / gib:.0f}" for k, v in requests.items())
              + f"; jobs {local['jobs']}, files {local['files_written']}", flush=True)
        print(f"bytes: produced {produced_bytes / MIB:.1f} MiB, flush objects "
              f"{wal_bytes / MIB:.1f} MiB, parquet {parquet_bytes / MIB:.1f} MiB "
              f"({parquet_bytes / wal_bytes:.2f} of flush objects)", flush=True)
        stop(proc)

        # 4. Consume from Parquet.
        pq_rate, pq_cpu = medians([
            consume_phase(args.binary, data, log, topic, args.partitions, args.count,
                          produced_bytes, "parquet", args.profile) for _ in range(args.repeat)])
        print(f"parquet vs flush objects: throughput {pq_rate / wal_rate:.2f}x, "
              f"CPU per GiB {pq_cpu / wal_cpu:.2f}x", flush=True)
        # 5. Retention: everything expires; garbage collection empties the bucket.
        proc, kafka, http = start_broker(args.binary, data, 250, log,
                                         ("--compactor-freshness-ms", "2000",
                                          "--log-retention-check-interval-ms", "500", *FAST_GC))
        bucket_before = dir_bytes(data / "objects")
        admin = AdminClient({"bootstrap.servers": kafka})
        resource = ConfigResource("topic", topic, incremental_configs=[
            ConfigEntry("retention.ms", "1",
                        incremental_operation=AlterConfigOpType.SET)])
        for f in admin.incremental_alter_configs([resource]).values():
            f.result(30)
        started = time.monotonic()
        while dir_bytes(data / "objects") > bucket_before / 100:
            if time.monotonic() - started > 180:
                break
            time.sleep(1)
        print(f"bucket: {bucket_before / MIB:.1f} MiB before retention, "
              f"{dir_bytes(data / 'objects') / MIB:.2f} MiB after "
              f"({time.monotonic() - started:.0f} s, orphan age 20 s)", flush=True)
        stop(proc)
    finally:
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
