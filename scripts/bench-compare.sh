#!/usr/bin/env bash
# ValidateSession on several builds or settings of sessiond against the bare
# tonic baseline, in one run: interleaved rounds at 64 streams (medians),
# then one round at a single stream (p50 latency). For before/after
# comparisons of one change: build the "before" binary from the older
# commit first (e.g. in a `git worktree` with its own CARGO_TARGET_DIR).
#
#   bash scripts/bench-compare.sh LABEL=BINARY[,EXTRA,SERVE,ARGS] ...
#   e.g. bash scripts/bench-compare.sh before=/tmp/sessiond-old after=target/release/sessiond \
#          traced=target/release/sessiond,--otlp-endpoint,http://127.0.0.1:4317
#
# STORE=sqlite (default) or redis (a private redis-server per target);
# ROUNDS (3), SECONDS_PER_POINT (5); LATENCY_ROUNDS (9), LATENCY_SECONDS (2) for the
# single stream; LAYERED_BASELINE=1 (see below). An OTLP sink for traced targets is
# started here when any argument names --otlp-endpoint with $SINK in it.
# Writes bench/compare.csv and prints the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${SECONDS_PER_POINT:-5}
ROUNDS=${ROUNDS:-3}
STORE=${STORE:-sqlite}
cargo build --release --bin sessiond-loadgen --example baseline --example otlp_sink >&2
LOAD=target/release/sessiond-loadgen
WORK=$(mktemp -d)
PIDS=()
# Servers started inside $(...) record their pid in $WORK/pids instead.
cleanup() {
  for p in "${PIDS[@]}" $(cat "$WORK/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# One private store per server (a redis-server each, on free ports).
store_url() {
  if [ "$STORE" = redis ]; then
    local port; port=$(free_port); mkdir -p "$WORK/redis-$1"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync always \
      --dir "$WORK/redis-$1" > /dev/null &
    echo $! >> "$WORK/pids"
    echo "$port" > "$WORK/redis-$1.port"
    wait_port "$port"
    echo "redis://127.0.0.1:$port/"
  else
    echo "sqlite://$WORK/$1.db"
  fi
}

SINK_PORT=$(free_port)
if [[ "$*" == *'$SINK'* || "$*" == *SINK* ]]; then
  target/release/examples/otlp_sink --addr 127.0.0.1:"$SINK_PORT" > "$WORK/sink.log" &
  PIDS+=($!)
  wait_port "$SINK_PORT"
fi

BASE=$(free_port)
target/release/examples/baseline --addr 127.0.0.1:"$BASE" > /dev/null &
PIDS+=($!)
wait_port "$BASE"
TARGETS=("baseline $BASE")
METRICS=()
# LAYERED_BASELINE=1: also the constants behind sessiond's connection rules
# and call layer, so what the handler and store add shows apart from them.
if [ "${LAYERED_BASELINE:-0}" = 1 ]; then
  LAYERED=$(free_port)
  target/release/examples/baseline --addr 127.0.0.1:"$LAYERED" --sessiond-layers > /dev/null &
  PIDS+=($!)
  wait_port "$LAYERED"
  TARGETS+=("baseline+layers $LAYERED")
fi
for spec in "$@"; do
  label=${spec%%=*}
  IFS=, read -r -a cmd <<< "${spec#*=}"
  cmd=("${cmd[@]//SINK/http://127.0.0.1:$SINK_PORT}")
  port=$(free_port)
  mport=$(free_port)
  url=$(store_url "$label")
  "${cmd[0]}" serve --demo --store "$url" --grpc-addr 127.0.0.1:"$port" \
    --rest-addr 127.0.0.1:"$(free_port)" --metrics-addr 127.0.0.1:"$mport" "${cmd[@]:1}" \
    2> "$WORK/$label.log" &
  PIDS+=($!)
  wait_port "$port"
  TARGETS+=("$label $port")
  METRICS+=("$label $mport")
done

mkdir -p bench
echo "# label,mode,concurrency,rps,p50_ms,p99_ms,p999_ms,errors  ($(nproc) cores, $(date -u +%F), store $STORE)" > bench/compare.csv
for round in $(seq "$ROUNDS"); do
  for target in "${TARGETS[@]}"; do
    set -- $target
    "$LOAD" --mode validate --tokens 64 --target "http://127.0.0.1:$2" --concurrency 64 --connections 4 \
      --duration "$DUR" --warmup 1 --csv --label "$1" >> bench/compare.csv
  done
done
# One stream: its latency drifts by 2x over tens of seconds on a shared
# machine, so more and shorter interleaved rounds (LATENCY_ROUNDS, 9 of 2 s).
for round in $(seq "${LATENCY_ROUNDS:-9}"); do
  for target in "${TARGETS[@]}"; do
    set -- $target
    "$LOAD" --mode validate --tokens 1 --target "http://127.0.0.1:$2" --concurrency 1 --connections 1 \
      --duration "${LATENCY_SECONDS:-2}" --warmup 1 --csv --label "$1/1" >> bench/compare.csv
  done
done
python3 scripts/ratios.py bench/compare.csv
# The servers' own count of ValidateSession answers by status code (the load
# generator also re-validated every token after each run, failing on any).
for m in "${METRICS[@]}"; do
  set -- $m
  echo "$1: $(curl -s "http://127.0.0.1:$2/metrics" | grep '^sessiond_grpc_requests_total{' \
    | grep 'rpc="ValidateSession"' | sed 's/^sessiond_grpc_requests_total//' | tr '\n' ' ')"
done
# On Redis: the CPU the redis-server process used per ValidateSession
# answered (its own `INFO cpu`, over every round, divided by the
# validations the server answered), and the commands it ran most.
if [ "$STORE" = redis ]; then
  for m in "${METRICS[@]}"; do
    set -- $m
    answered=$(curl -s "http://127.0.0.1:$2/metrics" | grep '^sessiond_grpc_requests_total{' \
      | grep 'rpc="ValidateSession"' | awk '{s += $2} END {print s}')
    redis-cli -p "$(cat "$WORK/redis-$1.port")" info all | tr -d '\r' \
      | awk -F'[:=,]' -v label="$1" -v n="$answered" '
          /^used_cpu_(sys|user):/ { cpu += $2 }
          /^cmdstat_/ { sub("cmdstat_", "", $1); if ($3 > n / 10) line = line sprintf(" %s %.2f us/call (%d);", $1, $5 / $3, $3) }
          END { printf "%s redis-server: %.1f us CPU per validation;%s\n", label, cpu * 1e6 / n, line }'
  done
fi
