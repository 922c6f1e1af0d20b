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

# The web UI (web/) builds with Node.js and npm at least these versions.
CORRAL_NODE_MIN=20.19
CORRAL_NPM_MIN=11

# version_at_least HAVE WANT: whether version HAVE >= WANT.
version_at_least() {
    [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" == "$2" ]]
}

_node_version() { node --version 2>/dev/null | sed 's/^v//'; }
_npm_version() { npm --version 2>/dev/null; }

# Makes Node.js >= CORRAL_NODE_MIN and npm >= CORRAL_NPM_MIN available:
# Debian's packages when node is missing or too old, then npm updated
# through npm itself when it is older; or stops saying what is needed.
ensure_node() {
    local node_ok=0
    if command -v node >/dev/null 2>&1 && version_at_least "$(_node_version)" "$CORRAL_NODE_MIN"; then
        node_ok=1
    fi
    if [[ "$node_ok" -eq 0 ]] || ! command -v npm >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
            ensure_debs nodejs npm
        fi
    fi
    command -v node >/dev/null 2>&1 && version_at_least "$(_node_version)" "$CORRAL_NODE_MIN" ||
        die "the web UI needs Node.js >= $CORRAL_NODE_MIN and npm >= $CORRAL_NPM_MIN; found node $(_node_version || true): install a newer Node.js (https://nodejs.org/en/download) and run this again"
    command -v npm >/dev/null 2>&1 ||
        die "npm not found: install npm >= $CORRAL_NPM_MIN (it comes with Node.js from https://nodejs.org)"
    if ! version_at_least "$(_npm_version)" "$CORRAL_NPM_MIN"; then
        info "npm $(_npm_version) is older than $CORRAL_NPM_MIN: updating it"
        as_root npm install -g --no-audit --no-fund "npm@$CORRAL_NPM_MIN" >&2 ||
            die "could not update npm; install npm >= $CORRAL_NPM_MIN by hand (npm install -g npm@$CORRAL_NPM_MIN)"
        hash -r
        version_at_least "$(_npm_version)" "$CORRAL_NPM_MIN" ||
            die "npm is still $(_npm_version) after the update; npm >= $CORRAL_NPM_MIN is needed"
    fi
    info "node $(_node_version), npm $(_npm_version)"
}

# Builds the web UI into web/dist, which the host embeds when cargo builds
# it next. Installs web/node_modules (npm ci) only when it is missing or
# older than web/package-lock.json. The build prints the size of the
# JavaScript the chat page loads and fails when it is over budget.
build_web_ui() {
    local web="$CORRAL_ROOT/web"
    export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
    if [[ ! -f "$web/node_modules/.package-lock.json" ||
        "$web/package-lock.json" -nt "$web/node_modules/.package-lock.json" ]]; then
        info "installing the web UI's packages (npm ci)"
        (cd "$web" && npm ci) >&2 || die "npm ci failed in web/"
    fi
    (cd "$web" && npm run build) >&2 || die "building the web UI failed (cd web && npm run build)"
    [[ -f "$web/dist/index.html" ]] || die "the web UI build did not produce web/dist/index.html"
}
