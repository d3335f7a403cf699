#!/usr/bin/env bash
# The validator and `sessiond edge`, measured from outside (BENCHMARKS.md,
# "Validation next to the service"):
#
# - coherence: COUNT (500) endings of each kind on sessiond while the same
#   tokens are validated at an edge in a tight loop; acknowledgement to the
#   edge's first refusal (median, p99, max) and valid answers after the
#   bound, on a SQLite file and on a local Redis Cluster (STORES);
# - speed: library validations per second on one thread against remote
#   ValidateSession, in one run (SQLite upstream);
# - memory: bytes per kept session and the cache bounds under a flood of
#   distinct valid tokens.
#
#   bash scripts/bench-edge.sh                 # everything
#   STORES=sqlite PARTS="coherence" COUNT=100 bash scripts/bench-edge.sh
#
# The h2load comparison is `EDGE=1 bash scripts/bench-h2load.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-500}
STORES=${STORES:-sqlite cluster}
PARTS=${PARTS:-coherence speed memory}
cargo build --release --bin sessiond --bin sessiond-edge-bench >&2
BIN=target/release
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"; }
trap cleanup EXIT
# A port whose cluster bus port (+10000) is free too.
free_port() { python3 -c '
import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    if p > 55000: continue
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p + 10000)); print(p); break
    except OSError: pass
'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

export SESSIOND_SERVICE_CREDENTIAL=bench-edge-$(date +%s%N)-0123456789abcdef
# Cheap hashing and no login or ending limits: thousands of logins and
# endings of the demo users in a few minutes. POP sessions live 3 s (the
# expiry trials); the sweeper runs every second.
cat > "$WORK/sessiond.toml" << 'TOML'
[kinds.pop]
lifetime_secs = 3
TOML
FLAGS=(--demo --rest-addr off --config "$WORK/sessiond.toml" --argon2-memory-kib 64 --argon2-iterations 1
  --max-logins-per-user 0 --max-logins-per-address 0 --max-endings-per-user 0
  --max-endings-per-address 0 --max-sessions-per-user 0 --sweep-interval-secs 1)

cluster() {
  local nodes=()
  for _ in 1 2 3 4 5 6; do
    local p; p=$(free_port); mkdir -p "$WORK/n$p"
    redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout 2000 --appendonly yes --save "" --dir "$WORK/n$p" > /dev/null &
    PIDS+=($!)
    wait_port "$p"
    nodes+=("127.0.0.1:$p")
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes > /dev/null
  for n in "${nodes[@]}"; do
    until redis-cli -p "${n#*:}" cluster info | grep -q cluster_state:ok; do sleep 0.2; done
  done
  # Endings wait for one replica's acknowledgement: every replica linked first.
  for n in "${nodes[@]}"; do
    if redis-cli -p "${n#*:}" info replication | grep -q role:slave; then
      until redis-cli -p "${n#*:}" info replication | grep -q master_link_status:up; do sleep 0.2; done
    fi
  done
  CLUSTER="redis-cluster://$(IFS=,; echo "${nodes[*]}")"
}

mkdir -p bench
CSV=bench/edge.csv
echo "# $(nproc) cores, $(date -u +%F)" > "$CSV"
for store in $STORES; do
  extra=()
  case $store in
    sqlite) url="sqlite://$WORK/edge.db" ;;
    cluster) cluster; url=$CLUSTER; extra=(--redis-replica-acks 1) ;;
    *) echo "unknown store $store (sqlite or cluster)" >&2; exit 1 ;;
  esac
  port=$(free_port)
  "$BIN/sessiond" serve --store "$url" --grpc-addr 127.0.0.1:"$port" "${FLAGS[@]}" "${extra[@]}" \
    2> "$WORK/$store.log" &
  PIDS+=($!)
  wait_port "$port"
  echo disable-me-pass | "$BIN/sessiond" user add disable-me@example.com --org example.com \
    --store "$url" --argon2-memory-kib 64 --argon2-iterations 1 2> /dev/null
  eport=$(free_port)
  "$BIN/sessiond" edge --upstream http://127.0.0.1:"$port" --grpc-addr 127.0.0.1:"$eport" \
    2> "$WORK/$store-edge.log" &
  PIDS+=($!)
  wait_port "$eport"
  sleep 1
  if has coherence; then
    echo "== coherence on $store ($COUNT endings of each kind)" >&2
    "$BIN/sessiond-edge-bench" --mode coherence --upstream http://127.0.0.1:"$port" \
      --edge http://127.0.0.1:"$eport" --count "$COUNT" --sessiond "$BIN/sessiond" --store "$url" \
      --label "$store" | tee -a "$CSV"
  fi
  if [ "$store" = sqlite ] && has speed; then
    echo "== speed (one thread): library against remote ValidateSession" >&2
    taskset -c 0 "$BIN/sessiond-edge-bench" --mode speed --upstream http://127.0.0.1:"$port" \
      --label "$store" | tee -a "$CSV"
  fi
  if [ "$store" = sqlite ] && has memory; then
    echo "== memory" >&2
    "$BIN/sessiond-edge-bench" --mode memory --upstream http://127.0.0.1:"$port" --count 20000 \
      --label "$store" | tee -a "$CSV"
  fi
done
