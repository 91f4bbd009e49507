#!/usr/bin/env python3
"""Acknowledgement latency at light load, stage by stage: where does an acknowledgement wait?

One producer sends one record every `1/rate` seconds (client linger 0, acks=all) to one
partition for `--seconds`, against a fresh broker on each store: the embedded default, moto's S3
server with the embedded metadata store, and moto with a real etcd. For each it reports the
client's ack p50/p99/p99.9, the produce → consumed latency seen by a tailing consumer, and
the broker's own flush stages (`/v1/stats` → `flush_stages`):
how long the oldest record was buffered, preparing, the PUT, the metadata commit and the index
roll-up after it, plus the object-store requests the run made.

    bench/ack_latency.py [--seconds 30] [--rate 100] [--flush-linger-ms 250 5] [--results bench/RESULTS.md]
"""

import argparse
import atexit
import json
import os
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
sys.path.insert(0, str(HERE))
from servers import Etcd, MotoS3, broker_args  # noqa: E402
import produce_consume as pc  # noqa: E402

STORES = ("embedded", "s3", "s3+etcd")


def s3_only_args(s3: MotoS3) -> list[str]:
    """Cluster flags without etcd: the bucket on moto, metadata embedded."""
    class NoEtcd:
        endpoint = ""
    args = broker_args(NoEtcd(), s3)  # type: ignore[arg-type]
    i = args.index("--etcd-endpoints")
    return args[:i] + args[i + 2:]


class Tail(threading.Thread):
    """A consumer tailing the partition (read_uncommitted, fetch.wait.max.ms 100): for each record,
    the time from its produce call (carried in its first 8 bytes, this process's perf_counter)
    to its arrival here — the end-to-end latency."""

    def __init__(self, bootstrap: str, count: int):
        super().__init__(daemon=True)
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-tail",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
        self.count = count
        self.latencies: list[float] = []
        self.consumer.assign([TopicPartition("lat", 0, OFFSET_END)])
        # Ready once assigned at the end: librdkafka resolves the offset on its first fetch.
        deadline = time.monotonic() + 10
        while not self.consumer.assignment() and time.monotonic() < deadline:
            self.consumer.poll(0.1)

    def run(self):
        deadline = time.monotonic() + 600
        while len(self.latencies) < self.count and time.monotonic() < deadline:
            # poll, not consume(n): consume waits until n records or its timeout.
            m = self.consumer.poll(0.2)
            if m is not None and m.error() is None and len(m.value()) >= 8:
                sent_at = struct.unpack(">d", m.value()[:8])[0]
                self.latencies.append(time.perf_counter() - sent_at)
        self.consumer.close()


def paced(producer: Producer, count: int, rate: float):
    """Open-loop: record i is due at start + i / rate; its latency runs from its produce call."""
    latencies, failures = [], []
    filler = os.urandom(1024 - 8)

    def report(err, _msg, sent_at):
        if err is not None:
            failures.append(err)
        else:
            latencies.append(time.perf_counter() - sent_at)

    started = time.perf_counter()
    for i in range(count):
        while (delay := started + i / rate - time.perf_counter()) > 0:
            producer.poll(delay)
        sent_at = time.perf_counter()
        producer.produce("lat", struct.pack(">d", sent_at) + filler, partition=0,
                         on_delivery=lambda e, m, t=sent_at: report(e, m, t))
        producer.poll(0)
    producer.flush(60)
    return time.perf_counter() - started, latencies, failures


def client_view(windows: list) -> dict:
    """Worst per-second p99s librdkafka saw on the broker connection: `rtt` (request sent →
    response read), `outbuf_latency` (request queued → sent) and `int_latency` (record produced →
    in a request), in ms. A tail in the ack latency that is not in `rtt` is the client's own."""
    worst = {"rtt": 0.0, "outbuf_latency": 0.0, "int_latency": 0.0}
    for w in windows:
        for b in w.get("brokers", {}).values():
            if b.get("nodeid", -1) < 0:
                continue
            for k in worst:
                worst[k] = max(worst[k], b.get(k, {}).get("p99", 0) / 1000)
    return {f"{k}_p99_ms_worst_second": round(v, 1) for k, v in worst.items()}


def run_one(binary: str, store: str, linger_ms: int, seconds: float, rate: float, workdir: Path,
            log) -> dict:
    etcd = s3 = None
    extra: list[str] = []
    if store != "embedded":
        s3 = MotoS3(workdir / "moto").start()
    if store == "s3+etcd":
        etcd = Etcd(workdir / "etcd").start()
        extra = broker_args(etcd, s3)
    elif store == "s3":
        extra = s3_only_args(s3)
    try:
        proc, bootstrap, http = pc.start_broker(binary, workdir / "broker", linger_ms, log, tuple(extra))
        try:
            admin = AdminClient({"bootstrap.servers": bootstrap})
            admin.create_topics([NewTopic("lat", num_partitions=1, replication_factor=1)])["lat"].result(15)
            windows = []  # librdkafka's own view, per statistics window: see `client_view`
            producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                                 "statistics.interval.ms": 1000,
                                 "stats_cb": lambda text: windows.append(json.loads(text))})
            # Warm this producer's connection and metadata and the partition's state first:
            # records produced while the client still bootstraps wait for it, not for the broker.
            for _ in range(20):
                producer.produce("lat", b"warm-up", partition=0)
                producer.flush(30)
            before = pc.stats(http)
            windows.clear()
            count = int(seconds * rate)
            tail = Tail(bootstrap, count)
            tail.start()
            elapsed, latencies, failures = paced(producer, count, rate)
            tail.join(60)
            after = pc.stats(http)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    finally:
        if s3:
            s3.stop()
        if etcd:
            etcd.stop()
    if failures:
        raise SystemExit(f"{store}: {len(failures)} produce failures: {failures[0]}")
    ms = [x * 1000 for x in latencies]
    requests = {k: after["object_store"][k] - before["object_store"][k]
                for k in after["object_store"] if isinstance(after["object_store"][k], int)}
    return {
        "store": store, "flush_linger_ms": linger_ms, "records": count, "rate": rate,
        "achieved_rate": count / elapsed,
        "ack_p50_ms": pc.percentile(ms, 0.5), "ack_p99_ms": pc.percentile(ms, 0.99),
        "ack_p999_ms": pc.percentile(ms, 0.999), "ack_max_ms": max(ms),
        "e2e_records": len(tail.latencies),
        "e2e_p50_ms": pc.percentile(tail.latencies, 0.5) * 1000 if tail.latencies else None,
        "e2e_p99_ms": pc.percentile(tail.latencies, 0.99) * 1000 if tail.latencies else None,
        "flush_stages": after["flush_stages"],
        "client": client_view(windows),
        "object_store_requests": requests,
        # Sections the broker's reads took from its recent-objects cache / from the bucket (the
        # embedded compactor's reads are in object_store_requests, not here).
        "recent_cache_hits": after["recent_cache_hits"] - before["recent_cache_hits"],
        "range_reads": after["range_reads"] - before["range_reads"],
        "metadata_store": after.get("metadata_store"),
    }


def row(r: dict) -> str:
    st = r["flush_stages"]
    stage = " · ".join(f"{name} {st[name]['p50_ms']:.0f}/{st[name]['p99_ms']:.0f}/{st[name]['max_ms']:.0f}"
                       for name in ("buffered", "prepare", "upload", "commit", "rollup"))
    req = r["object_store_requests"]
    e2e = (f"{r['e2e_p50_ms']:.0f} / {r['e2e_p99_ms']:.0f}" if r["e2e_p50_ms"] is not None else "–")
    return (f"| {r['store']} | {r['flush_linger_ms']} | {r['ack_p50_ms']:.0f} / {r['ack_p99_ms']:.0f} / "
            f"{r['ack_p999_ms']:.0f} / {r['ack_max_ms']:.0f} | {e2e} | {stage} | "
            f"{', '.join(f'{k} {v}' for k, v in sorted(req.items()) if v)} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skiff", default="target/release/skiff")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=float, default=100, help="records per second, paced")
    parser.add_argument("--flush-linger-ms", type=int, nargs="+", default=[250, 5])
    parser.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    parser.add_argument("--results", help="append a markdown table to this file")
    args = parser.parse_args()
    workroot = Path(tempfile.mkdtemp(prefix="skiff-ack-latency-"))
    # Gigabytes of objects per run: gone at exit, however the run ends.
    atexit.register(shutil.rmtree, workroot, True)
    results = []
    with open(workroot / "brokers.log", "wb") as log:
        for linger in args.flush_linger_ms:
            for store in args.stores:
                workdir = workroot / f"{store.replace('+', '-')}-{linger}"
                r = run_one(args.skiff, store, linger, args.seconds, args.rate, workdir, log)
                print(json.dumps(r), flush=True)
                results.append(r)
    header = ("| store | flush linger ms | ack p50 / p99 / p99.9 / max ms | produce → consumed p50 / p99 ms "
              "| broker flush stages p50/p99/max ms | object-store requests in the run |\n"
              "|---|---|---|---|---|---|")
    table = "\n".join([header, *map(row, results)])
    print(table)
    if args.results:
        with open(args.results, "a") as f:
            f.write(f"\n**Ack latency at light load** ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
                    f"one record of 1 KiB every {1000 / args.rate:.0f} ms for {args.seconds:.0f} s, client "
                    f"linger 0, acks=all, one partition; `bench/ack_latency.py`):\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
