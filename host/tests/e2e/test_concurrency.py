"""Eight concurrent chats on one model (llama backend) all finish; prints
the aggregate completion tokens per second of eight streams against one.
No timing is asserted: the machines are shared."""

from __future__ import annotations

import os
import statistics
import threading
import time

from openai import OpenAI

MAX_TOKENS = 48
STREAMS = 8
# A prompt a base model continues at length.
PROMPT = "Count from 1 to 200, separated by commas: 1, 2, 3, 4, 5,"


def stream_once(client: OpenAI, model: str, prompt: str) -> dict:
    began = time.monotonic()
    first = None
    parts, usage = [], None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=MAX_TOKENS,
        temperature=0,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                if first is None:
                    first = time.monotonic()
                parts.append(choice.delta.content)
    ended = time.monotonic()
    return {
        "text": "".join(parts),
        "completion_tokens": usage.completion_tokens if usage else 0,
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "began": began,
        "first": first,
        "ended": ended,
    }


def run_concurrent(server, client: OpenAI, name: str) -> tuple[float, list]:
    """Eight streams started together; returns the aggregate completion
    tokens per second and the results."""
    results: list = [None] * STREAMS
    errors: list = []
    start = threading.Barrier(STREAMS)

    def worker(i: int):
        try:
            start.wait(timeout=30)
            results[i] = stream_once(client, name, PROMPT)
        except Exception as err:  # reported below
            errors.append((i, repr(err)))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(STREAMS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    server.check_alive()
    assert not errors, errors
    assert all(r is not None for r in results), "a stream did not finish within 600 s"
    for i, r in enumerate(results):
        assert r["completion_tokens"] > 0 and r["text"].strip(), (i, r)
    began = min(r["began"] for r in results)
    ended = max(r["ended"] for r in results)
    total = sum(r["completion_tokens"] for r in results)
    return total / (ended - began), results


def test_eight_concurrent_streams_finish(server, api_key, models, capsys):
    name = models["llama"]["name"]
    client = OpenAI(base_url=server.base + "/v1", api_key=api_key, timeout=300, max_retries=0)

    stream_once(client, name, PROMPT)  # warm up: load and page in the weights

    # The cores are shared with other work: alternate one stream and eight
    # streams, and compare the medians.
    singles, eights, ttfts = [], [], []
    load_before = os.getloadavg()[0]
    for round_ in range(3):
        one = stream_once(client, name, PROMPT)
        assert one["completion_tokens"] > 0, one
        singles.append(one["completion_tokens"] / (one["ended"] - one["began"]))
        if round_ < 2:
            rate, results = run_concurrent(server, client, name)
            eights.append(rate)
            ttfts += [r["first"] - r["began"] for r in results if r["first"] is not None]
    single_rate = statistics.median(singles)
    eight_rate = statistics.median(eights)
    line = (
        f"[concurrency] llama, {MAX_TOKENS} tokens per stream, greedy: "
        f"1 stream {single_rate:.1f} tok/s (runs: {', '.join(f'{x:.1f}' for x in singles)}); "
        f"{STREAMS} streams {eight_rate:.1f} tok/s in total (runs: {', '.join(f'{x:.1f}' for x in eights)}); "
        f"ratio {eight_rate / single_rate:.2f}x (best runs: {max(eights) / max(singles):.2f}x); "
        f"time to first token with {STREAMS} "
        f"{min(ttfts):.2f}-{max(ttfts):.2f} s; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    with capsys.disabled():  # shown even when the test passes
        print("\n" + line)
