#!/usr/bin/env python3
"""Catch-up benchmark (run by hand, never in CI): a consumer with a small partition fetch size
reads big records from the start of a partition whose data the broker no longer holds in memory.

Produces COUNT records of SIZE bytes to one partition (embedded store, compactor off so the data
stays in flush objects), restarts the broker (its recent-objects cache is empty), then consumes
everything with `fetch.message.max.bytes` = FETCH bytes; reports records/s and what it cost the
bucket (GETs and bytes from /v1/stats).

    cargo build --release --bin skiff
    .venv/bin/python bench/catch_up.py [--skiff BIN] [-- extra skiff serve flags]
"""

import argparse
import shutil
import atexit
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from produce_consume import free_port  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skiff", default="target/release/skiff")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", type=int, default=500_000)
    parser.add_argument("--fetch", type=int, default=100_000)
    parser.add_argument("--passes", type=int, default=1,
                        help="consumers reading everything one after the other (the later ones "
                             "find the read cache warm: in memory, or on its disk part)")
    parser.add_argument("--groups", type=int, default=1,
                        help="consumers (of different groups) reading everything at once in each "
                             "pass: concurrent reads of the same data should share their GETs")
    parser.add_argument("extra", nargs="*", help="more `skiff serve` flags")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="skiff-bench-catchup-"))
    # Gigabytes of objects per run: gone at exit, however the run ends.
    atexit.register(shutil.rmtree, work, True)
    log = open(work / "skiff.log", "wb")
    kafka, http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    command = [args.skiff, "serve", "--data-dir", str(work / "data"), "--listeners", kafka,
               "--http-listeners", http, "--flush-linger-ms", "50", "--compactor-enable",
               "false", "--log", "warn", *args.extra]

    def start():
        proc = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://{http}/health", timeout=1).read()
                return proc
            except OSError:
                time.sleep(0.05)
        raise SystemExit("broker did not become healthy")

    def stats():
        with urllib.request.urlopen(f"http://{http}/v1/stats", timeout=5) as response:
            return json.load(response)

    proc = start()
    try:
        admin = AdminClient({"bootstrap.servers": kafka})
        config = {"max.message.bytes": str(2 * args.size)}
        admin.create_topics([NewTopic("big", 1, 1, config=config)])["big"].result(30)
        time.sleep(0.5)
        producer = Producer({"bootstrap.servers": kafka, "linger.ms": 5,
                             "message.max.bytes": 2 * args.size})
        payload = b"x" * args.size
        for _ in range(args.count):
            while True:
                try:
                    producer.produce("big", payload, partition=0)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.flush(120)
        proc.terminate()
        proc.wait(30)
        proc = start()
        time.sleep(1)
        for catch_up in range(args.passes):
            before = stats()
            results = [None] * args.groups

            def read_all(n):
                consumer = Consumer({"bootstrap.servers": kafka, "group.id": f"bench-{n}",
                                     "enable.auto.commit": False,
                                     "fetch.message.max.bytes": args.fetch})
                consumer.assign([TopicPartition("big", 0, 0)])
                seen, started = 0, time.perf_counter()
                while seen < args.count and time.perf_counter() - started < 120:
                    message = consumer.poll(1)
                    if message is not None and message.error() is None:
                        seen += 1
                results[n] = (seen, time.perf_counter() - started)
                consumer.close()

            readers = [threading.Thread(target=read_all, args=(n,)) for n in range(args.groups)]
            for t in readers:
                t.start()
            for t in readers:
                t.join()
            after = stats()
            store = {k: after["object_store"][k] - before["object_store"][k]
                     for k in ("gets", "get_bytes")}
            hits = after.get("read_cache_hits", 0) - before.get("read_cache_hits", 0)
            seen = min(r[0] for r in results)
            elapsed = max(r[1] for r in results)
            gib = args.count * args.size / 2**30
            print(f"pass {catch_up + 1}: {args.groups} consumer(s), each {seen} of {args.count} "
                  f"records of {args.size} B, all done in {elapsed:.1f} s: "
                  f"{seen * args.groups / elapsed:.0f} records/s in all, {store['gets']} GETs "
                  f"({store['gets'] / gib:.0f} per GiB of data), "
                  f"{store['get_bytes'] / 1e6:.0f} MB read from the bucket "
                  f"({args.count * args.size / 1e6:.0f} MB of data), {hits} read cache hits")
    finally:
        proc.terminate()
        proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
