#!/usr/bin/env bash
# Rate limit service benchmark. Prints decisions/s and p50/p99 for Sluice with
# 1 and 3 descriptors per request, against a minimal RLS that answers OK
# without Redis (the gRPC floor of this machine) and the same minimal RLS
# running the limiter's script once per call (the Redis floor: the cheapest
# RLS that asks Redis for every decision), all measured in this run, and the
# ratios. Then the raw rate of the same Lua call alone (bench/rlsscript).
#
#   bash bench/ratelimit.sh [duration, default 5s] [concurrency list, default "32"]
#
# A list such as "32 128" repeats the comparison at each concurrency: the
# coalescer's batches grow with the number of callers in flight, the floor's
# cost per call does not, so the ratio depends on it.
#
# Needs Redis at 127.0.0.1:6379 (scripts/services.sh starts it). Uses ports
# 18090-18092 on loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-5s}
CONC=${2:-32}
BIN=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$BIN"' EXIT

bash scripts/services.sh >/dev/null
go build -o "$BIN/sluice" ./cmd/sluice
go build -o "$BIN/rlsfloor" ./bench/rlsfloor
go build -o "$BIN/rlsload" ./bench/rlsload
go build -o "$BIN/rlsscript" ./bench/rlsscript

PREFIX="sluicebench:$$:"
"$BIN/rlsfloor" -addr 127.0.0.1:18090 &
FLOOR_PID=$!
# The Redis floor: the same gRPC server running the limiter's script once per call, nothing else.
"$BIN/rlsfloor" -addr 127.0.0.1:18093 -redis 127.0.0.1:6379 -prefix "${PREFIX}floor:" &
RFLOOR_PID=$!
cat > "$BIN/sluice.yaml" <<YAML
log: {level: warn}
redis: {key_prefix: "$PREFIX"}
YAML
"$BIN/sluice" serve --config "$BIN/sluice.yaml" --grpc-addr 127.0.0.1:18091 --admin-addr 127.0.0.1:18092 \
  --ratelimit-config bench/testdata/ratelimit-bench.yaml --redis-url redis://127.0.0.1:6379/0 &
SLUICE_PID=$!
REDIS_PID=$(redis-cli -h 127.0.0.1 -p 6379 info server | sed -n 's/^process_id:\([0-9]*\).*/\1/p')
for i in $(seq 1 50); do
  curl -fs http://127.0.0.1:18092/readyz >/dev/null 2>&1 && break
  sleep 0.1
done

# Each run also prints the CPU time per call of the server, Redis and the load generator over
# the measured window: comparable across runs when decisions/s are not (a noisy machine).
# Sluice runs also print how many calls were answered without Redis (fail-open on a Redis
# timeout: sluice_ratelimit_degraded_total), which would flatter its figures if not zero.
degraded() {
  curl -fs http://127.0.0.1:18092/metrics | awk '/^sluice_ratelimit_degraded_total/ {s += $NF} END {printf "%d", s}'
}
run() {
  local pids="server=$FLOOR_PID" before
  [ "$2" = redis-floor ] && pids="server=$RFLOOR_PID,redis=$REDIS_PID"
  [ "$2" = sluice ] && pids="server=$SLUICE_PID,redis=$REDIS_PID" && before=$(degraded)
  "$BIN/rlsload" -addr "$1" -label "$2" -descriptors "$3" -c "$4" -d "$DUR" -domain bench -pids "$pids"
  [ "$2" = sluice ] && printf '%-28s answered without redis (fail-open) = %d\n' "" $(( $(degraded) - before ))
  return 0
}
field() { head -1 <<<"$1" | sed -n "s|.* $2=\([^ ]*\).*|\1|p"; }
cpu() { sed -n "s|.*cpu_us_per_call:.* total=\([^ ]*\).*|\1|p" <<<"$1"; }
dur_us() { # Go duration string -> microseconds
  awk -v d="$1" 'BEGIN{ if (d ~ /ms$/) {sub(/ms$/,"",d); print d*1000} else if (d ~ /µs$/) {sub(/µs$/,"",d); print d} else if (d ~ /ns$/) {sub(/ns$/,"",d); print d/1000} else {sub(/s$/,"",d); print d*1e6} }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ printf "%.2f", a/b }'; }
SUMMARY=""
for C in $CONC; do
  echo "== ShouldRateLimit, $C concurrent callers, $DUR each (load generator on the same 2 cores)"
  F1=$(run 127.0.0.1:18090 floor 1 "$C"); echo "$F1"
  R1=$(run 127.0.0.1:18093 redis-floor 1 "$C"); echo "$R1"
  S1=$(run 127.0.0.1:18091 sluice 1 "$C"); echo "$S1"
  F3=$(run 127.0.0.1:18090 floor 3 "$C"); echo "$F3"
  R3=$(run 127.0.0.1:18093 redis-floor 3 "$C"); echo "$R3"
  S3=$(run 127.0.0.1:18091 sluice 3 "$C"); echo "$S3"
  for n in 1 3; do
    F=F$n; S=S$n; R=R$n
    SUMMARY+="c=$C descriptors=$n  throughput sluice/floor = $(ratio "$(field "${!S}" decisions/s)" "$(field "${!F}" decisions/s)")x"
    SUMMARY+="  p99 sluice/floor = $(ratio "$(dur_us "$(field "${!S}" p99)")" "$(dur_us "$(field "${!F}" p99)")")x"
    SUMMARY+="  CPU per call (all processes) floor/sluice = $(ratio "$(cpu "${!F}")" "$(cpu "${!S}")")x"
    SUMMARY+="  | vs the Redis floor: throughput $(ratio "$(field "${!S}" decisions/s)" "$(field "${!R}" decisions/s)")x"
    SUMMARY+="  p99 $(ratio "$(dur_us "$(field "${!S}" p99)")" "$(dur_us "$(field "${!R}" p99)")")x"$'\n'
  done
done
echo
echo "== ratios against the floor (same run)"
printf '%s' "$SUMMARY"

echo
echo "== the same EVALSHA alone (one request, one sliding-window item), ${CONC%% *} clients"
"$BIN/rlsscript" -bench -addr 127.0.0.1:6379 -c "${CONC%% *}" -n 200000 -r 1000 -prefix "$PREFIX"
redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "${PREFIX}*" | xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 UNLINK >/dev/null
