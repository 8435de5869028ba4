#!/usr/bin/env bash
# Installs what the tests need (redis-server, Python venvs with the official SDKs, the
# JavaScript SDKs and MCP tooling from npm) and runs every check: no file refers to a path
# outside the repository (tests/repo_paths.py), formatting, clippy, unit + Redis-backed +
# multi-process tests (cargo), CRD staleness, the JavaScript SDK smoke tests, MCP with the
# TypeScript SDK, the Inspector CLI and the conformance suite (tests/mcp-node), the portal with a
# real OpenID provider and headless Chromium (tests/portal), the Helm chart
# checks (tests/chart), MCP with the Python SDK 2.x and 1.x (tests/mcp), and the end-to-end
# suite with the official openai and anthropic Python SDKs (tests/sdk).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "no file refers to a path outside the repository (a clone has nothing beside it)"
python3 tests/repo_paths.py

step "system packages"
# redis-server for shared mode; curl, jq and openssl for the README walkthroughs
# (tests/sdk/test_walkthrough.py runs them as written).
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
for tool in curl jq openssl; do command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done
# Debian's chromium for the portal's browser test (tests/portal, driven by playwright-core).
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $missing >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq $missing >/dev/null; fi
fi
redis-server --version

step "python venv with the official SDKs"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q --disable-pip-version-check -r tests/sdk/requirements.txt

step "python venvs with the official MCP SDK, one per major version (2.x and 1.x)"
for major in 2 1; do
  if [ ! -x ".venv-mcp$major/bin/python" ]; then python3 -m venv ".venv-mcp$major"; fi
  ".venv-mcp$major/bin/pip" install -q --disable-pip-version-check -r "tests/mcp/requirements-mcp$major.txt"
done

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
timeout 1800 cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (unit, store contract on memory and Redis, golden files, CRD staleness, multi-process)"
timeout 1800 cargo test --workspace

cargo build -q -p understudy-gateway
export UNDERSTUDY_BIN="$PWD/target/debug/understudy-gateway"

step "the official JavaScript SDKs (openai, @anthropic-ai/sdk; node --test)"
(cd tests/ts && npm ci --no-audit --no-fund --loglevel=error && timeout 300 npm test --silent)

step "MCP with the official Node tooling (TypeScript SDK, MCP Inspector CLI, conformance suite; Node 22 from npm)"
(cd tests/mcp-node && npm ci --no-audit --no-fund --loglevel=error && timeout 600 npm test --silent)

step "portal: audit log, portal API, OIDC login with a real OpenID provider (oidc-provider), headless Chromium (tests/portal)"
(cd tests/portal && npm ci --no-audit --no-fund --loglevel=error && timeout 600 npm test --silent)

step "helm chart: lint, render, validate"
# Its own venv (.venv-helm, Python >= 3.12 for helm-sdkpy); validates against the oldest and
# the newest Kubernetes version checked (kubernetes-validate's schemas); runs files/helm-test.sh
# against $UNDERSTUDY_BIN, exported above.
timeout 600 python3 tests/chart/check.py

# pytest exits 5 when it collected nothing: a suite that silently vanished is a failure.
pytest_suite() {
  local python=$1; shift
  set +e
  timeout 900 "$python" -m pytest "$@" -q -p no:cacheprovider
  local rc=$?
  set -e
  if [ "$rc" = 5 ]; then echo "pytest collected no tests: $*" >&2; return 1; fi
  return "$rc"
}

step "MCP with the official Python SDK 2.x, then 1.x (pytest)"
pytest_suite .venv-mcp2/bin/python tests/mcp
pytest_suite .venv-mcp1/bin/python tests/mcp

step "end-to-end with the official Python SDKs (pytest)"
pytest_suite .venv/bin/python tests/sdk
