#!/usr/bin/env bash
# Rate limit service benchmark: ShouldRateLimit through gRPC, service, limiter and Redis, with 1
# and 3 descriptors per request, for
#   floor        a minimal RLS answering OK without Redis, gRPC's defaults (the gRPC floor of
#                this machine, as issue 17's targets define it)
#   floor-tuned  the same with Sluice's gRPC server options (stream workers, its codec, static
#                flow-control windows): how much of Sluice's lead over the floor is that tuning
#   redis-floor  the same RLS running the limiter's script once per call, nothing else (the
#                cheapest RLS that asks Redis for every decision)
#   exact        Sluice, sliding window, every decision asked of Redis (coalesced)
#   lease        Sluice, algorithm: sliding_window_lease (decisions from leases)
#   reference    envoyproxy/ratelimit, if RLS_REFERENCE_BIN names a binary of it
#   baseline     another Sluice binary, if RLS_BASELINE_BIN names one (say, an older commit)
# all measured in this run, in rounds that alternate the order of the servers (the machine is
# shared: figures of one round are comparable, rounds show the spread), with the ratios of each
# round and their range over the rounds. Each run prints the CPU time and the read/write system
# calls per call of the server, Redis and the load generator; lease runs print the Redis commands
# per decision (INFO commandstats: script calls, and every command including those the scripts
# run).
#
#   bash bench/ratelimit.sh [duration, default 5s] [concurrency, default 32] [rounds, default 3]
#
# Environment:
#   RLS_BENCH_PORT     first of eleven loopback ports used (default 18090): servers on the first
#                      nine and the eleventh, a private redis-server (started here, gone at
#                      exit) on the tenth
#   RLS_REFERENCE_BIN  an envoyproxy/ratelimit binary built by the reader from its public
#                      source (never part of this repository); it runs with its documented
#                      defaults against the private Redis over TCP (REDIS_SOCKET_TYPE=tcp),
#                      statsd off (USE_STATSD=false: nothing listens for it here), on the same
#                      rules file (its format), fixed windows as always
#   RLS_BASELINE_BIN   a sluice binary to compare with, on the same rules
#
# Then the raw rate of the limiter's Lua call alone (bench/rlsscript), one item per call and ten
# (Redis CPU per item: what the script costs Redis per decision once calls are coalesced).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-5s}
CONC=${2:-32}
ROUNDS=${3:-3}
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
go build -o "$BIN/rlsfloor" ./bench/rlsfloor
go build -tags vtprotobuf -o "$BIN/rlsfloor-tuned" ./bench/rlsfloor
go build -o "$BIN/rlsload" ./bench/rlsload
go build -o "$BIN/rlsscript" ./bench/rlsscript

RPORT=$((P + 9))
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --pidfile "$BIN/redis.pid" --logfile "$BIN/redis.log" --dir "$BIN" >/dev/null
for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
REDIS_PID=$(cat "$BIN/redis.pid")
rcli() { redis-cli -p "$RPORT" "$@"; }

mkdir -p "$BIN/rules" "$BIN/ref/ratelimit/config"
cp bench/testdata/ratelimit-bench.yaml bench/testdata/ratelimit-bench-lease.yaml "$BIN/rules/"
cp bench/testdata/ratelimit-bench.yaml "$BIN/ref/ratelimit/config/"
# A Redis budget of 100ms instead of 20ms: the machine is shared, and a stall past 20ms makes
# Sluice answer without Redis (fail-open), which costs nothing and would flatter its figures;
# each run prints how many calls were answered so, which should be 0.
cat > "$BIN/sluice.yaml" <<YAML
log: {level: warn}
redis: {key_prefix: "bench:"}
ratelimit: {timeout: 100ms}
YAML

ready() { for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
"$BIN/rlsfloor" -addr "127.0.0.1:$P" &
FLOOR_PID=$!
"$BIN/rlsfloor-tuned" -tuned -addr "127.0.0.1:$((P + 10))" &
TFLOOR_PID=$!
"$BIN/rlsfloor" -addr "127.0.0.1:$((P + 1))" -redis "127.0.0.1:$RPORT" -prefix "floor:" &
RFLOOR_PID=$!
"$BIN/sluice" serve --config "$BIN/sluice.yaml" --grpc-addr "127.0.0.1:$((P + 2))" --admin-addr "127.0.0.1:$((P + 3))" \
  --ratelimit-config "$BIN/rules" --redis-url "redis://127.0.0.1:$RPORT/0" &
SLUICE_PID=$!
ready "http://127.0.0.1:$((P + 3))/readyz"
SERVERS="floor floor-tuned redis-floor exact lease"
if [ -n "${RLS_REFERENCE_BIN:-}" ]; then
  REDIS_SOCKET_TYPE=tcp REDIS_URL="127.0.0.1:$RPORT" USE_STATSD=false LOG_LEVEL=warn \
    GRPC_HOST=127.0.0.1 GRPC_PORT=$((P + 4)) HOST=127.0.0.1 PORT=$((P + 5)) DEBUG_HOST=127.0.0.1 DEBUG_PORT=$((P + 6)) \
    RUNTIME_ROOT="$BIN/ref" RUNTIME_SUBDIRECTORY=ratelimit RUNTIME_WATCH_ROOT=false \
    "$RLS_REFERENCE_BIN" >"$BIN/reference.log" 2>&1 &
  REF_PID=$!
  ready "http://127.0.0.1:$((P + 5))/healthcheck"
  SERVERS="$SERVERS reference"
fi
if [ -n "${RLS_BASELINE_BIN:-}" ]; then
  "$RLS_BASELINE_BIN" serve --config "$BIN/sluice.yaml" --grpc-addr "127.0.0.1:$((P + 7))" --admin-addr "127.0.0.1:$((P + 8))" \
    --ratelimit-config bench/testdata/ratelimit-bench.yaml --redis-url "redis://127.0.0.1:$RPORT/0" &
  BASE_PID=$!
  ready "http://127.0.0.1:$((P + 8))/readyz"
  SERVERS="$SERVERS baseline"
fi

# cmdstats prints "script_calls all_calls" from INFO commandstats.
cmdstats() {
  rcli info commandstats | tr -d '\r' | awk -F'[:=,]' '/^cmdstat_/ {all += $3} /^cmdstat_evalsha:/ {evs = $3} END {printf "%d %d", evs, all}'
}
degraded() {
  curl -fs "http://127.0.0.1:$((P + 3))/metrics" | awk '/^sluice_ratelimit_degraded_total/ {s += $NF} END {printf "%d", s}'
}
# run SERVER DESCRIPTORS prints rlsload's lines for one run, plus extra lines for Sluice.
run() {
  local addr pids domain=bench before cmds0 cmds1
  case $1 in
    floor) addr=$P pids="server=$FLOOR_PID" ;;
    floor-tuned) addr=$((P + 10)) pids="server=$TFLOOR_PID" ;;
    redis-floor) addr=$((P + 1)) pids="server=$RFLOOR_PID,redis=$REDIS_PID" ;;
    exact) addr=$((P + 2)) pids="server=$SLUICE_PID,redis=$REDIS_PID" ;;
    lease) addr=$((P + 2)) pids="server=$SLUICE_PID,redis=$REDIS_PID" domain=bench_lease ;;
    reference) addr=$((P + 4)) pids="server=$REF_PID,redis=$REDIS_PID" ;;
    baseline) addr=$((P + 7)) pids="server=$BASE_PID,redis=$REDIS_PID" ;;
  esac
  before=$(degraded)
  cmds0=$(cmdstats)
  "$BIN/rlsload" -addr "127.0.0.1:$addr" -label "$1" -descriptors "$2" -c "$CONC" -d "$DUR" -domain "$domain" -pids "$pids"
  cmds1=$(cmdstats)
  case $1 in
    exact | lease) printf '%-28s answered without redis (fail-open) = %d\n' "" $(($(degraded) - before)) ;;
  esac
  if [ "$1" = lease ]; then
    # Commands over the warm-up and the measured time, per measured decision: an upper bound.
    printf '%-28s redis_commands_total: script_calls=%d all=%d\n' "" \
      $(($(cut -d' ' -f1 <<<"$cmds1") - $(cut -d' ' -f1 <<<"$cmds0"))) $(($(cut -d' ' -f2 <<<"$cmds1") - $(cut -d' ' -f2 <<<"$cmds0")))
  fi
}
val() { head -1 <<<"$1" | tr ' ' '\n' | sed -n "s|^$2=||p"; }
cpu() { sed -n 's|.*cpu_us_per_call:.* total=\([^ ]*\).*|\1|p' <<<"$1"; }
dur_us() { # Go duration string -> microseconds
  awk -v d="$1" 'BEGIN{ if (d ~ /ms$/) {sub(/ms$/,"",d); print d*1000} else if (d ~ /µs$/) {sub(/µs$/,"",d); print d} else if (d ~ /ns$/) {sub(/ns$/,"",d); print d/1000} else {sub(/s$/,"",d); print d*1e6} }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b == 0) print "n/a"; else printf "%.2f", a/b }'; }
per() { awk -v a="$1" -v b="$2" 'BEGIN{ printf "%.4f", a/b }'; }

declare -A OUT
SUMMARY=""
read -ra S <<<"$SERVERS"
for r in $(seq "$ROUNDS"); do
  # rotate the order each round, so that no server always runs first or last
  k=$(((r - 1) % ${#S[@]}))
  ORDER="${S[*]:k} ${S[*]:0:k}"
  echo "== round $r of $ROUNDS: $CONC concurrent callers, $DUR each (load generator on the same cores); order:$ORDER; $(uptime | sed 's/.*load/load/')"
  for n in 1 3; do
    for s in $ORDER; do
      OUT[$s$n]=$(run "$s" "$n")
      echo "${OUT[$s$n]}"
    done
  done
  for n in 1 3; do
    f=${OUT[floor$n]} e=${OUT[exact$n]} l=${OUT[lease$n]}
    line="round $r, $n descriptor(s):"
    line+=" exact/floor=$(ratio "$(val "$e" decisions/s)" "$(val "$f" decisions/s)")"
    line+=" lease/floor=$(ratio "$(val "$l" decisions/s)" "$(val "$f" decisions/s)")"
    line+=" p99_lease/floor=$(ratio "$(dur_us "$(val "$l" p99)")" "$(dur_us "$(val "$f" p99)")")"
    line+=" p99_exact/floor=$(ratio "$(dur_us "$(val "$e" p99)")" "$(dur_us "$(val "$f" p99)")")"
    line+=" exact/floor-tuned=$(ratio "$(val "$e" decisions/s)" "$(val "${OUT[floor-tuned$n]}" decisions/s)")"
    line+=" lease/floor-tuned=$(ratio "$(val "$l" decisions/s)" "$(val "${OUT[floor-tuned$n]}" decisions/s)")"
    line+=" floor-tuned/floor=$(ratio "$(val "${OUT[floor-tuned$n]}" decisions/s)" "$(val "$f" decisions/s)")"
    line+=" exact/redis-floor=$(ratio "$(val "$e" decisions/s)" "$(val "${OUT[redis-floor$n]}" decisions/s)")"
    # CPU per call of all processes (server, Redis, load generator): the throughput ratio an
    # otherwise idle machine would show, since the runs are CPU-bound; steadier than decisions/s.
    line+=" cpu:exact/floor=$(ratio "$(cpu "$f")" "$(cpu "$e")") cpu:lease/floor=$(ratio "$(cpu "$f")" "$(cpu "$l")")"
    calls=$(val "$l" calls)
    line+=" lease_script_calls/decision=$(per "$(sed -n 's/.*script_calls=\([0-9]*\).*/\1/p' <<<"$l")" "$calls")"
    line+=" lease_redis_commands/decision=$(per "$(sed -n 's/.* all=\([0-9]*\).*/\1/p' <<<"$l")" "$calls")"
    if [ -n "${OUT[reference$n]:-}" ]; then
      line+=" exact/reference=$(ratio "$(val "$e" decisions/s)" "$(val "${OUT[reference$n]}" decisions/s)")"
      line+=" reference/floor=$(ratio "$(val "${OUT[reference$n]}" decisions/s)" "$(val "$f" decisions/s)")"
      line+=" cpu:exact/reference=$(ratio "$(cpu "${OUT[reference$n]}")" "$(cpu "$e")")"
    fi
    if [ -n "${OUT[baseline$n]:-}" ]; then
      line+=" exact/baseline=$(ratio "$(val "$e" decisions/s)" "$(val "${OUT[baseline$n]}" decisions/s)")"
      line+=" cpu:exact/baseline=$(ratio "$(cpu "${OUT[baseline$n]}")" "$(cpu "$e")")"
    fi
    echo "$line"
    SUMMARY+="$line"$'\n'
  done
done
echo
echo "== ratios per round (same run)"
printf '%s' "$SUMMARY"
echo
echo "== ranges over the rounds (min-max)"
for n in 1 3; do
  awk -v n="$n" 'index($0, ", " n " descriptor") {
      for (i = 1; i <= NF; i++) if (split($i, kv, "=") == 2) {
        k = kv[1]; v = kv[2] + 0
        if (!(k in lo)) { keys[++nk] = k; lo[k] = v; hi[k] = v }
        if (v < lo[k]) lo[k] = v
        if (v > hi[k]) hi[k] = v
      }
    }
    END { printf "%d descriptor(s):", n; for (j = 1; j <= nk; j++) printf " %s=%s-%s", keys[j], lo[keys[j]], hi[keys[j]]; print "" }' <<<"$SUMMARY"
done

echo
echo "== the same script call alone (one request, one sliding-window item), $CONC clients"
"$BIN/rlsscript" -bench -addr "127.0.0.1:$RPORT" -c "$CONC" -n 200000 -r 1000 -prefix "script:"
echo "== and coalesced: ten such requests per call, as the limiter batches them under load"
"$BIN/rlsscript" -bench -addr "127.0.0.1:$RPORT" -c 8 -n 20000 -r 1000 -batch 10 -prefix "script:"
