#!/usr/bin/env bash
# Mixed-traffic load through the whole gateway path: an in-process dev stack
# (Envoy emulator → Sluice ext_proc + rate limit service → Redis → demo API)
# driven by bench/loadmix with Zipf GETs across the demo tenants of every
# tier, writes that invalidate, batch requests and anonymous callers. Prints
# throughput, p50/p95/p99 per class, status codes, errors Sluice caused, cache
# hits by layer and rate-limit decisions, then the same mix sent straight to
# the demo API in the same run and the ratios gateway/direct.
#
#   bash bench/load.sh [duration per phase, default 10s] [concurrency, default 32] [loadmix flags...]
#
# Needs Redis at 127.0.0.1:6379 (scripts/services.sh starts it); the stack uses
# a private key prefix, deleted at exit. Listens on loopback only (random ports).
# Exits non-zero when the gateway path caused errors.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10s}
CONC=${2:-32}
shift $(( $# > 2 ? 2 : $# ))
BIN=$(mktemp -d)
trap 'rm -rf "$BIN"' EXIT

bash scripts/services.sh >/dev/null
go build -o "$BIN/loadmix" ./bench/loadmix
echo "(load generator and stack share this machine's $(nproc) cores)"
"$BIN/loadmix" -d "$DUR" -c "$CONC" "$@"
