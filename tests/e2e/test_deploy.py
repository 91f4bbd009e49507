"""deploy/: the Compose topology run as processes. No container engine exists here, so the
brokers and the compactor of deploy/docker-compose.yml start as `skiff` processes with exactly
the arguments (the image's CMD from deploy/Dockerfile, or the service's `command`) and the
environment the file gives them, on the host ports it publishes; only the names of the other
services (etcd, minio) are pointed at this test's etcd and S3 server. Then Kafka clients use the
cluster through the advertised addresses, the compactor compacts, and the Prometheus and Grafana
files are checked against what the processes really export."""

import json
import re
import socket
import time
from pathlib import Path

import pytest
import yaml
from confluent_kafka import TopicPartition
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import helpers as h
from conftest import HEALTH_TIMEOUT_S, SkiffBroker, free_port, skiff_bin

DEPLOY = Path(__file__).parents[2] / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def substitute(value: str) -> str:
    """Compose's ${VAR:-default}, with no such variable set (the file's defaults)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", lambda m: m.group(1), str(value))


def published_ports(spec: dict) -> set[int]:
    """The host ports the file publishes for its skiff services."""
    return {int(m.split(":")[-2]) for name, svc in spec["services"].items()
            if name.startswith("skiff-") or name == "compactor" for m in svc["ports"]}


# The file's host ports (19092, 29092, 39092, ...) lie in Linux's ephemeral range: any outgoing
# connection on the machine may be given one as its local port, and a long-lived one (a broker's
# etcd or S3 connection, etcd's own gateway) holds it for the whole test. A port bound by a
# socket is never given to an outgoing connection, so this module binds them all when it is
# collected (before any fixture starts a server) and lets each go just before its service binds.
_RESERVED: dict[int, socket.socket] = {}
for _port in sorted(published_ports(compose())):
    _s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        _s.bind(("127.0.0.1", _port))
        _RESERVED[_port] = _s
    except OSError:
        _s.close()  # held already: start() waits for it


def release(port: int) -> None:
    s = _RESERVED.pop(port, None)
    if s is not None:
        s.close()


def image_cmd() -> list[str]:
    [line] = [l for l in (DEPLOY / "Dockerfile").read_text().splitlines() if l.startswith("CMD ")]
    return json.loads(line[len("CMD "):])


class ComposeService(SkiffBroker):
    """One service of the Compose file as a process: its command and environment, its
    container ports bound on the host ports the file publishes."""

    def __init__(self, workdir: Path, name: str, service: dict, hosts: dict[str, str]):
        super().__init__(workdir, name=name)
        self.ports = {}
        for mapping in service["ports"]:
            parts = mapping.split(":")
            self.ports[int(parts[-1])] = int(parts[-2])
        self.argv = [substitute(a) for a in service.get("command") or image_cmd()]
        # Container ports the file does not publish (the INTERNAL listener) get a free host port.
        for arg in self.argv:
            for port in re.findall(r"0\.0\.0\.0:(\d+)", arg):
                self.ports.setdefault(int(port), free_port())
        env = {k: substitute(v) for k, v in service["environment"].items()}
        # This service's own name on the compose network → its internal listener here.
        hosts = {**hosts, f"{name}:9092": f"127.0.0.1:{self.ports.get(9092, 0)}"}
        for name_port, here in hosts.items():
            env = {k: v.replace(name_port, here) for k, v in env.items()}
        self.extra_env = env
        self.kafka_port = self.ports.get(9094) or self.ports.get(9092, 0)
        self.http_port = self.ports.get(9644) or self.ports[9645]

    def advertised(self, listener: str) -> str:
        """The address the service advertises on `listener`."""
        for entry in self.extra_env["SKIFF_ADVERTISED_LISTENERS"].split(","):
            name, _, address = entry.partition("://")
            if name == listener:
                return address
        raise KeyError(listener)

    def command(self) -> list[str]:
        argv = []
        for arg in self.argv:
            # Container addresses → the published host ports; the image's data dir → a temp one.
            if "0.0.0.0:" in arg:
                arg = re.sub(r"0\.0\.0\.0:(\d+)",
                             lambda m: f"127.0.0.1:{self.ports[int(m.group(1))]}", arg)
            elif arg == "/var/lib/skiff":
                arg = str(self.data_dir)
            argv.append(arg)
        return [str(skiff_bin()), *argv]

    def start(self, timeout: float = HEALTH_TIMEOUT_S) -> "ComposeService":
        for port in self.ports.values():
            release(port)
        # A port that was held when the module reserved them may still be, for a moment.
        for attempt in range(10):
            try:
                return super().start(timeout)
            except RuntimeError as e:
                if "Address already in use" not in str(e) or attempt == 9:
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")

    def _kafka_port_accepts(self) -> bool:
        return self.kafka_port == 0 or super()._kafka_port_accepts()


def scrape(address: str) -> set[str]:
    import urllib.request
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_compose_topology_runs_as_written(tmp_path, etcd, s3):
    spec = compose()
    services = spec["services"]
    brokers = sorted(n for n in services if n.startswith("skiff-"))
    assert brokers == ["skiff-1", "skiff-2", "skiff-3"]
    # The bucket the file's createbucket makes, in this test's S3 server.
    bucket = re.match(r"s3://([^/]+)/", substitute(
        services["skiff-1"]["environment"]["SKIFF_OBJECT_STORE_URL"])).group(1)
    s3.client().create_bucket(Bucket=bucket)
    hosts = {"http://etcd:2379": etcd.endpoint, "http://minio:9000": s3.endpoint}

    procs = [ComposeService(tmp_path / n, n, services[n], hosts) for n in brokers]
    compactor = ComposeService(tmp_path / "compactor", "compactor", services["compactor"], hosts)
    try:
        for p in procs + [compactor]:
            p.start()
        bootstrap = ",".join(p.advertised("EXTERNAL") for p in procs)
        assert bootstrap == "localhost:19092,localhost:29092,localhost:39092"

        # The cluster as the file describes it: three brokers at their advertised addresses,
        # its cluster id, topics auto-created with SKIFF_NUM_PARTITIONS partitions.
        md = h.admin(bootstrap).list_topics(timeout=10)
        assert sorted((b.id, f"{b.host}:{b.port}") for b in md.brokers.values()) == [
            (1, "localhost:19092"), (2, "localhost:29092"), (3, "localhost:39092")]
        # Clients on the compose network bootstrap from the INTERNAL listener and are told the
        # brokers' network names (skiff-N:9092, here each one's internal port).
        internal = procs[0].advertised("INTERNAL")
        md = h.admin(internal).list_topics(timeout=10)
        assert sorted((b.id, f"{b.host}:{b.port}") for b in md.brokers.values()) == [
            (i + 1, p.advertised("INTERNAL")) for i, p in enumerate(procs)]
        assert md.cluster_id == "skiff-compose"
        topic = h.unique_topic("compose")
        p = h.producer(bootstrap)
        values = [b"c%04d" % i for i in range(300)]
        h.produce_and_wait(p, topic, values)
        assert h.topic_partition_count(bootstrap, topic) == 3
        got = h.read_partitions(bootstrap, topic, [0, 1, 2])
        assert sorted(r.value for r in got) == values

        # A consumer group with a committed offset (its lag is exported), and a Fetch refused
        # (an error is counted): the dashboard's lag and error panels have series.
        c = h.consumer(bootstrap, **{"group.id": h.unique_topic("compose-group")})
        c.assign([TopicPartition(topic, 0, 0)])
        c.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
        c.close()
        c = h.consumer(bootstrap, **{"auto.offset.reset": "error"})
        c.assign([TopicPartition(topic, 0, 10**6)])
        deadline = time.monotonic() + 30
        while True:
            m = c.poll(0.5)
            if m is not None and m.error():
                break
            assert time.monotonic() < deadline, "no OFFSET_OUT_OF_RANGE"
        c.close()

        # The brokers run no compactor (SKIFF_COMPACTOR_ENABLE=false); the compactor service
        # puts the topic in Parquet.
        for broker in procs:
            assert broker.http_get("/v1/compactor")[0] == 200
            status = json.loads(broker.http_get("/v1/compactor")[1])
            assert status["local"] is None, f"{broker.name} runs a compactor"
        deadline = time.monotonic() + 90
        while True:
            status = json.loads(compactor.http_get("/v1/compactor")[1])
            parts = [x for x in status["partitions"] if x["topic"] == topic]
            if (sum(x["high_watermark"] for x in parts) == len(values)
                    and all(x["parquet_end"] == x["high_watermark"] for x in parts)):
                break
            assert time.monotonic() < deadline, parts
            time.sleep(0.5)
        listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"cluster/parquet/topic={topic}/")
        assert listed.get("KeyCount", 0) > 0

        # Prometheus scrapes what the file's services serve: every target answers, the job the
        # dashboard selects brokers by exists, and every series the dashboard queries is there.
        prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
        mounted = services["prometheus"]["volumes"][0].split(":")
        assert (DEPLOY / mounted[0]).resolve() == (DEPLOY / "prometheus/prometheus.yml").resolve()
        assert mounted[1] in services["prometheus"]["command"][0]
        jobs = {j["job_name"]: [t for c in j["static_configs"] for t in c["targets"]]
                for j in prom["scrape_configs"]}
        by_service = {p.name: p for p in procs + [compactor]}
        exported = set()
        for job, targets in jobs.items():
            for target in targets:
                service, port = target.split(":")
                proc = by_service[service]
                exported |= scrape(f"127.0.0.1:{proc.ports[int(port)]}")
        dashboard = json.loads((DEPLOY / "grafana/skiff.json").read_text())
        job_var = next(v for v in dashboard["templating"]["list"] if v["name"] == "job")
        assert job_var["query"] in jobs
        queried = {name for panel in dashboard["panels"] for target in panel["targets"]
                   for name in re.findall(r"\b((?:skiff|process)_[a-z_]+)", target["expr"])}
        assert queried - exported == set()
        compactor_series = scrape(f"127.0.0.1:{compactor.ports[9645]}")
        assert {"skiff_compactor_jobs_total", "skiff_compactor_backlog_bytes",
                "skiff_object_store_requests_total"} <= compactor_series

        # Grafana: provisioned with that Prometheus and the dashboard file, as mounted.
        grafana = services["grafana"]
        mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"])
        provisioning = DEPLOY / mounts["./grafana/provisioning"].replace(
            "/etc/grafana/provisioning", "grafana/provisioning")
        [source] = yaml.safe_load(
            (provisioning / "datasources/prometheus.yml").read_text())["datasources"]
        prometheus_port = services["prometheus"]["ports"][0].split(":")[-1]
        assert source["type"] == "prometheus"
        assert source["url"] == f"http://prometheus:{prometheus_port}"
        [provider] = yaml.safe_load(
            (provisioning / "dashboards/skiff.yml").read_text())["providers"]
        assert mounts["./grafana/skiff.json"].startswith(provider["options"]["path"] + "/")
    finally:
        for proc in procs + [compactor]:
            proc.cleanup()
