#!/usr/bin/env bash
# Runs the release `corral` binary with any arguments, building it first
# when needed (scripts/setup.sh on first use, an incremental build after).
#
#   scripts/corral.sh admin create --username admin --role admin
#   scripts/corral.sh openapi > openapi.json
#
# Build output goes to stderr, so stdout is the binary's alone.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cargo
bin="$(target_dir)/release/corral"
if [[ ! -x "$bin" ]]; then
    "$CORRAL_ROOT/scripts/setup.sh" >&2
else
    (cd "$CORRAL_ROOT" && cargo build --release -p corral-host -p corral-llama -p corral-candle --locked --quiet) >&2
fi
[[ -x "$bin" ]] || die "the build did not produce $bin"
exec "$bin" "$@"
