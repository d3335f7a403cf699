#!/usr/bin/env bash
# The Shared Signals transmitter, measured from outside (BENCHMARKS.md,
# "Shared Signals delivery"): a release `sessiond serve` on a new SQLite
# file, push receivers and a poll receiver in sessiond-ssf-bench.
#
# - latency: COUNT (500) Logoffs one after another, 10 ms apart: each
#   acknowledgement, and acknowledgement to the push receiver's 202
#   (median, p99); with no stream (the acknowledgement's baseline), one push
#   stream, and one more whose receiver never answers;
# - bulk: a LogoutAll of BULK (100,000) API sessions: until the last SET
#   reached the push receiver, then (new sessions, push streams deleted)
#   until a poll receiver with maxEvents 1000 acknowledged the last one;
#   sessiond's CPU time per SET.
#
#   bash scripts/bench-ssf.sh
#   COUNT=100 BULK=10000 bash scripts/bench-ssf.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-500}
BULK=${BULK:-100000}
cargo build --release --bin sessiond --bin sessiond-ssf-bench >&2
target/release/sessiond-ssf-bench --sessiond target/release/sessiond \
  --count "$COUNT" --bulk "$BULK" --label "$(git rev-parse --short HEAD)"
