#!/usr/bin/env bash
# The end-to-end and conformance tests with a real Envoy in place of the emulator: the pinned
# Envoy image (docker-compose.yaml's) runs envoy/envoy.yaml unchanged, after `envoy --mode
# validate` has checked it, and the tests that normally go through the emulator
# (internal/devstack: end to end, hostile input, the cache-tests.fyi suite; deploy: the quick
# start) send their requests to it instead.
#
#   bash scripts/envoy-e2e.sh            # all of them
#   bash scripts/envoy-e2e.sh -run Batch # extra arguments go to go test
#
# Needs Docker (and the image, pulled here) and Redis and PostgreSQL as scripts/services.sh
# starts them (run that first, as root). This repository's own CI (.ci/run) has no Docker and no
# registry access, so this runs in .github/workflows/envoy-e2e.yml on a public CI instead; every
# test it runs also passes against the emulator in `bash scripts/test.sh`.
#
# How the tests find Envoy: SLUICE_E2E_GATEWAY is its listener; Envoy runs in the host's network
# with an /etc/hosts that maps envoy.yaml's cluster hosts `sluice` and `app` to 127.0.0.1, where
# each test serves Sluice's gRPC (SLUICE_E2E_SLUICE_ADDR, 127.0.0.1:8081) and its upstream
# (SLUICE_E2E_APP_ADDR, 127.0.0.1:8000). Those ports are fixed, so the packages run one at a time
# (-p 1) and tests that need two Sluice processes behind one gateway skip with a message.
set -euo pipefail
cd "$(dirname "$0")/.."

image=$(awk '$1 == "image:" && $2 ~ /^envoyproxy\/envoy:/ {print $2; exit}' docker-compose.yaml)
image=${ENVOY_IMAGE:-$image}
[ -n "$image" ] || { echo "no envoyproxy/envoy image in docker-compose.yaml"; exit 1; }
command -v docker >/dev/null || { echo "docker not found: this script needs a Docker engine"; exit 1; }

redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { echo "Redis is not running on 127.0.0.1:6379: run scripts/services.sh first"; exit 1; }
pg_isready -h 127.0.0.1 -p 5432 -q || { echo "PostgreSQL is not running on 127.0.0.1:5432: run scripts/services.sh first"; exit 1; }

work=$(mktemp -d)
printf '127.0.0.1 localhost sluice app\n::1 localhost\n' > "$work/hosts"
cid=""
cleanup() {
  if [ -n "$cid" ]; then
    docker logs "$cid" > envoy-e2e.log 2>&1 || true
    docker rm -f "$cid" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== $image"
docker pull -q "$image"
mounts=(-v "$PWD/envoy/envoy.yaml:/etc/envoy/envoy.yaml:ro" -v "$work/hosts:/etc/hosts:ro")

echo "== envoy --mode validate -c envoy/envoy.yaml"
docker run --rm "${mounts[@]}" "$image" envoy --mode validate -c /etc/envoy/envoy.yaml

echo "== starting Envoy (host network: listener :8080, admin :9901)"
cid=$(docker run -d --network host "${mounts[@]}" "$image" envoy -c /etc/envoy/envoy.yaml --log-level warn)
for _ in $(seq 1 60); do
  curl -fsS -o /dev/null http://127.0.0.1:9901/ready 2>/dev/null && break
  sleep 0.5
done
curl -fsS http://127.0.0.1:9901/ready || { echo "Envoy did not become ready"; exit 1; }
curl -fsS http://127.0.0.1:9901/server_info | grep -m1 '"version"' || true

export SLUICE_E2E_GATEWAY=http://127.0.0.1:8080
export SLUICE_E2E_SLUICE_ADDR=127.0.0.1:8081
export SLUICE_E2E_APP_ADDR=127.0.0.1:8000
export GORACE="${GORACE:-atexit_sleep_ms=0}"
echo "== go test (through Envoy at $SLUICE_E2E_GATEWAY)"
go test -race -p 1 -count=1 -timeout 30m "$@" ./internal/devstack/ ./deploy/
