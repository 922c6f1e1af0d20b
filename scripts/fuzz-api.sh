#!/usr/bin/env bash
# Fuzzes the HTTP API with schemathesis against a real `corral serve`.
#
# Starts the server on 127.0.0.1 (a port the OS picks) with a fresh data
# directory, creates an admin, signs in, and runs schemathesis against the
# served /openapi.json as that admin with these checks:
#   not_a_server_error, status_code_conformance, content_type_conformance,
#   response_schema_conformance
# Exits non-zero on any failure. Rate-limit answers (429) are documented in
# the API, so they pass.
#
# Environment:
#   CORRAL_BIN               the corral binary (default: `cargo build -p
#                            corral-host` and its debug binary)
#   CORRAL_TEST_VENV         venv with schemathesis (default .venv-test,
#                            from scripts/test-deps.sh)
#   CORRAL_FUZZ_MAX_EXAMPLES test cases per operation (default 30)
#   CORRAL_FUZZ_SEED         random seed (default a fixed one, for repeatable
#                            runs; set `random` for a new one each run)
#   CORRAL_FUZZ_WORKERS      concurrent workers (default 1: schemathesis runs
#                            extra workers as threads, and CPython 3.11 before
#                            3.11.8 can raise a spurious "AST constructor
#                            recursion depth mismatch" SystemError when
#                            threads parse source at once)
#   CORRAL_FUZZ_TIMEOUT      hard limit for schemathesis, seconds (default 480)
#   CORRAL_FUZZ_REPORT_DIR   if set, JUnit and HAR reports are written there
# Extra arguments are passed on to `st run`.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

venv="${CORRAL_TEST_VENV:-$CORRAL_ROOT/.venv-test}"
st="$venv/bin/st"
[[ -x "$st" ]] || die "schemathesis not found at $st: run scripts/test-deps.sh first"
command -v curl >/dev/null 2>&1 || die "curl not found (apt-get install curl)"

max_examples="${CORRAL_FUZZ_MAX_EXAMPLES:-30}"
seed="${CORRAL_FUZZ_SEED:-20251121}"
workers="${CORRAL_FUZZ_WORKERS:-1}"
st_timeout="${CORRAL_FUZZ_TIMEOUT:-480}"

if [[ -n "${CORRAL_BIN:-}" ]]; then
    bin="$CORRAL_BIN"
else
    section "Building the debug binary"
    require_cargo
    (cd "$CORRAL_ROOT" && cargo build -p corral-host --locked)
    bin="$(target_dir)/debug/corral"
fi
[[ -x "$bin" ]] || die "corral binary not found at $bin"

work="$(mktemp -d "${TMPDIR:-/tmp}/corral-fuzz.XXXXXX")"
server_pid=""
cleanup() {
    local status=$?
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -f "$work/server.log" ]]; then
        printf '\n--- last lines of the server log (%s) ---\n' "$work/server.log" >&2
        tail -n 40 "$work/server.log" >&2 || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

data="$work/data"
mkdir -p "$data"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
base="http://127.0.0.1:$port"

section "Starting $bin on $base"
# A fresh config-free environment: only our flags count.
env -u CORRAL_CONFIG -u CORRAL_DATABASE -u CORRAL_DATA_DIR -u CORRAL_BIND \
    RUST_LOG="${RUST_LOG:-warn}" \
    "$bin" serve --bind "127.0.0.1:$port" --data-dir "$data" </dev/null >"$work/server.log" 2>&1 &
server_pid=$!

ready=0
for _ in $(seq 300); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        die "the server exited before it was ready"
    fi
    if curl -fsS -o /dev/null --max-time 2 "$base/readyz" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
[[ "$ready" -eq 1 ]] || die "the server was not ready within 30 s"
info "ready (pid $server_pid)"

section "Creating an admin and signing in"
password="$(python3 -c 'import secrets; print("fz-" + secrets.token_urlsafe(18))')"
env -u CORRAL_CONFIG -u CORRAL_DATABASE -u CORRAL_DATA_DIR \
    "$bin" admin create --data-dir "$data" --username fuzzadmin --role admin --password "$password" </dev/null
login_body="$(python3 -c 'import json, sys; print(json.dumps({"username": "fuzzadmin", "password": sys.argv[1]}))' "$password")"
login="$(curl -sS --fail-with-body --max-time 30 -H 'Content-Type: application/json' \
    --data "$login_body" "$base/api/auth/login")" || die "login failed: $login"
token="$(printf '%s' "$login" | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')" ||
    die "no access_token in the login answer: $login"
[[ -n "$token" ]] || die "empty access token"
info "signed in as fuzzadmin"

section "schemathesis: $max_examples examples per operation, seed $seed, $workers workers"
st_args=(
    run "$base/openapi.json"
    --checks "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
    -H "Authorization: Bearer $token"
    --max-examples "$max_examples"
    --workers "$workers"
    --generation-database none
    --request-timeout 30
    --no-color
)
[[ "$seed" != "random" ]] && st_args+=(--seed "$seed")
if [[ -n "${CORRAL_FUZZ_REPORT_DIR:-}" ]]; then
    mkdir -p "$CORRAL_FUZZ_REPORT_DIR"
    st_args+=(--report "junit,har" --report-dir "$CORRAL_FUZZ_REPORT_DIR")
fi
# Run from the scratch folder so nothing (.hypothesis, reports) lands in the
# workspace; `timeout` bounds the run whatever schemathesis decides.
st_status=0
(cd "$work" && timeout --kill-after=10 "$st_timeout" "$st" "${st_args[@]}" "$@") || st_status=$?
if [[ $st_status -eq 124 || $st_status -eq 137 ]]; then
    die "schemathesis ran past ${st_timeout}s"
fi
if ! kill -0 "$server_pid" 2>/dev/null; then
    die "the server died during the fuzzing"
fi
[[ $st_status -eq 0 ]] || die "schemathesis found failures (exit $st_status); to replay a curl command above, start a server and put a token from /api/auth/login in place of [Filtered]"
info "no failures"
