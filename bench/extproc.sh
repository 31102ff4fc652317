#!/usr/bin/env bash
# ext_proc pipeline benchmark: a pass-through request (request headers +
# response headers over one real gRPC stream on loopback) through Sluice's
# pipeline (identity + metrics stages) against a minimal ext_proc server that
# only answers CONTINUE, interleaved in the same run; prints the ratio
# (target <= 1.3x) and allocations per request.
#
#   bash bench/extproc.sh [count, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-5}
out=$(go test -run '^$' -bench 'PassThrough' -benchmem -count "$COUNT" ./extproc/)
echo "$out" | grep -E '^Benchmark'
echo
echo "$out" | awk '/PassThroughRatio/ { for (i = 1; i < NF; i++) if ($(i+1) == "ratio") r[++n] = $i }
  END { if (n == 0) exit 1; asort(r); printf "ext_proc pass-through cost, sluice/baseline: median %.3fx (min %.3f, max %.3f, %d runs)\n", r[int((n+1)/2)], r[1], r[n], n }'
echo "$out" | awk '/^BenchmarkPassThrough\/(baseline|sluice)/ { for (i = 1; i < NF; i++) if ($(i+1) == "allocs/op") a[$1] = $i }
  END { for (k in a) printf "%s: %s allocs per request (client and server)\n", k, a[k] }'
