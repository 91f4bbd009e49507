#!/usr/bin/env bash
# Builds a release skiff and runs the single-broker benchmark set, appending rows to
# bench/RESULTS.md. Run by hand (takes a few minutes); needs the test venv (scripts/test.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --bin skiff
PY=.venv/bin/python
out=bench/RESULTS.md
# Throughput: as fast as the client goes, 8 partitions, default 250 ms flush linger.
$PY bench/produce_consume.py --count 500000 --partitions 8 --results "$out"
# Latency at a steady 20k records/s (~20 MiB/s), default linger and a 5 ms linger.
$PY bench/produce_consume.py --count 200000 --partitions 8 --rate 20000 --results "$out"
$PY bench/produce_consume.py --count 200000 --partitions 8 --rate 20000 --flush-linger-ms 5 --results "$out"
