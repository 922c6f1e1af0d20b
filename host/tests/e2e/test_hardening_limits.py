"""Limits against a real `corral serve`: the daily token allowance cannot be
dodged (hanging up early, embeddings, a huge `max_tokens`), slow or idle
connections cannot hold the server, one account cannot pile up records,
and every answer carries the browser's security headers.

Each test starts its own server with small limits, so nothing here depends
on the session's server or leaks into it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
import websocket

from corral import TIMEOUT, Api, CorralServer, account, closed_by_server, sse_events, wait_until

DEMO_NAME = "gemma-3-270m"
# Long enough that no answer ends by itself within a test.
LONG = {"max_tokens": 1000, "ignore_eos": True, "temperature": 0}

# Seconds a connection may take to send its headers on the strict server.
HEADER_TIMEOUT = 2
# Seconds an ordinary request may take on the strict server.
REQUEST_TIMEOUT = 2


def lacking(reason: str):
    """Fails the test for want of `reason`, or with CORRAL_ALLOW_SKIP=1
    reports it skipped."""
    if os.environ.get("CORRAL_ALLOW_SKIP") == "1":
        pytest.skip(reason)
    pytest.fail(f"{reason} (set CORRAL_ALLOW_SKIP=1 to report this test skipped instead)")


def embed_model_dir() -> str | None:
    path = os.environ.get("CORRAL_EMBED_MODEL_DIR")
    return os.path.abspath(path) if path else None


@pytest.fixture(scope="module")
def limited(corral_bin, demo_model, tmp_path_factory):
    """A server with the demo model (and the embedding model when
    CORRAL_EMBED_MODEL_DIR names it) and small per-account caps."""
    work = tmp_path_factory.mktemp("limited")
    config = [
        f"demo_model = {json.dumps(demo_model)}",
        "access_token_ttl_secs = 7200",
        "max_chats_per_user = 3",
        "max_open_tickets_per_user = 2",
        "max_api_keys_per_user = 2",
        'trusted_proxies = ["127.0.0.1"]',
    ]
    embed = embed_model_dir()
    if embed:
        config.append(f"model_dirs = [{json.dumps(str(Path(embed).parent))}]")
    srv = CorralServer(corral_bin, work, "\n".join(config) + "\n")
    srv.start(backends_dir=os.environ.get("CORRAL_BACKENDS_DIR") or None)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def staff(limited) -> Api:
    return Api.login(limited, "boss", limited.create_account("boss", "admin"))


@pytest.fixture(scope="module")
def technician(limited) -> Api:
    return Api.login(limited, "tech", limited.create_account("tech", "technician"))


@pytest.fixture(scope="module")
def demo(limited, technician) -> dict:
    """The demo model, registered at start, once it is ready."""

    def ready():
        models = technician.ok("GET", "/api/models")
        items = models["items"] if isinstance(models, dict) else models
        found = [m for m in items if m["name"] == DEMO_NAME]
        return found and found[0]["status"] == "ready" and found[0]

    return wait_until(ready, 120, "the demo model is ready")


def new_user(server: CorralServer, name: str) -> Api:
    return Api.login(server, name, server.create_account(name, "user"))


def set_quota(staff: Api, user: Api, tokens: int):
    me = user.ok("GET", "/api/me")
    quotas = staff.ok("GET", "/api/quotas")
    quotas["users"][me["id"]] = tokens
    staff.ok("PUT", "/api/quotas", json=quotas)


def used(user: Api) -> int:
    return user.ok("GET", "/api/me/quota")["used"]


def stream_and_hang_up(user: Api, chunks: int) -> int:
    """Streams a long completion, reads `chunks` text chunks and closes the
    connection; returns how many text chunks it read."""
    r = user.post(
        "/v1/completions",
        json={"model": DEMO_NAME, "prompt": "Once upon a time", "stream": True, **LONG},
        stream=True,
    )
    assert r.status_code == 200, r.text
    seen = 0
    try:
        for _, data in sse_events(r):
            if isinstance(data, dict) and data.get("choices") and data["choices"][0].get("text"):
                seen += 1
                if seen >= chunks:
                    break
    finally:
        r.close()
    return seen


def test_hanging_up_early_still_counts_until_the_quota_is_spent(limited, staff, demo):
    user = new_user(limited, "early-leaver")
    set_quota(staff, user, 300)
    assert used(user) == 0

    seen = stream_and_hang_up(user, 5)
    assert seen == 5
    # Recorded once the stopped generation ends, whoever reads it.
    first = wait_until(lambda: used(user), 30, "the abandoned stream's usage is counted")
    assert first >= seen, first
    # It was stopped, not run to its 1000 tokens.
    assert first < 300, first
    stats = user.ok("GET", "/api/me/stats")
    counted = [m for m in stats["models"] if m["model"] == DEMO_NAME]
    assert counted and counted[0]["completion_tokens"] >= seen, stats["models"]

    # Hanging up again and again spends the allowance all the same.
    for _ in range(20):
        # Read before the request: a capped answer may be over and counted
        # before a read made after it starts.
        before = used(user)
        r = user.post(
            "/v1/completions",
            json={"model": DEMO_NAME, "prompt": "Once upon a time", "stream": True, **LONG},
            stream=True,
        )
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "quota_exceeded", r.text
            break
        assert r.status_code == 200, r.text
        for i, _ in enumerate(sse_events(r)):
            if i >= 60:
                break
        r.close()
        wait_until(lambda: used(user) > before, 30, "each abandoned stream is counted")
    else:
        pytest.fail(f"the quota of 300 tokens was never exhausted: {used(user)} used")
    assert used(user) >= 300


def running_on(technician: Api, model_id: str) -> int:
    queues = technician.ok("GET", "/api/status")["queues"]
    return sum(q["running"] for q in queues if q["model_id"] == model_id)


def test_a_request_abandoned_before_its_answer_still_counts(limited, staff, technician, demo):
    user = new_user(limited, "impatient")
    set_quota(staff, user, 100_000)
    # Loaded, so that a running request is one that generates.
    user.ok("POST", "/v1/completions", json={"model": DEMO_NAME, "prompt": "Hi", "max_tokens": 1})
    assert used(user) > 0
    before = used(user)
    body = json.dumps({"model": DEMO_NAME, "prompt": "Once upon a time", **LONG}).encode()
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as s:
        s.sendall(
            (
                "POST /v1/completions HTTP/1.1\r\nHost: corral\r\n"
                f"Authorization: Bearer {user.token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        wait_until(lambda: running_on(technician, demo["id"]), 30, "the request runs")
        time.sleep(1)
    # Hung up: the generation stops and what it wrote counts.
    wait_until(lambda: running_on(technician, demo["id"]) == 0, 30, "the generation stops")
    spent = wait_until(lambda: used(user) - before, 30, "the abandoned request's usage is counted")
    assert 0 < spent < 1000, spent


def queue_of(technician: Api, model_id: str) -> tuple[int, int]:
    queues = technician.ok("GET", "/api/status")["queues"]
    found = [(q["running"], q["waiting"]) for q in queues if q["model_id"] == model_id]
    return found[0] if found else (0, 0)


def send_and_hang_up(server: CorralServer, token: str, body: dict) -> socket.socket:
    """Sends a request on a raw connection (the caller closes it)."""
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(
        (
            "POST /v1/completions HTTP/1.1\r\nHost: corral\r\n"
            f"Authorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode()
        + data
    )
    return s


def test_requests_abandoned_in_the_queue_leave_it_at_once(limited, technician, demo_model, demo):
    """Behind a running answer, requests whose clients hang up while they
    wait leave the queue at once: they do not hold the user's places until
    their turn comes, and nobody behind them waits for them."""
    created = technician.ok(
        "POST", "/api/models",
        json={"name": "one-slot", "backend": "llama", "source": demo_model, "slots": 1},
        expect=(201, 202),
    )
    model_id = created["id"]
    try:
        wait_until(lambda: technician.ok("GET", f"/api/models/{model_id}")["status"] == "ready", 120,
                   "the one-slot model is ready")
        busy = new_user(limited, "slot-holder")
        leaver = new_user(limited, "queue-leaver")
        long = {"model": "one-slot", "prompt": "Once upon a time", "stream": True, **LONG}
        holder = send_and_hang_up(limited, busy.token, long)
        try:
            wait_until(lambda: queue_of(technician, model_id)[0] == 1, 60, "the first request runs")
            waiting = [send_and_hang_up(limited, leaver.token, long) for _ in range(4)]
            wait_until(lambda: queue_of(technician, model_id)[1] == 4, 10, "four requests wait")
            for s in waiting:
                s.close()
            left_at = time.monotonic()
            wait_until(lambda: queue_of(technician, model_id)[1] == 0, 5, "the abandoned requests leave the queue")
            print(f"queue emptied {time.monotonic() - left_at:.2f} s after the clients hung up")
            assert queue_of(technician, model_id)[0] == 1, "the running answer goes on"
            # The user's places are free again: four more may wait.
            again = [send_and_hang_up(limited, leaver.token, long) for _ in range(4)]
            wait_until(lambda: queue_of(technician, model_id)[1] == 4, 10, "four more requests wait")
            for s in again:
                s.close()
        finally:
            holder.close()
        wait_until(lambda: queue_of(technician, model_id) == (0, 0), 30, "the model is idle")
        # Nothing that never ran was counted.
        assert leaver.ok("GET", "/api/me/quota")["used"] == 0
    finally:
        technician.ok("DELETE", f"/api/models/{model_id}", expect=(200, 204))


def test_max_tokens_is_capped_by_what_is_left(limited, staff, demo):
    user = new_user(limited, "big-asker")
    set_quota(staff, user, 50)
    r = user.post(
        "/v1/completions",
        json={"model": DEMO_NAME, "prompt": "Once upon a time", **LONG},
        timeout=(5, 300),
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["usage"]["completion_tokens"] <= 50, answer["usage"]
    assert answer["choices"][0]["finish_reason"] == "length", answer
    # And the allowance is spent now.
    r = user.post("/v1/completions", json={"model": DEMO_NAME, "prompt": "Again", **LONG})
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "quota_exceeded"


def test_a_prompt_longer_than_what_is_left_is_refused(limited, staff, demo):
    """With little left, a long prompt is refused before it is read: it
    would pass the allowance by its own length, whatever `max_tokens` says."""
    user = new_user(limited, "long-winded")
    set_quota(staff, user, 50)
    story = "The lighthouse keeper counted the ships that passed each night. " * 30
    r = user.post(
        "/v1/completions",
        json={"model": DEMO_NAME, "prompt": story, "max_tokens": 1},
        timeout=(5, 300),
    )
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["code"] == "quota_exceeded" and "does not fit" in error["message"], error
    assert used(user) == 0
    # A short one still fits, capped at what is left after it.
    r = user.post(
        "/v1/completions",
        json={"model": DEMO_NAME, "prompt": "Once upon a time", **LONG},
        timeout=(5, 300),
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 50 - 2, r.json()["usage"]


def test_requests_sent_side_by_side_cannot_spend_one_allowance_twice(limited, staff, demo):
    """Four requests at once (two on /v1, two chat answers) with 300 tokens
    left: the first admitted holds the allowance until it is counted, so
    the others are refused instead of each spending the same 300."""
    user = new_user(limited, "side-by-side")
    set_quota(staff, user, 300)
    chats = [user.ok("POST", "/api/chats", json={"model": DEMO_NAME}, expect=(201,))["id"] for _ in range(2)]
    answers: list[tuple[int, dict]] = []
    gate = threading.Barrier(4)

    def completion():
        gate.wait()
        r = user.post("/v1/completions", json={"model": DEMO_NAME, "prompt": "Once upon a time", **LONG},
                      timeout=(5, 300))
        answers.append((r.status_code, r.json()))

    def chat_answer(chat_id: str):
        gate.wait()
        status, end = long_chat_answer(user, chat_id)
        if status != 200:
            answers.append((status, end))
            return
        assert end["type"] == "done", end
        answers.append((200, {"usage": end["message"]["usage"]}))

    threads = [threading.Thread(target=completion) for _ in range(2)]
    threads += [threading.Thread(target=chat_answer, args=(c,)) for c in chats]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(status for status, _ in answers) == [200, 429, 429, 429], answers
    for status, body in answers:
        if status == 429:
            # OpenAI's shape on /v1, Corral's on the chat.
            error = body.get("error", body)
            assert error["code"] == "quota_exceeded", body
            assert "held by generations still under way" in error["message"], body
    (usage,) = [body["usage"] for status, body in answers if status == 200]
    assert usage["completion_tokens"] <= 300, usage
    assert used(user) == usage["prompt_tokens"] + usage["completion_tokens"]


def long_chat_answer(user: Api, chat_id: str) -> tuple[int, dict]:
    """Asks the chat for a long story: the HTTP status, and the error body
    or the stream's `done` or `error` event."""
    r = user.post(
        f"/api/chats/{chat_id}/stream",
        json={"content": "Tell me a long story.", "sampling": LONG},
        stream=True,
        timeout=(5, 300),
    )
    if r.status_code != 200:
        return r.status_code, r.json()
    end: dict = {}
    for _, data in sse_events(r):
        if isinstance(data, dict) and data.get("type") in ("done", "error"):
            end = data
            break
    r.close()
    assert end, "the stream ended without done or error"
    return 200, end


def test_a_long_chat_is_judged_by_what_it_surely_keeps(limited, staff, demo):
    """A chat's history may be cut to fit the model's context, so a long
    one is not refused for its length: only the message answered (and the
    system prompt) surely stay. A long message is refused."""
    user = new_user(limited, "storyteller")
    chat = user.ok("POST", "/api/chats", json={"model": DEMO_NAME}, expect=(201,))
    for n in range(3):
        note = f"Chapter {n}. " + "The tide came in over the sand. " * 200
        user.ok("POST", f"/api/chats/{chat['id']}/messages", json={"content": note}, expect=(201,))
    # The history alone is more than 2,000 tokens at eight bytes a token.
    set_quota(staff, user, 1500)
    status, done = long_chat_answer(user, chat["id"])
    assert status == 200 and done["type"] == "done", (status, done)
    set_quota(staff, user, used(user) + 1500)
    r = user.post(
        f"/api/chats/{chat['id']}/stream",
        json={"content": "And then? " * 1300, "sampling": LONG},
        timeout=(5, 300),
    )
    assert r.status_code == 429, r.text
    assert "does not fit" in r.json()["message"], r.text


def test_a_chat_answer_is_capped_by_what_is_left(limited, staff, demo):
    user = new_user(limited, "chatter")
    set_quota(staff, user, 40)
    chat = user.ok("POST", "/api/chats", json={"model": DEMO_NAME}, expect=(201,))
    status, done = long_chat_answer(user, chat["id"])
    assert status == 200 and done["type"] == "done", (status, done)
    assert done["message"]["usage"]["completion_tokens"] <= 40, done["message"]["usage"]


@pytest.fixture(scope="module")
def embedder(limited, technician) -> str:
    embed = embed_model_dir()
    if not embed:
        lacking(
            "CORRAL_EMBED_MODEL_DIR is not set: export "
            'CORRAL_EMBED_MODEL_DIR="$(scripts/fetch-embed-model.sh | tail -1)"'
        )
    created = technician.ok(
        "POST",
        "/api/models",
        json={"name": "minilm", "backend": "candle", "kind": "embedding", "source": embed},
        expect=(201, 202),
    )
    wait_until(
        lambda: technician.ok("GET", f"/api/models/{created['id']}")["status"] == "ready",
        120,
        "the embedding model is ready",
    )
    return "minilm"


def test_embeddings_count_against_the_quota(limited, staff, embedder):
    user = new_user(limited, "embedder")
    set_quota(staff, user, 30)
    text = "The quick brown fox jumps over the lazy dog near the quiet river bank."
    r = user.post("/v1/embeddings", json={"model": embedder, "input": text})
    assert r.status_code == 200, r.text
    tokens = r.json()["usage"]["prompt_tokens"]
    assert 10 < tokens < 30, tokens
    assert used(user) == tokens
    # Still under the limit: allowed, and counted.
    r = user.post("/v1/embeddings", json={"model": embedder, "input": text})
    assert r.status_code == 200, r.text
    assert used(user) == 2 * tokens
    r = user.post("/v1/embeddings", json={"model": embedder, "input": text})
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "quota_exceeded"


def test_one_account_cannot_pile_up_records(limited):
    user = new_user(limited, "hoarder")
    for i in range(3):
        user.ok("POST", "/api/chats", json={"model": DEMO_NAME, "title": f"c{i}"}, expect=(201,))
    r = user.post("/api/chats", json={"model": DEMO_NAME})
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "limit_reached"

    ticket = {"subject": "Help me", "body": "Something is off.", "category": "question"}
    for _ in range(2):
        user.ok("POST", "/api/tickets", json=ticket, expect=(201,))
    r = user.post("/api/tickets", json=ticket)
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "limit_reached"

    for i in range(2):
        user.ok("POST", "/api/me/keys", json={"name": f"k{i}"}, expect=(201,))
    r = user.post("/api/me/keys", json={"name": "one too many"})
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "limit_reached"
    # Deleting a chat makes room again.
    chats = user.ok("GET", "/api/chats")["items"]
    user.ok("DELETE", f"/api/chats/{chats[0]['id']}")
    user.ok("POST", "/api/chats", json={"model": DEMO_NAME}, expect=(201,))


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def assert_security_headers(headers, what: str):
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, f"{what}: {name} is {headers.get(name)!r}"
    csp = headers.get("content-security-policy", "")
    directives = {d.strip().split(" ")[0]: d.strip() for d in csp.split(";") if d.strip()}
    assert directives.get("default-src") == "default-src 'self'", f"{what}: {csp!r}"
    assert directives.get("frame-ancestors") == "frame-ancestors 'none'", f"{what}: {csp!r}"
    assert directives.get("object-src") == "object-src 'none'", f"{what}: {csp!r}"
    assert directives.get("base-uri") == "base-uri 'self'", f"{what}: {csp!r}"
    assert "unsafe-inline" not in directives.get("script-src", ""), f"{what}: {csp!r}"
    assert "unsafe-eval" not in csp, f"{what}: {csp!r}"


def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, dict]:
    """Sends one request over a fresh connection (the body from a thread of
    its own, as the answer may come before the server read all of it);
    returns the status and the headers (lower-case names) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode())

        def send_body():
            try:
                s.sendall(body)
            except OSError:
                pass

        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    sender.join(timeout=10)
    lines = data.split(b"\r\n\r\n")[0].decode().split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def test_security_headers_on_answers_errors_and_docs(limited):
    base = limited.base
    r = requests.get(base + "/healthz", timeout=TIMEOUT)
    assert r.status_code == 200
    assert_security_headers(r.headers, "/healthz")
    assert "strict-transport-security" not in r.headers

    r = requests.get(base + "/api/no/such/route", timeout=TIMEOUT)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert_security_headers(r.headers, "404")

    r = requests.get(base + "/api/me", timeout=TIMEOUT)
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    assert_security_headers(r.headers, "401")

    # Larger than max_body_bytes (1 MiB).
    body = b'{"username": "' + b"x" * 2_000_000 + b'"}'
    status, headers = raw_request(
        limited.port,
        "POST /api/auth/login HTTP/1.1\r\nHost: corral\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n",
        body,
    )
    assert status == 413
    assert_security_headers(headers, "413")

    r = requests.get(base + "/docs/", timeout=TIMEOUT)
    assert r.status_code == 200 and "swagger-ui" in r.text
    assert_security_headers(r.headers, "/docs/")
    # Swagger UI's page has no inline script: every script it runs comes
    # from Corral, as `script-src 'self'` demands.
    assert "<script>" not in r.text.replace(" ", "")
    for asset in ("swagger-ui-bundle.js", "swagger-initializer.js", "swagger-ui.css"):
        a = requests.get(base + "/docs/" + asset, timeout=TIMEOUT)
        assert a.status_code == 200, asset
        assert_security_headers(a.headers, asset)
    init = requests.get(base + "/docs/swagger-initializer.js", timeout=TIMEOUT).text
    assert '"/openapi.json"' in init and '"validatorUrl": "none"' in init, init


def test_hsts_only_when_a_trusted_proxy_says_https(limited, corral_bin, tmp_path):
    r = requests.get(
        limited.base + "/healthz", headers={"X-Forwarded-Proto": "https"}, timeout=TIMEOUT
    )
    # Two years, for the host name alone: Corral does not speak for other
    # services on its subdomains.
    assert r.headers.get("strict-transport-security") == "max-age=63072000", r.headers

    # A server that trusts no proxy ignores the header: a client cannot pin
    # HTTPS on a host that serves plain HTTP.
    untrusting = CorralServer(corral_bin, tmp_path, "")
    untrusting.start()
    try:
        r = requests.get(
            untrusting.base + "/healthz", headers={"X-Forwarded-Proto": "https"}, timeout=TIMEOUT
        )
        assert r.status_code == 200
        assert "strict-transport-security" not in r.headers
        # Most likely a TLS proxy left out of `trusted_proxies`: the log
        # says so, once.
        requests.get(untrusting.base + "/healthz", headers={"X-Forwarded-Proto": "https"}, timeout=TIMEOUT)
        log = untrusting.log_tail(400)
        assert log.count("not in `trusted_proxies`") == 1, log
    finally:
        untrusting.stop()


@pytest.fixture(scope="module")
def strict(corral_bin, tmp_path_factory):
    """A server with short connection timeouts and room for few connections."""
    work = tmp_path_factory.mktemp("strict")
    srv = CorralServer(
        corral_bin,
        work,
        f"header_read_timeout_secs = {HEADER_TIMEOUT}\n"
        f"request_timeout_secs = {REQUEST_TIMEOUT}\n"
        "max_connections = 4\n",
    )
    srv.start()
    yield srv
    srv.stop()


def fresh_get(server: CorralServer, path: str = "/healthz", timeout=(5, 20)) -> requests.Response:
    """One request over its own connection."""
    return requests.get(server.base + path, headers={"Connection": "close"}, timeout=timeout)


def test_a_slowloris_connection_is_closed_while_others_are_served(strict):
    s = socket.create_connection(("127.0.0.1", strict.port), timeout=10)
    began = time.monotonic()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: corral\r\n")
    closed = threading.Event()

    def dribble():
        # One header byte every half second, never the end of the headers.
        try:
            while not closed.is_set() and time.monotonic() - began < 15:
                s.sendall(b"X")
                time.sleep(0.5)
        except OSError:
            pass

    sender = threading.Thread(target=dribble, daemon=True)
    sender.start()
    try:
        # Served meanwhile.
        assert fresh_get(strict).status_code == 200
        assert closed_by_server(s, 10), "the slow connection was still open after 10 s"
        closed.set()
        took = time.monotonic() - began
        assert took < HEADER_TIMEOUT + 3, f"closed only after {took:.1f} s"
    finally:
        closed.set()
        s.close()
        sender.join(timeout=5)
    assert fresh_get(strict).status_code == 200


def test_idle_connections_beyond_the_limit_do_not_lock_out_new_clients(strict):
    idle = [socket.create_connection(("127.0.0.1", strict.port), timeout=10) for _ in range(6)]
    try:
        began = time.monotonic()
        # Waits for a place: the idle connections hold all four until the
        # header timeout closes them.
        r = fresh_get(strict, timeout=(5, 20))
        assert r.status_code == 200
        took = time.monotonic() - began
        # Not before an idle connection gave its place back, yet soon after.
        assert HEADER_TIMEOUT / 2 < took < HEADER_TIMEOUT * 4, f"served after {took:.1f} s"
        for s in idle:
            assert closed_by_server(s, HEADER_TIMEOUT * 4), "an idle connection stayed open"
    finally:
        for s in idle:
            s.close()
    strict.check_alive()
    assert fresh_get(strict).status_code == 200


def test_a_long_lived_stream_outlives_the_header_timeout(strict):
    """The header timeout bounds waiting for a request, not an answer that
    streams: an event stream stays open well past it."""
    tech = Api.login(strict, "watcher", strict.create_account("watcher", "technician"))
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as s:
        s.sendall(
            (
                "GET /api/events HTTP/1.1\r\nHost: corral\r\n"
                f"Authorization: Bearer {tech.token}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(65536)
            assert chunk, "closed before the answer's head"
            head += chunk
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        assert not closed_by_server(s, HEADER_TIMEOUT * 3), "the event stream was cut"


def read_answer(s: socket.socket, within: float) -> tuple[bytes, bytes]:
    """Reads one answer's head and its Content-Length body."""
    s.settimeout(within)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


def test_a_slow_request_body_gets_a_timeout(strict):
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as s:
        began = time.monotonic()
        s.sendall(
            b"POST /api/auth/login HTTP/1.1\r\nHost: corral\r\n"
            b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{"
        )
        stop = threading.Event()

        def dribble():
            try:
                while not stop.is_set():
                    s.sendall(b" ")
                    time.sleep(0.5)
            except OSError:
                pass

        sender = threading.Thread(target=dribble, daemon=True)
        sender.start()
        try:
            head, body = read_answer(s, 10)
        finally:
            stop.set()
            sender.join(timeout=5)
        took = time.monotonic() - began
    assert head.startswith(b"HTTP/1.1 503"), head
    assert json.loads(body)["code"] == "timeout", body
    assert took < REQUEST_TIMEOUT + 3, f"answered after {took:.1f} s"
    assert fresh_get(strict).status_code == 200


def test_swagger_ui_renders_under_its_policy(limited, tmp_path):
    """Swagger UI draws the API's operations in a real browser, and the
    browser reports no Content-Security-Policy violation."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        lacking("no Chromium on this machine (Debian package `chromium`)")
    out = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=15000",
            "--dump-dom",
            limited.base + "/docs/",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("opblock-tag") >= 5, out.stdout[:2000]
    violations = [
        line for line in out.stderr.splitlines() if "Content Security Policy" in line
    ]
    assert not violations, violations


def test_websockets_cannot_take_every_connection(strict):
    """Open chat WebSockets hold a connection each for as long as they
    last: all accounts together get half of `max_connections`, and the
    rest stay for everything else."""
    talker = Api.login(strict, "talker", strict.create_account("talker", "user"))
    url = strict.base.replace("http://", "ws://", 1) + "/api/chats/ws"
    header = [f"Authorization: Bearer {talker.token}"]
    held = [websocket.create_connection(url, header=header, timeout=10) for _ in range(2)]
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url, header=header, timeout=10)
        assert refused.value.status_code == 503, refused.value
        assert fresh_get(strict).status_code == 200
    finally:
        for ws in held:
            ws.close()
    wait_until(lambda: _opens(url, header), 10, "a closed socket gave its place back")


def _opens(url: str, header: list[str]) -> bool:
    try:
        websocket.create_connection(url, header=header, timeout=10).close()
        return True
    except websocket.WebSocketBadStatusException:
        return False


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_websocket_client_that_sends_without_reading_is_dropped(limited, staff):
    """Every refused frame queues an error event for the client. One that
    never reads stops being read in turn, and is dropped: what it sends
    costs the server no memory."""
    flooder = account(limited, "flooder", "user")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", limited.port))
    s.sendall(
        (
            "GET /api/chats/ws HTTP/1.1\r\nHost: corral\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {flooder.token}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    before = rss_bytes(limited.proc.pid)
    # Empty masked binary frames: each one refused with an error event.
    frames = b"\x82\x80\x00\x00\x00\x00" * 4096
    s.settimeout(2)
    sent = 0
    dropped = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                sent += s.send(frames)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
    finally:
        s.close()
    grew = rss_bytes(limited.proc.pid) - before
    assert dropped, f"still open after sending {sent} bytes"
    assert grew < 100 * 1024 * 1024, f"the server grew by {grew >> 20} MiB for {sent >> 20} MiB sent"
    limited.check_alive()
    assert requests.get(limited.base + "/healthz", timeout=TIMEOUT).status_code == 200
