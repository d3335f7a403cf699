#!/usr/bin/env bash
# Checks the REST listener against its OpenAPI document (docs/openapi.json):
# the document validates with openapi-spec-validator, then schemathesis runs
# against the live listener of a `sessiond serve --demo` of its own (free
# port, temporary SQLite store, a service credential of its own, and a Global
# Token Revocation identity provider `openapi-check` confined to company.com,
# whose issuer is that of the document's `iss_sub` example; killed
# afterwards) with its response-conformance checks on: status codes, content
# types and response schemas as documented, and no 5xx. Four runs: without
# credentials (every refusal path, and the documented request examples);
# with a live RAS `auth_token` and Informatica `icSessionId` of the demo
# users, that `auth_token` (a KIND_ADMIN session) also as the Shared Signals
# bearer token (the success paths behind them); the calls that end sessions
# by id or the caller's own; and last, with the service credential as the
# bearer token, the Shared Signals routes and Global Token Revocation, which
# ends every session of the users it names (its `email`, `opaque` and
# `iss_sub` examples included). Needs `openapi-spec-validator` and
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
service_credential=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
# The identity provider's own secret is never used as a bearer token here:
# it is configured so that `iss_sub` subjects of its issuer are accepted.
OPENAPI_CHECK_IDP_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export OPENAPI_CHECK_IDP_SECRET
# The anonymous run sends thousands of wrong tokens from this address: with
# the default lockout every later run would only see 429s.
SESSIOND_SERVICE_CREDENTIAL=$service_credential \
  "$BIN" serve --demo --store "sqlite://$WORK/store.db" --grpc-addr 127.0.0.1:0 \
  --rest-addr "127.0.0.1:$port" --max-failures-per-address 1000000 \
  --gtr-idp "openapi-check:secret_env=OPENAPI_CHECK_IDP_SECRET,org=company.com,iss=https://idp.example.com" \
  >"$WORK/server.log" 2>&1 &
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
  (cd "$WORK" && schemathesis --config-file "$WORK/schemathesis.toml" run "$base/openapi.json" \
    --checks "$CHECKS" --max-examples "$MAX_EXAMPLES" --generation-database none --no-color "$@")
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

# Poll streams with a verification SET queued: fuzzed acknowledgements never
# name that SET, so a poll of them answers at once, where a poll of a stream
# that owes nothing waits 30 s for an ending (past schemathesis's 10 s
# request timeout). So the poll's stream_id is one of these or a made-up one
# (404), never an id read in an answer (the streams schemathesis makes owe
# nothing), and the poll is no step of the stateful phase. Deletes take no
# id read in an answer either, but the stateful phase may still delete the
# admin's: the service credential's is of every org, which an admin cannot
# see, so the service run still has that one.
poll_stream() {
  local id
  id=$(curl -sf -X POST "$base/ssf/streams" -H "Authorization: Bearer $1" \
    -d '{"delivery": {"method": "urn:ietf:rfc:8936"}}' | jq -r .stream_id)
  [ -n "$id" ] && [ "$id" != null ] &&
    curl -sf -X POST "$base/ssf/verify" -H "Authorization: Bearer $1" -d "{\"stream_id\": \"$id\"}" &&
    echo "$id"
}
admin_poll=$(poll_stream "$ras_token") && service_poll=$(poll_stream "$service_credential") || {
  echo "openapi-check: could not make the Shared Signals poll streams" >&2
  exit 1
}
cat >"$WORK/schemathesis.toml" <<EOF
[dictionaries.poll-stream]
values = ["$admin_poll", "$service_poll"]

[[operations]]
include-operation-id = "ssf_poll"
parameters = { "path.stream_id" = { dictionary = "poll-stream", probability = 0.5 } }
phases.stateful.enabled = false
phases.examples.extra-data-sources.responses = false
phases.coverage.extra-data-sources.responses = false
phases.fuzzing.extra-data-sources.responses = false

[[operations]]
include-operation-id = "ssf_streams_delete"
phases.examples.extra-data-sources.responses = false
phases.coverage.extra-data-sources.responses = false
phases.fuzzing.extra-data-sources.responses = false
EOF

check() {
  local name=$1
  shift
  echo "openapi-check: schemathesis $name"
  run "$@" >"$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log"; exit 1; }
  grep -E '^  [0-9]+ generated' "$WORK/$name.log" || tail -n 4 "$WORK/$name.log"
}
auth=(-H "auth_token: $ras_token" -H "icSessionId: $ic_session" -H "Authorization: Bearer $ras_token")
# The calls that end sessions by id or the caller's own go after the others,
# so the tokens serve every other operation first; Global Token Revocation,
# which an admin's session may not call (403) and which ends every session of
# a user, goes last, with the service credential.
ending='^(ras_logoff|ras_logoff_other_admin|informatica_logout|informatica_logout_.*)$'
service='^(ssf_.*|global_token_revocation)$'
check anonymous
check authenticated "${auth[@]}" --exclude-operation-id-regex "$ending|^global_token_revocation\$"
check ending "${auth[@]}" --include-operation-id-regex "$ending"
check service -H "Authorization: Bearer $service_credential" --include-operation-id-regex "$service"
echo "openapi-check: passed"
