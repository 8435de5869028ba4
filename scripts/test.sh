#!/usr/bin/env bash
# Installs what the tests need (redis-server, a Python venv with the official SDKs, the
# JavaScript SDKs from npm) and runs every check: no file refers to a path outside the
# repository (tests/repo_paths.py), formatting, clippy, unit + Redis-backed + multi-process tests
# (cargo), CRD staleness, the JavaScript SDK smoke tests, the Helm chart checks (tests/chart),
# and the end-to-end suite with the official openai and anthropic Python SDKs (pytest).
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
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $missing >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq $missing >/dev/null; fi
fi
redis-server --version

step "python venv with the official SDKs"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q --disable-pip-version-check -r tests/sdk/requirements.txt

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

step "helm chart: lint, render, validate"
# Its own venv (.venv-helm, Python >= 3.12 for helm-sdkpy); validates against the oldest and
# the newest Kubernetes version checked (kubernetes-validate's schemas); runs files/helm-test.sh
# against $UNDERSTUDY_BIN, exported above.
timeout 600 python3 tests/chart/check.py

step "end-to-end with the official Python SDKs (pytest)"
set +e
timeout 900 .venv/bin/python -m pytest tests/sdk -q -p no:cacheprovider
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
exit "$rc"
