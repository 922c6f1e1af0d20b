#!/usr/bin/env bash
# The benchmark, end to end (usage: scripts/bench/run.sh):
#   1. builds llama.cpp's llama-server (build-llama-server.sh; cached),
#   2. fetches the demo model (../fetch-demo-model.sh; cached),
#   3. benchmarks llama-server on it (bench.py --target llama-server),
#   4. when CORRAL_BENCH_URL and CORRAL_BENCH_KEY are set, benchmarks that
#      running Corral the same way (bench.py --target corral) and prints the
#      two side by side with the ratios Corral / llama-server.
#
# Environment:
#   CORRAL_BENCH_THREADS   llama-server threads (default 2, never more than
#                          the cores; give Corral the same number)
#   CORRAL_BENCH_URL       Corral's base URL, e.g. http://127.0.0.1:8080
#   CORRAL_BENCH_KEY       a Corral API key (sent as Bearer)
#   CORRAL_BENCH_MODEL     the demo model's name in Corral's API
#                          (default gemma-3-270m-q4_k_m)
#   CORRAL_BENCH_PID       Corral's PID, to report its peak RSS (optional)
#   CORRAL_BENCH_OUT       where results go (default
#                          ${CORRAL_BENCH_DIR:-$HOME/.cache/corral/bench}/results/<time>)
#   CORRAL_BENCH_ARGS      extra bench.py arguments for both runs, e.g.
#                          "--runs 3 --agg-runs 1"
# Both servers should run alone on the machine: ggml threads busy-wait, and
# anything else on the cores makes the numbers meaningless.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=scripts/lib.sh
source "$here/../lib.sh"

python="${PYTHON:-python3}"
threads="${CORRAL_BENCH_THREADS:-2}"
bench_dir="${CORRAL_BENCH_DIR:-$HOME/.cache/corral/bench}"
out="${CORRAL_BENCH_OUT:-$bench_dir/results/$(date +%Y%m%d-%H%M%S)}"
read -r -a extra <<<"${CORRAL_BENCH_ARGS:-}"

cores="$(nproc 2>/dev/null || echo 1)"
if [[ "$threads" -gt "$cores" ]]; then
    info "CORRAL_BENCH_THREADS=$threads > $cores cores: using $cores"
    threads="$cores"
fi

bin="$("$here/build-llama-server.sh" | tail -1)"
model="$("$here/../fetch-demo-model.sh" | tail -1)"
mkdir -p "$out"

section "Benchmark: llama-server, $threads threads (results in $out)"
info "load average now: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a) on $cores cores (other work on the machine skews the numbers)"
"$python" "$here/bench.py" --target llama-server --server-bin "$bin/llama-server" \
    --model "$model" --threads "$threads" --json "$out/llama-server.json" "${extra[@]}" >/dev/null

if [[ -n "${CORRAL_BENCH_URL:-}" || -n "${CORRAL_BENCH_KEY:-}" ]]; then
    [[ -n "${CORRAL_BENCH_URL:-}" && -n "${CORRAL_BENCH_KEY:-}" ]] ||
        die "set both CORRAL_BENCH_URL and CORRAL_BENCH_KEY to benchmark Corral"
    section "Benchmark: Corral at $CORRAL_BENCH_URL"
    pid_args=()
    [[ -n "${CORRAL_BENCH_PID:-}" ]] && pid_args=(--server-pid "$CORRAL_BENCH_PID")
    "$python" "$here/bench.py" --target corral --url "$CORRAL_BENCH_URL" \
        --api-key "$CORRAL_BENCH_KEY" --model-name "${CORRAL_BENCH_MODEL:-gemma-3-270m-q4_k_m}" \
        "${pid_args[@]}" --json "$out/corral.json" "${extra[@]}" >/dev/null
    section "Corral vs llama-server (demo model, $threads threads)"
    "$python" "$here/bench.py" --compare "$out/llama-server.json" "$out/corral.json" | tee "$out/table.md"
else
    section "llama-server (demo model, $threads threads)"
    "$python" "$here/bench.py" --compare "$out/llama-server.json" | tee "$out/table.md"
    info "set CORRAL_BENCH_URL and CORRAL_BENCH_KEY (and start Corral with the same model and threads) to compare"
fi
info "results: $out"
