"""A conversation's next turn does not read its whole history again: the
backend keeps what it read and reuses the longest common start of the new
prompt. The tokens it took from that cache show in a chat answer's usage
(`usage.cached_tokens`), in the OpenAI-compatible answers
(`usage.prompt_tokens_details.cached_tokens`), in the statistics
(`cached_prompt_tokens`) and in `/metrics`
(`corral_prompt_tokens_cached_total`).
"""

from __future__ import annotations

import re

import pytest
from openai import OpenAI

from test_chat_stream import GREEDY, check_events, new_chat, sse_stream, stored


@pytest.fixture(scope="module")
def client(server, api_key) -> OpenAI:
    return OpenAI(base_url=server.base + "/v1", api_key=api_key, timeout=180, max_retries=0)


def cached_counter(technician, model: str) -> int:
    """`corral_prompt_tokens_cached_total` of `model`, 0 when absent."""
    r = technician.get("/metrics")
    assert r.status_code == 200, r.text
    line = re.search(
        rf'^corral_prompt_tokens_cached_total\{{model="{re.escape(model)}"\}} (\d+)$', r.text, re.M
    )
    return int(line.group(1)) if line else 0


def my_cached(user, model: str) -> int:
    stats = user.ok("GET", "/api/me/stats")
    rows = [m for m in stats["models"] if m["model"] == model]
    assert all("cached_prompt_tokens" in m for m in stats["models"]), stats["models"]
    return rows[0]["cached_prompt_tokens"] if rows else 0


def test_a_chat_turn_reads_the_earlier_turns_from_the_cache(user, technician, models, backend):
    name = models[backend]["name"]
    counted_before = my_cached(user, name)
    metric_before = cached_counter(technician, name)
    chat_id = new_chat(user, name)

    events = sse_stream(
        user, chat_id, "stream", {"content": "Name a fruit.", "sampling": GREEDY}
    )
    _, first = check_events(events, with_user=True, content="Name a fruit.")
    assert first["status"] == "complete", first
    events = sse_stream(
        user, chat_id, "stream", {"content": "Name another one.", "sampling": GREEDY}
    )
    _, second = check_events(events, with_user=True, content="Name another one.")
    assert second["status"] == "complete", second

    usage = second["usage"]
    # The first turn's prompt (and answer) are the start of the second's.
    assert 0 < usage["cached_tokens"] < usage["prompt_tokens"], usage
    assert usage["cached_tokens"] > first["usage"]["prompt_tokens"] // 2, (first["usage"], usage)
    answer = [m for m in stored(user, chat_id) if m["id"] == second["id"]][0]
    assert answer["usage"]["cached_tokens"] == usage["cached_tokens"], answer

    taken = first["usage"]["cached_tokens"] + usage["cached_tokens"]
    assert my_cached(user, name) - counted_before == taken
    assert cached_counter(technician, name) - metric_before == taken


def test_openai_reports_cached_prompt_tokens(client, models, backend):
    name = models[backend]["name"]
    messages = [{"role": "user", "content": "Name a colour of the rainbow."}]
    first = client.chat.completions.create(
        model=name, messages=messages, max_tokens=16, temperature=0, seed=1
    )
    details = first.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens is not None, first.usage

    # The same messages again with one more turn: the old part is cached.
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "Name another one."},
    ]
    second = client.chat.completions.create(
        model=name, messages=messages, max_tokens=16, temperature=0, seed=1
    )
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert 0 < cached < second.usage.prompt_tokens, second.usage
    assert cached >= first.usage.prompt_tokens // 2, (first.usage, second.usage)

    # Streamed with usage: the last chunk says the same.
    stream = client.chat.completions.create(
        model=name,
        messages=messages,
        max_tokens=16,
        temperature=0,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
    assert usage is not None, "no usage chunk with include_usage"
    # The very same prompt: all of it but what must be read again.
    assert usage.prompt_tokens_details.cached_tokens >= cached, usage
    assert usage.prompt_tokens_details.cached_tokens < usage.prompt_tokens, usage


def test_another_users_cached_prompt_is_never_read(client, server, technician, models, backend):
    name = models[backend]["name"]
    messages = [{"role": "user", "content": "My locker code is 4417. Reply with OK."}]
    ask = dict(model=name, messages=messages, max_tokens=4, temperature=0, seed=1)
    client.chat.completions.create(**ask)
    again = client.chat.completions.create(**ask)
    assert again.usage.prompt_tokens_details.cached_tokens > 0, again.usage

    # Someone else sending the very same prompt reads it whole: a faster
    # answer would tell them what the first user had asked.
    key = technician.ok("POST", "/api/me/keys", json={"name": "cache probe"}, expect=(201,))["key"]
    other = OpenAI(base_url=server.base + "/v1", api_key=key, timeout=180, max_retries=0)
    probe = other.chat.completions.create(**ask)
    assert probe.usage.prompt_tokens_details.cached_tokens == 0, probe.usage
