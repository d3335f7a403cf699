#!/usr/bin/env bash
# ValidateSession on a local Redis Cluster beside a single Redis, SQLite and
# the bare baseline, in one run (ratios to the baseline), plus a LogoutAll of
# 100,000 sessions on the cluster. Writes bench/cluster-*.csv. Needs
# redis-server and redis-cli. About 5 minutes after the release build.
#
#   bash scripts/bench-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${SECONDS_PER_POINT:-5}
cargo build --release --bins --examples >&2
BIN=target/release
LOAD="$BIN/sessiond-loadgen"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
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
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

serve() {
  local name=$1 store=$2; shift 2
  local g; g=$(free_port)
  "$BIN/sessiond" serve --demo --store "$store" --grpc-addr 127.0.0.1:"$g" --rest-addr off "$@" \
    2> "$WORK/$name.log" &
  PIDS+=($!)
  wait_port "$g"
  eval "GRPC_$name=$g"
}

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync always \
  --dir "$WORK" > /dev/null &
PIDS+=($!)
wait_port "$REDIS_PORT"

# Six nodes: three primaries, one replica each.
NODES=()
for i in 1 2 3 4 5 6; do
  p=$(free_port); mkdir -p "$WORK/n$p"
  redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-node-timeout 2000 --cluster-require-full-coverage no --appendonly yes --save "" \
    --dir "$WORK/n$p" > /dev/null &
  PIDS+=($!)
  wait_port "$p"
  NODES+=("127.0.0.1:$p")
done
redis-cli --cluster create "${NODES[@]}" --cluster-replicas 1 --cluster-yes > /dev/null
for n in "${NODES[@]}"; do
  until redis-cli -p "${n#*:}" cluster info | grep -q cluster_state:ok; do sleep 0.2; done
done
sleep 2
CLUSTER="redis-cluster://$(IFS=,; echo "${NODES[*]}")"

BASE_PORT=$(free_port)
"$BIN/examples/baseline" --addr 127.0.0.1:"$BASE_PORT" > /dev/null &
PIDS+=($!)
wait_port "$BASE_PORT"
serve sqlite "sqlite://$WORK/bench.db"
serve redis "redis://127.0.0.1:$REDIS_PORT/"
serve cluster "$CLUSTER" --redis-replica-acks 1

echo "# label,mode,concurrency,rps,p50_ms,p99_ms,p999_ms,errors  ($(nproc) cores, $(date -u +%F))" > bench/cluster-headline.csv
for round in 1 2 3; do
  for target in "baseline $BASE_PORT" "sqlite $GRPC_sqlite" "redis $GRPC_redis" "cluster $GRPC_cluster"; do
    set -- $target
    "$LOAD" --mode validate --tokens 64 --target "http://127.0.0.1:$2" --concurrency 64 --connections 4 \
      --duration "$DUR" --warmup 1 --csv --label "$1" >> bench/cluster-headline.csv
  done
done
python3 scripts/ratios.py bench/cluster-headline.csv | tee bench/cluster-headline.txt

# LogoutAll / LogoutUser on the cluster: acknowledged once fenced.
echo "# label,unrelated,ended_api,logout_all_ms,sessions_per_s,ended_imap,logout_user_ms,rounds" > bench/cluster-bulk.csv
"$LOAD" --mode bulk --store "$CLUSTER" --sessions 100000 --unrelated 0 --rounds 3 --csv --label cluster >> bench/cluster-bulk.csv
cat bench/cluster-bulk.csv
echo "done: bench/cluster-*.csv" >&2
