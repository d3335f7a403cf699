#!/usr/bin/env bash
# Where the CPU of a ValidateSession goes: each target under 64 streams of
# load (sessiond-loadgen, 4 connections), `perf record` of the server alone
# for 8 s, then scripts/perf-categories.py as microseconds per request.
# Needs `perf` (Debian: linux-perf) and permission to record (root, or
# kernel.perf_event_paranoid <= 1).
#
#   bash scripts/profile-validate.sh LABEL=BINARY ...   # sessiond builds, SQLite store
#   e.g. bash scripts/profile-validate.sh before=/tmp/sessiond-old after=target/release/sessiond
#
# The bare baseline (examples/baseline.rs) is always profiled first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin sessiond-loadgen --example baseline >&2
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

profile() { # LABEL PORT PID
  target/release/sessiond-loadgen --mode validate --tokens 64 --target "http://127.0.0.1:$2" \
    --concurrency 64 --connections 4 --duration 14 --warmup 1 --csv --label "$1" > "$WORK/$1.csv" &
  local load=$!
  sleep 3
  perf record -F 1999 -g -p "$3" -o "$WORK/$1.data" -- sleep 8 2> /dev/null > /dev/null
  wait "$load"
  local rps; rps=$(cut -d, -f4 "$WORK/$1.csv")
  echo "== $1: $rps validations/s while recorded"
  python3 scripts/perf-categories.py "$WORK/$1.data" "$rps" 8
}

port=$(free_port)
target/release/examples/baseline --addr 127.0.0.1:"$port" > /dev/null &
PIDS+=($!)
wait_port "$port"
profile baseline "$port" "${PIDS[-1]}"
for spec in "$@"; do
  label=${spec%%=*}
  port=$(free_port)
  "${spec#*=}" serve --demo --store "sqlite://$WORK/$label.db" --grpc-addr 127.0.0.1:"$port" \
    --rest-addr off 2> "$WORK/$label.log" &
  PIDS+=($!)
  wait_port "$port"
  profile "$label" "$port" "${PIDS[-1]}"
done
