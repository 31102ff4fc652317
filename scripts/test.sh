#!/usr/bin/env bash
# The test command (README.md): starts what the tests need, then runs vet, the
# format check and every test (unit, integration against the real Redis and
# PostgreSQL, end-to-end, fuzz seed corpora) with the race detector.
# Extra arguments go to `go test` (e.g. -run, -count=1).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH 2>/dev/null || echo /root/go)/bin"

bash scripts/services.sh

echo "== go vet"
go vet ./...
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
echo "== go test -race"
export GORACE="${GORACE:-atexit_sleep_ms=0}"
# The fault tests under load (internal/chaos) bound recovery times, and the
# cache conformance replay (internal/devstack TestConformance) depends on
# Envoy's 200 ms ext_proc message timeout like a user's stack does, so they run
# after the rest, on cores no other test package is using.
go test -race -timeout 20m -skip '^TestConformance$' "$@" $(go list ./... | grep -v '/internal/chaos$')
echo "== go test -race ./internal/devstack -run TestConformance (alone)"
go test -race -timeout 10m -run '^TestConformance$' "$@" ./internal/devstack
echo "== go test -race -tags vtprotobuf (the build of the image and the benchmarks: vtprotobuf marshalers)"
go test -race -timeout 10m -tags vtprotobuf "$@" ./internal/grpccodec ./internal/app
echo "== go test -race ./internal/chaos (alone)"
go test -race -timeout 10m "$@" ./internal/chaos
# deploy/kubernetes is a module of its own (the Kubernetes, Istio, Envoy Gateway and
# prometheus-operator modules stay out of Sluice's dependency graph): its manifests' tests.
echo "== deploy/kubernetes: go vet, go test -race"
(cd deploy/kubernetes && go vet ./... && go test -race -timeout 10m "$@" ./...)
