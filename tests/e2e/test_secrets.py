"""No secret in what the broker shows: the bucket's secret key and the TLS private key, given
as flags and environment, appear in none of the logs (debug level), `/metrics`, `/v1/*`,
`--help`, `skiff doctor`'s report or a failing start's error. (Every test's logs are also
searched for every secret the run registered, `helpers.secret`: conftest's
`no_secret_in_any_log`.)"""

import os
import subprocess

import trustme

import helpers as h
from conftest import skiff_bin
from servers import broker_args

SECRET = h.secret("s3cr3t-6f1d2c9a-never-print-me")


def test_no_secret_appears_in_logs_metrics_help_or_errors(start_broker, etcd, s3, tmp_path):
    args = broker_args(etcd, s3)
    args[args.index("--s3-secret-access-key") + 1] = SECRET  # moto takes any secret
    b = start_broker(args=args + ["--log", "debug"])
    topic = h.unique_topic("secrets")
    h.produce_and_wait(h.producer(b.bootstrap), topic, [b"x"] * 20)
    assert [r.value for r in h.read_partitions(b.bootstrap, topic, [0])] == [b"x"] * 20

    shown = []
    for path in ["/metrics", "/v1/stats", "/v1/topics", "/v1/brokers", "/v1/groups",
                 "/v1/compactor", "/ready"]:
        shown.append(b.http_get(path)[1].decode())
    env = {**os.environ, "SKIFF_S3_SECRET_ACCESS_KEY": SECRET}
    for command in (["serve", "--help"], ["compactor", "--help"], ["doctor", "--help"]):
        run = subprocess.run([str(skiff_bin()), *command], capture_output=True, text=True,
                             env=env, timeout=60)
        shown += [run.stdout, run.stderr]
    run = subprocess.run([str(skiff_bin()), "doctor", "--data-dir", str(tmp_path / "doc"),
                          *args], capture_output=True, text=True, timeout=120)
    assert "object store" in run.stdout
    shown += [run.stdout, run.stderr]
    # A start that fails (no such bucket) explains itself without the secret either.
    bad = [a.replace("s3://skiff-e2e/", "s3://no-such-bucket/") for a in args]
    run = subprocess.run([str(skiff_bin()), "doctor", "--data-dir", str(tmp_path / "bad"), *bad],
                         capture_output=True, text=True, timeout=120)
    shown += [run.stdout, run.stderr]

    # A TLS key given to a broker that cannot start (its trust store is missing).
    ca = trustme.CA()
    key_pem = ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.bytes()
    (tmp_path / "server.pem").write_bytes(key_pem)
    run = subprocess.run([str(skiff_bin()), "serve", "--data-dir", str(tmp_path / "tls"),
                          "--listeners", "SSL://127.0.0.1:0", "--http-listeners", "127.0.0.1:0",
                          "--ssl-keystore-location", str(tmp_path / "server.pem"),
                          "--ssl-client-auth", "required"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    shown += [run.stdout, run.stderr]
    pem = key_pem.decode()
    begin = pem.index("PRIVATE KEY-----") + len("PRIVATE KEY-----")
    key_lines = [line for line in pem[begin:pem.index("-----END")].splitlines() if len(line) > 20]
    assert key_lines

    b.stop()
    # (The harness writes each start's command line into the same file: not the broker's.)
    shown += [line for line in b.log_path.read_text().splitlines()
              if not line.startswith("===== start")]
    everything = "\n".join(shown)
    assert "DEBUG" in everything, "the broker's debug log was read"
    assert SECRET not in everything
    assert not any(line in everything for line in key_lines)
