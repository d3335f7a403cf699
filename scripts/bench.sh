#!/usr/bin/env bash
# Runs every benchmark of BENCHMARKS.md in one go, so each ratio compares
# figures taken in the same run on the same machine. Writes bench/*.csv and
# bench/validate.svg. Needs redis-server. Takes about 15 minutes.
#
#   bash scripts/bench.sh            # everything
#   SECONDS_PER_POINT=3 bash scripts/bench.sh
#   PARTS="ras storm overload" bash scripts/bench.sh   # some parts only
#   (parts: validate headline ras storm overload bulk)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${SECONDS_PER_POINT:-5}
PARTS=" ${PARTS:-validate headline ras storm overload bulk} "
part() { [[ "$PARTS" == *" $1 "* ]]; }
CONCURRENCY=${CONCURRENCY:-"1 4 16 64 256"}
cargo build --release --bins --examples >&2
BIN=target/release
LOAD="$BIN/sessiond-loadgen"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# serve NAME STORE [extra flags...]: starts sessiond; sets GRPC_NAME and REST_NAME ports.
serve() {
  local name=$1 store=$2; shift 2
  local g r; g=$(free_port); r=$(free_port)
  # The per-user call limits and the session cap are off: these runs
  # measure what a login, a logoff and a validation cost, from one demo user.
  "$BIN/sessiond" serve --demo --store "$store" --grpc-addr 127.0.0.1:"$g" --rest-addr 127.0.0.1:"$r" \
    --max-logins-per-user 0 --max-logins-per-address 0 --max-endings-per-user 0 \
    --max-endings-per-address 0 --max-sessions-per-user 0 "$@" \
    2> "$WORK/$name.log" &
  PIDS+=($!)
  wait_port "$g"; wait_port "$r"
  eval "GRPC_$name=$g; REST_$name=$r"
}

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync always \
  --dir "$WORK" > /dev/null &
PIDS+=($!)
wait_port "$REDIS_PORT"

BASE_PORT=$(free_port)
"$BIN/examples/baseline" --addr 127.0.0.1:"$BASE_PORT" > /dev/null &
PIDS+=($!)
wait_port "$BASE_PORT"
serve sqlite "sqlite://$WORK/bench.db"
serve redis "redis://127.0.0.1:$REDIS_PORT/"

if part validate; then
echo "# label,mode,concurrency,rps,p50_ms,p99_ms,p999_ms,errors  ($(nproc) cores, $(date -u +%F))" > bench/validate.csv
for c in $CONCURRENCY; do
  for target in "baseline $BASE_PORT" "sqlite $GRPC_sqlite" "redis $GRPC_redis"; do
    set -- $target
    "$LOAD" --mode validate --tokens 64 --target "http://127.0.0.1:$2" --concurrency "$c" --connections 4 \
      --duration "$DUR" --warmup 1 --csv --label "$1" >> bench/validate.csv
  done
done
python3 scripts/chart.py bench/validate.csv bench/validate.svg
fi

# The headline at 64 streams: three interleaved rounds, medians (this machine
# is noisy; one sample per point is not enough for a ratio).
if part headline; then
echo "# label,mode,concurrency,rps,p50_ms,p99_ms,p999_ms,errors" > bench/headline.csv
for round in 1 2 3; do
  for target in "baseline $BASE_PORT" "sqlite $GRPC_sqlite" "redis $GRPC_redis"; do
    set -- $target
    "$LOAD" --mode validate --tokens 64 --target "http://127.0.0.1:$2" --concurrency 64 --connections 4 \
      --duration "$DUR" --warmup 1 --csv --label "$1" >> bench/headline.csv
  done
done
python3 scripts/ratios.py bench/headline.csv | tee bench/headline.txt
fi

# The RAS pair, REST vs gRPC, on one server with cheap Argon2 so the shim's
# own cost is what differs.
if part ras; then
serve cheap "sqlite://$WORK/cheap.db" --argon2-memory-kib 64 --argon2-iterations 1 --max-failures-per-address 100000000
echo "# label,mode,concurrency,rps,p50_ms,p99_ms,p999_ms,errors" > bench/ras.csv
"$LOAD" --mode ras-grpc --target "http://127.0.0.1:$GRPC_cheap" --concurrency 32 --duration "$DUR" --csv --label grpc >> bench/ras.csv
"$LOAD" --mode ras-rest --rest "http://127.0.0.1:$REST_cheap" --concurrency 32 --duration "$DUR" --csv --label rest >> bench/ras.csv
fi

# A login storm at production Argon2 cost against validation.
if part storm; then
serve storm "sqlite://$WORK/storm.db" --max-failures-per-address 100000000
echo "# label,mode,concurrency,rps,p50_ms,p99_ms,p999_ms,errors" > bench/storm.csv
"$LOAD" --mode validate --target "http://127.0.0.1:$GRPC_storm" --concurrency 16 --duration "$DUR" --csv --label unloaded >> bench/storm.csv
"$LOAD" --mode storm --storm 16 --target "http://127.0.0.1:$GRPC_storm" --concurrency 16 --duration "$DUR" --csv --label storm >> bench/storm.csv
fi

# Overload: far more streams than admitted.
if part overload; then
serve shed "sqlite://$WORK/shed.db" --max-in-flight 64
echo "# label,mode,concurrency,rps,p50_ms,p99_ms,p999_ms,errors" > bench/overload.csv
for c in 64 1024 4096; do
  "$LOAD" --mode validate --target "http://127.0.0.1:$GRPC_shed" --concurrency "$c" --duration "$DUR" --csv --label "max-in-flight-64" >> bench/overload.csv
done
fi

# Bulk endings: 100,000 API sessions of one org, and the same ending among
# 10,000 vs 1,000,000 unrelated sessions.
# (medians of several rounds: one timed call is too noisy for a ratio)
if part bulk; then
echo "# label,unrelated,ended_api,logout_all_ms,sessions_per_s,ended_imap,logout_user_ms,rounds" > bench/bulk.csv
for store in "sqlite-memory sqlite::memory:" "sqlite-file sqlite://$WORK/bulk.db" "redis redis://127.0.0.1:$REDIS_PORT/4"; do
  set -- $store
  rm -f "$WORK"/bulk.db*
  "$LOAD" --mode bulk --store "$2" --sessions 100000 --unrelated 0 --rounds 3 --csv --label "$1" >> bench/bulk.csv
done
for store in "sqlite-memory sqlite::memory:" "redis redis://127.0.0.1:$REDIS_PORT/5"; do
  set -- $store
  for unrelated in 10000 1000000; do
    redis-cli -p "$REDIS_PORT" flushall > /dev/null
    "$LOAD" --mode bulk --store "$2" --sessions 1000 --unrelated "$unrelated" --rounds 7 --csv --label "$1" >> bench/bulk.csv
  done
done
fi
echo "done: bench/*.csv, bench/validate.svg" >&2
