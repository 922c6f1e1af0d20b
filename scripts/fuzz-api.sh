#!/usr/bin/env bash
# Fuzzes the HTTP API with schemathesis against a real `corral serve`.
#
# Starts the server on 127.0.0.1 (a port the OS picks) with a fresh data
# directory and no backend libraries, creates a technician (who may call
# every operation) and the records that operations name in their paths (a
# chat, a ticket, a model, an API key, other accounts: scripts/fuzz_api.py
# seed), and runs schemathesis against the served /openapi.json, first as
# the technician, then (fewer examples) as an admin, with these checks:
#   not_a_server_error, status_code_conformance, content_type_conformance,
#   response_schema_conformance
# Rate-limit answers (429) are documented in the API, so they pass.
#
# Then it prints, per operation, how many answers there were and how many
# were 2xx, and fails when an operation never reached its success path
# (except the few listed in scripts/fuzz_api.py with the reason) or
# anything answered 500.
#
# Environment:
#   CORRAL_BIN               the corral binary (default: `cargo build -p
#                            corral-host` and its debug binary)
#   CORRAL_TEST_VENV         venv with schemathesis (default .venv-test,
#                            from scripts/test-deps.sh)
#   CORRAL_FUZZ_MAX_EXAMPLES test cases per operation (default 30)
#   CORRAL_FUZZ_ADMIN_EXAMPLES test cases per operation of the second run, as
#                            an admin (default 5)
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
admin_examples="${CORRAL_FUZZ_ADMIN_EXAMPLES:-5}"
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
no_backends="$work/no-backends"
mkdir -p "$data" "$no_backends"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
base="http://127.0.0.1:$port"

section "Starting $bin on $base"
# A fresh config-free environment: only our flags count.
env -u CORRAL_CONFIG -u CORRAL_DATABASE -u CORRAL_DATA_DIR -u CORRAL_BIND \
    RUST_LOG="${RUST_LOG:-warn}" \
    "$bin" serve --bind "127.0.0.1:$port" --data-dir "$data" --backends-dir "$no_backends" \
    </dev/null >"$work/server.log" 2>&1 &
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

section "Accounts and records for the fuzzer"
# Plugins are among the records (the test command has built them).
if [[ -z "${CORRAL_PLUGINS_DIST:-}" ]]; then
    CORRAL_PLUGINS_DIST="$("$CORRAL_ROOT/scripts/build-plugins.sh" | tail -1)"
fi
export CORRAL_PLUGINS_DIST
"$venv/bin/python" "$CORRAL_ROOT/scripts/fuzz_api.py" seed "$base" "$bin" "$data" \
    "$work/schemathesis.toml" "$work/schemathesis-admin.toml"
curl -fsS --max-time 30 -o "$work/openapi.json" "$base/openapi.json" || die "no /openapi.json"

# One schemathesis run: run_st CONFIG STATS EXAMPLES REPORT_SUBDIR [st args...]
# Runs from the scratch folder so nothing (.hypothesis, reports) lands in
# the workspace; `timeout` bounds it whatever schemathesis decides. The
# hooks count every answer per operation into STATS.
run_st() {
    local config="$1" stats="$2" examples="$3" report="$4"
    shift 4
    local args=(
        --config-file "$config"
        run "$base/openapi.json"
        --checks "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
        --max-examples "$examples"
        --workers "$workers"
        --generation-database none
        --request-timeout 30
        --no-color
    )
    [[ "$seed" != "random" ]] && args+=(--seed "$seed")
    if [[ -n "${CORRAL_FUZZ_REPORT_DIR:-}" ]]; then
        mkdir -p "$CORRAL_FUZZ_REPORT_DIR/$report"
        args+=(--report "junit,har" --report-dir "$CORRAL_FUZZ_REPORT_DIR/$report")
    fi
    local status=0
    (cd "$work" && PYTHONDONTWRITEBYTECODE=1 CORRAL_FUZZ_STATS="$stats" SCHEMATHESIS_HOOKS=fuzz_api_hooks \
        PYTHONPATH="$CORRAL_ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}" \
        timeout --kill-after=10 "$st_timeout" "$st" "${args[@]}" "$@") || status=$?
    if [[ $status -eq 124 || $status -eq 137 ]]; then
        die "schemathesis ran past ${st_timeout}s"
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        die "the server died during the fuzzing"
    fi
    return "$status"
}

section "schemathesis as a technician: $max_examples examples per operation, seed $seed, $workers workers"
st_status=0
run_st "$work/schemathesis.toml" "$work/answers.tsv" "$max_examples" technician "$@" || st_status=$?

# Admins may call most operations too, and are refused the rest: fewer
# examples, for what differs (the refusals and an admin's own rules).
section "schemathesis as an admin: $admin_examples examples per operation"
admin_status=0
run_st "$work/schemathesis-admin.toml" "$work/admin-answers.tsv" "$admin_examples" admin "$@" || admin_status=$?

section "Answers per operation (as the technician)"
summary_status=0
summary_args=("$work/answers.tsv" "$work/openapi.json")
# Extra arguments may narrow the run to some operations.
[[ $# -gt 0 ]] && summary_args+=(--partial)
"$venv/bin/python" "$CORRAL_ROOT/scripts/fuzz_api.py" summary "${summary_args[@]}" || summary_status=$?
if grep -q $'\t500$' "$work/admin-answers.tsv" 2>/dev/null; then
    die "answers 500 as the admin: $(grep $'\t500$' "$work/admin-answers.tsv" | sort | uniq -c)"
fi
[[ -f "$work/admin-answers.tsv" ]] &&
    info "as the admin: $(awk -F'\t' '{n++} $2 ~ /^2/ {ok++} END {print n + 0 " answers, " ok + 0 " of them 2xx"}' "$work/admin-answers.tsv")"
[[ $st_status -eq 0 ]] || die "schemathesis found failures as the technician (exit $st_status); to replay a curl command above, start a server and put a token from /api/auth/login in place of [Filtered]"
[[ $admin_status -eq 0 ]] || die "schemathesis found failures as the admin (exit $admin_status); to replay a curl command above, start a server and put a token from /api/auth/login in place of [Filtered]"
[[ $summary_status -eq 0 ]] || die "some operations never reached their success path, or answered 500 (see above)"
info "no failures; every operation but the listed exceptions answered 2xx"
