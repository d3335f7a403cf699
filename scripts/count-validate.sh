#!/usr/bin/env bash
# Instructions per ValidateSession, counted (not timed) by valgrind's
# callgrind: the same binary and load give the same count whatever else the
# machine is doing, so a change of a few hundred instructions per call shows,
# where timed runs on this shared 2-core machine move by 10 % between rounds.
#
#   bash scripts/count-validate.sh LABEL=BINARY ...   # sessiond builds, SQLite store
#   e.g. bash scripts/count-validate.sh before=/tmp/sessiond-old after=target/release/sessiond
#
# The bare baseline and the layered one (examples/baseline.rs) are counted
# first. One stream, one token: each server runs under callgrind with
# counting off, takes 300 calls to warm up, then counts N1 (1,000) and N2
# (6,000) calls in two dumps; (count2 - count1) / (N2 - N1) is the cost of
# one call without the connection's setup.
#
# Under valgrind the CPU reports no SHA extensions, so the token's SHA-256
# takes sha2's portable path (about 3,500 instructions per call, printed
# apart); on this machine's CPU (SHA-NI) it is a small fraction of that.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (Debian: valgrind)" >&2; exit 1; }
cargo build --release --bin sessiond-loadgen --example baseline >&2
N1=${N1:-1000}
N2=${N2:-6000}
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.2; done; echo "port $1 never opened" >&2; exit 1; }

count() { # LABEL PORT COMMAND...
  local label=$1 port=$2; shift 2
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/$label.out" \
    "$@" > /dev/null 2> "$WORK/$label.log" &
  PID=$!
  wait_port "$port"
  local load=(target/release/sessiond-loadgen --mode validate --tokens 1 --connections 1
    --concurrency 1 --target "http://127.0.0.1:$port" --warmup 0 --duration 600 --csv)
  "${load[@]}" --requests 300 --label warm > /dev/null
  for n in "$N1" "$N2"; do
    callgrind_control -i on "$PID" > /dev/null 2>&1
    "${load[@]}" --requests "$n" --label "$label" > /dev/null
    callgrind_control -i off "$PID" > /dev/null 2>&1
    callgrind_control -d "$PID" > /dev/null 2>&1
  done
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  local total=() sha=()
  for part in 1 2; do
    total+=("$(awk '/^totals:/ {print $2}' "$WORK/$label.out.$part")")
    sha+=("$(callgrind_annotate "$WORK/$label.out.$part" 2>/dev/null \
      | awk '/sha2::sha256::compress256/ {gsub(",", "", $1); print $1; found=1} END {if (!found) print 0}')")
  done
  awk -v l="$label" -v a="${total[0]}" -v b="${total[1]}" -v sa="${sha[0]}" -v sb="${sha[1]}" \
    -v n="$((N2 - N1))" 'BEGIN { printf "%-16s %8.0f instructions per validation (of which SHA-256: %.0f)\n", l, (b - a) / n, (sb - sa) / n }'
}

port=$(free_port)
count baseline "$port" target/release/examples/baseline --addr 127.0.0.1:"$port"
port=$(free_port)
count baseline+layers "$port" target/release/examples/baseline --addr 127.0.0.1:"$port" --sessiond-layers
for spec in "$@"; do
  label=${spec%%=*}
  port=$(free_port)
  mkdir -p "$WORK/$label.db"
  # Login's Argon2 at a low cost: only the validations are counted.
  SESSIOND_ARGON2_MEMORY_KIB=64 SESSIOND_ARGON2_ITERATIONS=1 \
    count "$label" "$port" "${spec#*=}" serve --demo --store "sqlite://$WORK/$label.db/s.db" \
    --grpc-addr 127.0.0.1:"$port" --rest-addr off
done
