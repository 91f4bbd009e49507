"""deploy/helm/skiff: the chart linted (`helm lint --strict`) and rendered (`helm template`) with
its default values and production-like ones (ci/production-values.yaml), every rendered manifest
validated against the Kubernetes API schemas (kubernetes-validate, strict), and the rendered
pods run: each container's arguments and environment, exactly as rendered, start `skiff`
processes (the pod IP a loopback address of their own, the Secret's values resolved) against
etcd and an S3 server, which then serve Kafka clients and answer the chart's probes.

helm comes from PyPI: the AWS CDK's kubectl Lambda layer wheel ships the official helm binary
(scripts/test.sh installs it and sets SKIFF_HELM)."""

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

import helpers as h
from conftest import SkiffBroker, skiff_bin
from servers import MotoS3

CHART = Path(__file__).parents[2] / "deploy/helm/skiff"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
KUBERNETES_VERSION = "1.33.0"
# Kinds of CRDs whose schemas kubernetes-validate does not carry.
CRD_KINDS = {"ServiceMonitor"}


def helm(*args: str) -> str:
    binary = os.environ.get("SKIFF_HELM")
    assert binary and Path(binary).is_file(), "SKIFF_HELM: run through scripts/test.sh"
    run = subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, (args, run.stdout, run.stderr)
    return run.stdout


def render(*values: str) -> list[dict]:
    out = helm("template", "rel", str(CHART), "--namespace", "streaming", *values)
    return [d for d in yaml.safe_load_all(out) if d]


def validate(tmp_path: Path, docs: list[dict]) -> subprocess.CompletedProcess:
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return subprocess.run([str(VALIDATE), "--strict", "-k", KUBERNETES_VERSION, str(path)],
                          capture_output=True, text=True, timeout=120)


def by_kind(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def workload(docs, name) -> dict:
    """The Deployment or StatefulSet called `name`."""
    [w] = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")
           and d["metadata"]["name"] == name]
    return w


def container(docs, name) -> dict:
    [c] = workload(docs, name)["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c["env"]}


@pytest.mark.parametrize("values", [[], ["-f", str(CHART / "ci/production-values.yaml")],
                                    ["-f", str(CHART / "ci/secured-values.yaml")]],
                         ids=["default", "production", "secured"])
def test_chart_lints_renders_and_validates(tmp_path, values):
    helm("lint", "--strict", str(CHART), *values)
    docs = render(*values)
    result = validate(tmp_path, [d for d in docs if d["kind"] not in CRD_KINDS])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout and "failed" not in result.stdout.lower()
    # The validator rejects what it should: the same broker StatefulSet with a misspelt field.
    broken = json.loads(json.dumps(by_kind(docs)[("StatefulSet", "rel-skiff-broker")]))
    broken["spec"]["replica"] = 3
    assert validate(tmp_path, [broken]).returncode != 0

    kinds = by_kind(docs)
    broker = container(docs, "rel-skiff-broker")
    brokers = kinds[("StatefulSet", "rel-skiff-broker")]
    pod = brokers["spec"]["template"]["spec"]
    env = env_of(broker)
    # Per-pod advertised addresses: with TLS the pod's DNS name under the headless Service (a
    # certificate can carry it), else its IP; the compactor runs apart; probes on real health.
    protocol = "SASL_SSL" if "secured" in " ".join(values) else "PLAINTEXT"
    assert broker["args"][broker["args"].index("--listeners") + 1] == f"{protocol}://0.0.0.0:9092"
    if protocol == "SASL_SSL":
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
        assert env["SKIFF_ADVERTISED_LISTENERS"]["value"] == (
            f"{protocol}://$(POD_NAME).rel-skiff-brokers.$(POD_NAMESPACE).svc.cluster.local:9092")
        assert "POD_IP" not in env
    else:
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert env["SKIFF_ADVERTISED_LISTENERS"]["value"] == f"{protocol}://$(POD_IP):9092"
    headless = kinds[("Service", "rel-skiff-brokers")]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert brokers["spec"]["serviceName"] == "rel-skiff-brokers"
    assert brokers["spec"]["podManagementPolicy"] == "Parallel"
    assert "volumeClaimTemplates" not in brokers["spec"]
    assert env["SKIFF_COMPACTOR_ENABLE"]["value"] == "false"
    assert broker["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert broker["livenessProbe"]["httpGet"]["path"] == "/health"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert broker["securityContext"]["readOnlyRootFilesystem"] is True
    assert [v for v in pod["volumes"] if v["name"] == "data"][0]["emptyDir"]
    compactor = container(docs, "rel-skiff-compactor")
    assert compactor["args"][0] == "compactor"
    pdb = kinds[("PodDisruptionBudget", "rel-skiff-broker")]
    labels = brokers["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert kinds[("Service", "rel-skiff")]["spec"]["selector"].items() <= labels.items()
    assert headless["selector"].items() <= labels.items()
    if protocol == "SASL_SSL":
        # Secured: the TLS Secret mounted for the keystore, logins and ACLs on.
        [tls] = [v for v in pod["volumes"] if v["name"] == "tls"]
        assert tls["secret"]["secretName"] == "skiff-tls"
        assert {"name": "tls", "mountPath": "/etc/skiff/tls", "readOnly": True} in \
            broker["volumeMounts"]
        assert env["SKIFF_SSL_KEYSTORE_LOCATION"]["value"] == "/etc/skiff/tls/tls.crt"
        assert env["SKIFF_SSL_KEY_LOCATION"]["value"] == "/etc/skiff/tls/tls.key"
        assert env["SKIFF_SASL_ENABLED_MECHANISMS"]["value"] == "SCRAM-SHA-512,OAUTHBEARER"
        assert env["SKIFF_SASL_OAUTHBEARER_EXPECTED_AUDIENCE"]["value"] == "kafka"
        assert env["SKIFF_AUTHORIZER"]["value"] == "standard"
        assert env["SKIFF_SUPER_USERS"]["value"] == "User:admin;User:ops"
        # The compactor's HTTP views ask for the same logins.
        compactor_env = env_of(container(docs, "rel-skiff-compactor"))
        assert compactor_env["SKIFF_HTTP_AUTHENTICATION"]["value"] == "required"
        assert compactor_env["SKIFF_AUTHORIZER"]["value"] == "standard"
        # The HTTP ports serve HTTPS with the same certificate; probes follow.
        assert compactor_env["SKIFF_SSL_KEYSTORE_LOCATION"]["value"] == "/etc/skiff/tls/tls.crt"
        assert {"name": "tls", "mountPath": "/etc/skiff/tls", "readOnly": True} in \
            container(docs, "rel-skiff-compactor")["volumeMounts"]
        assert "https://0.0.0.0:9644" in broker["args"]
        assert "https://0.0.0.0:9645" in container(docs, "rel-skiff-compactor")["args"]
        # The probes stay open under --http-authentication required.
        assert broker["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert broker["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
        assert container(docs, "rel-skiff-compactor")["livenessProbe"]["httpGet"]["scheme"] \
            == "HTTPS"
        monitor = kinds[("ServiceMonitor", "rel-skiff")]["spec"]["endpoints"][0]
        assert monitor["scheme"] == "https"
        assert monitor["tlsConfig"]["ca"]["secret"] == {"name": "skiff-tls", "key": "ca.crt"}
    elif values:
        # Production: credentials from an existing Secret only, autoscaling, a ServiceMonitor.
        key = env["SKIFF_S3_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
        assert key["name"] == "skiff-bucket"
        assert not [d for d in docs if d["kind"] == "Secret"]
        hpa = kinds[("HorizontalPodAutoscaler", "rel-skiff-broker")]
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "rel-skiff-broker"}
        assert "replicas" not in brokers["spec"]
        assert pod["terminationGracePeriodSeconds"] == 90
        assert ("ServiceMonitor", "rel-skiff") in kinds
        assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
        monitor = kinds[("ServiceMonitor", "rel-skiff")]["spec"]["endpoints"][0]
        assert "scheme" not in monitor or monitor["scheme"] == "http"
    else:
        assert "SKIFF_S3_ACCESS_KEY_ID" not in env  # the cloud's credential chain
        assert "SKIFF_SASL_ENABLED_MECHANISMS" not in env and "tls" not in str(pod["volumes"])


def test_a_secured_chart_needs_its_tls_secret_and_a_known_protocol():
    binary = os.environ.get("SKIFF_HELM")
    for values, why in [(["--set", "security.protocol=SSL"], "security.tls.existingSecret"),
                        (["--set", "security.protocol=SASL"], "security.protocol must be"),
                        (["--set", "broker.advertise=pod"], "broker.advertise must be")]:
        run = subprocess.run([binary, "template", "rel", str(CHART), *values],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode != 0 and why in run.stderr, run.stderr


def test_brokers_advertise_what_is_asked():
    for values, advertised in [
            (["--set", "broker.advertise=podDNS", "--set", "clusterDomain=k8s.example"],
             "PLAINTEXT://$(POD_NAME).rel-skiff-brokers.$(POD_NAMESPACE).svc.k8s.example:9092"),
            (["--set", "security.protocol=SSL", "--set", "security.tls.existingSecret=t",
              "--set", "broker.advertise=podIP"], "SSL://$(POD_IP):9092")]:
        env = env_of(container(render(*values), "rel-skiff-broker"))
        assert env["SKIFF_ADVERTISED_LISTENERS"]["value"] == advertised, values


def test_zone_aware_reads_give_each_broker_its_pods_zone(tmp_path):
    env = env_of(container(render(), "rel-skiff-broker"))
    assert "SKIFF_BROKER_RACK" not in env and "SKIFF_REPLICA_SELECTOR_CLASS" not in env
    docs = render("--set", "broker.zoneAwareReads.enabled=true")
    run = validate(tmp_path, [d for d in docs if d["kind"] not in CRD_KINDS])
    assert run.returncode == 0, run.stdout + run.stderr
    env = env_of(container(docs, "rel-skiff-broker"))
    assert env["SKIFF_BROKER_RACK"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['topology.kubernetes.io/zone']"
    assert env["SKIFF_REPLICA_SELECTOR_CLASS"]["value"] == "rack-aware"


def store_values(etcd, s3) -> list[str]:
    return ["--set", f"etcd.endpoints={etcd.endpoint}",
            "--set", f"objectStore.url=s3://{MotoS3.BUCKET}/helm",
            "--set", f"objectStore.endpoint={s3.endpoint}",
            "--set", "objectStore.allowHttp=true",
            "--set", "objectStore.credentials.accessKeyId=test",
            "--set", "objectStore.credentials.secretAccessKey=test",
            "--set", "broker.cache.diskBytes=67108864"]


class RenderedPod(SkiffBroker):
    """A rendered container run as a process: its args and env as rendered; the pod's IP a
    loopback address of its own, so the container ports stay what the chart says."""

    def __init__(self, workdir: Path, name: str, c: dict, pod_ip: str, secrets: dict):
        super().__init__(workdir, name=name)
        self.pod_ip = pod_ip
        self.c = c
        env = {}
        for e in c["env"]:
            if "value" in e:
                value = e["value"]
            elif "fieldRef" in e["valueFrom"]:
                assert e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
                value = pod_ip
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                value = secrets[ref["name"]][ref["key"]]
            # Kubernetes expands $(VAR) of variables defined before.
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], value)
        self.extra_env = env
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.kafka_port = ports.get("kafka", 0)
        self.http_port = ports["http"]

    @property
    def bootstrap(self) -> str:
        return f"{self.pod_ip}:{self.kafka_port}"

    @property
    def http(self) -> str:
        return f"{self.pod_ip}:{self.http_port}"

    def command(self) -> list[str]:
        args = [a.replace("0.0.0.0", self.pod_ip) for a in self.c["args"]]
        return [str(skiff_bin()), *[str(self.data_dir) if a == "/var/lib/skiff" else a
                                    for a in args]]

    def _kafka_port_accepts(self) -> bool:
        import socket
        if not self.kafka_port:
            return True
        try:
            with socket.create_connection((self.pod_ip, self.kafka_port), timeout=1.0):
                return True
        except OSError:
            return False

    def probe(self, kind: str) -> int:
        path = self.c[kind]["httpGet"]["path"]
        assert self.c[kind]["httpGet"]["scheme"] == "HTTP"  # these pods run without TLS
        try:
            with urllib.request.urlopen(f"http://{self.http}{path}", timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code


def test_rendered_pods_run_and_serve(tmp_path, etcd, s3):
    docs = render(*store_values(etcd, s3))
    secrets = {d["metadata"]["name"]: d["stringData"] for d in docs if d["kind"] == "Secret"}
    broker_c = container(docs, "rel-skiff-broker")
    compactor_c = container(docs, "rel-skiff-compactor")
    pods = [RenderedPod(tmp_path / f"broker-{i}", f"broker-{i}", broker_c, f"127.0.7.{i}", secrets)
            for i in (1, 2)]
    pods.append(RenderedPod(tmp_path / "compactor", "compactor", compactor_c, "127.0.7.9",
                            secrets))
    try:
        for p in pods:
            p.start()
        brokers = pods[:2]
        bootstrap = brokers[0].bootstrap  # what the Service would route to
        md = h.admin(bootstrap).list_topics(timeout=10)
        assert sorted(f"{b.host}:{b.port}" for b in md.brokers.values()) == [
            "127.0.7.1:9092", "127.0.7.2:9092"]
        assert md.cluster_id == "skiff"
        topic = h.unique_topic("helm")
        values = [b"h%03d" % i for i in range(100)]
        h.produce_and_wait(h.producer(bootstrap), topic, values)
        assert h.topic_partition_count(bootstrap, topic) == 3  # broker.numPartitions
        got = h.read_partitions(bootstrap, topic, [0, 1, 2])
        assert sorted(r.value for r in got) == values
        for p in pods:
            probes = ["readinessProbe", "livenessProbe"] + (
                ["startupProbe"] if "startupProbe" in p.c else [])
            assert {k: p.probe(k) for k in probes} == {k: 200 for k in probes}, p.name
        # The compactor is the one compacting.
        status = json.loads(pods[2].http_get("/v1/compactor")[1])
        assert status["local"] is not None
        assert json.loads(brokers[0].http_get("/v1/compactor")[1])["local"] is None
    finally:
        for p in pods:
            p.cleanup()


def test_rendered_pods_with_logins_and_acls(tmp_path, etcd, s3):
    """The chart's security values, rendered and run: SASL_PLAINTEXT with SCRAM, ACLs, the
    first user bootstrapped into etcd as the chart's notes say."""
    from confluent_kafka import KafkaException
    docs = render(*store_values(etcd, s3), "--set", "security.protocol=SASL_PLAINTEXT",
                  "--set", "security.authorizer.enabled=true",
                  "--set", "security.authorizer.superUsers={User:admin}",
                  "--set", "compactor.enabled=false")
    secrets = {d["metadata"]["name"]: d["stringData"] for d in docs if d["kind"] == "Secret"}
    run = subprocess.run([str(skiff_bin()), "user", "bootstrap", "admin", "--password-stdin",
                          "--etcd-endpoints", etcd.endpoint], input="admin-Secr3t-pw\n",
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    pod = RenderedPod(tmp_path / "broker", "broker", container(docs, "rel-skiff-broker"),
                      "127.0.7.3", secrets)
    try:
        pod.start()
        login = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                 "sasl.username": "admin", "sasl.password": "admin-Secr3t-pw"}
        topic = h.unique_topic("helm-secured")
        values = [b"s%03d" % i for i in range(50)]
        h.produce_and_wait(h.producer(pod.bootstrap, **login), topic, values)
        got = h.read_partitions(pod.bootstrap, topic, range(3), c=h.consumer(pod.bootstrap,
                                                                             **login))
        assert sorted(r.value for r in got) == values
        # No login, no Kafka; the HTTP views ask for one; the probes stay open.
        with pytest.raises(KafkaException):
            h.admin(pod.bootstrap).list_topics(timeout=3)
        assert pod.http_get("/v1/topics")[0] == 401
        assert pod.http_get("/v1/topics", auth=("admin", "admin-Secr3t-pw"))[0] == 200
        for probe in ["readinessProbe", "livenessProbe", "startupProbe"]:
            assert pod.probe(probe) == 200, probe
    finally:
        pod.cleanup()
