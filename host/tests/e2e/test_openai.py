"""The official `openai` Python client against `/v1`, for both backends,
with a personal API key made through the REST API."""

from __future__ import annotations

import pytest
from openai import AuthenticationError, NotFoundError, OpenAI

PROMPT = "Name three colours of the rainbow."


@pytest.fixture(scope="module")
def client(server, api_key) -> OpenAI:
    return OpenAI(base_url=server.base + "/v1", api_key=api_key, timeout=180, max_retries=0)


def test_models_lists_both_backends(client, models):
    ids = {m.id for m in client.models.list()}
    assert {models["llama"]["name"], models["candle"]["name"]} <= ids, ids


def test_chat_completion(client, models, backend):
    name = models[backend]["name"]
    answer = client.chat.completions.create(
        model=name,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=24,
        temperature=0,
        seed=1,
    )
    assert answer.model == name
    assert answer.object == "chat.completion"
    assert len(answer.choices) == 1
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip(), answer
    assert choice.finish_reason in ("stop", "length")
    usage = answer.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_completion_streamed(client, models, backend):
    name = models[backend]["name"]
    kwargs = dict(
        model=name,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=24,
        temperature=0,
        seed=1,
    )
    stream = client.chat.completions.create(
        stream=True, stream_options={"include_usage": True}, **kwargs
    )
    parts, finish, usage, chunks = [], None, None, 0
    for chunk in stream:
        chunks += 1
        assert chunk.object == "chat.completion.chunk"
        assert chunk.model == name
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    text = "".join(parts)
    assert text.strip(), f"empty streamed answer over {chunks} chunks"
    assert len(parts) >= 2, parts
    assert finish in ("stop", "length")
    assert usage is not None, "no usage chunk with include_usage"
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    # Greedy decoding: the same request without streaming gives the same text.
    plain = client.chat.completions.create(**kwargs)
    assert plain.choices[0].message.content == text
    assert plain.usage.completion_tokens == usage.completion_tokens


def test_bad_key_and_unknown_model(server, client):
    bad = OpenAI(base_url=server.base + "/v1", api_key="ck_not-a-key", timeout=30, max_retries=0)
    with pytest.raises(AuthenticationError):
        bad.models.list()
    with pytest.raises(NotFoundError):
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )


def counting(upto: int) -> list:
    numbers = ", ".join(str(i) for i in range(1, upto + 1))
    return [{"role": "user", "content": f"Count from 1 to 1000, separated by commas: {numbers},"}]


def test_prompt_longer_than_512_tokens(client, models, backend):
    """A prompt past 512 tokens (Gemma 3's sliding attention window) is
    answered."""
    name = models[backend]["name"]
    answer = client.chat.completions.create(
        model=name, messages=counting(150), max_tokens=8, temperature=0
    )
    assert answer.usage.prompt_tokens > 512, answer.usage
    assert answer.usage.completion_tokens > 0
    assert answer.choices[0].message.content


def test_answer_past_512_positions(client, models, backend):
    """An answer whose prompt and completion together pass 512 tokens
    still finishes."""
    name = models[backend]["name"]
    messages = counting(80)
    probe = client.chat.completions.create(model=name, messages=messages, max_tokens=1, temperature=0)
    prompt_tokens = probe.usage.prompt_tokens
    assert prompt_tokens < 480, prompt_tokens
    max_tokens = 560 - prompt_tokens
    # `ignore_eos`: the answer runs to `max_tokens` whatever the model
    # would say, so it always crosses position 512.
    answer = client.chat.completions.create(
        model=name,
        messages=messages,
        max_tokens=max_tokens,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    usage = answer.usage
    assert usage.prompt_tokens == prompt_tokens
    assert answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "length", answer.choices[0]
    assert usage.completion_tokens == max_tokens
    assert usage.prompt_tokens + usage.completion_tokens > 512
