#!/bin/sh
# End-to-end check of an installed Understudy, run by `helm test` (templates/tests/) and by
# tests/chart/check.py against a local gateway. It creates a temporary private tenant through the
# public API, adds a scenario, asks the OpenAI and Anthropic surfaces for its answer (and, with
# MCP_CHECK=true, initialises an MCP session), then deletes the tenant, also when a step fails.
#
# Environment:
#   GATEWAY_URL     base URL of the gateway, e.g. http://understudy-gateway.understudy.svc:80
#   ADMIN_TOKEN     the gateway's admin token (UNDERSTUDY_ADMIN_TOKEN)
#   MCP_CHECK       "true" to also check MCP initialize on /mcp (default: false)
#   READY_ATTEMPTS  how many times to try GET /readyz, one second apart (default: 15)
#   REQUEST_TIMEOUT seconds one request may take (default: 30)
#
# Only sh, curl, grep, sed, sort and head are used (what the curlimages/curl image has): no jq.
# Every failure prints what was expected and what was received, and exits non-zero.
set -u

: "${GATEWAY_URL:?GATEWAY_URL is required}"
: "${ADMIN_TOKEN:?ADMIN_TOKEN is required}"
GATEWAY_URL=${GATEWAY_URL%/}
MCP_CHECK=${MCP_CHECK:-false}
READY_ATTEMPTS=${READY_ATTEMPTS:-15}
REQUEST_TIMEOUT=${REQUEST_TIMEOUT:-30}

WORK=$(mktemp -d) || exit 1
BODY=$WORK/body
HEADERS=$WORK/headers
CURL_ERROR=$WORK/curl-error
TENANT="helm_test_$(date +%s)_$$"
KEYWORD="helm-test-keyword"
ANSWER="Understudy helm test answer for $TENANT"
# Whether the temporary tenant exists: false, true, or maybe (the create request got no clear
# answer, e.g. it timed out: the gateway may have created it all the same).
CREATED=false
CODE=000

log() { printf '%s\n' "$*"; }

# Prints the last response (status, curl's error if any, the first 2000 bytes of the body).
show_response() {
  if [ -s "$CURL_ERROR" ]; then printf '  curl: %s\n' "$(head -c 500 "$CURL_ERROR")" >&2; fi
  if [ -s "$BODY" ]; then printf '  received body: %s\n' "$(head -c 2000 "$BODY")" >&2; fi
}

fail() {
  printf 'FAIL: %s\n' "$1" >&2
  show_response
  exit 1
}

# request METHOD PATH [curl arguments…]: the status goes to CODE (000 when nothing answered),
# the body to $BODY, the headers to $HEADERS.
request() {
  method=$1
  path=$2
  shift 2
  : >"$BODY"
  : >"$HEADERS"
  CODE=$(curl -sS --max-time "$REQUEST_TIMEOUT" -o "$BODY" -D "$HEADERS" -w '%{http_code}' \
    -X "$method" "$GATEWAY_URL$path" "$@" 2>"$CURL_ERROR") || true
  [ -n "$CODE" ] || CODE=000
}

# expect_status STEP CODE
expect_status() {
  [ "$CODE" = "$2" ] || fail "$1: expected HTTP $2, received HTTP $CODE"
}

# expect_body STEP TEXT
expect_body() {
  grep -qF -- "$2" "$BODY" || fail "$1: expected the body to contain '$2'"
}

# Deletes the tenant whenever it may exist (a 404 then means there was nothing to delete).
cleanup() {
  rc=$?
  trap - EXIT
  if [ "$CREATED" != false ]; then
    request DELETE "/public/tenants/$TENANT" -H "Authorization: Bearer $ADMIN_TOKEN"
    if [ "$CODE" = 200 ]; then
      log "ok: deleted the temporary tenant $TENANT"
    elif [ "$CODE" = 404 ]; then
      log "ok: no temporary tenant to delete ($TENANT does not exist)"
    else
      printf 'FAIL: DELETE /public/tenants/%s: expected HTTP 200 (or 404), received HTTP %s\n' "$TENANT" "$CODE" >&2
      show_response
      [ "$rc" != 0 ] || rc=1
    fi
  fi
  rm -rf "$WORK"
  if [ "$rc" = 0 ]; then log "PASS: Understudy at $GATEWAY_URL works"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "checking Understudy at $GATEWAY_URL (temporary tenant $TENANT)"

# 1. Readiness.
attempt=1
while :; do
  request GET /readyz
  [ "$CODE" = 200 ] && break
  [ "$attempt" -lt "$READY_ATTEMPTS" ] || fail "GET /readyz ($attempt attempts): expected HTTP 200, received HTTP $CODE"
  attempt=$((attempt + 1))
  sleep 1
done
log "ok: GET /readyz is 200"

# 2. A temporary private tenant owned by the admin identity, with one scenario. Until a clear
# answer arrives the tenant may exist (a timeout, an interruption, a 5xx from a proxy in between):
# the cleanup then tries to delete it. A 4xx means the gateway refused to create it.
CREATED=maybe
request POST /public/tenants \
  -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
  -d "{\"tenant_id\":\"$TENANT\",\"visibility\":\"private\"}"
case $CODE in
  201) CREATED=true ;;
  4??) CREATED=false ;;
esac
expect_status "POST /public/tenants" 201
expect_body "POST /public/tenants" "\"$TENANT\""
log "ok: created the tenant"

request POST "/public/tenants/$TENANT/scenarios" \
  -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
  -d "{\"keywords\":[\"$KEYWORD\"],\"response\":\"$ANSWER\"}"
expect_status "POST /public/tenants/$TENANT/scenarios" 201
# The configuration version of the write: any other gateway pod waits until it serves it.
VERSION=$(grep -o '"version"[[:space:]]*:[[:space:]]*[0-9][0-9]*' "$BODY" | sed 's/.*[^0-9]//' | sort -n | tail -n 1)
[ -n "$VERSION" ] || fail "POST /public/tenants/$TENANT/scenarios: expected a \"version\" in the answer"
log "ok: added a scenario (configuration version $VERSION)"

QUESTION="Please run the $KEYWORD check."

# 3. OpenAI Chat Completions, with the admin token as the Bearer key of the private tenant.
request POST /v1/chat/completions \
  -H "X-Tenant-ID: $TENANT" -H "Authorization: Bearer $ADMIN_TOKEN" \
  -H "X-Understudy-Config-Version: $VERSION" -H 'Content-Type: application/json' \
  -d "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"$QUESTION\"}]}"
expect_status "POST /v1/chat/completions" 200
expect_body "POST /v1/chat/completions" "$ANSWER"
log "ok: POST /v1/chat/completions answered the scenario's text"

# Anthropic Messages, with the admin token as x-api-key.
request POST /v1/messages \
  -H "X-Tenant-ID: $TENANT" -H "x-api-key: $ADMIN_TOKEN" -H 'anthropic-version: 2023-06-01' \
  -H "X-Understudy-Config-Version: $VERSION" -H 'Content-Type: application/json' \
  -d "{\"model\":\"claude-sonnet-5-5\",\"max_tokens\":256,\"messages\":[{\"role\":\"user\",\"content\":\"$QUESTION\"}]}"
expect_status "POST /v1/messages" 200
expect_body "POST /v1/messages" "$ANSWER"
log "ok: POST /v1/messages answered the scenario's text"

# 4. MCP (streamable HTTP): initialize answers a result with a protocolVersion.
if [ "$MCP_CHECK" = true ]; then
  request POST /mcp \
    -H "X-Tenant-ID: $TENANT" -H "Authorization: Bearer $ADMIN_TOKEN" \
    -H "X-Understudy-Config-Version: $VERSION" \
    -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"understudy-helm-test","version":"0.1.0"}}}'
  expect_status "POST /mcp (initialize)" 200
  expect_body "POST /mcp (initialize)" '"result"'
  expect_body "POST /mcp (initialize)" '"protocolVersion"'
  SESSION=$(sed -n 's/^[Mm][Cc][Pp]-[Ss][Ee][Ss][Ss][Ii][Oo][Nn]-[Ii][Dd]:[[:space:]]*\([^[:space:]]*\).*/\1/p' "$HEADERS" | head -n 1)
  if [ -n "$SESSION" ]; then
    request DELETE /mcp -H "X-Tenant-ID: $TENANT" -H "Authorization: Bearer $ADMIN_TOKEN" \
      -H "Mcp-Session-Id: $SESSION"
  fi
  log "ok: POST /mcp initialize answered a result with a protocolVersion"
else
  log "skipped: MCP check (MCP_CHECK is not true)"
fi

# 5. The trap deletes the tenant.
exit 0
