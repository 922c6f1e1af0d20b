"""Remote OpenAI-compatible upstreams (backend `openai`), against two real
`corral serve`: the host under test, on the store CORRAL_E2E_STORE names,
and an upstream Corral whose `/v1` serves the test backend `fault` (each
model writes one word per token, so an answer says who wrote it).

The upstream lets each of its users run one generation at a time
(`per_user_generations = 1`): while the host's key has one running there,
the upstream answers the next with 429 and `Retry-After: 2`."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from pathlib import Path

import pytest
import requests
from openai import OpenAI

from corral import (
    Api,
    CorralServer,
    account,
    error_of,
    fingerprint_of,
    free_port,
    make_certificate,
    module_server,
    shown_fingerprint,
    sse_events,
    wait_until,
)
from test_workers import backends_with_fault

# Fast and without randomness.
SHORT = {"max_tokens": 6, "temperature": 0, "seed": 1}


def fault_file(server: CorralServer, name: str, word: str):
    folder = server.data / "models"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.gguf"
    path.write_text(f"GGUF\nword: {word}\n")
    return str(path)


def add_fault_model(server: CorralServer, tech: Api, name: str, word: str, **extra) -> dict:
    body = {"name": name, "backend": "fault", "source": fault_file(server, name, word), "slots": 2}
    body.update(extra)
    return tech.ok("POST", "/api/models", json=body, expect=(202,))


class Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Redirector(Quiet):
    """Answers every POST with a redirect to `target`."""

    target = ""

    def do_POST(self):  # noqa: N802
        self.send_response(307)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()


class Recorder(Quiet):
    """Records the Authorization header of every request and answers 500."""

    seen: list = []

    def do_POST(self):  # noqa: N802
        Recorder.seen.append(self.headers.get("Authorization"))
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()


class Runaway(Quiet):
    """A hostile upstream: streams far past `max_tokens`, then claims a
    huge usage."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        part = b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'
        usage = b'data: {"choices":[],"usage":{"prompt_tokens":1000000000,"completion_tokens":1000000000}}\n\n'
        try:
            self.wfile.write(part * 5000 + usage + b"data: [DONE]\n\n")
        except OSError:
            pass


class Unmetered(Quiet):
    """An upstream that never reports usage: streams two parts, then keeps
    the connection open without a word until the client leaves."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            self.wfile.write(b'data: {"choices":[{"delta":{"content":"a b"}}]}\n\n' * 2)
            self.wfile.flush()
            time.sleep(20)
        except OSError:
            pass


def serve(handler) -> tuple[http.server.ThreadingHTTPServer, int]:
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


@pytest.fixture(scope="module")
def far(corral_bin, demo_model, tmp_path_factory):
    """The upstream: a Corral with the `fault` backend and the demo model
    with a context of 1024 tokens, its own technician and `svc`, the
    account whose API key the host uses."""
    work = tmp_path_factory.mktemp("upstream")
    backends = str(backends_with_fault(corral_bin, work / "backends"))
    config = (
        "access_token_ttl_secs = 7200\nper_user_generations = 1\n"
        f"model_dirs = {json.dumps([str(Path(demo_model).resolve().parent), str(work / 'data' / 'models')])}\n"
    )
    with module_server(corral_bin, work, config, None, backends) as server:
        tech = account(server, "far-tech", "technician")
        add_fault_model(server, tech, "far-words", "far")
        tech.ok(
            "POST",
            "/api/models",
            json={
                "name": "far-gemma",
                "backend": "llama",
                "source": str(Path(demo_model).resolve()),
                "context_length": 1024,
                "slots": 1,
            },
            expect=(202,),
        )
        svc = account(server, "svc", "user")
        key = svc.ok("POST", "/api/me/keys", json={"name": "the host"}, expect=(201,))["key"]
        server.tech, server.svc, server.key = tech, svc, key
        yield server


@pytest.fixture(scope="module")
def sealed(corral_bin, tmp_path_factory):
    """A second upstream Corral that serves HTTPS with a self-signed
    certificate (`.cert`); its model `sealed-words` writes `sealed`."""
    work = tmp_path_factory.mktemp("sealed")
    backends = str(backends_with_fault(corral_bin, work / "backends"))
    cert, key = work / "cert.pem", work / "key.pem"
    make_certificate(cert, key, "corral-sealed")
    config = f"access_token_ttl_secs = 7200\nmodel_dirs = {json.dumps([str(work / 'data' / 'models')])}\n"
    with module_server(corral_bin, work, config, None, backends, tls=(cert, key)) as server:
        tech = account(server, "sealed-tech", "technician")
        add_fault_model(server, tech, "sealed-words", "sealed")
        svc = account(server, "svc", "user")
        server.key = svc.ok("POST", "/api/me/keys", json={"name": "the host"}, expect=(201,))["key"]
        server.cert = cert
        yield server


@pytest.fixture(scope="module")
def traps():
    """A server that redirects to a recorder, and the recorder."""
    recorder, recorder_port = serve(Recorder)
    Redirector.target = f"http://127.0.0.1:{recorder_port}"
    redirector, redirector_port = serve(Redirector)
    yield redirector_port, recorder_port
    redirector.shutdown()
    recorder.shutdown()


@pytest.fixture(scope="module")
def runaway_port():
    server, port = serve(Runaway)
    yield port
    server.shutdown()


@pytest.fixture(scope="module")
def unmetered_port():
    server, port = serve(Unmetered)
    yield port
    server.shutdown()


@pytest.fixture(scope="module")
def dead_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def srv(corral_bin, module_database, tmp_path_factory, far, sealed, traps, dead_port, runaway_port, unmetered_port):
    work = tmp_path_factory.mktemp("host")
    backends = str(backends_with_fault(corral_bin, work / "backends"))
    origins = [far.base, sealed.base] + [f"http://127.0.0.1:{p}" for p in (dead_port, runaway_port, unmetered_port, *traps)]
    config = (
        "access_token_ttl_secs = 7200\nper_user_generations = 8\n"
        f"upstream_allowed_origins = {json.dumps(origins)}\n"
    )
    with module_server(corral_bin, work, config, module_database, backends) as server:
        yield server


@pytest.fixture(scope="module")
def tech(srv) -> Api:
    return account(srv, "tech", "technician")


@pytest.fixture(scope="module")
def user(srv, tech) -> Api:
    return account(srv, "ada", "user")


@pytest.fixture(scope="module")
def ai(srv, user) -> OpenAI:
    key = user.ok("POST", "/api/me/keys", json={"name": "upstreams e2e"}, expect=(201,))["key"]
    return OpenAI(base_url=srv.base + "/v1", api_key=key, timeout=60, max_retries=0)


@pytest.fixture(scope="module")
def near(srv, tech) -> dict:
    """A local model of the host, the fallback."""
    return add_fault_model(srv, tech, "near-words", "near")


def add_remote(tech: Api, far: CorralServer, name: str, **extra) -> dict:
    body = {
        "name": name,
        "backend": "openai",
        "source": far.base + "/v1",
        "api_key": far.key,
        "upstream_model": "far-words",
    }
    body.update(extra)
    return tech.ok("POST", "/api/models", json=body, expect=(202,))


@pytest.fixture(scope="module")
def remote(tech, far, near) -> dict:
    return add_remote(tech, far, "remote", fallbacks=["near-words"])


def chat_calls(far: CorralServer) -> int:
    """Requests the upstream has had at `/v1/chat/completions`, whatever
    their answer."""
    text = far.tech.get("/metrics").text
    pattern = r'^corral_http_requests_total\{method="POST",route="/v1/chat/completions",status="\w+"\} (\d+)$'
    return sum(int(n) for n in re.findall(pattern, text, re.M))


def usage_of(api: Api, model: str) -> dict:
    rows = [m for m in api.ok("GET", "/api/me/stats")["models"] if m["model"] == model]
    return rows[0] if rows else {"generations": 0, "completion_tokens": 0}


class Busy:
    """Keeps one generation of `svc` running on the upstream, so that the
    upstream answers the host's next call with 429."""

    def __init__(self, far: CorralServer):
        self.far = far
        self.response = None

    def __enter__(self):
        self.response = requests.post(
            self.far.base + "/v1/completions",
            headers={"Authorization": f"Bearer {self.far.key}"},
            json={"model": "far-words", "prompt": "go", "max_tokens": 3000, "stream": True},
            stream=True,
            timeout=(5, 60),
        )
        assert self.response.status_code == 200, self.response.text
        # The generation runs once its first word arrives. The line iterator
        # is kept: dropping it half-read closes the connection (urllib3 closes
        # a chunked body left mid-read), and the upstream would then cancel
        # the generation that keeps it busy.
        self.lines = self.response.iter_lines()
        while b'"text":"far' not in next(self.lines):
            pass
        return self

    def __exit__(self, *exc):
        self.response.close()
        # The upstream notices the closed stream and frees the slot.
        def free():
            r = requests.post(
                self.far.base + "/v1/completions",
                headers={"Authorization": f"Bearer {self.far.key}"},
                json={"model": "far-words", "prompt": "x", "max_tokens": 1},
                timeout=10,
            )
            return r.status_code == 200

        wait_until(free, 10, "the upstream's slot is free again", every=0.1)


def chat(user: Api, model: str, content: str = "Hello") -> tuple[str, dict, str]:
    """(end event, its data, the text streamed) of a chat answer."""
    created = user.ok("POST", "/api/chats", json={"model": model}, expect=(201,))
    r = user.session.post(
        f"{user.base}/api/chats/{created['id']}/stream",
        json={"content": content, "sampling": SHORT},
        stream=True,
        timeout=(5, 60),
    )
    assert r.status_code == 200, r.text
    text, end = "", ("", {})
    for name, data in sse_events(r):
        if name == "delta":
            text += data.get("text") or ""
        if name in ("done", "error"):
            end = (name, data)
            break
    r.close()
    return end[0], end[1], text


def test_a_remote_model_answers_chat_and_v1_and_is_counted_like_a_local_one(
    srv, far, tech, user, ai, remote
):
    assert remote["status"] == "ready" and remote["usable"], remote
    assert remote["api_key_set"] is True and remote["upstream_model"] == "far-words", remote
    far_before = usage_of(far.svc, "far-words")
    before = usage_of(user, "remote")

    # The OpenAI client, streamed and not.
    stream = ai.chat.completions.create(
        model="remote", messages=[{"role": "user", "content": "Hi"}], stream=True, **SHORT
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == "far " * 6
    whole = ai.completions.create(model="remote", prompt="Once", **SHORT)
    assert whole.choices[0].text == "far " * 6
    assert whole.usage.completion_tokens == 6

    # A chat: the answer is stored under the model asked for.
    end, data, text = chat(user, "remote")
    assert end == "done", data
    assert text == "far " * 6 and data["message"]["content"] == text
    assert data["message"]["model"] == "remote" and data["message"]["status"] == "complete"

    after = usage_of(user, "remote")
    assert after["generations"] == before["generations"] + 3, after
    assert after["completion_tokens"] == before["completion_tokens"] + 18, after
    # The upstream counted the same work against the host's key.
    far_after = usage_of(far.svc, "far-words")
    assert far_after["completion_tokens"] == far_before["completion_tokens"] + 18, far_after


def test_the_api_key_is_never_shown_again(srv, far, tech, user, remote):
    texts = [
        tech.get(f"/api/models/{remote['id']}").text,
        tech.get("/api/models").text,
        user.get("/api/models").text,
        tech.get("/api/audit").text,
    ]
    for text in texts:
        assert far.key not in text
    seen_by_user = [m for m in user.ok("GET", "/api/models")["items"] if m["name"] == "remote"][0]
    for hidden in ("source", "api_key_set", "upstream_model", "fallbacks", "replicas", "cooldown"):
        assert hidden not in seen_by_user, seen_by_user


def test_a_429_cools_the_upstream_down_and_the_fallback_answers(srv, far, tech, user, ai, remote):
    before_near = usage_of(user, "near-words")
    before_remote = usage_of(user, "remote")
    with Busy(far):
        calls = chat_calls(far)
        answer = ai.chat.completions.create(
            model="remote", messages=[{"role": "user", "content": "Hi"}], **SHORT
        )
        assert answer.choices[0].message.content == "near " * 6
        assert chat_calls(far) == calls + 1, "one call, answered with 429"
        view = tech.ok("GET", f"/api/models/{remote['id']}")
        cooldown = view["cooldown"]
        assert 1 <= cooldown["seconds_left"] <= 2 and "429" in cooldown["reason"], view
        # While it cools down (2 s), the host does not call the upstream:
        # the fallback answers at once.
        end, data, text = chat(user, "remote")
        assert end == "done" and text == "near " * 6, data
        assert data["message"]["model"] == "near-words", data["message"]
        assert chat_calls(far) == calls + 1, "the upstream was called while it cooled down"

    # What was delivered is what is counted, under the model that did it.
    after_near = usage_of(user, "near-words")
    assert after_near["generations"] == before_near["generations"] + 2, after_near
    assert after_near["completion_tokens"] == before_near["completion_tokens"] + 12, after_near
    assert usage_of(user, "remote")["completion_tokens"] == before_remote["completion_tokens"]

    # After the Retry-After, the upstream answers again.
    def back():
        view = tech.ok("GET", f"/api/models/{remote['id']}")
        return "cooldown" not in view

    wait_until(back, 5, "the cooldown ends")
    answer = ai.chat.completions.create(
        model="remote", messages=[{"role": "user", "content": "Hi"}], **SHORT
    )
    assert answer.choices[0].message.content == "far " * 6


def test_without_a_fallback_a_429_and_the_cooldown_are_clear_errors(srv, far, tech, user, ai):
    alone = add_remote(tech, far, "remote-alone")
    with Busy(far):
        r = user.post(
            "/v1/chat/completions",
            json={"model": "remote-alone", "messages": [{"role": "user", "content": "Hi"}], **SHORT},
        )
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "upstream_rate_limited", r.text
        started = time.monotonic()
        r = user.post(
            "/v1/chat/completions",
            json={"model": "remote-alone", "messages": [{"role": "user", "content": "Hi"}], **SHORT},
        )
        took = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "upstream_cooling_down", r.text
        assert r.headers["Retry-After"] in ("1", "2"), r.headers
        assert took < 1.0, f"a cooling model is refused at once, not after {took:.2f} s"
    srv.check_alive()
    tech.ok("DELETE", f"/api/models/{alone['id']}", expect=(204,))


def test_a_fallback_the_user_may_not_use_is_passed_over(srv, far, tech, user, ai):
    hidden = add_fault_model(
        srv, tech, "staff-words", "staff", access={"everyone": False, "roles": ["technician"], "users": []}
    )
    guarded = add_remote(tech, far, "remote-guarded", fallbacks=["staff-words"])
    with Busy(far):
        r = user.post(
            "/v1/chat/completions",
            json={"model": "remote-guarded", "messages": [{"role": "user", "content": "Hi"}], **SHORT},
        )
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "upstream_rate_limited", r.text
    assert "staff" not in r.text
    for model in (guarded, hidden):
        tech.ok("DELETE", f"/api/models/{model['id']}", expect=(204,))


def test_a_dead_upstream_fails_clearly_then_cools_down(srv, tech, user, dead_port, near):
    dead = tech.ok(
        "POST",
        "/api/models",
        json={"name": "remote-dead", "backend": "openai", "source": f"http://127.0.0.1:{dead_port}/v1"},
        expect=(202,),
    )
    body = {"model": "remote-dead", "messages": [{"role": "user", "content": "Hi"}], **SHORT}
    for _ in range(3):
        r = user.post("/v1/chat/completions", json=body)
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "upstream_unavailable" and "cannot be reached" in error["message"], error
        assert "127.0.0.1" not in error["message"], "the upstream's address is the server's business"
    view = tech.ok("GET", f"/api/models/{dead['id']}")
    assert "3 failures in a row" in view["cooldown"]["reason"], view
    r = user.post("/v1/chat/completions", json=body)
    assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_cooling_down", r.text
    # A fallback added now answers at once.
    tech.ok("PATCH", f"/api/models/{dead['id']}", json={"fallbacks": ["near-words"]})
    r = user.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "near " * 6
    srv.check_alive()
    tech.ok("DELETE", f"/api/models/{dead['id']}", expect=(204,))


def test_upstream_addresses_are_guarded(srv, far, tech, dead_port):
    def refused(source: str, field: str = "source", **extra):
        body = {"name": "bad-remote", "backend": "openai", "source": source, **extra}
        r = tech.post("/api/models", json=body)
        assert r.status_code == 422, f"{source}: {r.status_code} {r.text}"
        fields = [d["field"] for d in error_of(r)["details"]]
        assert fields == [field], f"{source}: {r.text}"
        return r

    # Not listed in `upstream_allowed_origins`: loopback, link-local
    # (cloud metadata), another port of an allowed host.
    assert "loopback" in refused("http://127.0.0.1:9/v1").text
    assert "link-local" in refused("http://169.254.169.254/latest").text
    refused("http://[::1]:8080/v1")
    refused(f"http://127.0.0.1:{far.port + 1 if far.port + 1 != dead_port else far.port + 2}/v1")
    # Not a base URL.
    refused("file:///etc/passwd")
    refused(f"http://user:pw@127.0.0.1:{far.port}/v1")
    refused(f"{far.base}/v1?x=1")
    refused("/srv/models/x.gguf")
    # A key that would break the header.
    refused(far.base + "/v1", field="api_key", api_key="sk-1\r\nX-Evil: 1")
    # Fields of remote models on a file model, and the other way round.
    r = tech.post(
        "/api/models",
        json={"name": "bad-local", "backend": "fault", "source": "/nowhere.gguf", "api_key": "k"},
    )
    assert r.status_code == 422 and "api_key" in r.text, r.text
    refused(far.base + "/v1", field="fallbacks", fallbacks=["no-such-model"])
    refused(far.base + "/v1", field="fallbacks", fallbacks=["bad-remote"])
    assert tech.get("/api/models").text.count("bad-remote") == 0
    srv.check_alive()


def test_roles_around_remote_models(srv, far, user):
    admin = account(srv, "root", "admin")
    body = {"name": "by-admin", "backend": "openai", "source": far.base + "/v1", "api_key": "k"}
    for caller in (admin, user):
        r = caller.post("/api/models", json=body)
        assert r.status_code == 403 and error_of(r)["code"] == "forbidden", r.text


def test_a_key_does_not_follow_a_moved_base_url_or_a_redirect(srv, far, tech, user, traps):
    redirector, recorder = traps
    moved = add_remote(tech, far, "remote-moved")
    # Pointing the model elsewhere without the key again is refused: the
    # key was given for the first server only.
    r = tech.patch(
        f"/api/models/{moved['id']}", json={"source": f"http://127.0.0.1:{redirector}/v1"}
    )
    assert r.status_code == 422 and [d["field"] for d in error_of(r)["details"]] == ["api_key"], r.text
    # The same server under another path keeps it.
    tech.ok("PATCH", f"/api/models/{moved['id']}", json={"source": far.base + "/v1/"})
    # With a key of its own, it moves; the upstream redirects to another
    # server, which the key (and the request) never reaches.
    tech.ok(
        "PATCH",
        f"/api/models/{moved['id']}",
        json={"source": f"http://127.0.0.1:{redirector}/v1", "api_key": "sk-for-the-redirector"},
    )
    Recorder.seen.clear()
    r = user.post(
        "/v1/chat/completions",
        json={"model": "remote-moved", "messages": [{"role": "user", "content": "Hi"}], **SHORT},
    )
    assert r.status_code == 503 and "307" in r.json()["error"]["message"], r.text
    assert Recorder.seen == [], "a redirect was followed"
    audit = tech.get("/api/audit").text
    assert "sk-for-the-redirector" not in audit and far.key not in audit
    tech.ok("DELETE", f"/api/models/{moved['id']}", expect=(204,))


def test_an_upstream_with_its_own_certificate_is_trusted_by_its_pinned_fingerprint(srv, sealed, tech, user):
    pin, shown = fingerprint_of(sealed.cert), shown_fingerprint(sealed.cert)
    body = {"name": "sealed", "backend": "openai", "source": sealed.base + "/v1", "api_key": sealed.key,
            "upstream_model": "sealed-words"}

    def refused(field: str, **changes):
        r = tech.post("/api/models", json={**body, **changes})
        assert r.status_code == 422 and field in [d["field"] for d in error_of(r)["details"]], (changes, r.text)

    refused("tls_fingerprint", tls_fingerprint=pin[:-2])
    refused("tls_fingerprint", tls_fingerprint="zz" * 32)
    refused("tls_fingerprint", tls_fingerprint=pin + ":" * 200)
    # A pin on plain HTTP would send the key in the clear.
    refused("tls_fingerprint", tls_fingerprint=pin, source=sealed.base.replace("https://", "http://") + "/v1")
    r = tech.post("/api/models", json={**body, "tls_fingerprint": 5})
    assert r.status_code == 422 and "tls_fingerprint" in r.text, r.text
    # A model file has no upstream to pin.
    r = tech.post("/api/models", json={"name": "sealed-file", "backend": "fault", "tls_fingerprint": pin,
                                       "source": fault_file(srv, "sealed-file", "x")})
    assert r.status_code == 422 and [d["field"] for d in error_of(r)["details"]] == ["tls_fingerprint"], r.text
    names = [m["name"] for m in tech.ok("GET", "/api/models")["items"]]
    assert "sealed" not in names and "sealed-file" not in names, "a refused model was stored"

    def ask() -> requests.Response:
        return user.post("/v1/chat/completions",
                         json={"model": "sealed", "messages": [{"role": "user", "content": "Hi"}], **SHORT})

    # Without a pin the certificate must come from a public authority.
    model = add_remote(tech, sealed, "sealed", upstream_model="sealed-words")
    assert model["tls_fingerprint"] is None
    r = ask()
    assert r.status_code == 503 and "TLS refused its certificate" in r.json()["error"]["message"], r.text
    # Pinning another certificate needs the key again, and is refused by TLS.
    r = tech.patch(f"/api/models/{model['id']}", json={"tls_fingerprint": "AB" * 32})
    assert r.status_code == 422 and [d["field"] for d in error_of(r)["details"]] == ["api_key"], r.text
    tech.ok("PATCH", f"/api/models/{model['id']}", json={"tls_fingerprint": "AB" * 32, "api_key": sealed.key})
    r = ask()
    assert r.status_code == 503 and "not the pinned one" in r.json()["error"]["message"], r.text
    # The right pin (written in lower case, without colons): it answers.
    view = tech.ok("PATCH", f"/api/models/{model['id']}", json={"tls_fingerprint": pin, "api_key": sealed.key})
    assert view["tls_fingerprint"] == shown
    # The same pin written another way is no change, and needs no key; a
    # malformed one is refused for what it is, and nothing changes.
    assert tech.ok("PATCH", f"/api/models/{model['id']}", json={"tls_fingerprint": shown.lower()})[
        "tls_fingerprint"] == shown
    r = tech.patch(f"/api/models/{model['id']}", json={"tls_fingerprint": "zz" * 32})
    assert r.status_code == 422 and [d["field"] for d in error_of(r)["details"]] == ["tls_fingerprint"], r.text
    r = ask()
    assert r.status_code == 200 and "sealed" in r.json()["choices"][0]["message"]["content"], r.text
    end, data, text = chat(user, "sealed")
    assert end == "done" and "sealed" in text, (end, data)
    # Dropping the pin needs the key too; the base URL cannot turn to http
    # while a pin is set.
    r = tech.patch(f"/api/models/{model['id']}", json={"tls_fingerprint": ""})
    assert r.status_code == 422 and [d["field"] for d in error_of(r)["details"]] == ["api_key"], r.text
    r = tech.patch(f"/api/models/{model['id']}", json={
        "source": sealed.base.replace("https://", "http://") + "/v1", "api_key": sealed.key})
    assert r.status_code == 422 and [d["field"] for d in error_of(r)["details"]] == ["tls_fingerprint"], r.text
    assert tech.ok("GET", f"/api/models/{model['id']}")["tls_fingerprint"] == shown
    # The audit log names the pin, never the key.
    audit = tech.get("/api/audit").text
    assert shown in audit and sealed.key not in audit
    tech.ok("DELETE", f"/api/models/{model['id']}", expect=(204,))


def test_a_long_chat_on_a_remote_model_drops_its_oldest_turns_to_fit(srv, far, tech, user):
    # The upstream's model holds 1024 tokens; eight messages of about 160
    # tokens and their answers do not fit, the last few do.
    small = add_remote(tech, far, "remote-1k", upstream_model="far-gemma", context_length=1024)
    created = user.ok("POST", "/api/chats", json={"model": "remote-1k"}, expect=(201,))
    sentence = "The keeper of the lighthouse walked along the shore and counted the boats coming home. "
    for turn in range(8):
        r = user.session.post(
            f"{user.base}/api/chats/{created['id']}/stream",
            json={"content": f"Part {turn}. " + sentence * 9, "sampling": SHORT},
            stream=True,
            timeout=(5, 120),
        )
        assert r.status_code == 200, r.text
        end = [(n, d) for n, d in sse_events(r) if n in ("done", "error")]
        r.close()
        assert end and end[-1][0] == "done", f"turn {turn}: {end}"
        assert end[-1][1]["message"]["status"] == "complete", end[-1][1]
    tech.ok("DELETE", f"/api/models/{small['id']}", expect=(204,))


def test_an_upstream_cannot_run_on_or_overcharge_the_user(srv, tech, user, runaway_port):
    hostile = tech.ok(
        "POST",
        "/api/models",
        json={"name": "remote-hostile", "backend": "openai", "source": f"http://127.0.0.1:{runaway_port}/v1"},
        expect=(202,),
    )
    r = user.post(
        "/v1/chat/completions",
        json={"model": "remote-hostile", "messages": [{"role": "user", "content": "Hi"}], **SHORT},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    # max_tokens 6 and 16 spare parts, then the stream is cut off.
    assert body["choices"][0]["message"]["content"] == "x" * 22, body
    assert body["choices"][0]["finish_reason"] == "length", body
    # The user is charged for what came, not for what the upstream claims.
    assert body["usage"]["completion_tokens"] == 22, body["usage"]
    assert body["usage"]["prompt_tokens"] < 1000, body["usage"]
    assert usage_of(user, "remote-hostile")["completion_tokens"] == 22
    srv.check_alive()
    tech.ok("DELETE", f"/api/models/{hostile['id']}", expect=(204,))


def test_an_answer_stopped_before_the_upstream_counts_still_charges_the_prompt(srv, tech, user, unmetered_port):
    port = unmetered_port
    model = tech.ok(
        "POST",
        "/api/models",
        json={"name": "remote-unmetered", "backend": "openai", "source": f"http://127.0.0.1:{port}/v1"},
        expect=(202,),
    )
    prompt = "word " * 2000
    r = user.post(
        "/v1/chat/completions",
        json={"model": "remote-unmetered", "messages": [{"role": "user", "content": prompt}],
              "stream": True, **SHORT},
        stream=True,
    )
    assert r.status_code == 200, r.text
    lines = r.iter_lines()
    assert any(b"a b" in line for line in lines), "no text came"
    r.close()  # hangs up before any usage arrived
    deadline = time.monotonic() + 10
    while usage_of(user, "remote-unmetered")["generations"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    usage = usage_of(user, "remote-unmetered")
    # The upstream read the whole prompt: charged as estimated (four
    # bytes a token), not as nothing.
    assert usage["generations"] == 1, usage
    assert usage["prompt_tokens"] >= len(prompt) // 4, usage
    tech.ok("DELETE", f"/api/models/{model['id']}", expect=(204,))


def test_fallbacks_follow_a_renamed_model_and_forget_a_removed_one(srv, far, tech):
    spare = add_fault_model(srv, tech, "spare-words", "spare")
    remote = add_remote(tech, far, "remote-spared", fallbacks=["spare-words", "near-words"])
    tech.ok("PATCH", f"/api/models/{spare['id']}", json={"name": "spare-renamed"})
    assert tech.ok("GET", f"/api/models/{remote['id']}")["fallbacks"] == ["spare-renamed", "near-words"]
    tech.ok("DELETE", f"/api/models/{spare['id']}", expect=(204,))
    assert tech.ok("GET", f"/api/models/{remote['id']}")["fallbacks"] == ["near-words"]
    # The model stays editable: no stale name blocks the next change.
    edited = tech.ok("PATCH", f"/api/models/{remote['id']}", json={"description": "with one fallback"})
    assert edited["description"] == "with one fallback"
    tech.ok("DELETE", f"/api/models/{remote['id']}", expect=(204,))


def chat_turn(user: Api, chat_id: str, content: str, max_tokens: int) -> dict:
    """Sends one turn of a chat and returns the stored answer."""
    r = user.session.post(
        f"{user.base}/api/chats/{chat_id}/stream",
        json={"content": content, "sampling": {"max_tokens": max_tokens}},
        stream=True,
        timeout=(5, 60),
    )
    assert r.status_code == 200, r.text
    end = None
    for name, data in sse_events(r):
        if name in ("done", "error"):
            end = (name, data)
            break
    r.close()
    assert end and end[0] == "done", end
    return end[1]["message"]


def test_replicas_share_a_models_requests_and_a_chat_keeps_to_its_replica(srv, tech, user, ai):
    """A model with a replica sends a request to the replica while its own
    slot is busy, and a chat that the replica answered keeps going there
    once both are free. Answers and usage are the model's, under its name;
    the replica itself may be one the user cannot see."""
    staff_only = {"everyone": False, "roles": ["technician"], "users": []}
    twin = add_fault_model(srv, tech, "pair-b", "pb", slots=1, access=staff_only)
    pair = add_fault_model(srv, tech, "pair-a", "pa", slots=1, replicas=["pair-b"])
    assert tech.ok("GET", f"/api/models/{pair['id']}")["replicas"] == ["pair-b"]
    assert "replicas" not in user.ok("GET", f"/api/models/{pair['id']}")
    before = usage_of(user, "pair-a")["completion_tokens"]
    try:
        # Idle: the model itself answers.
        chat = user.ok("POST", "/api/chats", json={"model": "pair-a"}, expect=(201,))["id"]
        first = chat_turn(user, chat, "hello", 3)
        assert first["content"] == "pa pa pa " and first["model"] in (None, "pair-a"), first

        # Its slot busy (8 s of ticks): the next request goes to the
        # replica at once.
        busy: dict = {}

        def hold():
            busy["answer"] = ai.chat.completions.create(
                model="pair-a", messages=[{"role": "user", "content": "long"}], max_tokens=400)

        holder = threading.Thread(target=hold)
        holder.start()
        wait_until(lambda: any(q["name"] == "pair-a" and q["running"] == 1
                               for q in tech.ok("GET", "/api/status")["queues"]), 10, "pair-a is busy")
        spread = ai.chat.completions.create(model="pair-a", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=4)
        assert spread.choices[0].message.content == "pb pb pb pb ", spread
        assert spread.model == "pair-a", spread.model
        other = user.ok("POST", "/api/chats", json={"model": "pair-a"}, expect=(201,))["id"]
        turn = chat_turn(user, other, "hello", 2)
        assert turn["content"] == "pb pb " and turn["model"] in (None, "pair-a"), turn
        holder.join()
        assert busy["answer"].choices[0].message.content == "pa " * 400

        # Both free again: that chat stays with the replica that holds its
        # history; the first chat with the model itself.
        assert chat_turn(user, other, "and again", 2)["content"] == "pb pb "
        assert chat_turn(user, chat, "and again", 2)["content"] == "pa pa "

        used = usage_of(user, "pair-a")["completion_tokens"] - before
        assert used == 3 + 400 + 4 + 2 + 2 + 2, used
        assert usage_of(user, "pair-b")["completion_tokens"] == 0

        # A replica's rename is followed; its removal forgets it.
        tech.ok("PATCH", f"/api/models/{twin['id']}", json={"name": "pair-b2"})
        assert tech.ok("GET", f"/api/models/{pair['id']}")["replicas"] == ["pair-b2"]
        # Bad lists are refused, and change nothing.
        for replicas, why in ((["pair-a"], "itself"), (["no-such"], "no model"), (["pair-b2", "pair-b2"], "twice")):
            r = tech.patch(f"/api/models/{pair['id']}", json={"replicas": replicas})
            assert r.status_code == 422 and error_of(r)["details"][0]["field"] == "replicas", r.text
            assert why in r.text, r.text
        r = tech.patch(f"/api/models/{pair['id']}", json={"fallbacks": ["pair-b2"]})
        assert r.status_code == 422 and "either a replica or a fallback" in r.text, r.text
        assert tech.ok("GET", f"/api/models/{pair['id']}")["replicas"] == ["pair-b2"]
        tech.ok("DELETE", f"/api/models/{twin['id']}", expect=(204,))
        assert tech.ok("GET", f"/api/models/{pair['id']}")["replicas"] == []
    finally:
        tech.delete(f"/api/models/{pair['id']}")
        tech.delete(f"/api/models/{twin['id']}")


def test_an_answer_cut_off_upstream_keeps_its_text_and_is_not_retried(srv, far, tech, user, remote):
    near_before = usage_of(user, "near-words")
    created = user.ok("POST", "/api/chats", json={"model": "remote"}, expect=(201,))
    r = user.session.post(
        f"{user.base}/api/chats/{created['id']}/stream",
        json={"content": "Go on", "sampling": {"max_tokens": 3000}},
        stream=True,
        timeout=(5, 60),
    )
    assert r.status_code == 200, r.text
    text, end, killed = "", None, False
    for name, data in sse_events(r):
        if name == "delta":
            text += data.get("text") or ""
            # Deltas may carry several words at once.
            if not killed and text.count("far") >= 5:
                far.proc.kill()
                killed = True
        if name in ("done", "error"):
            end = (name, data)
            break
    r.close()
    try:
        assert end and end[0] == "error", end
        assert end[1]["error"]["code"] == "upstream_unavailable", end[1]
        message = end[1]["message"]
        assert message["content"] == text and text.startswith("far " * 5), message
        assert message["status"] == "interrupted", message
        assert "near" not in text, "a fallback took over after the first token"
        assert usage_of(user, "near-words") == near_before
        srv.check_alive()
    finally:
        far.start(backends_dir=str(far.work / "backends"))
