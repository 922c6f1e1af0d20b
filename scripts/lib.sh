# Shared helpers for the scripts in this folder; source it, don't run it.
# shellcheck shell=bash

# The workspace root (the folder above scripts/).
CORRAL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CORRAL_ROOT

# llama.cpp picks its SIMD kernels at compile time from the C/C++ compiler
# flags, and llama-cpp-sys-2 passes on only what Rust's target enables (SSE2
# on x86-64). Build the C and C++ dependencies with AVX2, FMA and F16C, as
# llama.cpp's own release builds are (any x86-64 CPU since 2013); set
# CORRAL_C_ARCH_FLAGS="" for an older CPU, or other flags to taste.
if [[ "$(uname -m)" == "x86_64" ]]; then
    corral_arch_flags="${CORRAL_C_ARCH_FLAGS--mavx2 -mfma -mf16c}"
    export CFLAGS_x86_64_unknown_linux_gnu="${CFLAGS_x86_64_unknown_linux_gnu:-$corral_arch_flags}"
    export CXXFLAGS_x86_64_unknown_linux_gnu="${CXXFLAGS_x86_64_unknown_linux_gnu:-$corral_arch_flags}"
fi

# A section header, on stderr so it never mixes into captured output.
section() {
    printf '\n==> %s\n' "$*" >&2
}

info() {
    printf '    %s\n' "$*" >&2
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Makes cargo reachable (rustup puts it in ~/.cargo/bin, which a
# non-login shell may not have on PATH) or stops with a clear message.
require_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
        PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
        export PATH
    fi
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found. Install Rust (https://rustup.rs), then run this again."
}

# The cargo target directory, absolute (honours CARGO_TARGET_DIR and
# .cargo/config files, as cargo itself does).
target_dir() {
    (cd "$CORRAL_ROOT" && cargo metadata --format-version 1 --no-deps) |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $* (and sudo is not installed)"
    fi
}

_corral_apt_updated=0

# ensure_debs PKG...: installs the Debian packages that are not installed
# yet; runs `apt-get update` at most once per script run, and only when
# something is missing.
ensure_debs() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        die "missing system packages (${missing[*]}) and no apt-get here: install their equivalents by hand"
    fi
    info "installing Debian packages: ${missing[*]}"
    if [[ "$_corral_apt_updated" -eq 0 ]]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        _corral_apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The Debian packages needed to build the workspace. The bundled SQLite is C
# compiled with cc.
# shellcheck disable=SC2034 # used by the scripts that source this file
# cmake and libclang-dev build llama.cpp for the llama backend.
CORRAL_BUILD_DEBS=(build-essential pkg-config cmake libclang-dev)
