#!/usr/bin/env bash
# Batch fan-out benchmark: 20 items each taking 10 ms upstream vs a single
# item, measured alternately in the same run (target <= 1.5x with the default
# concurrency of 20; concurrency 5 is shown for comparison).
#
#   bash bench/batch.sh [count, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run '^$' -bench FanOut -count "${1:-3}" ./batch/ | grep -E '^Benchmark'
