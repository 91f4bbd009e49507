#!/usr/bin/env python3
"""Skiff and Tansu (a Rust Kafka-compatible broker, `cargo install tansu --features dynostore`)
under the same load, side by side in one run, as ratios: the only fair comparison on machines
whose speed changes from day to day.

For each target — Skiff on its embedded store, Skiff on moto's S3 server, Tansu's memory
engine, Tansu's S3 engine on the same kind of moto server — a fresh broker takes COUNT records
of 1 KiB to 8 partitions (acks=all, client linger 5 ms, confluent-kafka), plain and idempotent,
then a consumer reads them back. Reported: produce and consume MiB/s, broker CPU-seconds per GiB
produced and consumed, peak RSS, and PUTs per GiB (moto's request log for the S3 targets).
Skiff runs with `--compactor-enable false`: Tansu has no compactor, and the compactor's cost is
measured by bench/compaction.py.

    .venv/bin/python bench/side_by_side.py [--tansu PATH] [--count 500000] [--repeat 3] [--results bench/RESULTS.md]
"""

import argparse
import atexit
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
sys.path.insert(0, str(HERE))
from servers import MotoS3, broker_args  # noqa: E402
import produce_consume as pc  # noqa: E402

GIB = 1024 ** 3
TARGETS = ("skiff-embedded", "skiff-s3", "tansu-memory", "tansu-s3")
# Skiff writing one flush object at a time (--flush-max-in-flight 1), to measure what pipelined
# flushes give: not run unless named.
SERIAL_TARGETS = ("skiff-embedded-serial", "skiff-s3-serial")


def wait_for_kafka(bootstrap: str, proc: subprocess.Popen) -> None:
    host, port = bootstrap.split(":")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"broker exited with {proc.returncode}")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("broker did not listen")


def start(target: str, args, workdir: Path, log, s3: MotoS3 | None):
    if target.startswith("skiff"):
        extra = ["--compactor-enable", "false"]
        if target.endswith("-serial"):
            extra += ["--flush-max-in-flight", "1"]
        if s3 is not None:
            cluster = broker_args(type("NoEtcd", (), {"endpoint": ""})(), s3)
            i = cluster.index("--etcd-endpoints")
            extra += cluster[:i] + cluster[i + 2:]
        proc, bootstrap, _http = pc.start_broker(args.skiff, workdir, 250, log, tuple(extra))
        return proc, bootstrap
    port = pc.free_port()
    env = dict(os.environ)
    engine = "memory://tansu/"
    if s3 is not None:
        engine = f"s3://{MotoS3.BUCKET}/"
        env.update({"AWS_ENDPOINT": s3.endpoint, "AWS_ALLOW_HTTP": "true",
                    "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"})
    proc = subprocess.Popen(
        [args.tansu, "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{port}", "--storage-engine", engine],
        stdout=log, stderr=log, env=env)
    bootstrap = f"127.0.0.1:{port}"
    wait_for_kafka(bootstrap, proc)
    return proc, bootstrap


class DelayedS3:
    """The S3 server as the broker sees it through bench/latency_proxy.py (a remote bucket's
    round trip): `endpoint` is the proxy's."""

    def __init__(self, s3: MotoS3, delay_ms: float, log):
        self.s3 = s3
        self.port = pc.free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "latency_proxy.py"), str(self.port),
             str(s3.port), str(delay_ms)], stdout=log, stderr=log)
        time.sleep(0.5)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def run_one(target: str, idempotence: bool, args, workroot: Path, log) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"{target}-", dir=workroot))
    s3 = MotoS3(workdir / "moto").start() if "-s3" in target else None
    delayed = DelayedS3(s3, args.s3_latency_ms, log) if s3 and args.s3_latency_ms else None
    proc = None
    try:
        proc, bootstrap = start(target, args, workdir / "broker", log, delayed or s3)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("bench", num_partitions=8, replication_factor=1)])["bench"].result(30)
        time.sleep(1)
        puts0 = moto_puts(s3)
        total = args.count * 1024
        perf = pc.start_profile(args.profile,
                                f"{target}-{'idempotent' if idempotence else 'plain'}", proc.pid)
        cpu0 = pc.cpu_seconds(proc.pid)
        produce_s, _lat, failures = pc.produce(bootstrap, "bench", 8, args.count, 1024, 5, 0,
                                               idempotence)
        cpu1 = pc.cpu_seconds(proc.pid)
        pc.stop_profile(perf)
        if failures:
            raise SystemExit(f"{target}: {len(failures)} produce failures: {failures[0]}")
        puts = moto_puts(s3) - puts0 if s3 else None
        consume_s = pc.consume(bootstrap, "bench", 8, args.count)
        cpu2 = pc.cpu_seconds(proc.pid)
        return {
            "target": target, "idempotence": idempotence,
            "produce_mib_s": total / 2**20 / produce_s,
            "consume_mib_s": total / 2**20 / consume_s,
            "cpu_s_per_gib_produced": (cpu1 - cpu0) / (total / GIB),
            "cpu_s_per_gib_consumed": (cpu2 - cpu1) / (total / GIB),
            "peak_rss_mib": pc.peak_rss_mib(proc.pid),
            "puts_per_gib": puts / (total / GIB) if puts is not None else None,
        }
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if delayed:
            delayed.stop()
        if s3:
            s3.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def moto_puts(s3: MotoS3 | None) -> int:
    """PUT requests moto logged (object PUTs and multipart parts alike: each is billed)."""
    if s3 is None:
        return 0
    return sum(1 for line in s3.log_path.read_text(errors="replace").splitlines()
               if '"PUT /' in line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skiff", default="target/release/skiff")
    parser.add_argument("--tansu", default="/work/tools/tansu/bin/tansu")
    parser.add_argument("--count", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; medians are reported")
    parser.add_argument("--targets", nargs="+", choices=TARGETS + SERIAL_TARGETS,
                        default=list(TARGETS))
    parser.add_argument("--s3-latency-ms", type=float, default=0,
                        help="delay each direction of the S3 targets' traffic by this much "
                             "(bench/latency_proxy.py: a remote bucket's round trip)")
    parser.add_argument("--results")
    parser.add_argument("--profile", metavar="DIR",
                        help="record each produce phase's broker with `perf record` into DIR")
    args = parser.parse_args()
    workroot = Path(tempfile.mkdtemp(prefix="skiff-side-by-side-"))
    # Gigabytes of objects per run: gone at exit, however the run ends.
    atexit.register(shutil.rmtree, workroot, True)
    cells: dict = {}
    with open(workroot / "brokers.log", "wb") as log:
        # Interleaved: every target once per round, so a machine that slows down mid-run slows
        # them all alike.
        for round_no in range(args.repeat):
            # Rotated each round: the first run after another process (Tansu, moto) exits often
            # costs several times the CPU here, so no target may always take that place.
            shift = round_no % len(args.targets)
            order = args.targets[shift:] + args.targets[:shift]
            for idempotence in (False, True):
                for target in order:
                    r = run_one(target, idempotence, args, workroot, log)
                    print(r, flush=True)
                    cells.setdefault((target, idempotence), []).append(r)
    keys = ("produce_mib_s", "consume_mib_s", "cpu_s_per_gib_produced", "cpu_s_per_gib_consumed",
            "peak_rss_mib", "puts_per_gib")
    median = {cell: {k: (statistics.median(r[k] for r in runs) if runs[0][k] is not None else None)
                     for k in keys}
              for cell, runs in cells.items()}
    fmt = lambda v, d=0: "–" if v is None else f"{v:.{d}f}"  # noqa: E731
    rows = ["| target | producer | produce MiB/s | consume MiB/s | CPU-s/GiB produced | "
            "CPU-s/GiB consumed | peak RSS MiB | PUTs/GiB |", "|---|---|---|---|---|---|---|---|"]
    for (target, idem), m in median.items():
        rows.append(f"| {target} | {'idempotent' if idem else 'plain'} | {fmt(m['produce_mib_s'])} | "
                    f"{fmt(m['consume_mib_s'])} | {fmt(m['cpu_s_per_gib_produced'], 2)} | "
                    f"{fmt(m['cpu_s_per_gib_consumed'], 2)} | {fmt(m['peak_rss_mib'])} | "
                    f"{fmt(m['puts_per_gib'])} |")
    ratios = []
    for idem in (False, True):
        kind = "idempotent" if idem else "plain"
        for ours, theirs in (("skiff-embedded", "tansu-memory"), ("skiff-s3", "tansu-s3"),
                             ("skiff-embedded", "skiff-embedded-serial"),
                             ("skiff-s3", "skiff-s3-serial")):
            a, b = median.get((ours, idem)), median.get((theirs, idem))
            if a and b:
                ratios.append(
                    f"{kind}, {ours} / {theirs}: produce ×{a['produce_mib_s'] / b['produce_mib_s']:.2f}, "
                    f"consume ×{a['consume_mib_s'] / b['consume_mib_s']:.2f}, CPU per GiB produced "
                    f"×{a['cpu_s_per_gib_produced'] / b['cpu_s_per_gib_produced']:.2f}, consumed "
                    f"×{a['cpu_s_per_gib_consumed'] / b['cpu_s_per_gib_consumed']:.2f}")
    table = "\n".join(rows)
    print(table)
    print("\n".join(ratios))
    if args.results:
        with open(args.results, "a") as f:
            f.write(f"\n**Side by side with Tansu 0.6** ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
                    f"`bench/side_by_side.py --count {args.count} --repeat {args.repeat} --targets "
                    f"{' '.join(args.targets)} --s3-latency-ms {args.s3_latency_ms:g}`: {args.count} × 1 KiB, "
                    f"8 partitions, acks=all, client linger 5 ms, medians of {args.repeat} interleaved runs; "
                    f"S3 targets on moto, {args.s3_latency_ms:g} ms added each way):\n\n{table}\n\n" + "\n".join(f"- {r}" for r in ratios) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
