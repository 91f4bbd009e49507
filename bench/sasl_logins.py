#!/usr/bin/env python3
"""SASL logins per second, and what a flood of failed logins costs logged-in clients.

Starts `skiff serve` (a release build) with a PLAINTEXT listener (to create a user) and a
SASL_PLAINTEXT one, then for each mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER
with an RS256 token checked against a JWKS file; the token is signed once, the broker checks
it at every login) opens
connections from THREADS threads for SECONDS and logs in on each (SaslHandshake v1, then
SaslAuthenticate v0), reporting logins per second and the broker's CPU per login. SCRAM's
client side (PBKDF2) runs in this process (kafka-python's ScramClient), so the figure is the
pair's; PLAIN's PBKDF2 runs in the broker.

Then, side by side in the same run: the round trip of a logged-in client's Metadata requests
alone, and while THREADS threads send failed PLAIN logins as fast as they can.

Run by hand, never in CI:  python3 bench/sasl_logins.py --skiff target/release/skiff
"""

import argparse
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
import kafka_wire as w  # noqa: E402
from kafka.net.sasl.scram import ScramClient  # noqa: E402

from produce_consume import cpu_seconds, free_port  # noqa: E402

PASSWORD = "bench-password"
TOKEN = {}  # "token": an RS256 JWT the broker's JWKS file verifies


def login(port: int, mechanism: str, password: str = PASSWORD) -> bool:
    with w.Conn("127.0.0.1", port, timeout=10) as conn:
        _, payload = conn.request(17, 1, w.string(mechanism))
        if struct.unpack(">h", payload[4:6])[0] != 0:
            return False

        def step(auth: bytes):
            answer = w.sasl_authenticate(conn, auth)
            return answer[2] if answer is not None and answer[0] == 0 else None

        if mechanism == "PLAIN":
            return step(f"\0bench\0{password}".encode()) is not None
        if mechanism == "OAUTHBEARER":
            return step(f"n,,\x01auth=Bearer {TOKEN['token']}\x01\x01".encode()) is not None
        client = ScramClient("bench", password, mechanism)
        server_first = step(client.first_message())
        if server_first is None:
            return False
        client.process_server_first_message(server_first)
        server_final = step(client.final_message())
        if server_final is None:
            return False
        client.process_server_final_message(server_final)
        return True


def metadata_round_trips(port: int, mechanism: str, seconds: float) -> list[float]:
    """Metadata v1 round trips of one logged-in connection (PLAIN), in ms."""
    times = []
    with w.Conn("127.0.0.1", port, timeout=10) as conn:
        conn.request(17, 1, w.string("PLAIN"))
        corr = conn.next_corr()
        conn.send_raw(w.frame(w.request_header_v1(36, 0, corr) +
                              w.nbytes(f"\0bench\0{PASSWORD}".encode())))
        conn.recv_frame()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            conn.request(3, 1, w.i32(-1))
            times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skiff", default="target/release/skiff")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="skiff-sasl-bench-"))
    kafka, sasl_port, http = f"127.0.0.1:{free_port()}", free_port(), f"127.0.0.1:{free_port()}"
    log = open(work / "broker.log", "wb")
    import json
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True),
           "kid": "bench", "alg": "RS256", "use": "sig"}
    (work / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    TOKEN["token"] = jwt.encode({"sub": "bench", "iat": int(time.time()),
                                 "exp": int(time.time()) + 3600}, key, algorithm="RS256",
                                headers={"kid": "bench"})
    proc = subprocess.Popen(
        [args.skiff, "serve", "--data-dir", str(work / "data"), "--listeners",
         f"PLAINTEXT://{kafka},SASL_PLAINTEXT://127.0.0.1:{sasl_port}", "--http-listeners", http,
         "--sasl-enabled-mechanisms", "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER",
         "--sasl-oauthbearer-jwks-endpoint-url", f"file://{work / 'jwks.json'}",
         "--connection-failed-authentication-delay-ms", "0", "--log", "warn"],
        stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://{http}/health", timeout=1).read()
            break
        except OSError:
            assert time.monotonic() < deadline, "the broker did not start"
            time.sleep(0.1)
    try:
        subprocess.run([args.skiff, "user", "set", "bench", "--bootstrap-server", kafka,
                        "--iterations", "4096"], input=PASSWORD + "\n", text=True, check=True,
                       env={**os.environ, "SKIFF_USER_PASSWORD": PASSWORD})
        print(f"machine: {os.cpu_count()} cores; {args.threads} threads, {args.seconds} s each")
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]:
            done = [0]
            failures = [0]
            stop = time.monotonic() + args.seconds
            cpu0 = cpu_seconds(proc.pid)

            def worker():
                while time.monotonic() < stop:
                    if login(sasl_port, mechanism):
                        done[0] += 1
                    else:
                        failures[0] += 1

            threads = [threading.Thread(target=worker) for _ in range(args.threads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            cpu = cpu_seconds(proc.pid) - cpu0
            print(f"{mechanism:14} {done[0] / args.seconds:8.0f} logins/s  "
                  f"broker {cpu / max(done[0], 1) * 1000:.2f} CPU-ms/login  "
                  f"({failures[0]} failed)")
        quiet = metadata_round_trips(sasl_port, "PLAIN", args.seconds / 2)
        stop_flood = threading.Event()

        def flood():
            while not stop_flood.is_set():
                try:
                    login(sasl_port, "PLAIN", "wrong")
                except OSError:
                    pass

        threads = [threading.Thread(target=flood) for _ in range(args.threads)]
        for t in threads:
            t.start()
        busy = metadata_round_trips(sasl_port, "PLAIN", args.seconds / 2)
        stop_flood.set()
        for t in threads:
            t.join()
        print(f"logged-in Metadata round trip: median {statistics.median(quiet):.2f} ms alone, "
              f"{statistics.median(busy):.2f} ms during a failed-login flood "
              f"(p99 {sorted(quiet)[int(len(quiet) * .99)]:.2f} / "
              f"{sorted(busy)[int(len(busy) * .99)]:.2f} ms)")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
