"""Answers inside saved chats, streamed over Server-Sent Events
(`POST /api/chats/{id}/stream`, `/regenerate`, `/stop`) and over the
WebSocket at `/api/chats/ws`.

The events, in order: `user_message` {message} (not for regenerate),
`assistant_message` {message, status pending}, zero or more `queued`
{position}, `started` {prompt_tokens}, `delta` {text}..., then exactly one
of `done` {message} (status complete or cancelled, with usage and model)
or `error` {error: {code, message}, message}. On the WebSocket every event
also carries `chat_id`. After each answer, `GET /api/chats/{id}` holds the
same text with its usage.
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest
import requests
import websocket

from corral import TIMEOUT, Api, sse_events

GREEDY = {"max_tokens": 24, "temperature": 0, "seed": 1}
# Long enough to stop it in the middle.
LONG = {"max_tokens": 400, "temperature": 0, "seed": 1}
LONG_PROMPT = "Count from 1 to 500, separated by commas: 1, 2, 3, 4, 5,"
STREAM_TIMEOUT = (5, 180)
USAGE_KEYS = {"prompt_tokens", "cached_tokens", "completion_tokens", "time_to_first_token_ms", "tokens_per_second"}
KNOWN = {"user_message", "assistant_message", "queued", "started", "delta", "done", "error"}


def new_chat(api, model_name: str) -> str:
    chat = api.ok("POST", "/api/chats", json={"model": model_name}, expect=(201,))
    return chat["id"]


def sse_stream(api, chat_id: str, path: str, body: dict | None, on_event=None) -> list[dict]:
    """POSTs to a streaming chat endpoint; returns its events up to `done`
    or `error`."""
    r = api.session.post(
        f"{api.base}/api/chats/{chat_id}/{path}", json=body, stream=True, timeout=STREAM_TIMEOUT
    )
    try:
        assert r.status_code == 200, f"POST /api/chats/{{id}}/{path}: {r.status_code} {r.text[:500]}"
        ctype = r.headers.get("content-type", "")
        assert ctype.startswith("text/event-stream"), ctype
        events = []
        for name, data in sse_events(r):
            assert isinstance(data, dict), (name, data)
            assert data.get("type") == name, f"event `{name}` carries type {data.get('type')!r}"
            events.append(data)
            if on_event:
                on_event(data)
            if name in ("done", "error"):
                break
        return events
    finally:
        r.close()


def check_events(events: list[dict], *, with_user: bool, content: str | None = None) -> tuple[str, dict]:
    """Checks the order and shape of one answer's events; returns the
    streamed text and the final message."""
    types = [e["type"] for e in events]
    assert set(types) <= KNOWN, types
    assert types and types[-1] in ("done", "error"), f"no done/error at the end: {types}"
    assert types.count("done") + types.count("error") == 1, types
    i = 0
    if with_user:
        assert types[0] == "user_message", types
        msg = events[0]["message"]
        assert msg["role"] == "user"
        if content is not None:
            assert msg["content"] == content
        i = 1
    else:
        assert "user_message" not in types, types
    assert types[i] == "assistant_message", types
    pending = events[i]["message"]
    assert pending["role"] == "assistant" and pending["status"] == "pending", pending
    i += 1
    while types[i] == "queued":
        assert isinstance(events[i]["position"], int) and events[i]["position"] >= 0, events[i]
        i += 1
    if types[-1] == "error":
        err = events[-1]
        raise AssertionError(f"the answer failed: {err.get('error')} {err.get('message')}")
    assert types[i] == "started", types
    assert events[i]["prompt_tokens"] > 0, events[i]
    deltas = events[i + 1 : -1]
    assert all(e["type"] == "delta" for e in deltas), types
    text = "".join(e["text"] for e in deltas)
    final = events[-1]["message"]
    assert final["id"] == pending["id"], (final["id"], pending["id"])
    assert final["role"] == "assistant"
    assert final["content"] == text
    usage = final.get("usage")
    assert usage and USAGE_KEYS <= set(usage), final
    assert usage["prompt_tokens"] > 0
    assert usage["time_to_first_token_ms"] >= 0 and usage["tokens_per_second"] >= 0
    assert final.get("model"), final
    if final["status"] == "complete":
        assert text.strip(), "empty answer"
        assert usage["completion_tokens"] > 0
    else:
        assert final["status"] == "cancelled", final
    return text, final


def stored(api, chat_id: str) -> list[dict]:
    return api.ok("GET", f"/api/chats/{chat_id}")["messages"]


def check_stored(api, chat_id: str, final: dict):
    """The stored answer is what was streamed, with its usage."""
    messages = stored(api, chat_id)
    match = [m for m in messages if m["id"] == final["id"]]
    assert match, f"answer {final['id']} not stored: {messages}"
    m = match[0]
    assert m["role"] == "assistant"
    assert m["content"] == final["content"]
    assert m["status"] == final["status"]
    assert m.get("usage") == final["usage"], (m.get("usage"), final["usage"])
    assert messages[-1]["id"] == final["id"], "the answer is not the last message"
    return messages


def wait_until_settled(api, chat_id: str, within: float = 60) -> dict:
    """The chat's last message once it is no longer `pending`."""
    deadline = time.monotonic() + within
    while True:
        answer = stored(api, chat_id)[-1]
        if answer["status"] != "pending":
            return answer
        assert time.monotonic() < deadline, f"still pending after {within:.0f} s: {answer}"
        time.sleep(0.2)


# --- Server-Sent Events -------------------------------------------------------


def test_sse_send_streams_an_answer(user, models, backend):
    model = models[backend]["name"]
    chat_id = new_chat(user, model)
    content = "Name three colours of the rainbow."
    events = sse_stream(user, chat_id, "stream", {"content": content, "sampling": GREEDY})
    text, final = check_events(events, with_user=True, content=content)
    assert final["status"] == "complete"
    assert final["model"] == model
    assert 0 < final["usage"]["completion_tokens"] <= GREEDY["max_tokens"]
    messages = check_stored(user, chat_id, final)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == content


def test_sse_regenerate_replaces_the_last_answer(user, models):
    chat_id = new_chat(user, models["llama"]["name"])
    first = sse_stream(user, chat_id, "stream", {"content": "Say something about cats.", "sampling": GREEDY})
    _, answer = check_events(first, with_user=True)
    before = stored(user, chat_id)

    again = sse_stream(
        user, chat_id, "regenerate", {"sampling": {"max_tokens": 16, "temperature": 0.9, "seed": 7}}
    )
    text, final = check_events(again, with_user=False)
    assert final["status"] == "complete"
    messages = check_stored(user, chat_id, final)
    assert len(messages) == len(before), "regenerate added a message instead of replacing one"
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[-1]["content"] == text
    # The answer is rewritten in place: the same message, not a new one.
    assert final["id"] == answer["id"]
    assert messages[-1]["id"] == answer["id"]


def test_sse_regenerate_without_a_body(user, models):
    """The body of regenerate is optional: none at all (so no Content-Type)
    regenerates with the model's default sampling."""
    chat_id = new_chat(user, models["llama"]["name"])
    first = sse_stream(user, chat_id, "stream", {"content": "Say something about dogs.", "sampling": GREEDY})
    check_events(first, with_user=True)
    again = sse_stream(user, chat_id, "regenerate", None)
    _, final = check_events(again, with_user=False)
    messages = check_stored(user, chat_id, final)
    assert [m["role"] for m in messages] == ["user", "assistant"]


def test_sse_one_answer_at_a_time_per_chat(user, models):
    """A second send or regenerate while an answer is being written is
    refused before streaming (a JSON error); the running answer goes on."""
    chat_id = new_chat(user, models["llama"]["name"])
    refusals = []

    def on_event(event):
        if event["type"] == "delta" and not refusals:
            for path, body in (("stream", {"content": "again", "sampling": GREEDY}), ("regenerate", {})):
                r = user.post(f"/api/chats/{chat_id}/{path}", json=body, stream=True)
                ctype = r.headers.get("content-type", "")
                refusals.append((path, r.status_code, ctype, r.text[:300] if "json" in ctype else ""))
                r.close()

    events = sse_stream(
        user, chat_id, "stream", {"content": LONG_PROMPT, "sampling": {**GREEDY, "max_tokens": 48}}, on_event
    )
    _, final = check_events(events, with_user=True)
    assert final["status"] == "complete", final
    assert len(refusals) == 2, refusals
    for path, status, ctype, text in refusals:
        assert 400 <= status < 500 and ctype.startswith("application/json"), (path, status, ctype, text)
    messages = check_stored(user, chat_id, final)
    assert [m["role"] for m in messages] == ["user", "assistant"]


def test_sse_client_that_goes_away_leaves_no_pending_answer(user, models):
    """A client that disconnects mid-answer stops its answer: the stored
    answer ends up cancelled, never left pending, and the chat takes the
    next message."""
    chat_id = new_chat(user, models["llama"]["name"])
    r = user.session.post(
        f"{user.base}/api/chats/{chat_id}/stream",
        json={"content": LONG_PROMPT, "sampling": LONG},
        stream=True,
        timeout=STREAM_TIMEOUT,
    )
    assert r.status_code == 200, r.text
    deltas = 0
    for name, _ in sse_events(r):
        if name == "delta":
            deltas += 1
            if deltas == 3:
                break
    r.close()
    answer = wait_until_settled(user, chat_id)
    assert answer["role"] == "assistant"
    assert answer["status"] == "cancelled", answer
    assert answer["usage"]["completion_tokens"] < LONG["max_tokens"], answer
    events = sse_stream(user, chat_id, "stream", {"content": "Hello!", "sampling": GREEDY})
    _, final = check_events(events, with_user=True)
    check_stored(user, chat_id, final)


def test_sse_stop_cancels_the_answer(user, models):
    chat_id = new_chat(user, models["llama"]["name"])
    stop_answers = []

    def on_event(event):
        if event["type"] == "delta" and not stop_answers:
            r = user.post(f"/api/chats/{chat_id}/stop", json=None)
            stop_answers.append((r.status_code, r.json() if r.content else None))

    events = sse_stream(user, chat_id, "stream", {"content": LONG_PROMPT, "sampling": LONG}, on_event)
    assert stop_answers == [(200, {"stopped": True})], stop_answers
    _, final = check_events(events, with_user=True)
    assert final["status"] == "cancelled", final
    assert final["usage"]["completion_tokens"] < LONG["max_tokens"]
    check_stored(user, chat_id, final)

    # Nothing runs now.
    r = user.post(f"/api/chats/{chat_id}/stop", json=None)
    assert (r.status_code, r.json()) == (200, {"stopped": False})


def test_sse_errors_before_streaming_are_json(user, technician, models):
    chat_id = new_chat(user, models["llama"]["name"])
    # Unknown chat.
    r = user.post("/api/chats/00000000-0000-0000-0000-000000000000/stream", json={"content": "hi"})
    assert r.status_code == 404, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["code"] == "not_found"
    # Another user's chat is unknown too.
    r = technician.post(f"/api/chats/{chat_id}/stream", json={"content": "hi"})
    assert r.status_code == 404, r.text
    # Bad bodies.
    for body in ({}, {"content": 5}, {"content": "hi", "sampling": {"max_tokens": -1}}):
        r = user.post(f"/api/chats/{chat_id}/stream", json=body)
        assert r.status_code == 422, (body, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["code"] == "validation_failed" and r.json()["message"], r.text
    r = user.post(f"/api/chats/{chat_id}/regenerate", json={"sampling": {"temperature": "hot"}})
    assert (r.status_code, r.json()["code"]) == (422, "validation_failed"), r.text
    # Regenerating a chat without a message is a conflict, not a stream.
    r = user.post(f"/api/chats/{chat_id}/regenerate", json={})
    assert (r.status_code, r.json()["code"]) == (409, "conflict"), r.text
    assert r.headers["content-type"].startswith("application/json")
    # Nothing of the refused requests was stored.
    assert stored(user, chat_id) == []
    # Without a token.
    r = requests.post(f"{user.base}/api/chats/{chat_id}/stream", json={"content": "hi"}, timeout=TIMEOUT)
    assert r.status_code == 401


def test_sse_unknown_model_is_refused_before_streaming(user):
    """A chat whose model does not exist: refused with a JSON 404 before
    anything is streamed or stored."""
    chat_id = new_chat(user, "no-such-model")
    r = user.post(f"/api/chats/{chat_id}/stream", json={"content": "hi"})
    assert r.status_code == 404, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    assert r.json()["code"] == "not_found", r.text
    assert "model" in r.json()["message"], r.text
    assert stored(user, chat_id) == []


# --- WebSocket ----------------------------------------------------------------


def ws_url(api, token_in_query: bool = False) -> str:
    url = api.base.replace("http://", "ws://", 1) + "/api/chats/ws"
    if token_in_query:
        url += "?access_token=" + quote(api.token, safe="")
    return url


def ws_connect(api, token_in_query: bool = False) -> websocket.WebSocket:
    header = [] if token_in_query else [f"Authorization: Bearer {api.token}"]
    return websocket.create_connection(ws_url(api, token_in_query), header=header, timeout=60)


def ws_events(ws, chat_id: str, on_event=None, deadline_s: float = 180) -> list[dict]:
    """Receives this chat's events up to `done` or `error`."""
    events = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        frame = ws.recv()
        assert isinstance(frame, str), f"a binary frame: {frame!r}"
        event = json.loads(frame)
        assert isinstance(event, dict) and event.get("type") in KNOWN, event
        if event.get("chat_id") != chat_id:
            assert event["type"] != "error" or "chat_id" in event, f"unexpected error: {event}"
            continue
        events.append(event)
        if on_event:
            on_event(event)
        if event["type"] in ("done", "error"):
            return events
    raise AssertionError(f"no done/error within {deadline_s} s: {[e['type'] for e in events]}")


def test_ws_send_streams_an_answer(user, models, backend):
    model = models[backend]["name"]
    chat_id = new_chat(user, model)
    ws = ws_connect(user)
    try:
        content = "Name three colours of the rainbow."
        ws.send(json.dumps({"type": "send", "chat_id": chat_id, "content": content, "sampling": GREEDY}))
        events = ws_events(ws, chat_id)
        assert all(e["chat_id"] == chat_id for e in events)
        text, final = check_events(events, with_user=True, content=content)
        assert final["status"] == "complete" and final["model"] == model
        check_stored(user, chat_id, final)

        # Regenerate on the same socket.
        ws.send(json.dumps({"type": "regenerate", "chat_id": chat_id}))
        events = ws_events(ws, chat_id)
        _, final = check_events(events, with_user=False)
        messages = check_stored(user, chat_id, final)
        assert [m["role"] for m in messages] == ["user", "assistant"]
    finally:
        ws.close()


def test_ws_token_in_query_and_stop(user, models):
    chat_id = new_chat(user, models["llama"]["name"])
    ws = ws_connect(user, token_in_query=True)
    try:
        stopped = []

        def on_event(event):
            if event["type"] == "delta" and not stopped:
                ws.send(json.dumps({"type": "stop", "chat_id": chat_id}))
                stopped.append(True)

        ws.send(json.dumps({"type": "send", "chat_id": chat_id, "content": LONG_PROMPT, "sampling": LONG}))
        events = ws_events(ws, chat_id, on_event)
        _, final = check_events(events, with_user=True)
        assert final["status"] == "cancelled", final
        check_stored(user, chat_id, final)
    finally:
        ws.close()


def test_ws_malformed_frames_get_errors_and_the_socket_stays_open(user, models):
    chat_id = new_chat(user, models["llama"]["name"])
    ws = ws_connect(user)
    try:
        for frame in (
            "not json",
            json.dumps([1, 2, 3]),
            json.dumps({"type": "dance", "chat_id": chat_id}),
            json.dumps({"type": "send", "chat_id": chat_id}),  # no content
            json.dumps({"type": "send", "content": "hi"}),  # no chat
        ):
            ws.send(frame)
            reply = json.loads(ws.recv())
            assert reply["type"] == "error", (frame, reply)
            assert reply["error"]["code"] == "malformed_json" and reply["error"]["message"], (frame, reply)
        # An unknown chat is an error too, and the socket still works.
        ws.send(json.dumps({"type": "send", "chat_id": "00000000-0000-0000-0000-000000000000", "content": "hi"}))
        reply = json.loads(ws.recv())
        assert reply["type"] == "error" and reply["error"]["code"] == "not_found", reply
        ws.send(json.dumps({"type": "send", "chat_id": chat_id, "content": "Hello!", "sampling": GREEDY}))
        _, final = check_events(ws_events(ws, chat_id), with_user=True, content="Hello!")
        check_stored(user, chat_id, final)
    finally:
        ws.close()


def test_ws_needs_a_valid_token(user):
    url = ws_url(user)
    ws_connect(user).close()  # a valid token is let in
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(url, timeout=30)
    assert info.value.status_code == 401
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(url + "?access_token=not-a-token", timeout=30)
    assert info.value.status_code == 401


def test_ws_token_as_a_subprotocol_stays_out_of_the_url(user, models):
    """Browsers sign in to the socket by offering `corral.bearer` and then
    the token as subprotocols; the server answers with `corral.bearer`."""
    url = ws_url(user)
    ws = websocket.create_connection(url, subprotocols=["corral.bearer", user.token], timeout=60)
    try:
        assert ws.getsubprotocol() == "corral.bearer"
        chat_id = new_chat(user, models["llama"]["name"])
        ws.send(json.dumps({"type": "send", "chat_id": chat_id, "content": "Hello!", "sampling": GREEDY}))
        _, final = check_events(ws_events(ws, chat_id), with_user=True, content="Hello!")
        check_stored(user, chat_id, final)
    finally:
        ws.close()
    for offered in (["corral.bearer", "not-a-token"], ["corral.bearer"], [user.token]):
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(url, subprotocols=offered, timeout=30)
        assert info.value.status_code == 401, offered


def test_ws_two_chats_at_once_on_one_socket(user, models):
    """Events of two answers on one socket are told apart by chat_id."""
    chats = [new_chat(user, models["llama"]["name"]) for _ in range(2)]
    ws = ws_connect(user)
    try:
        for chat_id in chats:
            ws.send(json.dumps({"type": "send", "chat_id": chat_id, "content": "Hi!", "sampling": GREEDY}))
        by_chat: dict[str, list] = {c: [] for c in chats}
        finished: set = set()
        deadline = time.monotonic() + 240
        while finished != set(chats) and time.monotonic() < deadline:
            event = json.loads(ws.recv())
            assert event.get("chat_id") in by_chat, event
            by_chat[event["chat_id"]].append(event)
            if event["type"] in ("done", "error"):
                finished.add(event["chat_id"])
        assert finished == set(chats)
        for chat_id, events in by_chat.items():
            _, final = check_events(events, with_user=True, content="Hi!")
            check_stored(user, chat_id, final)
    finally:
        ws.close()


def test_ws_a_disabled_account_is_shut_out_at_its_next_frame(server, technician, models):
    """The account is read again for each frame, as for each HTTP request."""
    password = server.create_account("wsleaver", "user")
    leaver = Api.login(server, "wsleaver", password)
    chat_id = new_chat(leaver, models["llama"]["name"])
    me = leaver.ok("GET", "/api/me")
    ws = ws_connect(leaver)
    try:
        technician.ok("PATCH", f"/api/users/{me['id']}", json={"disabled": True})
        ws.send(json.dumps({"type": "send", "chat_id": chat_id, "content": "Hello?"}))
        reply = json.loads(ws.recv())
        assert reply["type"] == "error" and reply["error"]["code"] == "account_disabled", reply
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
            # The server closes the socket after the error.
            for _ in range(3):
                if ws.recv() in ("", None):
                    raise websocket.WebSocketConnectionClosedException("closed")
    finally:
        ws.close()
