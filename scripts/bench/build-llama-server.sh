#!/usr/bin/env bash
# Builds llama.cpp's own `llama-server` and `llama-bench`, the reference the
# benchmark compares Corral against (usage: scripts/bench/build-llama-server.sh).
#
# The llama.cpp source comes from the PyPI source package of llama-cpp-python
# (it vendors llama.cpp under vendor/llama.cpp); model hubs and GitHub are not
# reachable from the project's machines, PyPI is. Built CPU-only, without
# -march=native (llama.cpp's GGML_NATIVE emits AMX instructions that some VMs
# advertise but cannot execute), with AVX2/FMA/F16C.
#
# Output: ${CORRAL_BENCH_DIR:-$HOME/.cache/corral/bench}/llama.cpp-<version>/build/bin/
# Idempotent: does nothing when both binaries are there and were built from
# the pinned version with the same flags. Prints the bin directory as the
# last line of stdout; progress goes to stderr.
# Takes ~1,000 CPU-seconds (about 10 minutes on 2 free cores, more under load).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

LLAMA_CPP_PYTHON_VERSION="0.3.36" # vendors llama.cpp@0c1e57098 (ggml 0.25.3)
CMAKE_FLAGS=(
    -DCMAKE_BUILD_TYPE=Release
    -DGGML_NATIVE=OFF
    -DGGML_AVX2=ON
    -DGGML_FMA=ON
    -DGGML_F16C=ON
    -DLLAMA_CURL=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_UI=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF
)
TARGETS=(llama-server llama-bench)

bench_dir="${CORRAL_BENCH_DIR:-$HOME/.cache/corral/bench}"
work="$bench_dir/llama.cpp-$LLAMA_CPP_PYTHON_VERSION"
build="$work/build"
bin="$build/bin" # the binaries find llama.cpp's shared libraries beside them
stamp="$work/.corral-build"
python="${PYTHON:-python3}"
jobs="${CORRAL_BENCH_JOBS:-$(nproc 2>/dev/null || echo 2)}"

want="$(printf '%s\n' "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" "${CMAKE_FLAGS[@]}")"

section "llama-server and llama-bench (llama-cpp-python $LLAMA_CPP_PYTHON_VERSION's llama.cpp)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] &&
    [[ -x "$bin/llama-server" && -x "$bin/llama-bench" ]]; then
    info "already built in $bin"
    printf '%s\n' "$bin"
    exit 0
fi

ensure_debs cmake g++ make
command -v "$python" >/dev/null 2>&1 || die "$python not found: install Python 3 (pip is used to fetch the source)"

mkdir -p "$work"
# One build at a time in this folder (two sessions may run this together).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$work/.lock"
    flock 9
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        info "built meanwhile by another run: $bin"
        printf '%s\n' "$bin"
        exit 0
    fi
fi
src="$work/src"
if [[ ! -f "$src/llama.cpp/CMakeLists.txt" ]]; then
    info "downloading the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION source package from PyPI"
    dl="$(mktemp -d "$work/download.XXXXXX")"
    trap 'rm -rf "$dl"' EXIT
    # --no-binary for this one package only: ":all:" would also build cmake
    # and ninja from source for pip's build isolation.
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        "$python" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
        -d "$dl" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >&2
    sdist="$(find "$dl" -maxdepth 1 -name 'llama_cpp_python-*.tar.gz' -print -quit)"
    [[ -n "$sdist" ]] || die "pip did not download the llama-cpp-python source package"
    info "extracting vendor/llama.cpp from $(basename "$sdist")"
    tar -xzf "$sdist" -C "$dl" --wildcards '*/vendor/llama.cpp/*'
    top="$(find "$dl" -mindepth 1 -maxdepth 1 -type d -name 'llama_cpp_python-*' -print -quit)"
    [[ -f "$top/vendor/llama.cpp/CMakeLists.txt" ]] || die "no vendor/llama.cpp in $(basename "$sdist")"
    rm -rf "$src"
    mkdir -p "$src"
    mv "$top/vendor/llama.cpp" "$src/llama.cpp"
    rm -rf "$dl"
    trap - EXIT
fi

rm -f "$stamp"
info "configuring ($build)"
cmake -S "$src/llama.cpp" -B "$build" "${CMAKE_FLAGS[@]}" >&2
info "building ${TARGETS[*]} with -j$jobs (about 1,000 CPU-seconds)"
start=$SECONDS
cmake --build "$build" -j "$jobs" --target "${TARGETS[@]}" >&2
info "built in $((SECONDS - start)) s"

for t in "${TARGETS[@]}"; do
    [[ -x "$bin/$t" ]] || die "$t was not built (expected $bin/$t)"
done
"$bin/llama-server" --version >&2 2>&1 || die "the built llama-server does not run"
printf '%s\n' "$want" >"$stamp"
info "llama-server and llama-bench are in $bin"
printf '%s\n' "$bin"
