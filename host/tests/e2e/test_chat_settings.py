"""A chat's own sampling settings on the WebSocket: an answer follows the
chat's settings over the model's defaults, a message's own settings win
over the chat's, and a regenerated answer follows the chat's again.

The end-of-generation token is never sampled (`ignore_eos`), so only
`max_tokens` ends these answers and their lengths are exact.
"""

from __future__ import annotations

import json
import time

import websocket


def ws_answer(ws, chat_id: str, frame: dict, deadline_s: float = 180) -> dict:
    """Sends a frame and returns the chat's `done` message."""
    ws.send(json.dumps({"chat_id": chat_id, **frame}))
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        event = json.loads(ws.recv())
        if event.get("chat_id") != chat_id:
            continue
        assert event["type"] != "error", event
        if event["type"] == "done":
            return event["message"]
    raise AssertionError(f"no answer within {deadline_s} s")


def test_ws_answers_follow_the_chats_settings(user, models):
    model = models["llama"]["name"]
    settings = {"max_tokens": 3, "ignore_eos": True, "temperature": 0}
    chat = user.ok("POST", "/api/chats", json={"model": model, "sampling": settings}, expect=(201,))
    assert chat["sampling"] == settings, chat
    chat_id = chat["id"]
    ws = websocket.create_connection(
        user.base.replace("http://", "ws://", 1) + "/api/chats/ws",
        header=[f"Authorization: Bearer {user.token}"],
        timeout=60,
    )
    try:
        answer = ws_answer(ws, chat_id, {"type": "send", "content": "Count to twenty."})
        assert answer["usage"]["completion_tokens"] == 3, answer

        answer = ws_answer(
            ws, chat_id, {"type": "send", "content": "Count again.", "sampling": {"max_tokens": 5}}
        )
        assert answer["usage"]["completion_tokens"] == 5, answer

        answer = ws_answer(ws, chat_id, {"type": "regenerate"})
        assert answer["usage"]["completion_tokens"] == 3, answer

        # Cleared, only the message's own settings are left.
        cleared = user.ok("PATCH", f"/api/chats/{chat_id}", json={"sampling": {}})
        assert cleared["sampling"] == {}, cleared
        answer = ws_answer(
            ws, chat_id, {"type": "regenerate", "sampling": {"ignore_eos": True, "max_tokens": 4}}
        )
        assert answer["usage"]["completion_tokens"] == 4, answer
    finally:
        ws.close()

    exported = user.ok("GET", f"/api/chats/{chat_id}/export")
    assert exported["sampling"] == {}, exported
