#!/usr/bin/env bash
# Held-open ext_proc streams: what N concurrent streams (one per in-flight
# request, as Envoy holds them from request headers to the response phase)
# cost one `sluice serve` process. Prints RSS, live heap and goroutines per
# stream, the time to open them all, errors (must be 0), and how far RSS and
# goroutines return toward the baseline after every stream is completed.
#
#   bash bench/streams.sh [streams, default 10000] [gRPC connections, default 8]
#
# Needs Redis at 127.0.0.1:6379 (scripts/services.sh starts it); Sluice uses a
# private key prefix, deleted at exit. Uses ports 18190-18191 on loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
CONNS=${2:-8}
BIN=$(mktemp -d)
PREFIX="sluicestreams:$$:"
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "${PREFIX}*" | xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 UNLINK >/dev/null || true
  rm -rf "$BIN"
}
trap cleanup EXIT

# Each stream is an HTTP/2 stream, not a socket, but leave room anyway.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

bash scripts/services.sh >/dev/null
go build -o "$BIN/sluice" ./cmd/sluice
go build -o "$BIN/streams" ./bench/streams

cat > "$BIN/sluice.yaml" <<YAML
log: {level: error}
redis: {key_prefix: "$PREFIX"}
extproc:
  identity:
    tiers: {initech: free, hooli: free, globex: basic, acme: pro, umbrella: enterprise}
YAML
"$BIN/sluice" serve --config "$BIN/sluice.yaml" --grpc-addr 127.0.0.1:18190 --admin-addr 127.0.0.1:18191 \
  --redis-url redis://127.0.0.1:6379/0 &
SLUICE=$!
for i in $(seq 1 100); do
  curl -fs http://127.0.0.1:18191/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs http://127.0.0.1:18191/readyz >/dev/null || { echo "sluice did not become ready"; exit 1; }

"$BIN/streams" -addr 127.0.0.1:18190 -admin http://127.0.0.1:18191 -pid "$SLUICE" -n "$N" -conns "$CONNS"
