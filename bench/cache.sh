#!/usr/bin/env bash
# Response cache benchmarks, each against a baseline measured in the same run:
#   - a cache hit served as an ImmediateResponse (L1, and L2 with the L1 off)
#     vs a minimal ext_proc server that answers CONTINUE (target L1 <= 1.5x);
#   - L1 hit ratio on a Zipf(0.99) trace at 10% capacity vs a plain LRU.
# Needs Redis at 127.0.0.1:6379 (scripts/services.sh starts it).
#
#   bash bench/cache.sh [count, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-3}
bash scripts/services.sh >/dev/null
go test -run '^$' -bench 'BenchmarkHit' -benchmem -count "$COUNT" ./cachefilter/ | grep -E '^Benchmark'
