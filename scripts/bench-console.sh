#!/usr/bin/env bash
# The admin console, measured in the browser (BENCHMARKS.md, "Admin
# console"): Debian's Chromium driven by Playwright against a release
# `sessiond serve --demo` on a new SQLite file (console/bench/console-bench.mjs):
#
# - the first page of an org with FIRST (10,000) live sessions, against an
#   org of 60 (a first page as full) in the same store;
# - one ending by another client to its line in Endings;
# - a LogoutAll of BULK (30,000) API sessions with the page open: time to
#   show them all, main-thread stalls, DOM writes and typing latency,
#   against an idle stretch.
#
#   bash scripts/bench-console.sh
#   ROUNDS=3 FIRST_ORG_SESSIONS=2000 BULK_SESSIONS=5000 bash scripts/bench-console.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin sessiond --bin sessiond-loadgen >&2
(cd console && { [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund >&2; })
SESSIOND_BIN="$PWD/target/release/sessiond" SESSIOND_LOADGEN="$PWD/target/release/sessiond-loadgen" \
  node console/bench/console-bench.mjs
