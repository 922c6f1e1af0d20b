#!/usr/bin/env bash
# Installs what building Corral needs, builds the web UI (web/dist) and
# then the release binary, which embeds it. Idempotent: run it as often as
# you like.
#
#   scripts/setup.sh             system packages, Node.js, the web UI,
#                                `cargo build --release`
#   scripts/setup.sh --deps-only system packages and Node.js only (used by
#                                scripts/test.sh)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

deps_only=0
for arg in "$@"; do
    case "$arg" in
        --deps-only) deps_only=1 ;;
        -h | --help)
            sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

section "Checking the toolchain"
require_cargo
info "$(cargo --version)"

section "System packages"
if command -v dpkg-query >/dev/null 2>&1; then
    ensure_debs "${CORRAL_BUILD_DEBS[@]}"
    info "present: ${CORRAL_BUILD_DEBS[*]}"
else
    # Not Debian: check for the tools instead of the packages.
    command -v cc >/dev/null 2>&1 || die "no C compiler (cc) found: install gcc or clang"
    info "not a Debian system; found cc at $(command -v cc)"
fi

section "Node.js for the web UI"
ensure_node

[[ "$deps_only" -eq 1 ]] && exit 0

section "Building the web UI"
build_web_ui

section "Building the release binary"
cd "$CORRAL_ROOT"
cargo build --release -p corral-host -p corral-llama -p corral-candle --locked
info "built $(target_dir)/release/corral"
