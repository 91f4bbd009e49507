#!/usr/bin/env python3
"""Object-store requests of an idle broker, per hour: what a quiet cluster costs in requests.

One broker in cluster mode (a real etcd, moto's S3 server) with the compactor on, a topic of 8
partitions and some data; after the data is written and the compactor has had its first pass,
the broker is left alone for `--idle` seconds (default 11 minutes, past a garbage-collection
period) and every request moto logs in that window is
counted, then scaled to an hour.

    .venv/bin/python bench/idle.py [--idle 660] [--results bench/RESULTS.md]
"""

import argparse
import atexit
import collections
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
sys.path.insert(0, str(HERE))
from servers import Etcd, MotoS3, broker_args  # noqa: E402
import produce_consume as pc  # noqa: E402


def requests(s3: MotoS3) -> list[str]:
    """The kind of each request moto logged: GET, PUT, POST, DELETE, HEAD, or LIST (a GET with
    `list-type=2`, ListObjectsV2)."""
    out = []
    for line in s3.log_path.read_text(errors="replace").splitlines():
        for method in ("GET", "PUT", "POST", "DELETE", "HEAD"):
            marker = f'"{method} /'
            if marker in line:
                out.append("LIST" if method == "GET" and "list-type=" in line else method)
                break
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skiff", default="target/release/skiff")
    parser.add_argument("--idle", type=float, default=660.0,
                        help="seconds left idle: longer than the longest periodic task (garbage "
                             "collection, every 5 minutes by default), or it is missed")
    parser.add_argument("--settle", type=float, default=20.0,
                        help="seconds after the data is written before the idle window opens")
    parser.add_argument("--results")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="skiff-bench-idle-"))
    # Gigabytes of objects per run: gone at exit, however the run ends.
    atexit.register(shutil.rmtree, work, True)
    log = open(work / "broker.log", "wb")
    etcd, s3 = Etcd(work / "etcd").start(), MotoS3(work / "moto").start()
    proc = None
    try:
        proc, bootstrap, _http = pc.start_broker(
            args.skiff, work / "broker", 250, log,
            (*broker_args(etcd, s3), "--compactor-freshness-ms", "5000"))
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("idle", num_partitions=8, replication_factor=1)])["idle"].result(15)
        pc.produce(bootstrap, "idle", 8, 20_000, 1024, 5, 0)
        time.sleep(args.settle)
        before = collections.Counter(requests(s3))
        time.sleep(args.idle)
        after = collections.Counter(requests(s3))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        s3.stop()
        etcd.stop()
        log.close()
    window = {m: after[m] - before[m] for m in after if after[m] - before[m]}
    per_hour = sum(window.values()) * 3600 / args.idle
    line = (f"idle broker (etcd + moto, compactor on, 8 partitions with data): "
            f"{sum(window.values())} object-store requests in {args.idle:.0f} s {dict(window)} "
            f"= {per_hour:.0f} per hour")
    print(line)
    if args.results:
        with open(args.results, "a") as f:
            f.write(f"\n**Idle** ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, `bench/idle.py "
                    f"--idle {args.idle:.0f}`): {line}.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
