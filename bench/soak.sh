#!/usr/bin/env bash
# Soak: `sluice dev` (gateway emulator + Sluice + demo API, real Redis) runs as
# its own process while bench/loadmix drives the mixed traffic at it for the
# given time. Every few seconds loadmix samples that process alone: goroutines
# (admin /metrics), live heap after a forced GC (admin /debug/pprof/heap?gc=1)
# and VmRSS (/proc/PID/status). After the warm-up (the first quarter) it
# prints the series and the verdicts, and exits non-zero when goroutines or
# the live heap grow steadily (the rules are printed with the figures).
#
#   bash bench/soak.sh [duration, default 3m] [concurrency, default 16] [loadmix flags...]
#
# Needs Redis at 127.0.0.1:6379 (scripts/services.sh starts it); Sluice uses a
# private key prefix, deleted at exit. Uses ports 18290-18292 on loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-3m}
CONC=${2:-16}
shift $(( $# > 2 ? 2 : $# ))
BIN=$(mktemp -d)
PREFIX="sluicesoak:$$:"
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "${PREFIX}*" | xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 UNLINK >/dev/null || true
  rm -rf "$BIN"
}
trap cleanup EXIT

bash scripts/services.sh >/dev/null
go build -o "$BIN/sluice" ./cmd/sluice
go build -o "$BIN/loadmix" ./bench/loadmix

cat > "$BIN/sluice.yaml" <<YAML
log: {level: error}
redis: {key_prefix: "$PREFIX"}
YAML
"$BIN/sluice" dev --config "$BIN/sluice.yaml" --listen 127.0.0.1:18290 --grpc-addr 127.0.0.1:18291 \
  --admin-addr 127.0.0.1:18292 --redis-url redis://127.0.0.1:6379/0 >"$BIN/banner" &
SLUICE=$!
for i in $(seq 1 100); do
  curl -fs http://127.0.0.1:18292/readyz >/dev/null 2>&1 && grep -q '^ *upstream ' "$BIN/banner" && break
  sleep 0.1
done
curl -fs http://127.0.0.1:18292/readyz >/dev/null || { echo "sluice dev did not become ready"; exit 1; }
# The demo API listens on a random port; the banner names it.
UPSTREAM=$(sed -n 's/^ *upstream *\(http[^ ]*\).*/\1/p' "$BIN/banner")

"$BIN/loadmix" -soak -d "$DUR" -c "$CONC" -url http://127.0.0.1:18290 -admin http://127.0.0.1:18292 \
  -upstream "$UPSTREAM" -pid "$SLUICE" "$@"
