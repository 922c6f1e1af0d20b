#!/usr/bin/env bash
# Builds Corral's plugins (plugins/, a cargo workspace of its own) as
# WebAssembly components for wasm32-wasip2 in release, and puts each one in
# OUT_DIR/<id>/ as plugin.wasm + plugin.toml, ready to install
# (usage: scripts/build-plugins.sh [OUT_DIR], default plugins/dist).
#
# - Installs the Rust target wasm32-wasip2 with rustup when it is missing.
# - Builds in its own target directory,
#   ${CORRAL_PLUGINS_TARGET_DIR:-$HOME/.cache/corral/plugins-target}, so it
#   never waits on (or invalidates) the main workspace's build.
# - A plugin is a package of the workspace with a plugin.toml beside its
#   Cargo.toml; its folder in OUT_DIR is named after the manifest's `id`
#   and replaced as a whole. Nothing else in OUT_DIR is touched.
# The output folder is the LAST line of stdout, so callers can write
#   DIST="$(scripts/build-plugins.sh | tail -1)"
# Progress goes to stderr.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGET=wasm32-wasip2

out="${1:-$CORRAL_ROOT/plugins/dist}"
target_dir="${CORRAL_PLUGINS_TARGET_DIR:-$HOME/.cache/corral/plugins-target}"

require_cargo
command -v python3 >/dev/null 2>&1 || die "python3 not found: it reads cargo's metadata and the manifests"

section "Rust target $TARGET"
if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx "$TARGET"; then
        info "installing it (rustup target add $TARGET)"
        rustup target add "$TARGET" >&2
    else
        info "installed"
    fi
elif ! rustc --print target-list | grep -qx "$TARGET"; then
    die "this Rust has no $TARGET target and rustup is not there to add it"
fi

section "Building the plugins (release, $TARGET) in $target_dir"
(
    cd "$CORRAL_ROOT/plugins"
    # plugin-checks is a native test crate, not a plugin.
    CARGO_TARGET_DIR="$target_dir" cargo build --release --target "$TARGET" \
        --workspace --exclude plugin-checks
) >&2 || die "building the plugins failed (cd plugins && cargo build --release --target $TARGET)"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
section "Copying the components to $out"

# One line per plugin: its folder, then the file name of its component.
plugins="$(cd "$CORRAL_ROOT/plugins" && cargo metadata --format-version 1 --no-deps |
    python3 -c '
import json, os, sys
for package in json.load(sys.stdin)["packages"]:
    folder = os.path.dirname(package["manifest_path"])
    if not os.path.isfile(os.path.join(folder, "plugin.toml")):
        continue
    libs = [t for t in package["targets"] if "cdylib" in t["crate_types"]]
    if len(libs) != 1:
        sys.exit("error: %s has a plugin.toml but no cdylib library" % package["name"])
    print(folder + "\t" + libs[0]["name"].replace("-", "_") + ".wasm")
')"
[[ -n "$plugins" ]] || die "no package in plugins/ has a plugin.toml"

count=0
while IFS=$'\t' read -r folder wasm; do
    manifest="$folder/plugin.toml"
    id="$(python3 -c '
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    id = tomllib.load(f).get("id")
if not isinstance(id, str) or not id or "/" in id or id.startswith("."):
    sys.exit("error: %s has no usable `id`" % sys.argv[1])
print(id)
' "$manifest")"
    component="$target_dir/$TARGET/release/$wasm"
    [[ -f "$component" ]] || die "the build did not produce $component"
    rm -rf "${out:?}/$id"
    mkdir -p "$out/$id"
    cp "$component" "$out/$id/plugin.wasm"
    cp "$manifest" "$out/$id/plugin.toml"
    info "$(printf '%-20s %8d bytes  (%s)' "$id" "$(stat -c %s "$component")" "${folder#"$CORRAL_ROOT"/}")"
    count=$((count + 1))
done <<<"$plugins"

info "$count plugins in $out"
printf '%s\n' "$out"
