#!/usr/bin/env bash
# Chaos suite: Sluice's fault tests under load (internal/chaos) — Redis killed
# and slowed, PostgreSQL blackholed and cut, the origin answering 503, ext_proc
# streams cancelled, a graceful shutdown — through the real path, each test
# asserting what clients see and logging one FIGURE line of measured numbers.
# Needs redis-server, Redis at 127.0.0.1:6379 and PostgreSQL at 127.0.0.1:5432
# (scripts/services.sh starts them). Extra arguments go to go test (-race, say).
#
#   bash bench/chaos.sh [go test flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh >/dev/null
out=$(go test -count=1 -v -run . "$@" ./internal/chaos 2>&1) && rc=0 || rc=$?
echo "$out" | grep -E '^(--- |ok|FAIL|panic)' || true
echo
echo "$out" | grep -o 'FIGURE: .*' || true
if [ "$rc" -ne 0 ]; then
  echo
  echo "$out" | tail -n 60
fi
exit "$rc"
