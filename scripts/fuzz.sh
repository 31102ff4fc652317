#!/usr/bin/env bash
# Runs every fuzz target of the module, one after the other, for a bounded
# time each:
#
#   bash scripts/fuzz.sh [seconds per target, default 30]
#
# Targets are found with `go test -list '^Fuzz'` in the packages whose tests
# define a Fuzz function. Each runs as
#   go test -run='^$' -fuzz='^Name$' -fuzztime=Ns ./pkg
# A failing input is kept by Go in the package's testdata/fuzz/<Name>/ (commit
# it: it then runs as a regression test in every `go test`). At the end a
# table lists each target's execs, new interesting inputs and result; the
# script exits non-zero when any target failed.
#
# Total time is bounded: every run is killed after its fuzz time plus
# FUZZ_SLACK seconds (default 240: building the test binary and running the
# seed corpus first). FUZZ_PARALLEL sets go test -parallel (fuzzing workers;
# default GOMAXPROCS). FUZZ_MINIMIZE sets -fuzzminimizetime (default 5s: Go
# spends up to 60s minimizing each new interesting input, with no execs, which
# would eat a short run). FUZZ_ONLY, a regular expression, limits the targets
# (matched against "pkg.Name").
#
# The corpus each run grows (the inputs that found new coverage) is kept in
# FUZZ_CORPUS (default .fuzz-corpus/ at the repository root, git-ignored: it
# holds thousands of generated files) and given back to Go before the next
# run, so every run starts where the last one stopped, even after
# `go clean -fuzzcache` or on a fresh build cache. Hand-picked seeds and past
# failures are the committed ones, under each package's testdata/fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

secs="${1:-30}"
if ! [[ "$secs" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [seconds per target, a positive integer]" >&2
  exit 2
fi
slack="${FUZZ_SLACK:-240}"
minimize="${FUZZ_MINIMIZE:-5s}"
only="${FUZZ_ONLY:-}"
parallel=()
if [ -n "${FUZZ_PARALLEL:-}" ]; then
  parallel=(-parallel="$FUZZ_PARALLEL")
fi

# Some targets drive the real pipeline against Redis, as the tests do.
bash scripts/services.sh

corpus="${FUZZ_CORPUS:-.fuzz-corpus}"
mkdir -p "$corpus"
gocache_fuzz="$(go env GOCACHE)/fuzz"

logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT

# Packages whose test files declare a fuzz target (cheap pre-filter, so only
# those test binaries are built for -list).
mapfile -t dirs < <(grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' . |
  xargs -r -n1 dirname | sort -u)
if [ ${#dirs[@]} -eq 0 ]; then
  echo "no fuzz targets found"
  exit 0
fi

targets=()
for d in "${dirs[@]}"; do
  if ! list=$(go test -list '^Fuzz' "$d" 2>&1); then
    echo "$list" >&2
    echo "go test -list failed in $d" >&2
    exit 1
  fi
  while IFS= read -r name; do
    [[ "$name" =~ ^Fuzz ]] || continue
    if [ -n "$only" ] && ! [[ "${d#./}.$name" =~ $only ]]; then
      continue
    fi
    targets+=("$d $name")
  done <<<"$list"
done
echo "== ${#targets[@]} fuzz targets, ${secs}s each"

rows=()
failed=0
for t in "${targets[@]}"; do
  d=${t% *}
  name=${t#* }
  label="${d#./}.$name"
  log="$logdir/$(echo "$label" | tr '/.' '__').log"
  echo "-- $label"
  start=$(date +%s)
  # Go keeps a target's generated corpus in GOCACHE/fuzz/<import path>/<Name>.
  importpath=$(go list "$d")
  kept="$corpus/$importpath/$name"
  cached="$gocache_fuzz/$importpath/$name"
  mkdir -p "$kept" "$cached"
  cp -rn "$kept"/. "$cached"/
  rc=0
  timeout --kill-after=10 "$((secs + slack))" \
    go test -run='^$' -fuzz="^${name}\$" -fuzztime="${secs}s" -fuzzminimizetime="$minimize" "${parallel[@]}" "$d" >"$log" 2>&1 || rc=$?
  took=$(($(date +%s) - start))
  cp -rn "$cached"/. "$kept"/
  size=$(find "$kept" -type f | wc -l)
  # The last progress line: "fuzz: elapsed: 20s, execs: 1234 (61/sec), new interesting: 3 (total: 40)".
  progress=$(grep -E '^fuzz: elapsed: .*execs: ' "$log" | tail -n1 || true)
  execs=$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$progress")
  newi=$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$progress")
  result=PASS
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    result="TIMEOUT"
  elif [ "$rc" -ne 0 ]; then
    result="FAIL"
  fi
  if [ "$result" != PASS ]; then
    failed=$((failed + 1))
    tail -n 40 "$log" | sed 's/^/    /'
    # Go keeps the input that failed under the package's testdata/fuzz.
    grep -E 'Failing input written to|go test -run=' "$log" | sed 's/^/    /' || true
  fi
  rows+=("$(printf '%-48s %12s %16s %8s %8s %6ss' "$label" "${execs:--}" "${newi:--}" "$size" "$result" "$took")")
done

echo
printf '%-48s %12s %16s %8s %8s %7s\n' TARGET EXECS "NEW INTERESTING" CORPUS RESULT TIME
for r in "${rows[@]}"; do
  echo "$r"
done
if [ "$failed" -gt 0 ]; then
  echo
  echo "$failed of ${#targets[@]} fuzz targets failed; new failing inputs are under <pkg>/testdata/fuzz/ (git status)"
  exit 1
fi
