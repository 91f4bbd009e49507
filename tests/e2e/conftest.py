"""Fixtures that run the real `skiff` binary for end-to-end tests.

Every test gets its own broker process on free loopback ports with a fresh data directory.
The broker's stdout/stderr go to a log file that is attached to the report of a failing test.
Processes are always stopped by their own pid at teardown, never by name.

Per-test broker options:

    @pytest.mark.skiff(flush_linger_ms=300, args=["--num-partitions", "8"])
    def test_x(broker): ...

or a module-wide `pytestmark = pytest.mark.skiff(...)`. For several brokers or custom start-up,
use the `start_broker` factory fixture.

Start and restart brokers from the test's main thread: each process is tied to the thread that
spawned it (PR_SET_PDEATHSIG) so it cannot outlive a crashed test run.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO / "target" / "debug" / "skiff"
HEALTH_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
DEFAULT_FLUSH_LINGER_MS = 20
# The harness's own lines in a broker's log (each start's command line, which holds the flags
# a test passed, secrets included): not what the broker wrote.
HARNESS_LINE_PREFIX = "===== start #"
LOG_TAIL_LINES = 300


def _die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGKILL the broker if the pytest process dies (e.g. a hard
    timeout), so no broker outlives the test run even when teardown cannot run."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def skiff_bin() -> Path:
    return Path(os.environ.get("SKIFF_BIN", str(DEFAULT_BIN)))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SkiffBroker:
    """One `skiff serve` process bound to fixed ports and a data dir that survive restarts."""

    def __init__(self, workdir: Path, flush_linger_ms: int = DEFAULT_FLUSH_LINGER_MS,
                 args: list[str] | None = None, name: str = "skiff"):
        self.name = name
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        self.flush_linger_ms = flush_linger_ms
        self.extra_args = list(args or [])
        self.kafka_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.kafka_port:
            self.http_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.exit_codes: list[int] = []
        # Environment variables the process gets on top of the test's (without its SKIFF_*).
        self.extra_env: dict[str, str] = {}
        # The CA that signed the broker's certificate, when its HTTP port serves HTTPS.
        self.http_ca: str | None = None

    # ---- addresses -------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def http_listener(self) -> str:
        """`--http-listeners`: HTTPS when the harness has a CA to check the broker with."""
        return f"https://{self.http}" if self.http_ca else self.http

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        return [
            str(skiff_bin()), "serve",
            "--data-dir", str(self.data_dir),
            "--listeners", self.bootstrap,
            "--advertised-listeners", self.bootstrap,
            "--http-listeners", self.http_listener,
            "--flush-linger-ms", str(self.flush_linger_ms),
            *self.extra_args,
        ]

    # ---- life cycle ------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = HEALTH_TIMEOUT_S) -> "SkiffBroker":
        assert not self.is_running(), "broker already running"
        binary = skiff_bin()
        if not binary.exists():
            pytest.fail(f"skiff binary not found at {binary} (build it or set SKIFF_BIN)")
        # Hermetic: the broker must only see the flags we pass, not a developer's SKIFF_* env.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKIFF_")}
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.extra_env)
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n{HARNESS_LINE_PREFIX}{self.starts}: {' '.join(self.command())}\n"
                      .encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, preexec_fn=_die_with_parent)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last_err = "no attempt"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                code = self.proc.returncode
                self.exit_codes.append(code)
                raise RuntimeError(
                    f"skiff exited with code {code} during start-up\n{self.log_tail(80)}")
            try:
                status, _ = self.http_get("/health", timeout=1.0)
                if status == 200 and self._kafka_port_accepts():
                    return
                last_err = f"/health status {status}"
            except (OSError, urllib.error.URLError) as e:
                last_err = repr(e)
            time.sleep(0.05)
        raise RuntimeError(
            f"skiff not healthy within {timeout}s (last: {last_err})\n{self.log_tail(80)}")

    def _kafka_port_accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.kafka_port), timeout=1.0):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait for exit (SIGKILL after `timeout`). Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"skiff did not exit within {timeout}s of SIGTERM")
        self.exit_codes.append(code)
        return code

    def kill9(self) -> None:
        """SIGKILL the broker (no chance to flush) and reap it."""
        assert self.proc is not None and self.proc.poll() is None, "broker not running"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.exit_codes.append(self.proc.returncode)

    def restart(self, timeout: float = HEALTH_TIMEOUT_S) -> "SkiffBroker":
        """Stop (SIGTERM) if running, then start again on the same ports and data dir."""
        if self.is_running():
            self.stop()
        return self.start(timeout)

    def cleanup(self) -> None:
        """Teardown: stop our own process by pid, whatever state the test left it in."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    # ---- HTTP admin ------------------------------------------------------------------------
    def http_get(self, path: str, timeout: float = 5.0, auth=None) -> tuple[int, bytes]:
        return self.http_request("GET", path, timeout=timeout, auth=auth)

    def http_request(self, method: str, path: str, body: dict | None = None,
                     timeout: float = 5.0, auth=None) -> tuple[int, bytes]:
        """An HTTP admin API request; `auth` is (user, password) for Basic or a bearer
        token."""
        import base64
        headers = {}
        if isinstance(auth, tuple):
            basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        elif auth:
            headers["Authorization"] = f"Bearer {auth}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        scheme = "https" if self.http_ca else "http"
        request = urllib.request.Request(f"{scheme}://{self.http}{path}", data=data,
                                         headers=headers, method=method)
        context = ssl.create_default_context(cafile=self.http_ca) if self.http_ca else None
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def stats(self) -> dict:
        status, body = self.http_get("/v1/stats")
        assert status == 200, f"/v1/stats returned {status}: {body[:200]!r}"
        return json.loads(body)

    # ---- on-disk state ---------------------------------------------------------------------
    def object_files(self) -> list[Path]:
        """Regular files under DATA_DIR/objects at any depth (the data objects)."""
        if not self.objects_dir.exists():
            return []
        return sorted(p for p in self.objects_dir.rglob("*") if p.is_file())

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# ---- pytest wiring -------------------------------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "skiff(flush_linger_ms=..., args=[...]): options for the `broker` fixture's skiff process")
    config.addinivalue_line(
        "markers", "sasl_args(*flags): extra flags for test_sasl's broker")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for b in getattr(item, "_skiff_brokers", []):
            rep.sections.append(
                (f"skiff log: {b.name} (pid {b.pid}, {b.log_path})", b.log_tail()))


@pytest.fixture(autouse=True)
def no_secret_in_any_log(tmp_path):
    """After each test, before its directory goes (pytest.ini keeps only failed tests'): no log
    it wrote (brokers, compactors, etcd, the S3 server) contains a secret any test of the run
    registered (`helpers.secret`). Fails the test at teardown naming the file and the line,
    never the secret. Torn down after the test's brokers stop (they are set up after it)."""
    yield
    import helpers
    if not helpers.SECRETS:
        return
    leaks = []
    for path in sorted(tmp_path.rglob("*.log")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if line.startswith(HARNESS_LINE_PREFIX):
                continue
            if any(secret in line for secret in helpers.SECRETS):
                leaks.append(f"{path}:{number}")
    assert not leaks, f"a secret appears in {len(leaks)} log line(s): {leaks[:10]}"


@pytest.fixture
def start_broker(request, tmp_path):
    """Factory: start_broker(flush_linger_ms=20, args=[...], name=...) -> running SkiffBroker."""
    brokers: list[SkiffBroker] = []
    request.node._skiff_brokers = brokers

    def _start(flush_linger_ms: int = DEFAULT_FLUSH_LINGER_MS, args: list[str] | None = None,
               name: str | None = None, start: bool = True) -> SkiffBroker:
        name = name or f"skiff{len(brokers)}"
        b = SkiffBroker(tmp_path / name, flush_linger_ms=flush_linger_ms, args=args, name=name)
        brokers.append(b)
        if start:
            b.start()
        return b

    yield _start
    for b in brokers:
        b.cleanup()


@pytest.fixture
def broker(request, start_broker) -> SkiffBroker:
    """A running broker; options from the closest @pytest.mark.skiff(...) marker."""
    marker = request.node.get_closest_marker("skiff")
    kwargs = dict(marker.kwargs) if marker else {}
    return start_broker(**kwargs)


@pytest.fixture
def etcd(tmp_path):
    from servers import Etcd
    server = Etcd(tmp_path / "etcd").start()
    yield server
    server.stop()


@pytest.fixture
def s3(tmp_path):
    from servers import MotoS3
    server = MotoS3(tmp_path / "moto").start()
    yield server
    server.stop()
