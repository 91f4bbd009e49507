#!/usr/bin/env bash
# The benchmark suite, one command: builds a release skiff and runs every benchmark, appending
# dated rows and tables to bench/RESULTS.md. Run by hand, never in CI (about 45 minutes on two
# cores); needs the test venv (scripts/test.sh creates it) and, for the side-by-side comparison,
# Tansu (`cargo install tansu --version 0.6.0 --features dynostore --root /work/tools/tansu`;
# skipped when absent, or give its path in TANSU).
#
#   bench/run.sh            # everything
#   bench/run.sh quick      # produce/consume, latency and catch-up only (~10 minutes)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --bin skiff
PY=.venv/bin/python
out=bench/RESULTS.md
quick=${1:-}
TANSU=${TANSU:-/work/tools/tansu/bin/tansu}
off=(--broker-args --compactor-enable false)

echo "== 1. produce throughput, ack latency, CPU, RSS: 1, 16 and 256 partitions, plain and idempotent"
printf '\n| date | host | partitions | flush linger ms | rate | produce MiB/s | records/s | ack p50 / p99 ms | consume MiB/s | objects/s | objects/GiB | CPU-s/GiB produced | CPU-s/GiB consumed | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n' >> "$out"
for partitions in 1 16 256; do
  $PY bench/produce_consume.py --count 500000 --partitions "$partitions" --results "$out" "${off[@]}"
  $PY bench/produce_consume.py --count 500000 --partitions "$partitions" --idempotence --results "$out" "${off[@]}"
done
# Per-request overhead at a steady 20k records/s (~20 MiB/s), default and 5 ms linger.
$PY bench/produce_consume.py --count 200000 --partitions 8 --rate 20000 --results "$out" "${off[@]}"
$PY bench/produce_consume.py --count 200000 --partitions 8 --rate 20000 --flush-linger-ms 5 --results "$out" "${off[@]}"

echo "== 2. ack and produce → consumed latency, embedded / S3 / S3 + etcd, 250 and 5 ms linger"
$PY bench/ack_latency.py --results "$out"

echo "== 3, 4. catch-up from cold, warm memory and warm disk; GETs for 1 and 10 groups"
{
  echo
  echo "**Catch-up** ($(date +%F), \`bench/catch_up.py\`, 300 × 500 KB, fetch 100 KB):"
  echo
  echo '```'
  $PY bench/catch_up.py --groups 1 --passes 2
  $PY bench/catch_up.py --groups 10 --passes 1
  echo "memory part 16 MiB (the second pass reads the disk part):"
  $PY bench/catch_up.py --groups 1 --passes 2 -- --read-cache-max-bytes 16777216
  echo '```'
} | tee -a "$out"

[[ $quick == quick ]] && exit 0

echo "== 4. requests per hour idle; PUTs per GiB and failover on etcd + S3"
$PY bench/idle.py --results "$out"
$PY bench/cluster.py --count 200000 --failovers 3 --results "$out"

echo "== 6. side by side with Tansu"
if [[ -x $TANSU ]]; then
  $PY bench/side_by_side.py --tansu "$TANSU" --count 500000 --repeat 3 --results "$out"
else
  echo "Tansu not found at $TANSU: side-by-side skipped"
fi

echo "== compaction and transactions"
{
  echo
  echo "**Compaction and transactions** ($(date +%F), \`bench/compaction.py\`, \`bench/transactions.py\`):"
  echo
  echo '```'
  $PY bench/compaction.py --count 500000 --size 1024 --partitions 8
  $PY bench/transactions.py --flush-linger-ms 250
  echo '```'
} | tee -a "$out"

echo "== fetch from follower"
{
  echo
  echo "**Fetch from follower** ($(date +%F), \`bench/follower_fetch.py\`):"
  echo
  echo '```'
  $PY bench/follower_fetch.py --count 200000
  echo '```'
} | tee -a "$out"
