#!/usr/bin/env bash
# Checks the REST shim against its OpenAPI document (docs/openapi.json):
# the document validates with openapi-spec-validator, then schemathesis runs
# against the live shim of a `sessiond serve --demo` of its own (free port,
# temporary SQLite store, killed afterwards) with its response-conformance
# checks on: status codes, content types and response schemas as documented,
# and no 5xx. Three runs: without credentials (every refusal path, and the
# documented request examples), with a live RAS `auth_token` and Informatica
# `icSessionId` of the demo users (the success paths behind them), and last
# the calls that end sessions. Needs `openapi-spec-validator` and
# `schemathesis` (PyPI) on PATH; .ci/run installs them. About a minute.
#
#   bash scripts/openapi-check.sh [path/to/sessiond]
#
# MAX_EXAMPLES (default 25) bounds the cases per operation and phase.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-${CARGO_TARGET_DIR:-target}/debug/sessiond}
MAX_EXAMPLES=${MAX_EXAMPLES:-25}
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance

openapi-spec-validator docs/openapi.json

WORK=$(mktemp -d)
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" serve --demo --store "sqlite://$WORK/store.db" --grpc-addr 127.0.0.1:0 \
  --rest-addr "127.0.0.1:$port" >"$WORK/server.log" 2>&1 &
PID=$!
base="http://127.0.0.1:$port"
up=
for _ in $(seq 300); do
  curl -sf -o /dev/null "$base/openapi.json" && { up=1; break; }
  kill -0 "$PID" 2>/dev/null || break
  sleep 0.1
done
[ -n "$up" ] || {
  echo "openapi-check: sessiond did not serve $base/openapi.json; its log:" >&2
  cat "$WORK/server.log" >&2
  exit 1
}
# The served document is the committed one (the test suite checks this too).
curl -sf "$base/openapi.json" | cmp -s - docs/openapi.json || {
  echo "openapi-check: the served document differs from docs/openapi.json;" \
    "regenerate it with: cargo run -- openapi > docs/openapi.json" >&2
  exit 1
}

run() {
  # Its example database and reports go to the scratch directory, not the tree.
  (cd "$WORK" && schemathesis run "$base/openapi.json" --checks "$CHECKS" \
    --max-examples "$MAX_EXAMPLES" --generation-database none --no-color "$@")
}

logon() {
  curl -sf -X POST "$base/api/Session/logon" -H 'Content-Type: application/json' \
    -d '{"username": "domain_admin@example.com", "password": "pencil75"}' | jq -r .authToken
}
# Small session ids are the likeliest that LogOff Other Admin is fuzzed with:
# a few decoy sessions take them, so the token used stays live longer there.
for _ in 1 2 3 4 5; do logon >/dev/null; done
ras_token=$(logon)
# Joe's API session, in example.com: the documented logoutall example (sent
# by schemathesis's examples phase) ends company.com's, not this one.
ic_session=$(curl -sf -X POST "$base/ma/api/v2/user/login" -H 'Content-Type: application/json' \
  -d '{"@type": "login", "username": "joe_user@example.com", "password": "joe-pass-1"}' |
  jq -r .icSessionId)
# Logged on before the anonymous run, whose failed logons could throttle
# this address.
[ -n "$ras_token" ] && [ "$ras_token" != null ] && [ -n "$ic_session" ] && [ "$ic_session" != null ] || {
  echo "openapi-check: the demo users could not log on" >&2
  exit 1
}

check() {
  local name=$1
  shift
  echo "openapi-check: schemathesis $name"
  run "$@" >"$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log"; exit 1; }
  grep -E '^  [0-9]+ generated' "$WORK/$name.log" || tail -n 4 "$WORK/$name.log"
}
auth=(-H "auth_token: $ras_token" -H "icSessionId: $ic_session")
# The calls that end sessions by id or the caller's own go last, so the
# tokens serve every other operation first.
ending='^(ras_logoff|ras_logoff_other_admin|informatica_logout|informatica_logout_.*)$'
check anonymous
check authenticated "${auth[@]}" --exclude-operation-id-regex "$ending"
check ending "${auth[@]}" --include-operation-id-regex "$ending"
echo "openapi-check: passed"
