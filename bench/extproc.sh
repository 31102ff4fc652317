#!/usr/bin/env bash
# The ext_proc path of `sluice serve` with its default stages (identity, cache,
# metrics) against a minimal ext_proc server answering CONTINUE to every
# message, each its own process, in alternating rounds of one run
# (bench/extprocload plays Envoy's ext_proc filter, 32 streams at once). Three
# traffic shapes: uncacheable (no-store, a new URL each time), cacheable-hit
# (one stored URL), and a Zipf mix with 10% writes. Prints streams/s and p99
# ratios, the hit ratio and Redis commands per request (Sluice gets a
# redis-server of its own, so INFO counts only its commands).
#
#   bash bench/extproc.sh [round length, default 3s] [rounds, default 3] [streams at once, default 32]
#
# SLUICE_BIN=path runs that sluice binary instead of building this checkout's (to measure
# another revision with the same harness). Then the in-process allocation count of a
# pass-through request (go test -benchmem).
# Uses ports 18210-18213 on loopback only; needs redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-3s}
ROUNDS=${2:-3}
CONC=${3:-32}
BIN=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$BIN"
}
trap cleanup EXIT

# As the image builds it (Dockerfile): vtprotobuf marshalers for Envoy's messages.
if [ -n "${SLUICE_BIN:-}" ]; then cp "$SLUICE_BIN" "$BIN/sluice"; else go build -tags vtprotobuf -o "$BIN/sluice" ./cmd/sluice; fi
go build -o "$BIN/extprocload" ./bench/extprocload

redis-server --port 18213 --bind 127.0.0.1 --save '' --appendonly no --daemonize no --loglevel warning >"$BIN/redis.log" 2>&1 &
for i in $(seq 1 50); do redis-cli -p 18213 ping >/dev/null 2>&1 && break; sleep 0.1; done

# The shipped defaults: only the tenant map is set (identity needs one for acme).
cat > "$BIN/sluice.yaml" <<YAML
log: {level: error}
server: {pprof: true}
redis: {key_prefix: "bench:"}
extproc:
  identity:
    tiers: {acme: pro}
YAML
"$BIN/sluice" serve --config "$BIN/sluice.yaml" --grpc-addr 127.0.0.1:18210 --admin-addr 127.0.0.1:18211 \
  --redis-url redis://127.0.0.1:18213/0 &
SLUICE=$!
"$BIN/extprocload" -serve-continue 127.0.0.1:18212 &
CONT=$!
for i in $(seq 1 100); do
  curl -fs http://127.0.0.1:18211/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs http://127.0.0.1:18211/readyz >/dev/null || { echo "sluice did not become ready"; exit 1; }

for shape in uncacheable hit zipf; do
  "$BIN/extprocload" -shape "$shape" -sluice 127.0.0.1:18210 -continue 127.0.0.1:18212 \
    -redis 127.0.0.1:18213 -sluice-pid "$SLUICE" -continue-pid "$CONT" -d "$DUR" -rounds "$ROUNDS" -c "$CONC"
done

echo
out=$(go test -run '^$' -bench 'BenchmarkPassThrough$' -benchmem -count 1 ./extproc/)
echo "$out" | awk '/^BenchmarkPassThrough\/(baseline|sluice)/ { for (i = 1; i < NF; i++) if ($(i+1) == "allocs/op") printf "%s: %s allocs per request (client and server, identity + metrics)\n", $1, $i }'
