"""Corral's plugins against a real `corral serve` with the demo model:
installed by a technician through the REST API (multipart upload),
approved, configured and turned on, then seen changing real answers over
the chat stream (Server-Sent Events) and over `/v1` with the `openai`
client, streamed and not. Then the management around them: conflicts,
upgrades, deletion, optional plugins, secrets, statistics, roles.

How the tests see what a plugin did, with greedy decoding (temperature
0), where the same input gives the same answer:
- what the model read: `prompt_tokens` and the greedy answer of a request
  are compared with those of a request whose text is what the plugin
  should have made of it (sent with the plugin off);
- what a stream filter did: the greedy answer with the plugin off is the
  text before the filter, so the answer with it on must be exactly that
  text with the filter's changes.

The module runs its own server (its plugins change every answer on it),
on the store CORRAL_E2E_STORE names."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import threading

import pytest
import requests
from openai import BadRequestError, OpenAI

from corral import (
    DEMO_NAME,
    Api,
    CorralServer,
    account,
    calls_of,
    demo_server_config,
    demo_technician,
    error_of,
    module_server,
    plugin_parts,
    sse_events,
    upload_plugin,
    wait_for_demo,
    wait_until,
    with_manifest_line,
)

STREAM_TIMEOUT = (5, 180)

# A prompt with one of each kind pii-redact masks (the card passes the
# Luhn check, the IBAN the mod-97 check), and the same prompt as the
# plugin masks it. The demo model copies a "Repeat exactly" message.
PII = (
    "Repeat exactly: Ann (ann@example.com, +49 170 1234567) paid with "
    "4111111111111111 from DE89370400440532013000."
)
PII_MASKED = "Repeat exactly: Ann ([email], [phone]) paid with [card] from [iban]."
# Answer tokens of the PII checks: the model's copy of the message, no
# further (what a small model writes after a copy is less settled).
PII_TOKENS = 24
PII_VALUES = ["ann@example.com", "+49 170 1234567", "4111111111111111", "DE89370400440532013000"]

# An address pii-redact cannot see in the prompt: the template plugin
# (priority 100) adds this line to the system prompt after pii-redact
# (priority 10) masked the prompt. The demo model copies its system prompt
# into the answer, and a text completion copies the line above it, so
# the address reaches the stream filter from the model, in several
# chunks, the same with pii-redact on or off.
CONTACT_LINE = "Contact: John Smith <john.smith@example.com>"
CONTACT_QUESTION = "Who is the contact?"
CONTACT_COMPLETION = "E-mail:"
ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")

CODE_QUESTION = "How do I reverse a list in Python?"
# Enough of an answer to tell the personas apart (the demo model starts by
# copying its system prompt).
CODE_TOKENS = 10

# A document with facts the demo model cannot know, and a question on it.
RAG_DOC_NAME = "lindqvist.md"
RAG_DOC = (
    "Lindqvist Shipping, harbour notes.\n\n"
    "The harbour office of Lindqvist Shipping opens at 7:15 every weekday. "
    "Its night ferry to Tallinn is called the Silver Heron and leaves at 22:40.\n\n"
    "The annual regatta is held on the second Saturday of June."
)
RAG_QUESTION = "What is the name of the night ferry to Tallinn?"
RAG_SOURCES = f"\n\nSources: [1] {RAG_DOC_NAME}"


# ---------------------------------------------------------------------------
# The module's server, accounts and clients


@pytest.fixture(scope="module")
def srv(corral_bin, demo_model, module_database, tmp_path_factory):
    embed = os.environ.get("CORRAL_EMBED_MODEL_DIR")
    config = demo_server_config(demo_model, embed)
    with module_server(corral_bin, tmp_path_factory.mktemp("plugins"), config, module_database) as server:
        yield server


@pytest.fixture(scope="module")
def tech(srv) -> Api:
    return demo_technician(srv)


@pytest.fixture(scope="module")
def ada(srv, tech) -> Api:
    return account(srv, "ada", "user")


@pytest.fixture(scope="module")
def bob(srv, tech) -> Api:
    return account(srv, "bob", "user")


@pytest.fixture(scope="module")
def boss(srv) -> Api:
    return account(srv, "boss", "admin")


def client_of(server: CorralServer, api: Api) -> OpenAI:
    """The `openai` client with a personal API key of `api`'s account."""
    key = api.ok("POST", "/api/me/keys", json={"name": "plugins e2e"}, expect=(201,))["key"]
    return OpenAI(base_url=server.base + "/v1", api_key=key, timeout=180, max_retries=0)


@pytest.fixture(scope="module")
def ada_ai(srv, ada) -> OpenAI:
    return client_of(srv, ada)


@pytest.fixture(scope="module")
def bob_ai(srv, bob) -> OpenAI:
    return client_of(srv, bob)


class Plugins:
    """The module's plugins, installed and switched as its technician."""

    def __init__(self, tech: Api, dist):
        self.tech = tech
        self.dist = dist

    def install(self, plugin_id: str, manifest: str | None = None) -> dict:
        """Installs a built plugin (with `manifest` instead of its own);
        checks what a fresh install promises."""
        own, component = plugin_parts(self.dist, plugin_id)
        r = upload_plugin(self.tech, "POST", "/api/plugins", manifest or own, component)
        assert r.status_code == 201, f"installing {plugin_id}: {r.status_code} {r.text[:500]}"
        view = r.json()
        assert view["id"] == plugin_id
        assert view["enabled"] is False and view["active"] is False, view
        assert view["approved"] == [], view
        assert view["component_sha256"] == hashlib.sha256(component).hexdigest()
        return view

    def view(self, plugin_id: str) -> dict:
        return self.tech.ok("GET", f"/api/plugins/{plugin_id}")

    def installed(self) -> set[str]:
        return {p["id"] for p in self.tech.ok("GET", "/api/plugins")}

    def ensure(self, plugin_id: str, approved: list[str], config: dict | None = None) -> dict:
        """The plugin installed (if it is not), its capabilities approved
        and `config` saved; not turned on."""
        if plugin_id not in self.installed():
            self.install(plugin_id)
        view = self.patch(plugin_id, approved=approved)
        assert sorted(view["approved"]) == sorted(approved), view
        if config is not None:
            view = self.tech.ok("PUT", f"/api/plugins/{plugin_id}/config", json=config)
            for key, value in config.items():
                assert view["config"][key] == value, view["config"]
        return view

    def patch(self, plugin_id: str, **changes) -> dict:
        return self.tech.ok("PATCH", f"/api/plugins/{plugin_id}", json=changes)

    def only(self, *plugin_ids: str):
        """Exactly these plugins on (and active), every other one off."""
        for view in self.tech.ok("GET", "/api/plugins"):
            on = view["id"] in plugin_ids
            if view["enabled"] != on or (on and not view["active"]):
                view = self.patch(view["id"], enabled=on)
            assert view["enabled"] is on, view
            assert view["active"] is on, view


@pytest.fixture(scope="module")
def plugins(tech, plugin_dist) -> Plugins:
    return Plugins(tech, plugin_dist)


@pytest.fixture
def none_on(plugins):
    """Every plugin off before and after the test."""
    plugins.only()
    yield plugins
    plugins.only()


# ---------------------------------------------------------------------------
# Asking the model


def v1_chat(client: OpenAI, content: str, max_tokens: int = 16, system: str | None = None):
    """(answer, prompt tokens) of a greedy `/v1/chat/completions` request."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    answer = client.chat.completions.create(
        model=DEMO_NAME, messages=messages, max_tokens=max_tokens, temperature=0, seed=1
    )
    return answer.choices[0].message.content, answer.usage.prompt_tokens


def v1_chat_stream(client: OpenAI, content: str, max_tokens: int = 16):
    """(text deltas, prompt tokens) of the same request streamed."""
    stream = client.chat.completions.create(
        model=DEMO_NAME,
        messages=[{"role": "user", "content": content}],
        max_tokens=max_tokens,
        temperature=0,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas, usage = [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append(choice.delta.content)
    assert usage is not None, "no usage chunk with include_usage"
    return deltas, usage.prompt_tokens


def v1_completion_stream(client: OpenAI, prompt: str, max_tokens: int = 24):
    """(text deltas, prompt tokens) of a greedy streamed `/v1/completions`."""
    stream = client.completions.create(
        model=DEMO_NAME,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=0,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas, usage = [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.text:
                deltas.append(choice.text)
    assert usage is not None, "no usage chunk with include_usage"
    return deltas, usage.prompt_tokens


class ChatAnswer:
    """One answer in a new chat over the chat stream (SSE)."""

    def __init__(self, chat_id: str, events: list[dict]):
        self.chat_id = chat_id
        self.events = events
        names = [e["type"] for e in events]
        assert names and names[-1] == "done", f"the answer did not complete: {events[-2:]}"
        self.deltas = [e["text"] for e in events if e["type"] == "delta"]
        self.text = "".join(self.deltas)
        self.final = events[-1]["message"]
        started = [e for e in events if e["type"] == "started"]
        assert len(started) == 1, names
        self.prompt_tokens = started[0]["prompt_tokens"]
        assert self.final["status"] == "complete", self.final
        assert self.final["content"] == self.text, (self.final["content"], self.text)


def sse_chat(api: Api, content: str, max_tokens: int = 16, extra: dict | None = None) -> ChatAnswer:
    chat = api.ok("POST", "/api/chats", json={"model": DEMO_NAME}, expect=(201,))
    sampling = {"max_tokens": max_tokens, "temperature": 0, "seed": 1, **(extra or {})}
    r = api.session.post(
        f"{api.base}/api/chats/{chat['id']}/stream",
        json={"content": content, "sampling": sampling},
        stream=True,
        timeout=STREAM_TIMEOUT,
    )
    try:
        assert r.status_code == 200, f"chat stream: {r.status_code} {r.text[:500]}"
        events = []
        for name, data in sse_events(r):
            assert isinstance(data, dict) and data.get("type") == name, (name, data)
            events.append(data)
            if name in ("done", "error"):
                break
    finally:
        r.close()
    return ChatAnswer(chat["id"], events)


def stored_answer(api: Api, chat_id: str) -> dict:
    messages = api.ok("GET", f"/api/chats/{chat_id}")["messages"]
    assert messages and messages[-1]["role"] == "assistant", messages
    return messages[-1]


def masked(text: str) -> str:
    """`text` with each e-mail address as pii-redact's default mask."""
    return ADDRESS.sub("[email]", text)


def spans_chunks(deltas: list[str], address: str) -> int:
    """How many of `deltas` the first `address` in their text touches."""
    text = "".join(deltas)
    start = text.index(address)
    end = start + len(address)
    touched, at = 0, 0
    for d in deltas:
        if at < end and at + len(d) > start:
            touched += 1
        at += len(d)
    return touched


# ---------------------------------------------------------------------------
# Installing


def test_install_as_a_technician_then_409_for_the_same_id(plugins, tech, plugin_dist):
    plugins.only()
    if "pii-redact" in plugins.installed():
        tech.ok("DELETE", "/api/plugins/pii-redact", expect=(204,))
    view = plugins.install("pii-redact")
    assert view["name"] == "PII redaction"
    assert view["version"] == "0.1.0" and view["api"] == "0.1.0"
    assert view["hooks"] == ["before-prompt", "stream"]
    assert view["capabilities"] == ["config"]
    assert view["failure"] == "fail-closed" and view["priority"] == 10
    assert view["config"] == {"email": True, "phone": True, "card": True, "iban": True, "mask": "[{kind}]"}
    assert view["config_schema"]["properties"]["mask"]["maxLength"] == 100
    assert view["limits"] == {"memory_mb": 32, "time_ms": 100, "kv_kb": 1024}
    assert view["consecutive_failures"] == 0 and view["disabled_reason"] is None
    listed = tech.ok("GET", "/api/plugins")
    assert [p["id"] for p in listed] == sorted(p["id"] for p in listed)
    assert "pii-redact" in [p["id"] for p in listed]

    # The same id again: a conflict that points at the upgrade.
    manifest, component = plugin_parts(plugin_dist, "pii-redact")
    again = upload_plugin(tech, "POST", "/api/plugins", manifest, component)
    assert again.status_code == 409, again.text
    err = error_of(again)
    assert err["code"] == "conflict" and "pii-redact" in err["message"], err

    # What is not a plugin upload.
    r = tech.post("/api/plugins", json={"manifest": manifest}, headers={"Connection": "close"})
    assert r.status_code == 415, r.text
    broken = with_manifest_line(manifest, "id", '"Not An Id"')
    r = upload_plugin(tech, "POST", "/api/plugins", broken, component)
    assert r.status_code == 400 and error_of(r)["code"] == "invalid_manifest", r.text
    copy = manifest.replace("pii-redact", "pii-copy", 1)
    r = upload_plugin(tech, "POST", "/api/plugins", copy, b"\0asm junk")
    assert r.status_code == 400 and error_of(r)["code"] == "invalid_component", r.text
    assert "pii-copy" not in plugins.installed()


def test_non_technicians_get_403_on_management(plugins, tech, ada, boss, plugin_dist):
    plugins.ensure("pii-redact", ["config"])
    manifest, _ = plugin_parts(plugin_dist, "pii-redact")
    # A few bytes for a component: the refusal comes before the upload is
    # read. Each call on a connection of its own: a server may close a
    # connection whose request body it did not read.
    component = b"\0asm\x0d\0\x01\0"
    close = {"headers": {"Connection": "close"}}
    mine = manifest.replace("pii-redact", "pii-mine", 1)
    for who in (ada, boss):
        calls = [
            who.get("/api/plugins", **close),
            who.get("/api/plugins/pii-redact", **close),
            upload_plugin(who, "POST", "/api/plugins", mine, component, **close),
            who.patch("/api/plugins/pii-redact", json={"enabled": True}, **close),
            who.request("PUT", "/api/plugins/pii-redact/config", json={"email": False}, **close),
            upload_plugin(who, "PUT", "/api/plugins/pii-redact/component", manifest, component, **close),
            who.delete("/api/plugins/pii-redact", **close),
        ]
        for r in calls:
            assert r.status_code == 403, f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:200]}"
            assert error_of(r)["code"] == "forbidden", r.text
    view = plugins.view("pii-redact")
    assert view["enabled"] is False and view["config"]["email"] is True, view
    assert "pii-mine" not in plugins.installed()


# ---------------------------------------------------------------------------
# pii-redact


def test_pii_redact_masks_the_prompt_before_the_model(plugins, none_on, ada, ada_ai):
    """Proof by what the model read: with the plugin on, a prompt with
    personal data costs the model exactly the prompt tokens of the masked
    text and gets exactly its greedy answer with the plugin off. (An
    answer without the address alone proves nothing: the stream filter
    would mask a copied address too.)"""
    plugins.ensure("pii-redact", ["config"])
    raw_text, raw_tokens = v1_chat(ada_ai, PII, max_tokens=PII_TOKENS)
    want_text, want_tokens = v1_chat(ada_ai, PII_MASKED, max_tokens=PII_TOKENS)
    assert raw_tokens != want_tokens, "the masked prompt is as long as the raw one: the check proves nothing"
    # The model copies what it read: it read the raw values with the
    # plugin off, the masks with it on.
    assert "ann@example.com" in raw_text, raw_text
    assert "[email]" in want_text, want_text
    sse_want = sse_chat(ada, PII_MASKED, max_tokens=PII_TOKENS)

    plugins.only("pii-redact")
    text, tokens = v1_chat(ada_ai, PII, max_tokens=PII_TOKENS)
    assert (tokens, text) == (want_tokens, want_text)
    deltas, tokens = v1_chat_stream(ada_ai, PII, max_tokens=PII_TOKENS)
    assert ("".join(deltas), tokens) == (want_text, want_tokens)

    answer = sse_chat(ada, PII, max_tokens=PII_TOKENS)
    assert (answer.prompt_tokens, answer.text) == (sse_want.prompt_tokens, sse_want.text)
    assert stored_answer(ada, answer.chat_id)["content"] == sse_want.text
    for text in (text, answer.text):
        assert "[email]" in text
        for value in PII_VALUES:
            assert value not in text, (value, text)


def test_pii_redact_masks_an_address_the_model_writes_across_chunks(plugins, none_on, ada, ada_ai):
    """The stream filter. The model writes an address it read in a part
    of the prompt pii-redact does not mask (CONTACT_LINE), over several
    chunks; with the filter on, the answer is exactly the answer without
    it with each address masked, and no chunk carries a piece of one."""
    plugins.ensure("template", ["log", "config"], {"line": CONTACT_LINE})
    plugins.ensure("pii-redact", ["config"])
    plugins.only("template")
    plain_sse = sse_chat(ada, CONTACT_QUESTION, max_tokens=16)
    plain_v1, _ = v1_chat_stream(ada_ai, CONTACT_QUESTION, max_tokens=16)
    plain_completion, _ = v1_completion_stream(ada_ai, CONTACT_COMPLETION, max_tokens=10)
    for deltas in (plain_sse.deltas, plain_v1, plain_completion):
        text = "".join(deltas)
        assert "john.smith@example.com" in text, f"the model did not copy the address: {text!r}"
        assert spans_chunks(deltas, "john.smith@example.com") >= 2, (
            f"the address came in one chunk, so the check proves nothing: {deltas}"
        )

    plugins.only("template", "pii-redact")
    on_sse = sse_chat(ada, CONTACT_QUESTION, max_tokens=16)
    on_v1, _ = v1_chat_stream(ada_ai, CONTACT_QUESTION, max_tokens=16)
    on_completion, _ = v1_completion_stream(ada_ai, CONTACT_COMPLETION, max_tokens=10)
    pairs = ((plain_sse.deltas, on_sse.deltas), (plain_v1, on_v1), (plain_completion, on_completion))
    for plain, on in pairs:
        want = masked("".join(plain))
        assert "[email]" in want
        assert "".join(on) == want
        for delta in on:
            assert "@" not in delta, (delta, on)
    assert stored_answer(ada, on_sse.chat_id)["content"] == masked(plain_sse.text)


def test_stats_count_each_hooks_calls(plugins, none_on, ada, ada_ai):
    plugins.ensure("pii-redact", ["config"])
    plugins.only("pii-redact")
    before = plugins.view("pii-redact")
    v1_chat(ada_ai, PII, max_tokens=8)
    v1_chat_stream(ada_ai, PII, max_tokens=8)
    sse_chat(ada, PII, max_tokens=8)
    after = plugins.view("pii-redact")
    calls = lambda view, hook: calls_of(view, hook)[0]  # noqa: E731
    assert calls(after, "before-prompt") == calls(before, "before-prompt") + 3
    assert calls(after, "finish") == calls(before, "finish") + 3
    assert calls(after, "on-chunk") >= calls(before, "on-chunk") + 3
    assert calls(after, "handle") == calls(before, "handle") == 0
    for hook in ("before-prompt", "on-chunk", "finish"):
        assert calls_of(after, hook)[1] == 0, after["stats"]
        stats = [s for s in after["stats"] if s["hook"] == hook][0]
        assert 0 < stats["p50_us"] <= stats["p99_us"], stats
    assert after["consecutive_failures"] == 0 and after["last_error"] is None
    # A change of settings keeps the counts; only a new version starts them
    # again.
    optional = plugins.patch("pii-redact", optional=True)
    assert [calls(optional, h) for h in ("before-prompt", "finish")] == [
        calls(after, h) for h in ("before-prompt", "finish")
    ], optional["stats"]
    plugins.patch("pii-redact", optional=False)


def test_disable_stops_the_effect(plugins, none_on, ada_ai):
    plugins.ensure("pii-redact", ["config"])
    plugins.only("pii-redact")
    _, masked_tokens = v1_chat(ada_ai, PII_MASKED, max_tokens=1)
    _, on_tokens = v1_chat(ada_ai, PII, max_tokens=1)
    assert on_tokens == masked_tokens
    off = plugins.patch("pii-redact", enabled=False)
    assert off["enabled"] is False and off["active"] is False
    _, off_tokens = v1_chat(ada_ai, PII, max_tokens=1)
    assert off_tokens > masked_tokens, "the turned-off plugin still masked the prompt"


# ---------------------------------------------------------------------------
# code-mentor


def level(api: Api) -> tuple[int, dict]:
    r = api.get("/api/plugins/code-mentor/level")
    return r.status_code, (r.json() if r.content else None)


def set_level(api: Api, body) -> requests.Response:
    return api.request("PUT", "/api/plugins/code-mentor/level", json=body)


def test_code_mentor_levels_are_per_user(plugins, none_on, ada, bob, ada_ai, bob_ai):
    plugins.ensure("code-mentor", ["kv", "config"], {"default-level": "intermediate"})
    base_text, base_tokens = v1_chat(ada_ai, CODE_QUESTION, CODE_TOKENS)
    _, base_completion = v1_completion_stream(ada_ai, "def reverse(xs):", max_tokens=4)
    plugins.only("code-mentor")

    r = set_level(ada, {"level": "beginner"})
    assert r.status_code == 200, r.text
    assert r.json() == {"level": "beginner", "source": "user"}
    assert level(ada) == (200, {"level": "beginner", "source": "user"})
    assert level(bob) == (200, {"level": "intermediate", "source": "default"})
    for bad in ({"level": "guru"}, {"level": "Beginner"}, {"level": 3}, {}, {"level": "expert", "x": 1}):
        r = set_level(bob, bad)
        assert r.status_code == 400, (bad, r.status_code, r.text)
        err = error_of(r)
        assert err["code"] == "bad_request" and err["message"], err
    r = set_level(bob, {"level": "guru"})
    assert "`level` must be one of beginner, intermediate, advanced, expert" in error_of(r)["message"]
    assert level(bob) == (200, {"level": "intermediate", "source": "default"})

    # Each user's level sets their system prompt: a different prompt, a
    # different greedy answer.
    ada_text, ada_tokens = v1_chat(ada_ai, CODE_QUESTION, CODE_TOKENS)
    bob_text, bob_tokens = v1_chat(bob_ai, CODE_QUESTION, CODE_TOKENS)
    assert ada_tokens > base_tokens and bob_tokens > base_tokens, (base_tokens, ada_tokens, bob_tokens)
    assert ada_tokens != bob_tokens, "beginner and intermediate gave the same prompt"
    assert ada_text != bob_text and ada_text != base_text and bob_text != base_text
    deltas, tokens = v1_chat_stream(ada_ai, CODE_QUESTION, CODE_TOKENS)
    assert ("".join(deltas), tokens) == (ada_text, ada_tokens)
    ada_sse = sse_chat(ada, CODE_QUESTION, CODE_TOKENS)
    bob_sse = sse_chat(bob, CODE_QUESTION, CODE_TOKENS)
    assert (ada_sse.prompt_tokens, ada_sse.text) == (ada_tokens, ada_text)
    assert (bob_sse.prompt_tokens, bob_sse.text) == (bob_tokens, bob_text)

    # Bob choosing beginner gets Ada's answer; going back, his own again.
    assert set_level(bob, {"level": "beginner"}).status_code == 200
    assert v1_chat(bob_ai, CODE_QUESTION, CODE_TOKENS) == (ada_text, ada_tokens)
    r = bob.delete("/api/plugins/code-mentor/level")
    assert r.status_code == 200 and r.json() == {"level": "intermediate", "source": "default"}, r.text
    assert v1_chat(bob_ai, CODE_QUESTION, CODE_TOKENS) == (bob_text, bob_tokens)
    assert level(ada)[1]["level"] == "beginner"

    # A text completion has no system prompt to set.
    _, tokens = v1_completion_stream(ada_ai, "def reverse(xs):", max_tokens=4)
    assert tokens == base_completion


def test_plugin_routes_are_sandboxed_and_only_those_of_the_manifest(plugins, none_on, ada):
    plugins.ensure("code-mentor", ["kv", "config"])
    plugins.only("code-mentor")
    r = ada.get("/api/plugins/code-mentor/level")
    assert r.status_code == 200, r.text
    assert "sandbox" in r.headers.get("content-security-policy", ""), r.headers
    assert r.headers.get("content-type") == "application/json", r.headers.get("content-type")
    for method, path in (("POST", "level"), ("GET", "levels"), ("GET", "level/x")):
        r = ada.request(method, f"/api/plugins/code-mentor/{path}")
        assert r.status_code == 404, (method, path, r.status_code, r.text)
    assert ada.get("/api/plugins/no-such-plugin/level").status_code == 404
    plugins.patch("code-mentor", enabled=False)
    r = ada.get("/api/plugins/code-mentor/level")
    assert r.status_code == 404, r.text


def test_optional_plugins_apply_only_to_users_who_turned_them_on(plugins, none_on, ada, bob, ada_ai, bob_ai):
    plugins.ensure("code-mentor", ["kv", "config"])
    _, base_tokens = v1_chat(ada_ai, CODE_QUESTION, max_tokens=1)
    plugins.only("code-mentor")
    _, on_tokens = v1_chat(ada_ai, CODE_QUESTION, max_tokens=1)
    assert on_tokens > base_tokens
    try:
        view = plugins.patch("code-mentor", optional=True)
        assert view["optional"] is True and view["active"] is True
        mine = ada.ok("GET", "/api/me/plugins")
        assert [(p["id"], p["enabled"]) for p in mine] == [("code-mentor", False)], mine
        assert mine[0]["name"] == "Code mentor" and mine[0]["description"]
        # Not chosen by anyone: it runs for no one.
        assert v1_chat(ada_ai, CODE_QUESTION, max_tokens=1)[1] == base_tokens
        chosen = ada.ok("PUT", "/api/me/plugins/code-mentor", json={"enabled": True})
        assert chosen["id"] == "code-mentor" and chosen["enabled"] is True, chosen
        assert [(p["id"], p["enabled"]) for p in ada.ok("GET", "/api/me/plugins")] == [("code-mentor", True)]
        assert [(p["id"], p["enabled"]) for p in bob.ok("GET", "/api/me/plugins")] == [("code-mentor", False)]
        assert v1_chat(ada_ai, CODE_QUESTION, max_tokens=1)[1] == on_tokens
        assert sse_chat(ada, CODE_QUESTION, max_tokens=1).prompt_tokens == on_tokens
        assert v1_chat(bob_ai, CODE_QUESTION, max_tokens=1)[1] == base_tokens
        assert sse_chat(bob, CODE_QUESTION, max_tokens=1).prompt_tokens == base_tokens
        # Only optional plugins that are on can be chosen.
        plugins.ensure("pii-redact", ["config"])
        plugins.only("code-mentor", "pii-redact")
        r = bob.request("PUT", "/api/me/plugins/pii-redact", json={"enabled": True})
        assert r.status_code == 404, r.text
        assert bob.request("PUT", "/api/me/plugins/nothing-here", json={"enabled": True}).status_code == 404
        ada.ok("PUT", "/api/me/plugins/code-mentor", json={"enabled": False})
        assert v1_chat(ada_ai, CODE_QUESTION, max_tokens=1)[1] == base_tokens
    finally:
        plugins.patch("code-mentor", optional=False)


def test_upgrade_keeps_config_and_data(plugins, none_on, tech, ada, bob, plugin_dist):
    plugins.ensure("code-mentor", ["kv", "config"], {"default-level": "advanced"})
    plugins.only("code-mentor")
    assert set_level(ada, {"level": "expert"}).status_code == 200
    before = plugins.view("code-mentor")
    manifest, component = plugin_parts(plugin_dist, "code-mentor")
    newer = with_manifest_line(manifest, "version", '"0.2.0"')
    r = upload_plugin(tech, "PUT", "/api/plugins/code-mentor/component", newer, component)
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["version"] == "0.2.0"
    assert view["config"]["default-level"] == "advanced"
    assert sorted(view["approved"]) == ["config", "kv"]
    assert view["enabled"] is True and view["active"] is True
    assert view["installed_at"] == before["installed_at"]
    assert level(ada) == (200, {"level": "expert", "source": "user"})
    assert level(bob) == (200, {"level": "advanced", "source": "default"})
    # An upgrade is for the same id only.
    other = with_manifest_line(manifest, "id", '"code-mentor-two"')
    r = upload_plugin(tech, "PUT", "/api/plugins/code-mentor/component", other, component)
    assert r.status_code == 422, r.text
    assert plugins.view("code-mentor")["version"] == "0.2.0"
    r = upload_plugin(
        tech,
        "PUT",
        "/api/plugins/not-installed/component",
        manifest,
        component,
        headers={"Connection": "close"},
    )
    assert r.status_code == 404, r.text


def test_delete_removes_the_plugins_data(plugins, none_on, tech, ada):
    plugins.ensure("test-kv-user", ["kv"])
    plugins.only("test-kv-user")
    r = ada.request("PUT", "/api/plugins/test-kv-user/items/note", data=b"ada's note")
    assert r.status_code == 204, r.text
    r = ada.request("PUT", "/api/plugins/test-kv-user/shared/motd", data=b"for all")
    assert r.status_code == 204, r.text
    assert ada.get("/api/plugins/test-kv-user/items/note").content == b"ada's note"
    assert tech.delete("/api/plugins/test-kv-user").status_code == 204
    assert tech.get("/api/plugins/test-kv-user").status_code == 404
    assert ada.get("/api/plugins/test-kv-user/items/note").status_code == 404
    assert tech.delete("/api/plugins/test-kv-user").status_code == 404

    plugins.ensure("test-kv-user", ["kv"])
    plugins.only("test-kv-user")
    assert ada.get("/api/plugins/test-kv-user/items/note").status_code == 404
    assert ada.get("/api/plugins/test-kv-user/shared/motd").status_code == 404
    assert ada.ok("GET", "/api/plugins/test-kv-user/items")["keys"] == []


SECRET = "s3cr3t-" + "d0-not-show"


def test_secrets_are_never_returned(plugins, none_on, tech, boss, plugin_dist):
    """The template plugin with a secret, required setting added to its
    manifest (the host keeps and checks settings; the plugin need not
    read them)."""
    manifest, _ = plugin_parts(plugin_dist, "template")
    manifest += (
        '\n[config.properties.api-key]\ntype = "string"\nsecret = true\nmaxLength = 200\n'
        'description = "A key for a service"\n'
    )
    manifest = manifest.replace("required = []", 'required = ["api-key"]')
    if "template" in plugins.installed():
        tech.ok("DELETE", "/api/plugins/template", expect=(204,))
    view = plugins.install("template", manifest)
    assert view["secrets"] == [{"name": "api-key", "set": False}], view["secrets"]
    assert view["config_schema"]["properties"]["api-key"].get("secret") is True
    plugins.patch("template", approved=["log", "config"])

    # Not complete: it cannot be turned on.
    r = tech.patch("/api/plugins/template", json={"enabled": True})
    assert r.status_code == 400, r.text
    assert "api-key" in error_of(r)["message"]

    r = tech.request("PUT", "/api/plugins/template/config", json={"line": "Be brief.", "api-key": SECRET})
    assert r.status_code == 200, r.text
    assert SECRET not in r.text
    view = r.json()
    assert "api-key" not in view["config"] and view["config"]["line"] == "Be brief."
    assert view["secrets"] == [{"name": "api-key", "set": True}]
    # Left out or null: the saved value stays.
    for body in ({"line": "Be kind."}, {"line": "Be kind.", "api-key": None}):
        r = tech.request("PUT", "/api/plugins/template/config", json=body)
        assert r.status_code == 200 and SECRET not in r.text, r.text
        assert r.json()["secrets"] == [{"name": "api-key", "set": True}]
    # A value that breaks the schema.
    r = tech.request("PUT", "/api/plugins/template/config", json={"line": 5})
    assert r.status_code == 422, r.text
    err = error_of(r)
    assert err["code"] == "validation_failed" and err["details"][0]["field"] == "config", err

    view = plugins.patch("template", enabled=True)
    assert view["active"] is True
    for r in (
        tech.get("/api/plugins"),
        tech.get("/api/plugins/template"),
        tech.patch("/api/plugins/template", json={"enabled": False}),
        boss.get("/api/audit"),
    ):
        assert r.status_code == 200, r.text
        assert SECRET not in r.text, r.request.url

    # A version that declares the field as plain text does not get to show
    # the saved secret: the value is dropped.
    plain, component = plugin_parts(plugin_dist, "template")
    plain += '\n[config.properties.api-key]\ntype = "string"\nmaxLength = 200\n'
    r = upload_plugin(tech, "PUT", "/api/plugins/template/component", plain, component)
    assert r.status_code == 200, r.text
    assert SECRET not in r.text
    assert r.json()["secrets"] == [] and "api-key" not in r.json()["config"], r.json()
    for r in (tech.get("/api/plugins/template"), boss.get("/api/audit")):
        assert r.status_code == 200 and SECRET not in r.text, r.request.url
    tech.ok("DELETE", "/api/plugins/template", expect=(204,))


# ---------------------------------------------------------------------------
# rag-docs


@pytest.fixture(scope="module")
def embedder(srv, tech, embed_model_dir) -> str:
    """all-MiniLM-L6-v2 added as the embedding model `minilm`, ready."""
    created = tech.ok(
        "POST",
        "/api/models",
        json={"name": "minilm", "backend": "candle", "kind": "embedding", "source": embed_model_dir},
        expect=(201, 202),
    )
    wait_until(
        lambda: tech.ok("GET", f"/api/models/{created['id']}")["status"] == "ready",
        120,
        "the embedding model is ready",
    )
    return "minilm"


def rag(api: Api, method: str, path: str, **kw) -> requests.Response:
    return api.request(method, f"/api/plugins/rag-docs/{path}", **kw)


def test_rag_docs_answers_cite_the_users_own_document(plugins, none_on, embedder, ada, bob, ada_ai, bob_ai):
    plugins.ensure("rag-docs", ["kv", "config", "embed"], {"embedding-model": embedder})
    _, base_tokens = v1_chat(ada_ai, RAG_QUESTION, max_tokens=1)
    plugins.only("rag-docs")

    # The plugin's embeddings are counted against the user who called it.
    ada_used, bob_used = (who.ok("GET", "/api/me/quota")["used"] for who in (ada, bob))
    r = rag(ada, "POST", "collections/harbour/documents", json={"name": RAG_DOC_NAME, "text": RAG_DOC})
    assert r.status_code == 201, r.text
    assert ada.ok("GET", "/api/me/quota")["used"] > ada_used
    assert bob.ok("GET", "/api/me/quota")["used"] == bob_used
    doc = r.json()
    assert doc["name"] == RAG_DOC_NAME and doc["collection"] == "harbour", doc
    assert doc["chunks"] >= 1 and doc["chars"] == len(RAG_DOC)
    assert rag(ada, "GET", "collections").json() == {"collections": [{"name": "harbour", "documents": 1}]}
    listed = rag(ada, "GET", "collections/harbour/documents").json()
    assert [d["id"] for d in listed["documents"]] == [doc["id"]]

    # Over the chat stream: the passage reached the model (a longer
    # prompt) and the answer ends with its source, stored as streamed.
    answer = sse_chat(ada, RAG_QUESTION, max_tokens=8)
    assert answer.text.endswith(RAG_SOURCES), answer.text
    assert answer.prompt_tokens > base_tokens + 20, (answer.prompt_tokens, base_tokens)
    assert stored_answer(ada, answer.chat_id)["content"] == answer.text
    # Over /v1, streamed and not: the same passage (a prompt of the same
    # length) and the source. The words may differ: each request reuses
    # what its own cache holds of the prompt, and reading a prompt in
    # other pieces can tip a greedy choice between near-equal tokens.
    text, tokens = v1_chat(ada_ai, RAG_QUESTION, max_tokens=8)
    assert text.endswith(RAG_SOURCES), text
    assert tokens == answer.prompt_tokens, (tokens, answer.prompt_tokens)
    deltas, tokens = v1_chat_stream(ada_ai, RAG_QUESTION, max_tokens=8)
    assert "".join(deltas).endswith(RAG_SOURCES) and tokens == answer.prompt_tokens, (deltas, tokens)

    # Bob sees none of Ada's documents and cannot touch them; his
    # questions get no passage of them.
    assert rag(bob, "GET", "collections").json() == {"collections": []}
    assert rag(bob, "GET", "collections/harbour/documents").status_code == 404
    assert rag(bob, "DELETE", f"collections/harbour/documents/{doc['id']}").status_code == 404
    assert rag(bob, "DELETE", "collections/harbour").status_code == 404
    theirs = sse_chat(bob, RAG_QUESTION, max_tokens=8)
    assert "Sources:" not in theirs.text and RAG_DOC_NAME not in theirs.text, theirs.text
    assert theirs.prompt_tokens == base_tokens
    text, tokens = v1_chat(bob_ai, RAG_QUESTION, max_tokens=8)
    assert "Sources:" not in text and tokens == base_tokens
    assert rag(ada, "GET", "collections").json() == {"collections": [{"name": "harbour", "documents": 1}]}

    # Ada deletes it: her answers have no source any more.
    assert rag(ada, "DELETE", f"collections/harbour/documents/{doc['id']}").status_code == 204
    text, tokens = v1_chat(ada_ai, RAG_QUESTION, max_tokens=4)
    assert "Sources:" not in text and tokens == base_tokens


# ---------------------------------------------------------------------------
# Servers of a test's own, restarted on the same data


def own_server(corral_bin, demo_model, database, tmp_path) -> CorralServer:
    """A server with the demo model on its own data (and `database`)."""
    server = CorralServer(corral_bin, tmp_path / "corral", demo_server_config(demo_model), database=database)
    server.start(backends_dir=os.environ.get("CORRAL_BACKENDS_DIR") or None)
    return server


def restarted(server: CorralServer) -> CorralServer:
    """A new server on `server`'s data, store and configuration (the old
    one stopped or killed)."""
    again = CorralServer(server.binary, server.work, server.config.read_text())
    again.database = server.database
    again.start(backends_dir=os.environ.get("CORRAL_BACKENDS_DIR") or None)
    return again


# ---------------------------------------------------------------------------
# A server killed while a plugin filters an answer


def test_a_killed_server_keeps_the_filtered_answer_as_interrupted(
    corral_bin, demo_model, plugin_dist, fresh_database, tmp_path
):
    """pii-redact masks an answer as it streams (the address comes from
    the template plugin's line, as in the stream filter test); the server
    is killed in the middle. After the restart the answer is `interrupted` with the
    text the client saw, masked, and the plugin is back."""
    server = own_server(corral_bin, demo_model, fresh_database, tmp_path)
    before, pytest.corral_server = getattr(pytest, "corral_server", None), server
    try:
        tech_password = server.create_account("tech", "technician")
        tech = Api.login(server, "tech", tech_password)
        password = server.create_account("reader", "user")
        user = Api.login(server, "reader", password)
        wait_for_demo(tech)
        installed = Plugins(tech, plugin_dist)
        installed.ensure("template", ["log", "config"], {"line": CONTACT_LINE})
        installed.ensure("pii-redact", ["config"])
        installed.only("template", "pii-redact")

        chat = user.ok("POST", "/api/chats", json={"model": DEMO_NAME}, expect=(201,))
        r = user.session.post(
            f"{user.base}/api/chats/{chat['id']}/stream",
            json={
                "content": CONTACT_QUESTION,
                "sampling": {"max_tokens": 2000, "ignore_eos": True, "temperature": 0},
            },
            stream=True,
            timeout=(5, 120),
        )
        assert r.status_code == 200, r.text
        seen: list[str] = []
        names: list[str] = []

        def read():
            try:
                for name, data in sse_events(r):
                    names.append(name)
                    if name == "delta":
                        seen.append(data["text"])
            except Exception:  # the server went away
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        wait_until(lambda: "[email]" in "".join(seen), 120, "the masked address streamed")
        # The answer is saved as it grows (about once a second), not only at
        # its end: the masked address reaches the store while it runs.
        wait_until(
            lambda: "[email]" in user.ok("GET", f"/api/chats/{chat['id']}")["messages"][-1]["content"],
            20,
            "the masked address saved while the answer runs",
        )
        assert "done" not in names and "error" not in names, names[-3:]
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=30)
        reader.join(timeout=10)
        text = "".join(seen)

        server = pytest.corral_server = restarted(server)
        user = Api.login(server, "reader", password)
        answer = user.ok("GET", f"/api/chats/{chat['id']}")["messages"][-1]
        assert answer["role"] == "assistant"
        assert answer["status"] == "interrupted", answer
        content = answer["content"]
        assert content and text.startswith(content), (content, text)
        assert "[email]" in content and "@" not in content, content
        tech = Api.login(server, "tech", tech_password)
        view = tech.ok("GET", "/api/plugins/pii-redact")
        assert view["enabled"] is True and view["active"] is True, view
    finally:
        pytest.corral_server = before
        server.stop()


# ---------------------------------------------------------------------------
# A fail-closed plugin whose component is gone at start


def test_a_fail_closed_plugin_that_cannot_load_refuses_until_it_is_turned_off(
    corral_bin, demo_model, plugin_dist, fresh_database, tmp_path
):
    """pii-redact (fail-closed) guards every answer. Its component file is
    lost while the server is down: after the restart it is kept off with the
    reason, and every generation it would have masked is refused rather than
    sent to the model unmasked. Turning it off is the technician's choice:
    answers come again, and turning it on again (still unloadable) is
    refused and keeps refusing."""
    server = own_server(corral_bin, demo_model, fresh_database, tmp_path)
    before, pytest.corral_server = getattr(pytest, "corral_server", None), server
    try:
        tech_password = server.create_account("tech", "technician")
        tech = Api.login(server, "tech", tech_password)
        user = account(server, "guarded", "user")
        ai = client_of(server, user)
        wait_for_demo(tech)
        installed = Plugins(tech, plugin_dist)
        view = installed.ensure("pii-redact", ["config"])
        assert view["failure"] == "fail-closed", view
        assert installed.patch("pii-redact", enabled=True)["active"] is True

        def ask() -> str:
            answer = ai.chat.completions.create(
                model=DEMO_NAME,
                messages=[{"role": "user", "content": PII}],
                max_tokens=4,
                temperature=0,
            )
            return answer.choices[0].message.content or ""

        assert ask()

        server.stop()
        component = server.data / "plugins" / f"{view['component_sha256']}.wasm"
        assert component.is_file(), sorted(p.name for p in (server.data / "plugins").iterdir())
        component.unlink()
        server = pytest.corral_server = restarted(server)
        tech = Api.login(server, "tech", tech_password)
        ai = OpenAI(base_url=server.base + "/v1", api_key=ai.api_key, timeout=180, max_retries=0)

        kept = tech.ok("GET", "/api/plugins/pii-redact")
        assert kept["enabled"] is True and kept["active"] is False, kept
        assert "cannot be read" in (kept["disabled_reason"] or ""), kept

        # The prompt would reach the model unmasked: refused instead.
        for _ in range(2):
            with pytest.raises(BadRequestError) as refusal:
                ask()
            body = refusal.value.body or {}
            body = body.get("error", body)
            assert body.get("code") == "rejected", refusal.value
            assert "`pii-redact`" in body["message"] and "cannot be loaded" in body["message"], body
            # Users are not told the technician's reason (files, errors).
            assert "cannot be read" not in body["message"], body

        # The technician turns it off: saved, answers come (unmasked, as
        # with the plugin off), and the reason stays to be seen.
        off = tech.ok("PATCH", "/api/plugins/pii-redact", json={"enabled": False})
        assert off["enabled"] is False and "cannot be read" in (off["disabled_reason"] or ""), off
        assert ask()

        # On again, it still cannot load: the switch is refused with the
        # reason, and it guards again.
        r = tech.patch("/api/plugins/pii-redact", json={"enabled": True})
        assert r.status_code == 503, r.text
        assert "cannot be read" in error_of(r)["message"], r.text
        kept = tech.ok("GET", "/api/plugins/pii-redact")
        assert kept["active"] is False and "cannot be read" in (kept["disabled_reason"] or ""), kept
        with pytest.raises(BadRequestError):
            ask()

        # Removed, it guards nothing.
        assert tech.delete("/api/plugins/pii-redact").status_code == 204
        assert ask()
    finally:
        pytest.corral_server = before
        server.stop()
