"""The real servers cluster-mode tests run Skiff against: etcd (Debian `etcd-server`) and an
S3-compatible server (moto's server mode, from PyPI).

Why moto: MinIO's server cannot be installed from the registries this project can reach, rustfs
needs a newer Rust, and s3s-fs's conditional writes are not atomic. moto speaks enough S3 for
object_store's client (put, ranged get, list, delete, multipart) and installs with pip. It keeps
objects in memory, so "S3 down" is simulated without losing the bucket in two ways: freezing the
process (SIGSTOP/SIGCONT), which is what a hung endpoint looks like to a client, and stopping a
TCP front door (`S3Door`) that the brokers connect through, which is what a stopped and restarted
server looks like: connections reset, then refused, then accepted again on the same port.

Each server runs on free loopback ports with its own data, and is stopped by its own pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3

from conftest import _die_with_parent, free_port


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not become ready within {timeout} s")


class Etcd:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "etcd.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> "Etcd":
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            self._spawn()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self._healthy():
                    self.started = True
                    return self
                time.sleep(0.05)
            # An etcd that exits at once on its first start most likely lost a port to another
            # process between free_port() and its bind: try fresh ports (its data dir is new).
            if self.proc.poll() is None or getattr(self, "started", False):
                break
            self.client_port, self.peer_port = free_port(), free_port()
            shutil.rmtree(self.workdir / "data", ignore_errors=True)
        raise AssertionError(f"etcd did not become ready within 20 s (log: {self.log_path})")

    def _spawn(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [os.environ.get("SKIFF_ETCD_BIN", "etcd"), "--name", "e2e",
                 "--data-dir", str(self.workdir / "data"),
                 "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"e2e={peer}",
                 "--heartbeat-interval", "10", "--election-timeout", "100",
                 *self.extra_flags()],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    def extra_flags(self) -> list[str]:
        """More etcd flags (TLS, say) for subclasses."""
        return []

    def _healthy(self) -> bool:
        import urllib.request
        try:
            with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1) as r:
                return b"true" in r.read()
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class MotoS3:
    BUCKET = "skiff-e2e"

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "moto.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")

    def start(self) -> "MotoS3":
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from moto.server import main; main()",
                 "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

        def ready() -> bool:
            try:
                self.client().create_bucket(Bucket=self.BUCKET)
                return True
            except Exception:  # not listening yet
                return False
        _wait(ready, 30, "moto S3 server")
        return self

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def keys(self, prefix: str = "") -> list[str]:
        keys, token = [], None
        while True:
            kwargs = {"Bucket": self.BUCKET, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self.client().list_objects_v2(**kwargs)
            keys += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return keys
            token = page["NextContinuationToken"]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.thaw()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class S3Door:
    """A TCP forwarder in front of the S3 server that can be stopped and started again on the
    same port: stopping resets every open connection and refuses new ones, as a server process
    that exits does."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "S3Door":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            try:
                # RST rather than FIN: the peer sees the connection die, not a clean close.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
            except OSError:
                pass

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            self._conns.discard(src)
            self._conns.discard(dst)


def broker_args(etcd: Etcd, s3: MotoS3, prefix: str = "cluster") -> list[str]:
    """`skiff serve` flags for cluster mode against these servers."""
    return ["--etcd-endpoints", etcd.endpoint,
            "--object-store-url", f"s3://{MotoS3.BUCKET}/{prefix}",
            "--s3-endpoint", s3.endpoint, "--s3-allow-http", "true",
            "--s3-access-key-id", "test", "--s3-secret-access-key", "test",
            "--object-store-timeout-ms", "3000"]


def etcd_keys(etcd: Etcd, prefix: str) -> tuple[int, int]:
    """(number of keys, bytes of keys and values) under `prefix`, via etcd's JSON gateway."""
    import base64
    import json
    import urllib.request
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                       "range_end": base64.b64encode(end.encode()).decode()}).encode()
    req = urllib.request.Request(f"{etcd.endpoint}/v3/kv/range", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        kvs = json.load(r).get("kvs", [])
    size = sum(len(base64.b64decode(kv["key"])) + len(base64.b64decode(kv.get("value", "")))
               for kv in kvs)
    return len(kvs), size


def etcd_put(etcd: Etcd, key: str, value: bytes) -> None:
    """Writes one key through etcd's JSON gateway (to stage state a test cannot wait for)."""
    import base64
    import json
    import urllib.request
    body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                       "value": base64.b64encode(value).decode()}).encode()
    req = urllib.request.Request(f"{etcd.endpoint}/v3/kv/put", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()
