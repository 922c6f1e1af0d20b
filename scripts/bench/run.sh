#!/usr/bin/env bash
# The benchmark, end to end (usage: scripts/bench/run.sh [--only multi-turn|streams|plugins]):
#   1. builds llama.cpp's llama-server (build-llama-server.sh; cached) and
#      Corral with its backends in release mode,
#   2. fetches the demo model (../fetch-demo-model.sh; cached),
#   3. benchmarks llama-server on it (bench.py --target llama-server: 8
#      slots, 8192 tokens of context shared by them, N threads),
#   4. starts Corral on a free port with a scratch data directory, registers
#      the same file twice with the same threads, 8 slots and 1024 tokens of
#      context per slot (`bench-llama`, llama.cpp backend; `bench-candle`,
#      candle backend) to run inside it (`model_workers = false`),
#      benchmarks both through /v1/chat/completions; then a second Corral
#      as it runs by default (the llama.cpp model in a `corral worker`
#      process) the same way (`corral-llama-worker`), then one with the
#      model on a worker node (`corral node` on this machine, over loopback
#      HTTP: `corral-llama-node`), then one in front of a llama-server of
#      its own (the same settings) as a remote model (`corral-upstream`,
#      backend `openai`): what the gateway costs over calling llama-server
#      directly,
#   5. prints them side by side with the ratios to llama-server (the worker
#      path over the in-process one is corral-llama-worker over
#      corral-llama),
#   6. then the multi-turn figure: one ten-turn chat (bench.py --multi-turn)
#      on llama-server with one slot and Gemma's chat template (the demo
#      model has none; Corral uses Gemma's turn format for it, llama-server
#      would fall back to chatml and read other, longer prompts) and on Corral
#      with one slot (`bench-llama-1`, `bench-candle-1`, 8192 tokens of
#      context; and both again through workers), time to first token per turn (median of 3 runs of the chat;
#      1 for candle),
#      printed side by side with turn 10 over turn 1 and Corral's turn 10
#      over llama-server's, also in multi-turn-summary.json; and the same
#      growth in llama.cpp alone: llama-bench reading turn 10's new tokens
#      after none and after its cached history (multi-turn-engine.md),
#   7. then what plugins cost (plugins.py): the WebAssembly plugins built by
#      ../build-plugins.sh, streamed chats on Corral with one slot
#      (`bench-llama-1`) with no plugin, with `test-noop` and with
#      `pii-redact` on, in interleaved rounds; decode rate, time to first
#      token, the ratio to no plugin and the hooks' p50/p99 µs, with the goals
#      (no-op hook p50 < 50 µs, pii-redact rate loss < 2%) marked PASS or MISS,
#      in plugins.md and plugins.json. `--only plugins` needs neither
#      llama-server nor the candle backend, and builds neither.
#
# Environment:
#   CORRAL_BENCH_THREADS   threads for every server (default 2, never more
#                          than the cores)
#   CORRAL_BENCH_OUT       where results go (default
#                          ${CORRAL_BENCH_DIR:-$HOME/.cache/corral/bench}/results/<time>)
#   CORRAL_BENCH_ARGS      extra bench.py arguments for every run, e.g.
#                          "--runs 3 --agg-runs 1"
#   CORRAL_BENCH_CANDLE_ARGS  extra bench.py arguments for the candle run
#                          only (default "--runs 3 --agg-runs 1": it is slower)
#   CORRAL_BENCH_NO_CANDLE=1  skip the candle runs
#   CORRAL_BENCH_ONLY      "multi-turn", "streams" or "plugins" to run only that part
#                          (the same as --only)
#   CORRAL_BENCH_TURN_ARGS extra bench.py arguments for the multi-turn runs,
#                          e.g. "--conversations 5"
#   CORRAL_BENCH_CANDLE_TURN_ARGS  the same for the candle multi-turn run
#                          only (default "--conversations 1": it is slower)
#   CORRAL_BENCH_PLUGIN_ARGS  extra plugins.py arguments, e.g.
#                          "--rounds 5 --per-round 1"
# All servers should run alone on the machine: ggml threads busy-wait, and
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
read -r -a turn_extra <<<"${CORRAL_BENCH_TURN_ARGS:-}"
read -r -a plugin_extra <<<"${CORRAL_BENCH_PLUGIN_ARGS:-}"

only="${CORRAL_BENCH_ONLY:-}"
while [[ $# -gt 0 ]]; do
    case "$1" in
    --only) [[ $# -ge 2 ]] || die "--only needs multi-turn, streams or plugins"; only="$2"; shift 2 ;;
    --only=*) only="${1#--only=}"; shift ;;
    *) die "unknown argument: $1 (usage: scripts/bench/run.sh [--only multi-turn|streams|plugins])" ;;
    esac
done
case "$only" in
"" | multi-turn | streams | plugins) ;;
*) die "--only / CORRAL_BENCH_ONLY must be multi-turn, streams or plugins, not $only" ;;
esac
streams() { [[ -z "$only" || "$only" == streams ]]; }
multi_turn() { [[ -z "$only" || "$only" == multi-turn ]]; }
plugins() { [[ -z "$only" || "$only" == plugins ]]; }
# The parts that compare Corral with llama-server (and its candle backend).
comparisons() { streams || multi_turn; }

cores="$(nproc 2>/dev/null || echo 1)"
if [[ "$threads" -gt "$cores" ]]; then
    info "CORRAL_BENCH_THREADS=$threads > $cores cores: using $cores"
    threads="$cores"
fi

if comparisons; then
    bin="$("$here/build-llama-server.sh" | tail -1)"
fi
model="$("$here/../fetch-demo-model.sh" | tail -1)"
if plugins; then
    # Its own output folder, out of the source tree that tests read from.
    plugins_dist="$("$here/../build-plugins.sh" "$bench_dir/plugins" | tail -1)"
fi
mkdir -p "$out"

info "load average now: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a) on $cores cores (other work on the machine skews the numbers)"
if streams; then
    section "Benchmark: llama-server, $threads threads (results in $out)"
    "$python" "$here/bench.py" --target llama-server --server-bin "$bin/llama-server" \
        --model "$model" --threads "$threads" --json "$out/llama-server.json" "${extra[@]}" >/dev/null
fi
if multi_turn; then
    section "Multi-turn chat: llama-server, one slot, $threads threads (results in $out)"
    "$python" "$here/bench.py" --target llama-server --server-bin "$bin/llama-server" \
        --model "$model" --threads "$threads" --parallel 1 --ctx 8192 --chat-template gemma --multi-turn \
        --json "$out/multi-turn-llama-server.json" "${turn_extra[@]}" >/dev/null
fi

section "Building Corral (release)"
packages=(-p corral-host -p corral-llama)
# The plugin part alone runs on the llama.cpp backend only.
if comparisons; then
    packages+=(-p corral-candle)
fi
(cd "$CORRAL_ROOT" && cargo build --release --locked "${packages[@]}")
corral="$(target_dir)/release/corral"
[[ -x "$corral" ]] || die "the build did not produce $corral"

data="$(mktemp -d "${TMPDIR:-/tmp}/corral-bench.XXXXXX")"
corral_pid=""
worker_pid=""
gateway_pid=""
upstream_pid=""
node_pid=""
on_node_pid=""
cleanup() {
    for pid in "$corral_pid" "$worker_pid" "$gateway_pid" "$upstream_pid" "$on_node_pid" "$node_pid"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$data"
}
trap cleanup EXIT
# A TCP port free on loopback now.
free_port() {
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
# wait_ready PID LOG URL [CURL ARGS...]: waits up to two minutes for
# URL to answer; dies when process PID exits first or it never answers.
wait_ready() {
    local pid="$1" log="$2" url="$3"
    shift 3
    for _ in $(seq 1200); do
        curl -fsS -o /dev/null --max-time 2 "$@" "$url" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || die "the server exited: see $log"
        sleep 0.1
    done
    die "the server does not answer at $url: see $log"
}
# stop PID...: stops those processes and waits for them.
stop() {
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
password="$("$python" -c 'import secrets; print("bench-" + secrets.token_urlsafe(18))')"
# The demo model's folder is a model folder: Corral registers local files
# from its model folders only. (A JSON string is a valid TOML string.)
model_dir="$(cd "$(dirname "$model")" && pwd)"
model_dir="$("$python" -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$model_dir")"

# start_corral NAME MODELS [TOML LINE]: starts a Corral with its own data
# folder (enough concurrent generations per user for 8 streams from one
# API key), registers MODELS (comma-separated, of bench-llama,
# bench-candle, bench-llama-1, bench-candle-1, bench-llama@node=URL: on the
# worker node at URL, bench-upstream=URL: on that OpenAI-compatible server)
# and sets started_pid, started_url and started_key.
start_corral() {
    local name="$1" wanted="$2" line="${3:-}" dir="$data/$1" port
    mkdir -p "$dir"
    port="$(free_port)"
    started_url="http://127.0.0.1:$port"
    section "Starting Corral ($name) on $started_url"
    printf 'per_user_generations = 16\nqueue_max_waiting = 64\nmodel_dirs = [%s]\n%s\n' "$model_dir" "$line" >"$dir/corral.toml"
    RUST_LOG="${RUST_LOG:-warn}" "$corral" serve --config "$dir/corral.toml" --bind "127.0.0.1:$port" \
        --data-dir "$dir" </dev/null >"$out/$name.log" 2>&1 &
    started_pid=$!
    wait_ready "$started_pid" "$out/$name.log" "$started_url/readyz"
    "$corral" admin create --data-dir "$dir" --username bench --role technician --password "$password" >/dev/null
    started_key="$("$python" - "$started_url" "$password" "$model" "$threads" "$wanted" <<'PY'
import json, os, sys, urllib.request
url, password, model, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
wanted = sys.argv[5].split(",")
def call(path, body, token=None):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)
token = call("/api/auth/login", {"username": "bench", "password": password})["access_token"]
for name, backend, slots, context in (("bench-llama", "llama", 8, 1024), ("bench-candle", "candle", 8, 1024),
                                      ("bench-llama-1", "llama", 1, 8192), ("bench-candle-1", "candle", 1, 8192)):
    if name not in wanted:
        continue
    call("/api/models", {"name": name, "backend": backend, "source": model, "threads": threads,
                         "slots": slots, "context_length": context,
                         "sampling": {"temperature": 0, "repeat_penalty": 1.0}}, token)
for item in wanted:
    # bench-llama@node=<URL>: bench-llama on the worker node at URL, whose
    # token is in CORRAL_BENCH_NODE_TOKEN.
    if item.startswith("bench-llama@node="):
        node_url = item.split("=", 1)[1]
        call("/api/nodes", {"name": "bench-node", "url": node_url,
                            "token": os.environ["CORRAL_BENCH_NODE_TOKEN"]}, token)
        call("/api/models", {"name": "bench-llama", "backend": "llama", "source": model, "threads": threads,
                             "slots": 8, "context_length": 1024, "node": "bench-node",
                             "sampling": {"temperature": 0, "repeat_penalty": 1.0}}, token)
    # bench-upstream=<base URL>: a remote model on that OpenAI-compatible server.
    if item.startswith("bench-upstream="):
        call("/api/models", {"name": "bench-upstream", "backend": "openai", "source": item.split("=", 1)[1],
                             "slots": 8, "sampling": {"temperature": 0}}, token)
print(call("/api/me/keys", {"name": "bench"}, token)["key"])
PY
)"
    [[ -n "$started_key" ]] || die "could not set Corral ($name) up for the benchmark"
}

# The models the parts use: all four for the comparisons, the one-slot
# llama.cpp one for the plugin part.
if comparisons; then
    models="bench-llama,bench-candle,bench-llama-1,bench-candle-1"
else
    models="bench-llama-1"
fi
start_corral corral "$models" "model_workers = false"
corral_pid="$started_pid" url="$started_url" key="$started_key"

# A second Corral that runs its models in worker processes, for the
# comparisons: the same models, the same threads.
start_worker_corral() {
    local worker_models="bench-llama,bench-llama-1"
    if multi_turn && [[ -z "${CORRAL_BENCH_NO_CANDLE:-}" ]]; then
        worker_models+=",bench-candle-1"
    fi
    start_corral corral-worker "$worker_models" "model_workers = true"
    worker_pid="$started_pid" worker_url="$started_url" worker_key="$started_key"
}

# bench_started LABEL MODEL: benchmarks MODEL on the Corral started last,
# into $out/LABEL.json, added to the comparison.
bench_started() {
    "$python" "$here/bench.py" --target corral --label "$1" --url "$started_url" \
        --api-key "$started_key" --model-name "$2" --server-pid "$started_pid" \
        --json "$out/$1.json" "${extra[@]}" >/dev/null
    results+=("$out/$1.json")
}

if streams; then
    section "Benchmark: Corral, llama.cpp backend, $threads threads"
    "$python" "$here/bench.py" --target corral --label "corral-llama" --url "$url" --api-key "$key" \
        --model-name bench-llama --server-pid "$corral_pid" --json "$out/corral-llama.json" "${extra[@]}" >/dev/null
    results=("$out/llama-server.json" "$out/corral-llama.json")
    if [[ -z "${CORRAL_BENCH_NO_CANDLE:-}" ]]; then
        read -r -a candle_extra <<<"${CORRAL_BENCH_CANDLE_ARGS:---runs 3 --agg-runs 1}"
        section "Benchmark: Corral, candle backend, $threads threads"
        "$python" "$here/bench.py" --target corral --label "corral-candle" --url "$url" --api-key "$key" \
            --model-name bench-candle --json "$out/corral-candle.json" "${extra[@]}" "${candle_extra[@]}" >/dev/null
        results+=("$out/corral-candle.json")
    fi
    if [[ -z "$worker_pid" ]]; then
        start_worker_corral
    fi
    section "Benchmark: Corral, llama.cpp backend in a worker process, $threads threads"
    "$python" "$here/bench.py" --target corral --label "corral-llama-worker" --url "$worker_url" \
        --api-key "$worker_key" --model-name bench-llama --server-pid "$worker_pid" \
        --json "$out/corral-llama-worker.json" "${extra[@]}" >/dev/null
    results+=("$out/corral-llama-worker.json")

    # Corral with its model on a worker node: `corral node` on this machine,
    # reached over loopback HTTP, with the same model file and threads.
    section "Benchmark: Corral, llama.cpp backend on a worker node, $threads threads"
    node_port="$(free_port)"
    node_token="$("$python" -c 'import secrets; print(secrets.token_hex(32))')"
    (umask 077 && printf '%s\n' "$node_token" >"$data/node.token")
    "$corral" node --listen "127.0.0.1:$node_port" --token-file "$data/node.token" \
        --models-dir "$(dirname "$model")" --data-dir "$data/node" </dev/null >"$out/corral-node.log" 2>&1 &
    node_pid=$!
    wait_ready "$node_pid" "$out/corral-node.log" "http://127.0.0.1:$node_port/health" \
        -H "Authorization: Bearer $node_token"
    export CORRAL_BENCH_NODE_TOKEN="$node_token"
    start_corral corral-on-node "bench-llama@node=http://127.0.0.1:$node_port" \
        "node_allowed_origins = [\"http://127.0.0.1:$node_port\"]"
    on_node_pid="$started_pid"
    bench_started corral-llama-node bench-llama
    stop "$on_node_pid" "$node_pid"
    on_node_pid="" node_pid=""

    # Corral in front of a llama-server as a remote model (backend
    # `openai`): what the gateway costs over calling llama-server itself.
    # The upstream runs as bench.py runs its own (8 slots, 8192 tokens).
    section "Benchmark: Corral with llama-server as a remote model, $threads threads"
    upstream_port="$(free_port)"
    "$bin/llama-server" -m "$model" -t "$threads" --parallel 8 -c 8192 --host 127.0.0.1 \
        --port "$upstream_port" -a bench-upstream </dev/null >"$out/upstream-llama-server.log" 2>&1 &
    upstream_pid=$!
    wait_ready "$upstream_pid" "$out/upstream-llama-server.log" "http://127.0.0.1:$upstream_port/health"
    start_corral corral-upstream "bench-upstream=http://127.0.0.1:$upstream_port/v1" \
        "upstream_allowed_origins = [\"http://127.0.0.1:$upstream_port\"]"
    gateway_pid="$started_pid"
    bench_started corral-upstream bench-upstream
    stop "$gateway_pid" "$upstream_pid"
    gateway_pid="" upstream_pid=""

    section "Corral vs llama-server (demo model, $threads threads)"
    "$python" "$here/bench.py" --compare "${results[@]}" | tee "$out/table.md"
fi

if multi_turn; then
    section "Multi-turn chat: Corral, llama.cpp backend, one slot"
    "$python" "$here/bench.py" --target corral --label "corral-llama" --url "$url" --api-key "$key" \
        --model-name bench-llama-1 --multi-turn --json "$out/multi-turn-corral-llama.json" \
        "${turn_extra[@]}" >/dev/null
    turns=("$out/multi-turn-llama-server.json" "$out/multi-turn-corral-llama.json")
    if [[ -z "${CORRAL_BENCH_NO_CANDLE:-}" ]]; then
        read -r -a candle_turn_extra <<<"${CORRAL_BENCH_CANDLE_TURN_ARGS:---conversations 1}"
        section "Multi-turn chat: Corral, candle backend, one slot"
        "$python" "$here/bench.py" --target corral --label "corral-candle" --url "$url" --api-key "$key" \
            --model-name bench-candle-1 --multi-turn --json "$out/multi-turn-corral-candle.json" \
            "${turn_extra[@]}" "${candle_turn_extra[@]}" >/dev/null
        turns+=("$out/multi-turn-corral-candle.json")
    fi
    if [[ -z "$worker_pid" ]]; then
        start_worker_corral
    fi
    section "Multi-turn chat: Corral, llama.cpp backend in a worker process, one slot"
    "$python" "$here/bench.py" --target corral --label "corral-llama-worker" --url "$worker_url" \
        --api-key "$worker_key" --model-name bench-llama-1 --multi-turn \
        --json "$out/multi-turn-corral-llama-worker.json" "${turn_extra[@]}" >/dev/null
    turns+=("$out/multi-turn-corral-llama-worker.json")
    if [[ -z "${CORRAL_BENCH_NO_CANDLE:-}" ]]; then
        section "Multi-turn chat: Corral, candle backend in a worker process, one slot"
        "$python" "$here/bench.py" --target corral --label "corral-candle-worker" --url "$worker_url" \
            --api-key "$worker_key" --model-name bench-candle-1 --multi-turn \
            --json "$out/multi-turn-corral-candle-worker.json" "${turn_extra[@]}" "${candle_turn_extra[@]}" >/dev/null
        turns+=("$out/multi-turn-corral-candle-worker.json")
    fi
    section "Multi-turn chat, time to first token per turn (demo model, one slot, $threads threads)"
    "$python" "$here/bench.py" --compare "${turns[@]}" --json "$out/multi-turn-summary.json" | tee "$out/multi-turn.md"

    # The same growth in llama.cpp alone, with no server around it: how much
    # slower llama-bench reads turn 10's new tokens after turn 10's cached
    # history than after none, with flash attention on and off.
    section "Multi-turn chat: llama.cpp alone (llama-bench), turn 10's new tokens after its history"
    "$python" - "$out/multi-turn-corral-llama-worker.json" "$bin/llama-bench" "$model" "$threads" \
        "$out/multi-turn-engine.json" <<'PY' | tee "$out/multi-turn-engine.md"
import json, subprocess, sys
turns, bench, model, threads, out = sys.argv[1:]
last = json.load(open(turns))["multi_turn"]["turns"][-1]
depth = last.get("cached_tokens") or 0
new = (last.get("prompt_tokens") or 0) - depth
if depth <= 0 or new <= 0:
    print(f"skipped: turn 10 has no cached history to measure ({last})")
    sys.exit(0)
rows = []
for fa in ("on", "off"):
    run = subprocess.run([bench, "-m", model, "-t", threads, "-p", str(new), "-n", "0", "-d", f"0,{depth}",
                          "-fa", fa, "-r", "5", "-o", "json"], check=True, capture_output=True, text=True)
    speed = {r["n_depth"]: r["avg_ts"] for r in json.loads(run.stdout)}
    rows.append({"flash_attn": fa, "new_tokens": new, "depth": depth, "tokens_per_s_at_0": speed[0],
                 "tokens_per_s_at_depth": speed[depth], "ratio": speed[0] / speed[depth]})
print(f"| flash attention | {new} tokens after 0 (ms) | after {depth} (ms) | ratio |")
print("|---|---|---|---|")
for r in rows:
    print(f"| {r['flash_attn']} | {1000 * new / r['tokens_per_s_at_0']:.1f} | "
          f"{1000 * new / r['tokens_per_s_at_depth']:.1f} | {r['ratio']:.2f}x |")
json.dump(rows, open(out, "w"), indent=2)
PY
fi

if plugins; then
    section "Plugins: none, test-noop, pii-redact on Corral, llama.cpp backend, one slot"
    info "load average now: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a) on $cores cores"
    CORRAL_BENCH_PASSWORD="$password" "$python" "$here/plugins.py" --url "$url" --api-key "$key" \
        --username bench --model-name bench-llama-1 --plugins-dir "$plugins_dist" \
        --json "$out/plugins.json" "${plugin_extra[@]}" | tee "$out/plugins.md"
fi
info "results: $out"
