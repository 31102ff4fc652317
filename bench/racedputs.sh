#!/usr/bin/env bash
# Stored-put ratio in one busy tenant (cachefilter BenchmarkStoredPuts): 16 callers
# fetch and store keys of one tenant while, in the second run, one operation in ten
# is a write invalidating another key of that tenant. Prints stored/put for both and
# their ratio (goal >= 0.95: the race guard stops only the puts an invalidation
# covers). Needs Redis at 127.0.0.1:6379 (scripts/services.sh starts it).
#
#   bash bench/racedputs.sh [operations per run, default 5000] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
ROUNDS=${2:-3}
bash scripts/services.sh >/dev/null
for round in $(seq "$ROUNDS"); do
  go test -run '^$' -bench 'BenchmarkStoredPuts' -benchtime "${N}x" -count 1 ./cachefilter/ |
    awk -v round="$round" '
      /writes=0%/  { for (i = 1; i <= NF; i++) if ($(i+1) == "stored/put") base = $i }
      /writes=10%/ { for (i = 1; i <= NF; i++) if ($(i+1) == "stored/put") busy = $i }
      END { printf "round %d: stored/put %.4f without writes, %.4f with 10%% writes: %.3fx\n", round, base, busy, busy / base }'
done
