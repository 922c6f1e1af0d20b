#!/usr/bin/env python3
"""Benchmarks an OpenAI-compatible chat server: llama.cpp's llama-server or Corral.

Both targets are measured the same way, through POST {base}/v1/chat/completions
with "stream": true, fixed prompts, temperature 0, max_tokens 128 and
"ignore_eos": true (so every request generates exactly 128 tokens; the
usage counts are checked):

  - time to first token (TTFT): median over --runs single requests;
  - single-stream decode tokens/s: (completion tokens - 1) / (time from the
    first token to the last), median over the same requests;
  - aggregate tokens/s with 4 and 8 concurrent streams: all completion tokens
    / wall time from the first request sent to the last stream finished
    (median over --agg-runs rounds), plus each stream's TTFT and decode rate.

One warm-up request runs before anything is timed (the first decode pages in
the memory-mapped weights).

Targets:
  --target llama-server --model PATH [--threads N] [--server-bin PATH]
      starts `llama-server -m PATH -t N --parallel 8 -c 8192` on 127.0.0.1 at a
      port the OS picks, waits for /health, benchmarks it, stops it by its PID.
  --target corral --url URL --api-key KEY --model-name NAME [--server-pid PID]
      benchmarks a Corral that is already running (URL is its base, e.g.
      http://127.0.0.1:8080; "/v1" is added unless the URL ends with it).

--multi-turn measures a conversation instead: one warm-up request with an
unrelated prompt, then --turns turns of one chat. Each turn adds a user message
of about 110 tokens (fixed texts, different every turn) and resends the whole
history with the previous answers as the server wrote them (--turn-tokens each,
ignore_eos), as a chat client does, so the prompt grows by about 200 tokens a
turn with the demo model. It records each turn's time to first token and the
prompt tokens the server says it took from its cache: a server that reuses
the previous turn's cache reads only the new tokens, one that does not reads
the whole, growing history. The chat runs --conversations times (each time with its own first
words, so that no run starts from the previous run's cache); each turn's
figure is the median over the runs. Run it with one slot (llama-server
--parallel 1, whose prompt cache, --cache-prompt, is on by default) and a
context that holds the whole chat.

Results: a summary on stderr, a JSON object on stdout (and in --json FILE).
`bench.py --compare BASE.json OTHER.json ... [--json SUMMARY.json]` prints a
side-by-side table with the ratios OTHER / BASE (and writes the multi-turn
figures, with those ratios, to SUMMARY.json).

Only the Python standard library is needed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

# Fixed prompts. Each request's prompt starts with its own number (see
# prompt()), so a server's prompt cache cannot serve one request's prefill
# from an earlier one's beyond the chat template's first tokens.
PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a bicycle gear system works, step by step.",
    "Describe the water cycle to a ten-year-old.",
    "List some practical tips for learning a new programming language.",
    "Tell me about the history of the printing press and its effects on Europe.",
    "Compose a letter to a friend describing a walk through an autumn forest.",
    "Summarise the rules of chess for a complete beginner.",
    "Imagine a city on Mars in the year 2200 and describe a day in it.",
    "Give advice to someone starting a vegetable garden on a small balcony.",
    "Explain why the sky is blue and why sunsets are red.",
    "Write a recipe for a simple bread, with the reasons behind each step.",
    "Describe how a compiler turns source code into a running program.",
]


# The user's messages of the multi-turn chat, one per turn: about 110 tokens
# each with the demo model's tokenizer, all different, on one subject so that
# the conversation reads like a real one.
MULTI_TURN_MESSAGES = [
    "I am planning a two-week walking trip through the hills of northern Portugal in late April, "
    "starting in Porto and ending near the Spanish border. I walk about twenty kilometres a day "
    "and carry my own pack, but I would rather sleep in small guesthouses than camp. I have never "
    "been to the region before and I do not speak Portuguese beyond a few greetings. What should "
    "I think about first, before I book anything or buy new gear for the trip? Please answer as "
    "a friend who has walked there, not as a travel agency.",
    "Thank you. The weather worries me most. Late April in the hills could mean warm afternoons, "
    "cold nights and heavy rain on the same day, and my pack should stay under nine kilograms "
    "with water. I own a light rain jacket, a fleece, two merino shirts and trail shoes that are "
    "a year old. Which clothes would you add or leave at home, and is it worth carrying rain "
    "trousers as well, or do they only make the walking hotter and slower? I would also like to "
    "know whether a small umbrella is silly on a mountain path.",
    "Next, the route itself. I found an old pilgrim path that follows the river valleys for the "
    "first five days and then climbs into a national park with villages far apart. Some stages are "
    "thirty kilometres with more than a thousand metres of climbing. How would you split those long "
    "stages, and how can I tell from a map whether a village will have a bed and a place to eat, "
    "rather than only a chapel and a few closed houses? I have a printed guidebook, but it is ten "
    "years old and some of its addresses may have closed.",
    "About food and water on the trail: I do not want to carry a stove, so breakfast and dinner "
    "would come from cafes and guesthouses, and lunch from small village shops. I have read that "
    "many of those shops close in the early afternoon and on Sundays. How much food should I keep "
    "in my pack as a reserve, and is the water from the old stone fountains in the villages safe "
    "to drink without filtering or treating it first? I usually drink about three litres on a warm "
    "day, more when the path climbs for hours in the sun.",
    "My knees have started to ache on long descents during the last year, especially on loose "
    "stones when the pack is full. A friend suggested walking poles, another told me poles only "
    "weaken the muscles that protect the joints. I also wonder whether I should do some training "
    "at home in the two months before I leave. What would you recommend for the knees, and how "
    "should I change my pace on the steep downhill sections of the route? There is a park with "
    "long stairs near my flat that I could use for practice.",
    "Money and phones now. I plan to pay cash in the villages and use a card in the towns, but I "
    "do not know how common cash machines are up in the hills. My phone plan includes roaming in "
    "Europe, yet I expect that the signal will be poor in the valleys. Should I carry a paper map "
    "and a compass as well as the phone, and how much cash would you keep on me for four days "
    "without a town on the way? I also need to keep the phone charged, and some guesthouses may "
    "have very few sockets in the rooms.",
    "I would like to learn a little Portuguese before I go, enough to ask for a room, order "
    "food, ask the way and thank people properly. I have about twenty minutes a day for the next "
    "eight weeks. Which phrases matter most for a walker in small villages, how different is the "
    "pronunciation from Spanish, which I learnt at school, and will older people in the hills "
    "understand me if I fall back on Spanish when my Portuguese runs out? I would also like to "
    "avoid sounding rude by accident with the wrong form of address.",
    "Somebody told me that many guesthouses in the national park only take bookings by phone, and "
    "that they fill up quickly around the public holidays at the end of April. I also want some "
    "freedom to stop early if the weather turns or my feet hurt. How far ahead should I book each "
    "night, how do I handle a phone call with my poor Portuguese, and what can I do when a "
    "village has no free room at all in the evening? Taxis are rare up there, and the last bus "
    "down to the valley often leaves before five.",
    "Let us talk about safety. I will walk alone most days, and some stages cross high moorland "
    "where I may not meet anyone for hours. I have heard about loose dogs guarding the sheep and "
    "about sudden fog on the ridges. What should I leave with someone at home each morning, what "
    "should I do when a large dog blocks the path, and when would you turn back rather than go on "
    "into the fog on an exposed ridge? My first aid kit is small, so tell me what it must hold "
    "for a walker who is alone.",
    "Finally, please help me put it all together. Give me a short checklist for the evening before "
    "each stage and a second one for the morning before I leave the guesthouse, covering the "
    "weather, food and water, the route, my knees, money, the booking for the next night and the "
    "message to home. Keep each list to the points that really matter, so that I can copy both "
    "lists onto a small card and carry it in my pocket. Short phrases are better than full "
    "sentences, and the most important point should come first.",
]


def turn_message(turn: int, chat: int) -> str:
    """The user's message of turn `turn` (1-based) of the chat's run `chat`
    (1-based). The first message names the run: a run then shares only the
    chat template's first tokens with the previous run's cache."""
    text = MULTI_TURN_MESSAGES[turn - 1]
    return f"(Chat {chat}) {text}" if turn == 1 else text


def prompt(seq: int) -> str:
    """The prompt of the seq-th request of a run (0 is the warm-up); the same on every run."""
    return f"({seq}) {PROMPTS[seq % len(PROMPTS)]}"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# --------------------------------------------------------------------------
# Targets: where the API is, and how it is started and stopped.


@dataclass
class Target:
    """An OpenAI-compatible endpoint: base URL (ending in /v1), key, model."""

    name: str
    base_url: str
    api_key: str | None
    model_name: str
    pid: int | None = None  # the server process, for its peak RSS
    info: dict = field(default_factory=dict)

    def start(self) -> None:
        pass

    def wait_ready(self, timeout: float) -> None:
        pass

    def stop(self) -> None:
        pass


def normalise_base(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


class CorralTarget(Target):
    """A Corral that is already running; it is neither started nor stopped here."""

    def wait_ready(self, timeout: float) -> None:
        # GET /v1/models with the key: checks the URL and the key before the
        # timed part. A server without that route still gets benchmarked.
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, body = http_get(self.base_url + "/models", self.api_key, 5)
                if status == 200:
                    ids = [m.get("id") for m in json.loads(body).get("data", [])]
                    if ids and self.model_name not in ids:
                        log(f"    warning: {self.model_name!r} is not in /v1/models ({ids})")
                    return
                if status in (401, 403):
                    raise SystemExit(f"error: {self.base_url}/models answered {status}: check --api-key")
                if status == 404:
                    return
            except OSError as e:
                if time.monotonic() > deadline:
                    raise SystemExit(f"error: {self.base_url} is not reachable: {e}")
            if time.monotonic() > deadline:
                raise SystemExit(f"error: {self.base_url}/models did not answer 200 in {timeout:.0f} s")
            time.sleep(0.5)


class LlamaServerTarget(Target):
    """llama.cpp's llama-server, started here on 127.0.0.1 and stopped by its PID."""

    def __init__(self, server_bin: str, model: str, threads: int, parallel: int, ctx: int,
                 chat_template: str | None = None):
        super().__init__("llama-server", "", None, os.path.basename(model))
        self.server_bin = server_bin
        self.model = model
        self.threads = threads
        self.parallel = parallel
        self.ctx = ctx
        self.chat_template = chat_template
        self.proc: subprocess.Popen | None = None
        self.logdir = tempfile.mkdtemp(prefix="corral-bench-llama-server.")
        self.logfile = os.path.join(self.logdir, "llama-server.log")
        self.root = ""

    def start(self) -> None:
        port = free_port()
        self.root = f"http://127.0.0.1:{port}"
        self.base_url = self.root + "/v1"
        cmd = [
            self.server_bin, "-m", self.model, "-t", str(self.threads),
            "--parallel", str(self.parallel), "-c", str(self.ctx),
            "--host", "127.0.0.1", "--port", str(port), "-a", self.model_name,
        ]
        if self.chat_template:
            # A built-in template by name: llama-server reads --chat-template
            # as Jinja source unless Jinja is off.
            cmd += ["--no-jinja", "--chat-template", self.chat_template]
        self.info["command"] = " ".join(cmd)
        log(f"    starting: {self.info['command']}")
        with open(self.logfile, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        version = subprocess.run([self.server_bin, "--version"], capture_output=True, text=True, timeout=30)
        self.info["version"] = (version.stdout + version.stderr).strip().splitlines()[:2]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise SystemExit(f"error: llama-server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, _ = http_get(self.root + "/health", None, 2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise SystemExit(f"error: llama-server was not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # our own child, by its PID
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        shutil.rmtree(self.logdir, ignore_errors=True)

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------
# HTTP and streaming.


def connect(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    u = urllib.parse.urlsplit(url)
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    return cls(u.hostname, u.port, timeout=timeout), path


def http_get(url: str, api_key: str | None, timeout: float) -> tuple[int, bytes]:
    conn, path = connect(url, timeout)
    try:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class StreamResult:
    t_sent: float
    t_first: float | None = None  # first chunk carrying generated text
    t_last: float | None = None  # last chunk carrying generated text
    t_done: float | None = None
    chunks: int = 0  # chunks carrying text (a fallback token count)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    server_timings: dict | None = None  # llama-server's own "timings", if sent
    cached_tokens: int | None = None  # prompt tokens the server says it had cached
    text: str = ""

    @property
    def tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else self.chunks

    @property
    def ttft(self) -> float:
        return self.t_first - self.t_sent

    @property
    def decode_tps(self) -> float | None:
        if self.tokens < 2 or self.t_last is None or self.t_last <= self.t_first:
            return None
        return (self.tokens - 1) / (self.t_last - self.t_first)


def stream_chat(
    target: Target, prompt: str, args: argparse.Namespace, messages: list[dict] | None = None
) -> StreamResult:
    """Streams one answer to `prompt`, or to the conversation `messages`."""
    body = {
        "model": target.model_name,
        "messages": messages or [{"role": "user", "content": prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "max_tokens": args.max_tokens,
    }
    if not args.no_ignore_eos:
        body["ignore_eos"] = True
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    conn, path = connect(target.base_url + "/chat/completions", args.request_timeout)
    try:
        res = StreamResult(t_sent=time.perf_counter())
        conn.request("POST", path, body=json.dumps(body), headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:500]!r}")
        parts = []
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, "event:" lines
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            now = time.perf_counter()
            event = json.loads(data)
            if "error" in event:
                raise RuntimeError(f"error event: {event['error']}")
            for choice in event.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    if res.t_first is None:
                        res.t_first = now
                    res.t_last = now
                    res.chunks += 1
                    parts.append(content)
                if choice.get("finish_reason"):
                    res.finish_reason = choice["finish_reason"]
            usage = event.get("usage")
            if usage:
                res.prompt_tokens = usage.get("prompt_tokens")
                res.completion_tokens = usage.get("completion_tokens")
                details = usage.get("prompt_tokens_details") or {}
                res.cached_tokens = details.get("cached_tokens")
            if event.get("timings"):
                res.server_timings = event["timings"]
        res.t_done = time.perf_counter()
        res.text = "".join(parts)
        if res.t_first is None:
            raise RuntimeError("the stream carried no generated text")
        return res
    finally:
        conn.close()


# --------------------------------------------------------------------------
# The measurements.


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def run_concurrent(target: Target, n: int, first_seq: int, args) -> dict:
    barrier = threading.Barrier(n + 1)
    results: list[StreamResult | None] = [None] * n
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = stream_chat(target, prompt(first_seq + i), args)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} of {n} streams failed: {errors[0]}")
    done = [r for r in results if r is not None]
    total = sum(r.tokens for r in done)
    return {
        "streams": n,
        "wall_s": wall,
        "completion_tokens": total,
        "aggregate_tps": total / wall,
        "ttft_ms_median": 1000 * median([r.ttft for r in done]),
        "ttft_ms_max": 1000 * max(r.ttft for r in done),
        "per_stream_decode_tps_median": median([r.decode_tps for r in done]),
        "all_exact": all(r.tokens == args.max_tokens for r in done),
    }


def benchmark(target: Target, args) -> dict:
    out: dict = {
        "target": target.name,
        "base_url": target.base_url,
        "model_name": target.model_name,
        "max_tokens": args.max_tokens,
        "ignore_eos": not args.no_ignore_eos,
        "host": {
            "cores": usable_cores(),
            "loadavg_before": list(os.getloadavg()),
            "machine": platform.machine(),
        },
    }
    out.update(target.info)

    log("    warm-up request")
    warm = stream_chat(target, prompt(0), args)
    seq = 1
    log(f"      {warm.tokens} tokens, finish_reason={warm.finish_reason}")

    singles = []
    for i in range(args.runs):
        r = stream_chat(target, prompt(seq), args)
        seq += 1
        singles.append(r)
        log(f"    single {i + 1}/{args.runs}: TTFT {1000 * r.ttft:7.1f} ms, "
            f"decode {r.decode_tps or 0:6.1f} tok/s, {r.prompt_tokens} prompt + {r.tokens} completion tokens")
    out["single"] = {
        "runs": args.runs,
        "ttft_ms_median": 1000 * median([r.ttft for r in singles]),
        "ttft_ms": [round(1000 * r.ttft, 1) for r in singles],
        "decode_tps_median": median([r.decode_tps for r in singles]),
        "decode_tps": [round(r.decode_tps, 2) if r.decode_tps else None for r in singles],
        "prompt_tokens": [r.prompt_tokens for r in singles],
        "completion_tokens": [r.tokens for r in singles],
        "usage_reported": all(r.completion_tokens is not None for r in singles),
    }
    server_tps = [r.server_timings.get("predicted_per_second") for r in singles if r.server_timings]
    if server_tps:
        out["single"]["server_reported_decode_tps_median"] = median(server_tps)
    prefill = [r.server_timings.get("prompt_per_second") for r in singles if r.server_timings]
    if prefill:
        out["single"]["server_reported_prefill_tps_median"] = median(prefill)
    sample = singles[0].text[:160].replace("\n", " ")
    log(f"    sample output: {sample!r}")

    out["concurrent"] = {}
    for n in args.concurrency:
        rounds = []
        for k in range(args.agg_runs):
            rr = run_concurrent(target, n, seq, args)
            seq += n
            rounds.append(rr)
            log(f"    {n} streams, round {k + 1}/{args.agg_runs}: {rr['aggregate_tps']:6.1f} tok/s aggregate "
                f"({rr['completion_tokens']} tokens in {rr['wall_s']:.2f} s), "
                f"per-stream decode {rr['per_stream_decode_tps_median'] or 0:5.1f} tok/s, "
                f"TTFT median {rr['ttft_ms_median']:.0f} ms")
        out["concurrent"][str(n)] = {
            "streams": n,
            "rounds": args.agg_runs,
            "aggregate_tps_median": median([r["aggregate_tps"] for r in rounds]),
            "aggregate_tps": [round(r["aggregate_tps"], 2) for r in rounds],
            "ttft_ms_median": median([r["ttft_ms_median"] for r in rounds]),
            "per_stream_decode_tps_median": median([r["per_stream_decode_tps_median"] for r in rounds]),
            "all_exact": all(r["all_exact"] for r in rounds),
        }

    exact = all(t == args.max_tokens for t in out["single"]["completion_tokens"]) and all(
        c["all_exact"] for c in out["concurrent"].values())
    out["all_requests_exact_max_tokens"] = exact
    if not exact:
        log(f"    warning: not every request generated exactly {args.max_tokens} tokens "
            "(ignore_eos unsupported?); rates use the actual counts")
    out["peak_rss_mb"] = peak_rss_mb(target.pid)
    out["host"]["loadavg_after"] = list(os.getloadavg())
    return out


def chat_turns(target: Target, chat: int, args) -> list[dict]:
    """Runs one chat of args.turns turns; one record per turn."""
    messages: list[dict] = []
    turns = []
    for turn in range(1, args.turns + 1):
        messages.append({"role": "user", "content": turn_message(turn, chat)})
        r = stream_chat(target, "", args, messages=messages)
        server_cached = None
        if r.server_timings and r.prompt_tokens is not None:
            # llama-server says how many prompt tokens it read (prompt_n).
            read = r.server_timings.get("prompt_n")
            server_cached = r.prompt_tokens - read if isinstance(read, int) else None
        cached = r.cached_tokens if r.cached_tokens is not None else server_cached
        turns.append({
            "ttft_ms": round(1000 * r.ttft, 1),
            "prompt_tokens": r.prompt_tokens,
            "cached_tokens": cached,
            "completion_tokens": r.tokens,
        })
        log(f"    chat {chat}, turn {turn:2}: TTFT {1000 * r.ttft:7.1f} ms, {r.prompt_tokens} prompt tokens "
            f"({cached if cached is not None else '?'} cached), {r.tokens} completion tokens")
        messages.append({"role": "assistant", "content": r.text})
    return turns


def multi_turn(target: Target, args) -> dict:
    """args.conversations runs of one chat of args.turns turns; see the
    module's documentation."""
    out: dict = {
        "target": target.name,
        "base_url": target.base_url,
        "model_name": target.model_name,
        "host": {"cores": usable_cores(), "loadavg_before": list(os.getloadavg())},
    }
    out.update(target.info)
    log("    warm-up request")
    stream_chat(target, prompt(0), args)
    runs = [chat_turns(target, chat, args) for chat in range(1, args.conversations + 1)]
    turns = []
    for i in range(args.turns):
        per_run = [run[i] for run in runs]

        def mid(key):
            m = median([t[key] for t in per_run])
            return None if m is None else round(m, 1) if key == "ttft_ms" else int(m)

        turns.append({
            "turn": i + 1,
            "ttft_ms": mid("ttft_ms"),
            "prompt_tokens": mid("prompt_tokens"),
            "cached_tokens": mid("cached_tokens"),
            "completion_tokens": mid("completion_tokens"),
            "runs": per_run,
        })
    first, last = turns[0]["ttft_ms"], turns[-1]["ttft_ms"]
    out["multi_turn"] = {
        "turns": turns,
        "conversations": args.conversations,
        "answer_tokens": args.max_tokens,
        "ignore_eos": not args.no_ignore_eos,
        "ttft_ms_first": first,
        "ttft_ms_last": last,
        "last_over_first": last / first if first else None,
    }
    out["host"]["loadavg_after"] = list(os.getloadavg())
    return out


def multi_turn_table(base: dict, others: list[dict]) -> str:
    """Time to first token per turn, side by side, with each server's last
    turn over its first and over the first server's last turn."""
    docs = [base] + others
    names = [d.get("target", "?") for d in docs]
    head = ["turn"] + [f"{n} TTFT (ms)" for n in names] + [f"{n} prompt (cached)" for n in names]
    rows = [head]
    n_turns = min(len(d["multi_turn"]["turns"]) for d in docs)
    for i in range(n_turns):
        row = [str(i + 1)]
        row += [fmt(d["multi_turn"]["turns"][i]["ttft_ms"]) for d in docs]
        for d in docs:
            t = d["multi_turn"]["turns"][i]
            cached = "?" if t.get("cached_tokens") is None else str(t["cached_tokens"])
            row.append(f"{t['prompt_tokens']} ({cached})")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    text = []
    for j, r in enumerate(rows):
        text.append("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |")
        if j == 0:
            text.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    summary = multi_turn_summary(base, others)
    text.append("")
    for name, figures in summary["servers"].items():
        line = f"{name}: turn {n_turns} / turn 1 = {ratio(figures['last_over_first'])}"
        if "last_over_base_last" in figures:
            line += f"; turn {n_turns} / {names[0]}'s turn {n_turns} = {ratio(figures['last_over_base_last'])}"
        text.append(line)
    return "\n".join(text)


def multi_turn_summary(base: dict, others: list[dict]) -> dict:
    """The multi-turn figures of several servers, with their ratios, as JSON."""
    docs = [base] + others
    n_turns = min(len(d["multi_turn"]["turns"]) for d in docs)
    base_last = base["multi_turn"]["turns"][n_turns - 1]["ttft_ms"]
    servers = {}
    for d in docs:
        turns = d["multi_turn"]["turns"][:n_turns]
        first, last = turns[0]["ttft_ms"], turns[-1]["ttft_ms"]
        figures = {
            "ttft_ms": [t["ttft_ms"] for t in turns],
            "prompt_tokens": [t["prompt_tokens"] for t in turns],
            "cached_tokens": [t["cached_tokens"] for t in turns],
            "conversations": d["multi_turn"].get("conversations", 1),
            "last_over_first": last / first if first and last is not None else None,
        }
        if d is not base:
            figures["last_over_base_last"] = last / base_last if base_last and last is not None else None
        servers[d.get("target", "?")] = figures
    return {"base": base.get("target", "?"), "turns": n_turns, "servers": servers}


def ratio(v) -> str:
    return "n/a" if v is None else f"{v:.2f}×"


# --------------------------------------------------------------------------
# The side-by-side table.

ROWS = [
    # (label, path into the result, lower is better)
    ("TTFT, single stream, median (ms)", ("single", "ttft_ms_median"), True),
    ("decode, single stream, median (tok/s)", ("single", "decode_tps_median"), False),
    ("aggregate, 4 streams (tok/s)", ("concurrent", "4", "aggregate_tps_median"), False),
    ("aggregate, 8 streams (tok/s)", ("concurrent", "8", "aggregate_tps_median"), False),
    ("TTFT, 8 streams, median (ms)", ("concurrent", "8", "ttft_ms_median"), True),
    ("peak RSS of the server (MB)", ("peak_rss_mb",), True),
]


def dig(d, path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def table(base: dict, others: list[dict]) -> str:
    b_name = base.get("target", "base")
    head = ["metric", "better", b_name]
    for o in others:
        o_name = o.get("target", "other")
        head += [o_name, f"{o_name} / {b_name}"]
    lines = [head]
    for label, path, lower in ROWS:
        bv = dig(base, path)
        row = [label, "lower" if lower else "higher", fmt(bv)]
        for o in others:
            ov = dig(o, path)
            ratio = f"{ov / bv:.2f}×" if isinstance(bv, (int, float)) and isinstance(ov, (int, float)) and bv else "n/a"
            row += [fmt(ov), ratio]
        lines.append(row)
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    text = []
    for j, r in enumerate(lines):
        cells = (c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        text.append("| " + " | ".join(cells) + " |")
        if j == 0:
            text.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(text)


def fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


# --------------------------------------------------------------------------


def default_server_bin() -> str:
    bench_dir = os.environ.get("CORRAL_BENCH_DIR", os.path.expanduser("~/.cache/corral/bench"))
    path = os.path.join(bench_dir, "llama.cpp-0.3.36", "build", "bin", "llama-server")
    return path if os.path.exists(path) else "llama-server"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=["llama-server", "corral"], default="llama-server")
    p.add_argument("--model", help="GGUF file (llama-server)")
    p.add_argument("--threads", type=int, default=2, help="llama-server threads (default 2; capped at the cores)")
    p.add_argument("--server-bin", default=None, help="llama-server binary (default: the one build-llama-server.sh built)")
    p.add_argument("--parallel", type=int, default=8, help="llama-server slots (default 8)")
    p.add_argument("--ctx", type=int, default=8192, help="llama-server context, shared by the slots (default 8192)")
    p.add_argument("--chat-template", metavar="NAME",
                   help="llama-server's built-in chat template to use, e.g. gemma (default: the model's own, "
                        "chatml when it has none)")
    p.add_argument("--url", help="Corral's base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--api-key", default=os.environ.get("CORRAL_BENCH_KEY"), help="Corral API key (Bearer)")
    p.add_argument("--model-name", help="the model's name in Corral's API")
    p.add_argument("--server-pid", type=int, help="Corral's PID, to report its peak RSS (optional)")
    p.add_argument("--runs", type=int, default=5, help="single-stream requests (default 5)")
    p.add_argument("--concurrency", default="4,8", help="concurrent stream counts (default 4,8)")
    p.add_argument("--agg-runs", type=int, default=3, help="rounds per concurrency level (default 3)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--no-ignore-eos", action="store_true", help='do not send "ignore_eos": true')
    p.add_argument("--request-timeout", type=float, default=300)
    p.add_argument("--ready-timeout", type=float, default=120)
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--label", help="the target's name in results and tables (default: the target)")
    p.add_argument("--multi-turn", action="store_true",
                   help="measure one conversation's turns instead (see above)")
    p.add_argument("--turns", type=int, default=10,
                   help=f"turns of the --multi-turn chat (default 10, at most {len(MULTI_TURN_MESSAGES)})")
    p.add_argument("--conversations", type=int, default=3,
                   help="runs of the --multi-turn chat; each turn's figures are medians over them (default 3)")
    p.add_argument("--turn-tokens", type=int, default=64,
                   help="answer tokens per --multi-turn turn (default 64)")
    p.add_argument("--compare", nargs="+", metavar="RESULT.json",
                   help="print the table for BASE.json [OTHER.json ...] and exit (with --json, "
                        "write the multi-turn figures and ratios there)")
    args = p.parse_args()

    if args.compare:
        docs = []
        for path in args.compare:
            with open(path, encoding="utf-8") as f:
                docs.append(json.load(f))
        if all("multi_turn" in d for d in docs):
            print(multi_turn_table(docs[0], docs[1:]))
            if args.json:
                with open(args.json, "w", encoding="utf-8") as f:
                    f.write(json.dumps(multi_turn_summary(docs[0], docs[1:]), indent=2) + "\n")
        else:
            print(table(docs[0], docs[1:]))
        return

    args.concurrency = [int(x) for x in args.concurrency.split(",") if x.strip()]
    if args.multi_turn:
        if not 1 <= args.turns <= len(MULTI_TURN_MESSAGES):
            p.error(f"--turns must be between 1 and {len(MULTI_TURN_MESSAGES)}")
        if args.conversations < 1:
            p.error("--conversations must be at least 1")
        args.max_tokens = args.turn_tokens
        args.concurrency = []
    if args.target == "llama-server":
        if not args.model:
            p.error("--target llama-server needs --model PATH")
        if not os.path.isfile(args.model):
            p.error(f"no such model file: {args.model}")
        cores = usable_cores()
        if args.threads > cores:
            log(f"    --threads {args.threads} > {cores} usable cores: using {cores} "
                "(ggml threads busy-wait; more threads than cores collapses throughput)")
            args.threads = cores
        if args.threads < 1:
            p.error("--threads must be at least 1")
        if max(args.concurrency, default=1) > args.parallel:
            log(f"    note: {max(args.concurrency)} streams > --parallel {args.parallel}: some will queue")
        target: Target = LlamaServerTarget(args.server_bin or default_server_bin(), os.path.abspath(args.model),
                                           args.threads, args.parallel, args.ctx, args.chat_template)
        target.info.update({"threads": args.threads, "parallel": args.parallel, "ctx": args.ctx,
                            "chat_template": args.chat_template})
    else:
        missing = [f for f, v in (("--url", args.url), ("--api-key", args.api_key),
                                  ("--model-name", args.model_name)) if not v]
        if missing:
            p.error("--target corral needs " + ", ".join(missing))
        target = CorralTarget(args.label or "corral", normalise_base(args.url), args.api_key, args.model_name,
                              pid=args.server_pid)

    log(f"==> benchmarking {target.name}")
    try:
        target.start()
        target.wait_ready(args.ready_timeout)
        log(f"    ready at {target.base_url}")
        result = multi_turn(target, args) if args.multi_turn else benchmark(target, args)
    except KeyboardInterrupt:
        raise SystemExit("interrupted")
    except Exception:
        if isinstance(target, LlamaServerTarget):
            log("    llama-server's last log lines:\n" + target.log_tail())
        raise
    finally:
        target.stop()

    log(multi_turn_table(result, []) if args.multi_turn else table(result, []))
    doc = json.dumps(result, indent=2)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(doc + "\n")
    print(doc)


if __name__ == "__main__":
    main()
