#!/usr/bin/env bash
# ValidateSession against the bare tonic baseline, loaded from outside by
# h2load (nghttp2's HTTP/2 benchmark, one C thread): the measurement the
# performance targets are stated in.
#
#   bash scripts/bench-h2load.sh                      # this tree's build
#   bash scripts/bench-h2load.sh LABEL=BINARY ...     # several builds, e.g.
#   bash scripts/bench-h2load.sh before=/tmp/sessiond-before after=target/release/sessiond
#
# Targets, interleaved in every round: the bare baseline (examples/baseline.rs),
# the layered baseline when LAYERED_BASELINE=1, then each sessiond build on a
# SQLite file and on a private redis-server (`appendonly yes`, `appendfsync
# always`), labelled by store (and build: `sqlite/before`). STORES="sqlite
# redis" picks the stores.
#
# EDGE=1 adds, for each sessiond target, a `sessiond edge` in front of it
# (labelled edge/LABEL), answering the same token from memory; its upstream
# calls during the rounds are printed per 1,000 validations.
#
# - 64 streams: ROUNDS (3) rounds of `h2load -c8 -m8 -n REQUESTS` (400,000)
#   per target; the figure is requests/s, median of the rounds.
# - One stream: LATENCY_ROUNDS (9) rounds of `h2load -c1 -m1 -n
#   LATENCY_REQUESTS` (20,000) per target; each request's time comes from
#   h2load's --log-file, the figure is the median of the rounds' p50.
#
# Every request sends the same body: one demo user's token, written by
# `sessiond-loadgen --mode login --grpc-body`. h2load checks the HTTP status
# only, so the gRPC status of every answer is taken from sessiond's own
# counters (`sessiond_grpc_requests_total`, before and after), and the token
# is validated once more after the last round. Writes bench/h2load.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v h2load > /dev/null || { echo "needs h2load (Debian: nghttp2-client)" >&2; exit 1; }
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-400000}
LATENCY_ROUNDS=${LATENCY_ROUNDS:-9}
LATENCY_REQUESTS=${LATENCY_REQUESTS:-20000}
STORES=${STORES:-sqlite redis}
BUILDS=("$@")
[ ${#BUILDS[@]} -gt 0 ] || BUILDS=("=target/release/sessiond")
cargo build --release --bin sessiond --bin sessiond-loadgen --example baseline >&2
LOAD=target/release/sessiond-loadgen
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
slug() { echo "${1//\//-}"; } # a label as a file name
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

TARGETS=() # "label port" pairs
EDGE_TARGETS=() # "label port metrics-port upstream-label" of each edge
EDGE_SECRET=bench-edge-service-credential-$(date +%s%N)
METRICS=() # "label metrics-port grpc-port" for sessiond targets
port=$(free_port)
target/release/examples/baseline --addr 127.0.0.1:"$port" > /dev/null &
PIDS+=($!)
wait_port "$port"
TARGETS+=("baseline $port")
if [ "${LAYERED_BASELINE:-0}" = 1 ]; then
  port=$(free_port)
  target/release/examples/baseline --addr 127.0.0.1:"$port" --sessiond-layers > /dev/null &
  PIDS+=($!)
  wait_port "$port"
  TARGETS+=("baseline+layers $port")
fi
for build in "${BUILDS[@]}"; do
  for store in $STORES; do
    label=$store
    [ -z "${build%%=*}" ] || label="$store/${build%%=*}"
    dir="$WORK/$(slug "$label")"
    mkdir -p "$dir"
    case $store in
      sqlite) url="sqlite://$dir/sessions.db" ;;
      redis)
        rport=$(free_port)
        redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly yes \
          --appendfsync always --dir "$dir" > /dev/null &
        PIDS+=($!)
        wait_port "$rport"
        url="redis://127.0.0.1:$rport/"
        ;;
      *) echo "unknown store $store (sqlite or redis)" >&2; exit 1 ;;
    esac
    port=$(free_port)
    mport=$(free_port)
    # The login and ending limits play no part in validation; the demo's
    # defaults are kept.
    SESSIOND_SERVICE_CREDENTIAL=$EDGE_SECRET "${build#*=}" serve --demo --store "$url" \
      --grpc-addr 127.0.0.1:"$port" --rest-addr off --metrics-addr 127.0.0.1:"$mport" 2> "$dir/log" &
    PIDS+=($!)
    wait_port "$port"
    TARGETS+=("$label $port")
    METRICS+=("$label $mport $port")
    if [ "${EDGE:-0}" = 1 ]; then
      eport=$(free_port)
      emport=$(free_port)
      SESSIOND_SERVICE_CREDENTIAL=$EDGE_SECRET "${build#*=}" edge --upstream http://127.0.0.1:"$port" \
        --grpc-addr 127.0.0.1:"$eport" --metrics-addr 127.0.0.1:"$emport" 2> "$dir/edge-log" &
      PIDS+=($!)
      wait_port "$eport"
      EDGE_TARGETS+=("edge/$label $eport $emport $label")
    fi
  done
done
for e in "${EDGE_TARGETS[@]}"; do
  set -- $e
  TARGETS+=("$1 $2")
done

# One token per sessiond target (each has its own store); the baselines
# answer any body with a constant, so they get the first target's.
body_of() { echo "$WORK/body-$(slug "$1").bin"; }
for m in "${METRICS[@]}"; do
  set -- $m
  "$LOAD" --mode login --tokens 1 --target "http://127.0.0.1:$3" --grpc-body "$(body_of "$1")" \
    > "$WORK/token-$(slug "$1")"
done
first=${METRICS[0]%% *}
for e in "${EDGE_TARGETS[@]}"; do
  set -- $e
  cp "$(body_of "$4")" "$(body_of "$1")"
done
for t in "${TARGETS[@]}"; do
  set -- $t
  [ -f "$(body_of "$1")" ] || cp "$(body_of "$first")" "$(body_of "$1")"
done
edge_calls() { # METRICS-PORT: upstream calls (validate + touch) so far
  curl -s "http://127.0.0.1:$1/metrics" | grep '^sessiond_validator_upstream_calls_total{' \
    | awk '{s += $2} END {print s + 0}'
}
edge_answers() { # METRICS-PORT: ValidateSession answers so far
  curl -s "http://127.0.0.1:$1/metrics" | grep '^sessiond_grpc_requests_total{' \
    | grep 'rpc="ValidateSession"' | awk '{s += $2} END {print s + 0}'
}
for e in "${EDGE_TARGETS[@]}"; do
  set -- $e
  # The first validation of the token fills the edge's cache.
  "$LOAD" --mode validate --token "$(cat "$WORK/token-$(slug "$4")")" --target "http://127.0.0.1:$2" \
    --concurrency 1 --connections 1 --warmup 0 --requests 1 --csv --label warm > /dev/null
  sleep 0.2
  echo "$(edge_calls "$3") $(edge_answers "$3")" > "$WORK/edge-before-$(slug "$1")"
done

validations() { # METRICS-PORT: "code count" lines for ValidateSession
  curl -s "http://127.0.0.1:$1/metrics" | grep '^sessiond_grpc_requests_total{' \
    | { grep 'rpc="ValidateSession"' || true; } | sed -E 's/.*code="([^"]*)"\} ([0-9]+)/\1 \2/'
}
for m in "${METRICS[@]}"; do
  set -- $m
  validations "$2" > "$WORK/before-$(slug "$1")"
done

h2() { # LABEL PORT CONNECTIONS STREAMS REQUESTS [EXTRA...]
  local label=$1 port=$2 c=$3 m=$4 n=$5
  shift 5
  h2load -n "$n" -c "$c" -m "$m" -H 'content-type: application/grpc' -H 'te: trailers' \
    -d "$(body_of "$label")" "$@" "http://127.0.0.1:$port/session.v1.SessionService/ValidateSession" \
    > "$WORK/h2load.out" 2>&1 || { cat "$WORK/h2load.out" >&2; exit 1; }
  # Requests that did not get an HTTP answer (h2load's "failed" + "errored").
  awk '/^requests:/ {gsub(",", ""); print $10 + $12}' "$WORK/h2load.out" > "$WORK/failed"
}

mkdir -p bench
CSV=bench/h2load.csv
echo "# label,streams,round,requests_per_s,p50_us,requests,failed  ($(nproc) cores, $(date -u +%F), h2load $(h2load --version | awk '{print $2; exit}'))" > "$CSV"
for round in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    set -- $t
    h2 "$1" "$2" 8 8 "$REQUESTS"
    rps=$(awk '/^finished in/ {gsub(",", ""); print $4}' "$WORK/h2load.out" | sed 's/req\/s//')
    echo "$1,64,$round,$rps,,$REQUESTS,$(cat "$WORK/failed")" >> "$CSV"
  done
done
for round in $(seq "$LATENCY_ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    set -- $t
    rm -f "$WORK/times.log"
    h2 "$1" "$2" 1 1 "$LATENCY_REQUESTS" --log-file "$WORK/times.log"
    # The log's third column is each request's time in microseconds.
    p50=$(awk '{print $3}' "$WORK/times.log" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
    rps=$(awk '/^finished in/ {gsub(",", ""); print $4}' "$WORK/h2load.out" | sed 's/req\/s//')
    echo "$1,1,$round,$rps,$p50,$LATENCY_REQUESTS,$(cat "$WORK/failed")" >> "$CSV"
  done
done

python3 - "$CSV" << 'PY'
import csv, statistics, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if r and not r[0].startswith("#")]
def med(label, streams, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == label and r[1] == streams)
labels = list(dict.fromkeys(r[0] for r in rows))
base_rps, base_p50 = med("baseline", "64", 3), med("baseline", "1", 4)
print(f"{'target':<16} {'64 streams req/s':>17} {'ratio':>6} {'1 stream p50 us':>16} {'ratio':>6} {'failed':>7}")
for l in labels:
    rps, p50 = med(l, "64", 3), med(l, "1", 4)
    failed = sum(int(r[6]) for r in rows if r[0] == l)
    print(f"{l:<16} {rps:>17,.0f} {rps / base_rps:>6.2f} {p50:>16.0f} {p50 / base_p50:>6.2f} {failed:>7}")
PY

for e in "${EDGE_TARGETS[@]}"; do
  set -- $e
  sleep 0.2 # the edge exports its counts every 50 ms
  read -r calls0 answers0 < "$WORK/edge-before-$(slug "$1")"
  calls=$(( $(edge_calls "$3") - calls0 ))
  answers=$(( $(edge_answers "$3") - answers0 ))
  python3 -c "import sys; c, a = int(sys.argv[1]), int(sys.argv[2]); print(f'$1: {c} upstream calls for {a:,} validations ({1000 * c / max(a, 1):.4f} per 1,000)')" "$calls" "$answers"
done

# Every validation sessiond answered in these rounds, by gRPC status code,
# and the token once more: it must still be valid.
status=0
for m in "${METRICS[@]}"; do
  set -- $m
  validations "$2" > "$WORK/after-$(slug "$1")"
  summary=$(awk 'FILENAME == ARGV[1] {before[$1] = $2; next} {n = $2 - before[$1]; if (n) printf "%s %d; ", $1, n}' \
    "$WORK/before-$(slug "$1")" "$WORK/after-$(slug "$1")")
  echo "$1: ValidateSession answers by code: $summary"
  if grep -qv '^Ok ' <(awk 'FILENAME == ARGV[1] {before[$1] = $2; next} $2 > before[$1]' "$WORK/before-$(slug "$1")" "$WORK/after-$(slug "$1")"); then
    echo "$1: some validations were not OK" >&2
    status=1
  fi
  "$LOAD" --mode validate --token "$(cat "$WORK/token-$(slug "$1")")" --target "http://127.0.0.1:$3" \
    --concurrency 1 --connections 1 --warmup 0 --requests 1 --csv --label "$1-after" > /dev/null \
    && echo "$1: the token is still valid after the run" \
    || { echo "$1: the token is no longer valid" >&2; status=1; }
done
exit $status
