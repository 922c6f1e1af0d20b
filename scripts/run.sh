#!/usr/bin/env bash
# Builds Corral (scripts/setup.sh), fetches the demo model
# (scripts/fetch-demo-model.sh) and runs the server, which registers the
# demo model as `gemma-3-270m` on its first start so a new user can chat at
# once.
#
#   scripts/run.sh [corral serve flags...]
#
# CORRAL_NO_DEMO_MODEL=1 skips the demo model.
#
# By default it listens on 127.0.0.1:8080 and keeps its data in ./data; pass
# e.g. `--bind 0.0.0.0:8080 --data-dir /srv/corral` to change that (or set
# CORRAL_BIND / CORRAL_DATA_DIR / CORRAL_CONFIG). See `corral serve --help`.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$CORRAL_ROOT/scripts/setup.sh"

bin="$(target_dir)/release/corral"
[[ -x "$bin" ]] || die "the build did not produce $bin"

demo=()
if [[ -z "${CORRAL_NO_DEMO_MODEL:-}" ]]; then
    section "The demo model"
    model="$("$CORRAL_ROOT/scripts/fetch-demo-model.sh" | tail -1)"
    [[ -f "$model" ]] || die "the demo model fetch did not produce a file"
    demo=(--demo-model "$model")
fi

section "Starting Corral"
info "First time? Create the first admin (from the same folder, with the same --data-dir/--database flags as the server) with:"
info "  $bin admin create --username admin --role admin"
info "(or: scripts/corral.sh admin create --username admin --role admin)"
exec "$bin" serve "${demo[@]}" "$@"
