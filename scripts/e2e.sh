#!/usr/bin/env bash
# The end-to-end tests (host/tests/e2e, pytest) against a real `corral serve`.
#
# The test fixtures start everything themselves: the server on 127.0.0.1 (a
# port the OS picks) with a fresh data directory, a local HTTP file server
# that serves the demo model to it (with Range support and injected faults),
# and the accounts (`corral admin create`). This script only finds what
# they need and runs pytest:
#
#   CORRAL_BIN           the corral binary (default: the debug build,
#                        $(target_dir)/debug/corral); the backend libraries
#                        (libcorral_llama.so, libcorral_candle.so) must sit
#                        beside it (`cargo build --workspace` puts them there)
#                        or in CORRAL_BACKENDS_DIR
#   CORRAL_DEMO_MODEL    gemma-3-270m-q4_k_m.gguf (default: what
#                        scripts/fetch-demo-model.sh fetches or finds)
#   CORRAL_EMBED_MODEL_DIR  all-MiniLM-L6-v2 (default: what
#                        scripts/fetch-embed-model.sh fetches or finds)
#   CORRAL_TEST_VENV     the test venv (default .venv-test, from
#                        scripts/test-deps.sh)
#   CORRAL_E2E_TIMEOUT   hard limit for the whole run, seconds (default 1800)
#   CORRAL_E2E_STORE     the store of the suite's server: `sqlite` (default)
#                        or `mongodb` (a SecantusDB server from the test venv
#                        that the fixtures start; CORRAL_SECANTUSD overrides
#                        its path)
# Extra arguments go to pytest, e.g. `scripts/e2e.sh -k openai`; arguments that
# name test files or folders run only those.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CORRAL_ROOT"

venv="${CORRAL_TEST_VENV:-$CORRAL_ROOT/.venv-test}"
python="$venv/bin/python"
[[ -x "$python" ]] || die "no test venv at $venv: run scripts/test-deps.sh first"
"$python" -c 'import pytest, openai, websocket, requests' 2>/dev/null ||
    die "the test venv $venv lacks pytest, openai, websocket-client or requests: run scripts/test-deps.sh"

if [[ -n "${CORRAL_BIN:-}" ]]; then
    bin="$CORRAL_BIN"
else
    require_cargo
    bin="$(target_dir)/debug/corral"
fi
[[ -x "$bin" ]] || die "corral binary not found at $bin (build it with: cargo build --workspace --locked)"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
backends_dir="${CORRAL_BACKENDS_DIR:-$(dirname "$bin")}"
for lib in libcorral_llama.so libcorral_candle.so; do
    [[ -f "$backends_dir/$lib" ]] ||
        die "$lib not found in $backends_dir: build the workspace (cargo build --workspace --locked) or set CORRAL_BACKENDS_DIR"
done

model="$(scripts/fetch-demo-model.sh | tail -1)"
[[ -f "$model" ]] || die "demo model not found at $model"
embed_model="${CORRAL_EMBED_MODEL_DIR:-$(scripts/fetch-embed-model.sh | tail -1)}"
[[ -d "$embed_model" ]] || die "embedding model not found at $embed_model"

work="$(mktemp -d "${TMPDIR:-/tmp}/corral-e2e.XXXXXX")"
trap 'rm -rf "$work"' EXIT

section "End-to-end tests: $bin (store: ${CORRAL_E2E_STORE:-sqlite})"
info "demo model: $model"
info "embedding model: $embed_model"
info "backends: $backends_dir"
# The whole suite, unless the arguments name test files or folders.
targets=(host/tests/e2e)
for arg in "$@"; do
    if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then
        targets=()
        break
    fi
done
status=0
PYTHONDONTWRITEBYTECODE=1 CORRAL_BIN="$bin" CORRAL_DEMO_MODEL="$model" CORRAL_EMBED_MODEL_DIR="$embed_model" \
    CORRAL_BACKENDS_DIR="$backends_dir" \
    timeout --kill-after=30 "${CORRAL_E2E_TIMEOUT:-1800}" \
    "$python" -m pytest -q -p no:cacheprovider --basetemp "$work/pytest" \
    "${targets[@]}" "$@" || status=$?
if [[ $status -eq 124 || $status -eq 137 ]]; then
    die "the end-to-end tests ran past ${CORRAL_E2E_TIMEOUT:-1800}s"
fi
[[ $status -eq 0 ]] || die "end-to-end tests failed (pytest exit $status)"
info "all end-to-end tests passed"
