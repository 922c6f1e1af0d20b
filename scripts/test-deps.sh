#!/usr/bin/env bash
# Creates or updates the Python virtual environment the tests use
# (default .venv-test in the workspace; set CORRAL_TEST_VENV to move it):
#   - SecantusDB: a MongoDB-wire-protocol server for the Mongo store's
#     conformance test (host/tests/store_mongo.rs runs .venv-test/bin/secantusd-py)
#   - schemathesis: fuzzes the HTTP API (scripts/fuzz-api.sh)
#   - openai, pymongo: real clients for end-to-end checks
#   - pytest, requests, websocket-client: the end-to-end tests in
#     host/tests/e2e (scripts/e2e.sh)
# and Debian's chromium (a browser test in the end-to-end suite) and openssl
# (certificates for a worker node's own TLS).
# Every version is pinned; nothing is reinstalled while the venv's stamp
# matches the pins.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PINS=(
    "SecantusDB==0.7.0b3" # a pre-release: keep it pinned exactly
    "schemathesis==4.32.5"
    "openai==3.54.0"
    "pymongo==4.20.0"
    "pytest==9.2.0"
    "requests==2.34.2"
    "websocket-client==1.9.2"
)

venv="${CORRAL_TEST_VENV:-$CORRAL_ROOT/.venv-test}"
python="${PYTHON:-python3}"
stamp="$venv/.corral-test-deps"

# Debian's Chromium: the end-to-end tests check that pages render under
# Corral's Content-Security-Policy in a real browser. openssl makes the
# self-signed certificates of the worker node TLS tests.
ensure_debs chromium openssl

section "Test dependencies in $venv"
command -v "$python" >/dev/null 2>&1 || die "$python not found: install Python 3.9 or later"

want="$(printf '%s\n' "$("$python" -c 'import sys; print(sys.version.split()[0])')" "${PINS[@]}")"
if [[ -x "$venv/bin/python" && -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$want" ]]; then
    info "up to date (stamp matches the pins)"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    info "creating the virtual environment"
    if ! "$python" -m venv "$venv"; then
        rm -rf "$venv"
        die "'$python -m venv' failed; on Debian/Ubuntu install python3-venv (apt-get install python3-venv)"
    fi
fi

rm -f "$stamp"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$venv/bin/python" -m pip install --quiet "${PINS[@]}"
"$venv/bin/python" -m pip check >/dev/null || info "warning: pip check reports conflicts: $("$venv/bin/python" -m pip check 2>&1 | head -5)"
for tool in secantusd-py st pytest; do
    [[ -x "$venv/bin/$tool" ]] || die "$tool is missing from $venv/bin after the install"
done
printf '%s\n' "$want" >"$stamp"
info "installed: ${PINS[*]}"
