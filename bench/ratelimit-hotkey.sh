#!/usr/bin/env bash
# One hot key on a Redis Cluster: three replicas (Limiters in one process, each with its own
# cluster client) send one key's decisions at 50,000 per second in all to a three-master
# cluster that internal/redistest starts (redis-server processes of their own, on free ports),
# in exact mode, lease mode and LeaseWhenHot, and the CPU of the master owning the key is
# reported for each (BenchmarkHotKeyCluster in ratelimitsvc/limiter).
#
#   bash bench/ratelimit-hotkey.sh [decisions per second, default 50000] [duration per mode, default 10s]
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== $(uptime | sed 's/.*load/load/')"
HOTKEY_RATE=${1:-${HOTKEY_RATE:-50000}} HOTKEY_DURATION=${2:-${HOTKEY_DURATION:-10s}} \
  go test -run '^$' -bench BenchmarkHotKeyCluster -benchtime 1x -timeout 10m ./ratelimitsvc/limiter/ |
  grep -E 'Benchmark|hotkey_bench_test'
