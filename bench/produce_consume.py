#!/usr/bin/env python3
"""Single-broker produce/consume benchmark for Skiff on the embedded store.

Starts `skiff serve` (a release build) on a fresh data directory, produces COUNT records of SIZE
bytes over PARTITIONS partitions with confluent-kafka (librdkafka, acks=all), then consumes them
all back, and reports:

- produce throughput (MiB/s, records/s) and ack latency p50/p99 (produce() call -> delivery
  report, so it includes client-side batching: linger.ms),
- consume throughput,
- objects written per second and per GiB (from the broker's /v1/stats),
- broker CPU seconds per GiB produced and consumed (from /proc/<pid>/stat), and beside them
  the CPU this script spends writing the same bytes into new files (the embedded store's
  page-cache cost, measured in the same run: 1-4 CPU-s per GiB on these VMs),
- broker peak RSS (VmHWM).

Run by hand, never in CI:  bench/run.sh  (or see bench/README.md)
"""

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

CLK_TCK = os.sysconf("SC_CLK_TCK")
GIB = 1024 ** 3
MIB = 1024 ** 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def minor_faults(pid: int) -> int:
    """Page faults served without I/O: on the produce path, first touches of fresh buffers."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def requests_handled(http: str, api: str) -> float:
    """Requests of one API the broker has handled (its Prometheus counter)."""
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("skiff_requests_total{") and f'api="{api}"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def stats(http: str) -> dict:
    with urllib.request.urlopen(f"http://{http}/v1/stats", timeout=5) as r:
        return json.load(r)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def start_broker(binary: str, data_dir: Path, linger_ms: int, log,
                 extra: tuple[str, ...] = (), scheme: str = "",
                 more_listeners: str = "") -> tuple[subprocess.Popen, str, str]:
    kafka, http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", str(data_dir),
         "--listeners", scheme + kafka + more_listeners,
         "--http-listeners", http, "--flush-linger-ms", str(linger_ms), "--log", "warn", *extra],
        stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://{http}/health", timeout=1).read()
            return proc, kafka, http
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("broker did not become healthy")


def start_profile(directory: str | None, name: str, pid: int) -> subprocess.Popen | None:
    """`perf record --call-graph dwarf` of process `pid` into DIRECTORY/NAME-PID.perf.data
    until [`stop_profile`]; None without a directory."""
    if not directory:
        return None
    out = Path(directory) / f"{name}-{pid}.perf.data"
    perf = subprocess.Popen(["perf", "record", "-F", os.environ.get("PERF_FREQ", "499"),
                             "--call-graph", "dwarf,16384",
                             "-o", str(out), "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached
    return perf


def stop_profile(perf: subprocess.Popen | None) -> None:
    if perf is not None:
        perf.send_signal(signal.SIGINT)
        perf.wait(30)


def produce(bootstrap: str, topic: str, partitions: int, count: int, size: int, linger_ms: int,
            rate: float, idempotence: bool = False, request_max_bytes: int = 1_000_000,
            client: dict | None = None, batch_bytes: int = 1_000_000, producers: int = 1):
    """Record i goes to partition i % partitions through producer i % producers: several
    producers are several client instances, each with its own connection (and, idempotent,
    its own window of in-flight requests), as several application instances are."""
    clients = [Producer({
        **(client or {}),
        "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": linger_ms,
        "batch.size": batch_bytes, "queue.buffering.max.kbytes": 1_048_576,
        "queue.buffering.max.messages": 1_000_000, "enable.idempotence": idempotence,
        # librdkafka's cap on one ProduceRequest (its message.max.bytes).
        "message.max.bytes": request_max_bytes,
    }) for _ in range(producers)]
    latencies = []
    failures = []
    payload = os.urandom(size)

    def report(err, _msg, sent_at):
        if err is not None:
            failures.append(err)
        else:
            latencies.append(time.perf_counter() - sent_at)

    started = time.perf_counter()
    for i in range(count):
        if rate > 0:
            # Open-loop pacing: record i is due at started + i / rate.
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                clients[0].poll(delay) if delay > 0.001 else time.sleep(delay)
        producer = clients[i % producers]
        sent_at = time.perf_counter()
        while True:
            try:
                producer.produce(topic, payload, partition=i % partitions,
                                 on_delivery=lambda e, m, t=sent_at: report(e, m, t))
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            for c in clients:
                c.poll(0)
    for c in clients:
        c.flush(120)
    elapsed = time.perf_counter() - started
    return elapsed, latencies, failures


def consume(bootstrap: str, topic: str, partitions: int, count: int,
            client: dict | None = None) -> float:
    consumer = Consumer({
        **(client or {}),
        "bootstrap.servers": bootstrap, "group.id": "bench-unused", "enable.auto.commit": False,
        "fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 8_388_608,
    })
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = 0
    started = time.perf_counter()
    deadline = time.monotonic() + 300
    while seen < count and time.monotonic() < deadline:
        for message in consumer.consume(10_000, timeout=1.0):
            if message.error() is None:
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    if seen < count:
        raise SystemExit(f"consumed only {seen} of {count} records")
    return elapsed


def file_write_cpu_s_per_gib(directory: Path, total_bytes: int, file_bytes: int) -> float:
    """CPU seconds this process spends per GiB writing `total_bytes` (at most 1 GiB) into new
    files of `file_bytes` in `directory` (as the embedded store writes its objects), then
    deleting them: the kernel's share of the broker's produce cost on the embedded store,
    measured in the same run. On these VMs new page-cache pages cost 1-4 CPU-s per GiB."""
    total = min(total_bytes, GIB)
    chunk = os.urandom(max(1, min(file_bytes, 8 * MIB)))
    written, names = 0, []
    before = resource.getrusage(resource.RUSAGE_SELF)
    while written < total:
        name = directory / f"ceiling-{len(names)}"
        with open(name, "wb") as f:
            left = min(file_bytes, total - written)
            while left > 0:
                n = f.write(chunk[:left])
                left -= n
                written += n
        names.append(name)
    after = resource.getrusage(resource.RUSAGE_SELF)
    for name in names:
        name.unlink()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu / (written / GIB) if written else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skiff", default="target/release/skiff")
    parser.add_argument("--count", type=int, default=500_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--flush-linger-ms", type=int, default=250)
    parser.add_argument("--client-linger-ms", type=int, default=5)
    parser.add_argument("--rate", type=float, default=0,
                        help="records per second (0: as fast as possible); set it below the "
                             "saturation throughput to measure ack latency without queueing")
    parser.add_argument("--idempotence", action="store_true",
                        help="idempotent producer (sequence numbers checked and committed)")
    parser.add_argument("--client-request-max-bytes", type=int, default=1_000_000,
                        help="librdkafka message.max.bytes: the size cap of one ProduceRequest")
    parser.add_argument("--client-batch-bytes", type=int, default=1_000_000,
                        help="librdkafka batch.size: one partition's batch in a request (the "
                             "Java client's default is 16384)")
    parser.add_argument("--producers", type=int, default=1,
                        help="client instances sharing the load (records dealt round-robin)")
    parser.add_argument("--tls", action="store_true",
                        help="an SSL:// listener (certificates made with trustme); clients use "
                             "security.protocol=SSL")
    parser.add_argument("--sasl", metavar="MECHANISM",
                        choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
                        help="a SASL_SSL:// listener (TLS as --tls, and a user logging in with "
                             "MECHANISM); clients use security.protocol=SASL_SSL")
    parser.add_argument("--work-dir", help="where the broker's data dir goes (default: the "
                                           "system's temporary dir); /dev/shm keeps the embedded "
                                           "store's page-cache cost, 1-4 CPU-s per GiB on these "
                                           "VMs, out of the broker's figures")
    parser.add_argument("--results", help="append a markdown row to this file")
    parser.add_argument("--profile", metavar="DIR",
                        help="record the broker's produce and consume phases with `perf record` into DIR")
    parser.add_argument("--broker-args", nargs=argparse.REMAINDER, default=[],
                        help="further `skiff serve` flags, e.g. --compactor-enable false (the "
                             "embedded compactor's Parquet work otherwise lands in whichever run "
                             "it happens to overlap)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="skiff-bench-", dir=args.work_dir))
    log = open(workdir / "skiff.log", "wb")
    client, broker_args, scheme, more_listeners = {}, list(args.broker_args), "", ""
    args.tls = args.tls or bool(args.sasl)
    if args.tls:
        import trustme
        ca = trustme.CA()
        (workdir / "ca.pem").write_bytes(ca.cert_pem.bytes())
        (workdir / "server.pem").write_bytes(
            ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.bytes())
        broker_args += ["--ssl-keystore-location", str(workdir / "server.pem")]
        client = {"security.protocol": "SSL", "ssl.ca.location": str(workdir / "ca.pem")}
        scheme = "SSL://"
    if args.sasl:
        # The user is set through a PLAINTEXT listener of its own; the load goes over SASL_SSL.
        admin_listener = f"127.0.0.1:{free_port()}"
        more_listeners = f",PLAINTEXT://{admin_listener}"
        # (The HTTP API, which the script reads for stats, stays open: not what is measured.)
        broker_args += ["--sasl-enabled-mechanisms", args.sasl, "--http-authentication", "none"]
        client.update({"security.protocol": "SASL_SSL", "sasl.mechanism": args.sasl,
                       "sasl.username": "bench", "sasl.password": "bench-password"})
        scheme = "SASL_SSL://"
    proc, bootstrap, http = start_broker(args.skiff, workdir / "data", args.flush_linger_ms, log,
                                         tuple(broker_args), scheme, more_listeners)
    if args.sasl:
        subprocess.run([args.skiff, "user", "set", "bench", "--password-stdin",
                        "--bootstrap-server", admin_listener], input=b"bench-password\n",
                       check=True, capture_output=True, timeout=60)
    try:
        topic = "bench"
        admin = AdminClient({"bootstrap.servers": bootstrap, **client})
        admin.create_topics(
            [NewTopic(topic, num_partitions=args.partitions, replication_factor=1)])[topic].result(15)
        total_bytes = args.count * args.size

        perf = start_profile(args.profile, "produce-tls" if args.tls else "produce", proc.pid)
        cpu0, stats0, faults0 = cpu_seconds(proc.pid), stats(http), minor_faults(proc.pid)
        requests0 = requests_handled(http, "Produce")
        produce_s, latencies, failures = produce(bootstrap, topic, args.partitions, args.count,
                                                 args.size, args.client_linger_ms, args.rate,
                                                 args.idempotence, args.client_request_max_bytes,
                                                 client, args.client_batch_bytes, args.producers)
        cpu1, stats1, faults1 = cpu_seconds(proc.pid), stats(http), minor_faults(proc.pid)
        requests = requests_handled(http, "Produce") - requests0
        fetches0 = requests_handled(http, "Fetch")
        stop_profile(perf)
        if failures:
            raise SystemExit(f"{len(failures)} produce failures, first: {failures[0]}")
        perf = start_profile(args.profile, "consume-tls" if args.tls else "consume", proc.pid)
        consume_s = consume(bootstrap, topic, args.partitions, args.count, client)
        stop_profile(perf)
        cpu2, stats2 = cpu_seconds(proc.pid), stats(http)
        fetches = requests_handled(http, "Fetch") - fetches0
        objects = stats1["objects_written"] - stats0["objects_written"]
        object_bytes = stats1["object_bytes_written"] - stats0["object_bytes_written"]
        file_writes = file_write_cpu_s_per_gib(workdir, object_bytes,
                                               object_bytes // max(objects, 1))
        result = {
            "records": args.count, "record_bytes": args.size, "partitions": args.partitions,
            "flush_linger_ms": args.flush_linger_ms, "client_linger_ms": args.client_linger_ms,
            "rate_records_s": args.rate, "idempotence": args.idempotence, "tls": args.tls, "sasl": args.sasl,
            "producers": args.producers,
            "client_request_max_bytes": args.client_request_max_bytes,
            "client_batch_bytes": args.client_batch_bytes,
            "produce_mib_s": total_bytes / MIB / produce_s,
            "produce_records_s": args.count / produce_s,
            "ack_p50_ms": percentile(latencies, 0.50) * 1000,
            "ack_p99_ms": percentile(latencies, 0.99) * 1000,
            "consume_mib_s": total_bytes / MIB / consume_s,
            "objects_per_s": objects / produce_s,
            "objects_per_gib": objects / (total_bytes / GIB),
            "object_bytes_mean_mib": (stats1["object_bytes_written"] - stats0["object_bytes_written"]) / max(objects, 1) / MIB,
            "cpu_s_per_gib_produced": (cpu1 - cpu0) / (total_bytes / GIB),
            "cpu_s_per_gib_consumed": (cpu2 - cpu1) / (total_bytes / GIB),
            "page_faults_per_gib_produced": (faults1 - faults0) / (total_bytes / GIB),
            # Per-request cost: what a paced load pays beyond the bytes.
            "produce_requests_per_s": requests / produce_s,
            "cpu_us_per_produce_request": (cpu1 - cpu0) * 1e6 / max(requests, 1),
            # The same objects' bytes written to new files by this process, in this run: on
            # the embedded store, the kernel's page-cache cost inside the produce figure.
            "file_write_cpu_s_per_gib": file_writes * object_bytes / total_bytes,
            "range_reads_consume": stats2["range_reads"] - stats1["range_reads"],
            "fetch_requests_consume": fetches,
            "fetched_kib_per_request": total_bytes / 1024 / max(fetches, 1),
            "peak_rss_mib": peak_rss_mib(proc.pid),
            "flushes": stats2["flushes"],
            "flushes_without_linger": stats2.get("flushes_without_linger", 0),
            # The broker's flush stages over the whole run, p50/p99 ms (see /v1/stats).
            "flush_stages_p50_p99_ms": {k: [round(v["p50_ms"], 1), round(v["p99_ms"], 1)]
                                        for k, v in stats2.get("flush_stages", {}).items()},
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print(json.dumps(result, indent=2))
    if args.results:
        row = (f"| {time.strftime('%Y-%m-%d')} | {platform.node()} ({os.cpu_count()} cores) | "
               f"{args.partitions}{' idempotent' if args.idempotence else ''} | "
               f"{args.flush_linger_ms} | {args.rate or 'max'} | "
               f"{result['produce_mib_s']:.1f} | {result['produce_records_s']:.0f} | "
               f"{result['ack_p50_ms']:.0f} / {result['ack_p99_ms']:.0f} | "
               f"{result['consume_mib_s']:.1f} | {result['objects_per_s']:.2f} | "
               f"{result['objects_per_gib']:.0f} | {result['cpu_s_per_gib_produced']:.2f} | "
               f"{result['cpu_s_per_gib_consumed']:.2f} | {result['peak_rss_mib']:.0f} |\n")
        with open(args.results, "a") as f:
            f.write(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
