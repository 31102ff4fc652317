#!/usr/bin/env bash
# Accuracy of the rate limit across replicas: three Sluice processes share one key (one tenant)
# and are sent five times its limit, open-loop, spread round-robin over the three, for each mode:
#   exact  sliding window, every decision asked of Redis
#   lease  algorithm: sliding_window_lease (ratelimit.lease.max_overshoot 0.02, the default)
# and the busiest span of one window is reported against the limit. Each decision happened
# between the moment its call was sent and the moment its answer came back, so the load
# generator bounds the busiest window from both sides: at_most counts every admitted call whose
# interval meets the span (the true busiest window can be no busier), at_least only those wholly
# inside it. Lease mode's bound is limit * (1 + max_overshoot); exact mode's is the limit.
#
#   bash bench/ratelimit-accuracy.sh [duration, default 60s] [limit, default 2000] [window, default 10s]
#
# RLS_BENCH_PORT: first of ten loopback ports used (default 18090; a private redis-server on
# the tenth).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-60s}
LIMIT=${2:-2000}
WINDOW=${3:-10s}
P=${RLS_BENCH_PORT:-18090}
BIN=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  if [ -f "$BIN/redis.pid" ]; then
    local pid
    pid=$(cat "$BIN/redis.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$BIN"
}
trap cleanup EXIT

go build -tags vtprotobuf -o "$BIN/sluice" ./cmd/sluice
go build -o "$BIN/rlsload" ./bench/rlsload

RPORT=$((P + 9))
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --pidfile "$BIN/redis.pid" --logfile "$BIN/redis.log" --dir "$BIN" >/dev/null
for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

# The window as a unit and a multiplier: whole seconds.
SECS=${WINDOW%s}
mkdir -p "$BIN/rules"
for mode in exact lease; do
  alg=sliding_window
  [ $mode = lease ] && alg=sliding_window_lease
  cat >"$BIN/rules/$mode.yaml" <<YAML
domain: acc_$mode
descriptors:
  - key: tier
    value: pro
    descriptors:
      - key: tenant_id
        rate_limit: {unit: second, unit_multiplier: $SECS, requests_per_unit: $LIMIT, algorithm: $alg}
YAML
done
# A Redis budget of 250ms instead of 20ms: on a loaded machine a 20ms budget fails some calls
# open, and what fails open is admitted unlimited; this run measures the limits themselves
# (the fail-open count is printed, and must be 0).
cat >"$BIN/sluice.yaml" <<YAML
log: {level: warn}
redis: {key_prefix: "acc$$:"}
ratelimit: {timeout: 250ms}
YAML
ADDRS=""
for i in 0 1 2; do
  "$BIN/sluice" serve --config "$BIN/sluice.yaml" --grpc-addr "127.0.0.1:$((P + 2 * i))" --admin-addr "127.0.0.1:$((P + 2 * i + 1))" \
    --ratelimit-config "$BIN/rules" --redis-url "redis://127.0.0.1:$RPORT/0" &
  ADDRS+="${ADDRS:+,}127.0.0.1:$((P + 2 * i))"
done
for i in 0 1 2; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$((P + 2 * i + 1))/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs "http://127.0.0.1:$((P + 2 * i + 1))/readyz" >/dev/null || { echo "replica $i not ready on port $((P + 2 * i))" >&2; exit 1; }
done
RATE=$((5 * LIMIT / SECS))
echo "== three replicas, one key, limit $LIMIT per ${SECS}s, $RATE calls/s (5x) for $DUR per mode; $(uptime | sed 's/.*load/load/')"
for mode in exact lease; do
  "$BIN/rlsload" -addr "$ADDRS" -conns 1 -label "$mode" -domain "acc_$mode" -descriptors 1 -tenants 1 -c 64 \
    -rate "$RATE" -d "$DUR" -warmup 0s -window "$WINDOW" -limit "$LIMIT"
  degraded=0
  for i in 0 1 2; do
    d=$(curl -fs "http://127.0.0.1:$((P + 2 * i + 1))/metrics" | awk '/^sluice_ratelimit_degraded_total/ {s += $NF} END {printf "%d", s}')
    degraded=$((degraded + d))
  done
  printf '%-28s answered without redis (fail-open), all replicas, this run and before = %d\n' "" "$degraded"
done
