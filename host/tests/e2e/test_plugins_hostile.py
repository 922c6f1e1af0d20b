"""Plugins that misbehave (plugins/testing/), against a real
`corral serve` with the demo model. Each one is refused at install or
stopped with a clear reason, counted in its statistics, handled by its
failure policy (`skip`: the answer goes on without it; `fail-closed`:
the request is refused naming it), turned off after five failures in a
row, and the very next request is answered normally.

The fixtures ship with the default policy, `skip`; the tests install
them again under `failure = "fail-closed"` by upgrading them with an
edited manifest (the manifest is a part of the upload of its own).

The module runs its own server, on the store CORRAL_E2E_STORE names."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import pytest
from openai import BadRequestError, OpenAI

from corral import (
    DEMO_NAME,
    Api,
    account,
    calls_of,
    demo_server_config,
    demo_technician,
    error_of,
    module_server,
    plugin_parts,
    sse_events,
    upload_plugin,
    with_manifest_line,
)

# Failures in a row after which the host turns a plugin off.
FAILURE_THRESHOLD = 5
QUESTION = "Name three colours of the rainbow."
ANSWER_TOKENS = 6


@pytest.fixture(scope="module")
def srv(corral_bin, demo_model, module_database, tmp_path_factory):
    work = tmp_path_factory.mktemp("plugins-hostile")
    with module_server(corral_bin, work, demo_server_config(demo_model), module_database) as server:
        yield server


@pytest.fixture(scope="module")
def tech(srv) -> Api:
    return demo_technician(srv)


@pytest.fixture(scope="module")
def user(srv, tech) -> Api:
    return account(srv, "eve", "user")


@pytest.fixture(scope="module")
def ai(srv, user) -> OpenAI:
    key = user.ok("POST", "/api/me/keys", json={"name": "hostile e2e"}, expect=(201,))["key"]
    return OpenAI(base_url=srv.base + "/v1", api_key=key, timeout=180, max_retries=0)


def ask(ai: OpenAI) -> str:
    """A greedy answer to QUESTION over /v1/chat/completions."""
    answer = ai.chat.completions.create(
        model=DEMO_NAME,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=ANSWER_TOKENS,
        temperature=0,
        seed=1,
    )
    assert answer.choices[0].message.content, answer
    return answer.choices[0].message.content


@pytest.fixture(scope="module")
def plain_answer(ai) -> str:
    """The answer with no plugin installed."""
    return ask(ai)


def install(tech: Api, dist, plugin_id: str, manifest: str | None = None) -> dict:
    own, component = plugin_parts(dist, plugin_id)
    r = upload_plugin(tech, "POST", "/api/plugins", manifest or own, component)
    assert r.status_code == 201, f"installing {plugin_id}: {r.status_code} {r.text[:500]}"
    return r.json()


def view(tech: Api, plugin_id: str) -> dict:
    return tech.ok("GET", f"/api/plugins/{plugin_id}")


@pytest.fixture
def cleanup(tech):
    """Deletes the plugins a test installed (by id) when it ends."""
    ids: list[str] = []
    yield ids
    for plugin_id in ids:
        tech.delete(f"/api/plugins/{plugin_id}")


# ---------------------------------------------------------------------------
# Refused at install


def test_a_plugin_for_another_interface_version_is_refused(tech, plugin_dist):
    manifest, component = plugin_parts(plugin_dist, "test-wrong-version")
    r = upload_plugin(tech, "POST", "/api/plugins", manifest, component)
    assert r.status_code == 422, r.text
    err = error_of(r)
    assert err["code"] == "unsupported_api", err
    assert "0.9.0" in err["message"] and "0.1.0" in err["message"], err
    # A manifest that claims the host's version does not get the component
    # past the check: the component itself is built against 0.9.0.
    lying = with_manifest_line(manifest, "api", '"0.1.0"')
    r = upload_plugin(tech, "POST", "/api/plugins", lying, component)
    assert r.status_code == 422, r.text
    err = error_of(r)
    assert err["code"] == "unsupported_api" and "0.9.0" in err["message"], err
    assert tech.get("/api/plugins/test-wrong-version").status_code == 404


def test_a_plugin_that_imports_sockets_is_refused(tech, plugin_dist):
    manifest, component = plugin_parts(plugin_dist, "test-net")
    r = upload_plugin(tech, "POST", "/api/plugins", manifest, component)
    assert r.status_code == 422, r.text
    err = error_of(r)
    assert err["code"] == "refused_import", err
    assert "wasi:sockets/" in err["message"] and "no socket access" in err["message"], err
    assert tech.get("/api/plugins/test-net").status_code == 404


def test_http_without_asking_for_it_is_refused(tech, plugin_dist):
    """A component that imports wasi:http under a manifest that does not
    ask for `http` never installs."""
    manifest, component = plugin_parts(plugin_dist, "test-net-http")
    quiet = manifest.split("[http]")[0]
    quiet = with_manifest_line(quiet, "capabilities", "[]")
    r = upload_plugin(tech, "POST", "/api/plugins", quiet, component)
    assert r.status_code == 422, r.text
    err = error_of(r)
    assert err["code"] == "refused_import", err
    assert "wasi:http/" in err["message"] and "capability `http`" in err["message"], err
    assert tech.get("/api/plugins/test-net-http").status_code == 404


def test_http_goes_only_to_approved_public_hosts(tech, user, ai, plugin_dist, files, tmp_path, cleanup):
    """test-net-http declares example.com, 127.0.0.1:* and localhost:*.
    Requests to hosts a technician did not approve are denied, approved
    ones on private addresses are prohibited (nothing reaches the local
    server), chats are answered as before, and only a technician's
    `private_network` lets a request through."""
    pid = "test-net-http"
    cleanup.append(pid)
    page = tmp_path / "index.html"
    page.write_text("hello from the local network\n")
    files.add("/", str(page))
    local = f"127.0.0.1:{files.port}"
    installed = install(tech, plugin_dist, pid)
    assert installed["capabilities"] == ["http"], installed
    assert installed["http_hosts"] == ["example.com", "127.0.0.1:*", "localhost:*"], installed
    assert installed["approved_hosts"] == [] and installed["private_network"] is False, installed

    # Only declared hosts can be approved, and only by staff who manage plugins.
    r = tech.patch(f"/api/plugins/{pid}", json={"approved_hosts": ["evil.example"]})
    assert r.status_code == 422, r.text
    err = error_of(r)
    assert err["code"] == "validation_failed", err
    assert err["details"] == [
        {
            "field": "approved_hosts",
            "message": "plugin `test-net-http` does not declare host `evil.example` under `[http] hosts`",
        }
    ], err
    r = user.patch(f"/api/plugins/{pid}", json={"private_network": True})
    assert r.status_code == 403, r.text
    assert view(tech, pid)["private_network"] is False

    tech.ok("PATCH", f"/api/plugins/{pid}", json={"enabled": True})

    def fetch(authority: str) -> dict:
        r = user.get(f"/api/plugins/{pid}/fetch", params={"authority": authority})
        assert r.status_code == 200, r.text
        return r.json()

    # `http` not approved: nothing goes out.
    body = fetch(local)
    assert body["ok"] is False and "HttpRequestDenied" in body["result"], body

    seen = tech.ok(
        "PATCH",
        f"/api/plugins/{pid}",
        json={"approved": ["http"], "approved_hosts": ["127.0.0.1:*", "localhost:*"]},
    )
    assert seen["approved_hosts"] == ["127.0.0.1:*", "localhost:*"], seen
    for authority, want in [
        ("example.com", "HttpRequestDenied"),  # declared, not approved
        ("169.254.169.254", "HttpRequestDenied"),  # not declared
        (local, "DestinationIpProhibited"),
        (f"localhost:{files.port}", "DestinationIpProhibited"),
    ]:
        body = fetch(authority)
        assert body["ok"] is False and want in body["result"], (authority, body)
    assert files.requests("/") == [], "nothing reached the local server"

    # Its before-prompt fetch of example.com is denied (it adds the error
    # as context) and the request is answered.
    ask(ai)
    seen = view(tech, pid)
    assert calls_of(seen, "before-prompt") == (1, 0), seen["stats"]
    assert seen["consecutive_failures"] == 0 and seen["active"] is True, seen

    # A technician lets it reach the private network.
    tech.ok("PATCH", f"/api/plugins/{pid}", json={"private_network": True})
    body = fetch(local)
    assert body == {"url": f"http://{local}/", "ok": True, "result": "status 200"}, body
    assert len(files.requests("/")) == 1


def test_credentials_never_reach_a_plugin(tech, user, srv, plugin_dist, cleanup):
    """A plugin's route gets the request's headers except the caller's
    credentials: the bearer token, cookies and proxy credentials."""
    pid = "test-noop"
    cleanup.append(pid)
    install(tech, plugin_dist, pid)
    tech.ok("PATCH", f"/api/plugins/{pid}", json={"enabled": True})
    r = user.get(
        f"/api/plugins/{pid}/headers",
        headers={
            "Cookie": "corral_refresh=stolen",
            "Proxy-Authorization": "Basic c3RvbGVu",
            "X-Trace": "1",
        },
    )
    assert r.status_code == 200, r.text
    names = r.json()["headers"]
    assert "x-trace" in names, names
    for credential in ("authorization", "cookie", "proxy-authorization"):
        assert credential not in names, names
    assert "Bearer" in user.session.headers.get("Authorization", ""), "the request carried a token"


def test_an_oversized_plugin_upload_is_refused_whole(tech, srv, plugin_dist):
    """A component over 64 MiB gets 413 with a JSON error; nothing is
    installed and the server goes on."""
    manifest, _ = plugin_parts(plugin_dist, "test-noop")
    big = with_manifest_line(manifest, "id", '"test-too-big"')
    r = upload_plugin(tech, "POST", "/api/plugins", big, b"\0asm" + b"\0" * (65 * 1024 * 1024))
    assert r.status_code == 413, r.text[:300]
    assert error_of(r)["code"] == "payload_too_large", r.text[:300]
    assert tech.get("/api/plugins/test-too-big").status_code == 404
    assert tech.get("/healthz").status_code == 200


# ---------------------------------------------------------------------------
# Stopped while running


@dataclass
class Failing:
    plugin_id: str
    # The hook that fails in a generation.
    hook: str
    # What the host says happened.
    reason: str
    # A route of the plugin that fails the same way.
    route: str
    # Manifest lines set for the test (TOML), besides the policy.
    limits: str = ""


FAILING = [
    Failing("test-spin", "before-prompt", "ran past its time limit of 100 ms", "spin"),
    Failing("test-memory-bomb", "before-prompt", "ran out of memory (limit 32 MiB)", "grow"),
    Failing("test-trap", "before-prompt", "crashed: wasm trap", "panic"),
    # Its manifest gives it the time and memory to build 64 MiB and hand
    # it over, which the host refuses for its size.
    Failing("test-huge-output", "on-chunk", "returned invalid output", "huge"),
]


def manifest_of(dist, failing: Failing, policy: str) -> str:
    manifest, _ = plugin_parts(dist, failing.plugin_id)
    if failing.limits:
        assert "[limits]" in manifest, "the fixture's manifest has no [limits] table"
        manifest = manifest.replace("[limits]", "[limits]\n" + failing.limits, 1)
    return with_manifest_line(manifest, "failure", f'"{policy}"')


@pytest.mark.parametrize("failing", FAILING, ids=[f.plugin_id for f in FAILING])
def test_a_failing_plugin_is_stopped_counted_and_turned_off(
    tech, user, ai, plain_answer, plugin_dist, cleanup, failing
):
    pid = failing.plugin_id
    cleanup.append(pid)
    shipped, component = plugin_parts(plugin_dist, pid)
    assert 'failure = "fail-closed"' not in shipped, f"{pid} ships as fail-closed; this test expects skip"

    # Policy `skip`: the answer comes as if the plugin were not there.
    installed = install(tech, plugin_dist, pid, manifest_of(plugin_dist, failing, "skip"))
    assert installed["failure"] == "skip"
    on = tech.ok("PATCH", f"/api/plugins/{pid}", json={"enabled": True})
    assert on["active"] is True
    assert ask(ai) == plain_answer
    seen = view(tech, pid)
    assert calls_of(seen, failing.hook) == (1, 1), seen["stats"]
    assert seen["consecutive_failures"] == 1, seen
    assert seen["last_error"].startswith(f"{failing.hook}: "), seen["last_error"]
    assert failing.reason in seen["last_error"], seen["last_error"]
    assert seen["active"] is True and seen["disabled_reason"] is None

    # Its route fails the same way, with Corral's error body.
    r = user.get(f"/api/plugins/{pid}/{failing.route}")
    assert r.status_code == 502, r.text
    err = error_of(r)
    assert err["code"] == "plugin_failed", err
    assert err["message"] == f"plugin `{pid}` failed to answer", err
    assert len(r.content) < 4096, "the failure answer carries the plugin's output"
    seen = view(tech, pid)
    assert failing.reason in (seen["last_error"] or ""), seen
    assert calls_of(seen, "handle") == (1, 1), seen["stats"]
    assert seen["consecutive_failures"] == 2, seen

    # Policy `fail-closed`: the request is refused, naming the plugin and
    # what happened, until the host turns the plugin off.
    closed = manifest_of(plugin_dist, failing, "fail-closed")
    r = upload_plugin(tech, "PUT", f"/api/plugins/{pid}/component", closed, component)
    assert r.status_code == 200, r.text
    assert r.json()["failure"] == "fail-closed"
    failures = view(tech, pid)["consecutive_failures"]
    refused = 0
    while failures < FAILURE_THRESHOLD:
        with pytest.raises(BadRequestError) as refusal:
            ask(ai)
        body = refusal.value.body or {}
        body = body.get("error", body)
        assert body.get("code") == "rejected", refusal.value
        # Users learn which plugin failed, not its output (stderr, traps):
        # that is for technicians, in its status.
        assert f"`{pid}`" in body.get("message", "") and "the plugin failed" in body["message"], body
        said = body["message"].split("the plugin failed: ", 1)[1]
        assert said.startswith("it ") and ":" not in said, body
        refused += 1
        now = view(tech, pid)
        assert failing.reason in (now["last_error"] or ""), now
        assert now["consecutive_failures"] == failures + 1, now
        failures = now["consecutive_failures"]
    assert refused >= 1

    off = view(tech, pid)
    assert off["active"] is False, off
    assert off["enabled"] is True, "the technician's switch is theirs; the host sets only the reason"
    reason = off["disabled_reason"] or ""
    assert f"failed {FAILURE_THRESHOLD} times in a row" in reason and failing.reason in reason, reason
    calls_before = calls_of(off, failing.hook)[0]

    # Turned off, a fail-closed plugin still guards: the next request is
    # refused at once, without calling it, and says why.
    with pytest.raises(BadRequestError) as refusal:
        ask(ai)
    body = refusal.value.body or {}
    body = body.get("error", body)
    assert body.get("code") == "rejected", refusal.value
    assert f"`{pid}`" in body["message"] and "turned off after repeated failures" in body["message"], body
    after = view(tech, pid)
    assert calls_of(after, failing.hook)[0] == calls_before
    assert after["consecutive_failures"] == off["consecutive_failures"], "a refusal by a turned-off plugin counted"

    # Turning it on again clears the reason: it runs (and fails) again.
    back = tech.ok("PATCH", f"/api/plugins/{pid}", json={"enabled": True})
    assert back["disabled_reason"] is None and back["active"] is True, back
    with pytest.raises(BadRequestError):
        ask(ai)


def hang_on_route(srv, token: str, path: str) -> socket.socket:
    """A GET to a plugin route on a raw connection, left waiting (the caller
    closes it)."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(
        (f"GET {path} HTTP/1.1\r\nHost: corral\r\nAuthorization: Bearer {token}\r\n\r\n").encode()
    )
    return s


def test_one_account_cannot_take_every_plugin_instance(srv, tech, user, plugin_dist, cleanup):
    """Route requests of one account under way at once are capped
    (`per_user_plugin_requests`, 8): the ninth is refused at once without
    calling the plugin, other accounts are served, and a request whose client
    hangs up gives its place back."""
    pid = "test-spin"
    cleanup.append(pid)
    install(tech, plugin_dist, pid)
    assert tech.ok("PATCH", f"/api/plugins/{pid}", json={"enabled": True})["active"] is True

    def probe(api: Api) -> int:
        # A route the plugin does not have: 404 once admitted, without a
        # call to the plugin (nothing counted against it).
        return api.get(f"/api/plugins/{pid}/nowhere").status_code

    def until(api: Api, status: int) -> None:
        deadline = time.monotonic() + 30
        while (got := probe(api)) != status:
            assert time.monotonic() < deadline, f"still {got}, not {status}"
            time.sleep(0.1)

    until(user, 404)
    waiting = [hang_on_route(srv, user.token, f"/api/plugins/{pid}/sleep") for _ in range(8)]
    try:
        # The eight are asleep in the plugin, outside its code.
        until(user, 429)
        r = user.get(f"/api/plugins/{pid}/spin")
        assert r.status_code == 429, r.text
        assert error_of(r)["code"] == "busy", r.text
        assert r.headers.get("Retry-After") == "1", r.headers
        assert calls_of(view(tech, pid), "handle") == (0, 0), "the refused request reached the plugin"

        other = account(srv, "mallory-neighbour", "user")
        r = other.get(f"/api/plugins/{pid}/spin")
        assert r.status_code == 502 and error_of(r)["code"] == "plugin_failed", r.text
    finally:
        for s in waiting:
            s.close()
    # Hung up, the eight give their places back.
    until(user, 404)
    r = user.get(f"/api/plugins/{pid}/spin")
    assert r.status_code == 502 and error_of(r)["code"] == "plugin_failed", r.text


def test_failing_routes_turn_a_plugin_off_and_its_routes_are_gone(tech, user, plugin_dist, cleanup):
    """Failures of routes count like those of hooks; once the host turned
    the plugin off, its routes answer 404 like those of any plugin that
    is off, without calling it."""
    pid = "test-trap"
    cleanup.append(pid)
    install(tech, plugin_dist, pid)
    tech.ok("PATCH", f"/api/plugins/{pid}", json={"enabled": True})
    for n in range(1, FAILURE_THRESHOLD + 1):
        r = user.get(f"/api/plugins/{pid}/unreachable")
        assert r.status_code == 502 and error_of(r)["code"] == "plugin_failed", r.text
        assert error_of(r)["message"] == f"plugin `{pid}` failed to answer", r.text
        assert "unreachable" in (view(tech, pid)["last_error"] or "")
        assert view(tech, pid)["consecutive_failures"] == n
    off = view(tech, pid)
    assert off["active"] is False and "failed 5 times in a row" in (off["disabled_reason"] or ""), off
    assert calls_of(off, "handle") == (FAILURE_THRESHOLD, FAILURE_THRESHOLD)
    r = user.get(f"/api/plugins/{pid}/unreachable")
    assert r.status_code == 404, f"the route of a plugin the host turned off: {r.status_code} {r.text[:300]}"
    assert calls_of(view(tech, pid), "handle")[0] == FAILURE_THRESHOLD


def test_a_failing_stream_filter_fails_a_chat_answer_closed(tech, user, plugin_dist, cleanup):
    """fail-closed on the chat stream: a filter that fails mid-answer ends
    the answer with an `error` event naming the plugin; the stored answer
    is `failed` with that reason and none of the plugin's output."""
    failing = FAILING[-1]
    pid = failing.plugin_id
    cleanup.append(pid)
    install(tech, plugin_dist, pid, manifest_of(plugin_dist, failing, "fail-closed"))
    tech.ok("PATCH", f"/api/plugins/{pid}", json={"enabled": True})
    chat = user.ok("POST", "/api/chats", json={"model": DEMO_NAME}, expect=(201,))
    r = user.session.post(
        f"{user.base}/api/chats/{chat['id']}/stream",
        json={"content": QUESTION, "sampling": {"max_tokens": ANSWER_TOKENS, "temperature": 0}},
        stream=True,
        timeout=(5, 180),
    )
    try:
        assert r.status_code == 200, r.text
        events = []
        for name, data in sse_events(r):
            events.append(data)
            if name in ("done", "error"):
                break
    finally:
        r.close()
    last = events[-1]
    assert last["type"] == "error", [e["type"] for e in events]
    assert last["error"]["code"] == "rejected", last
    assert last["error"]["message"] == f"plugin `{pid}`: the plugin failed: it returned invalid output", last
    assert not any(e["type"] == "delta" and "xxxx" in e["text"] for e in events)
    messages = user.ok("GET", f"/api/chats/{chat['id']}")["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    answer = messages[-1]
    assert answer["status"] == "failed", answer
    assert f"`{pid}`" in (answer["error"] or ""), answer
    assert "xxxx" not in answer["content"] and len(answer["content"]) < 4096


def test_a_plugin_reading_host_files_finds_nothing(tech, user, ai, plain_answer, plugin_dist, cleanup):
    """test-read-file reads /etc/passwd, lists / and counts the
    environment: it runs without failing, gets errors only, and nothing of
    the host's files reaches anything the user sees."""
    pid = "test-read-file"
    cleanup.append(pid)
    install(tech, plugin_dist, pid)
    tech.ok("PATCH", f"/api/plugins/{pid}", json={"enabled": True})
    with open("/etc/passwd") as f:
        first_line = f.readline().strip()
    assert first_line, "this machine's /etc/passwd is empty"

    for path in ("/etc/passwd", "/proc/self/environ", "/", os.getcwd(), "."):
        r = user.get(f"/api/plugins/{pid}/read", params={"path": path})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["path"] == path and body["ok"] is False, body
        assert first_line not in r.text and "root:" not in r.text, body

    answer = ask(ai)
    assert "root:" not in answer and first_line not in answer, answer
    chat = user.ok("POST", "/api/chats", json={"model": DEMO_NAME}, expect=(201,))
    r = user.session.post(
        f"{user.base}/api/chats/{chat['id']}/stream",
        json={"content": "Repeat the context.", "sampling": {"max_tokens": 48, "temperature": 0}},
        timeout=(5, 180),
    )
    assert r.status_code == 200, r.text
    assert "root:" not in r.text and first_line not in r.text
    stored = user.ok("GET", f"/api/chats/{chat['id']}")["messages"][-1]
    assert stored["status"] == "complete", stored
    assert "root:" not in stored["content"], stored
    seen = view(tech, pid)
    assert calls_of(seen, "before-prompt") == (2, 0), seen["stats"]
    assert seen["consecutive_failures"] == 0 and seen["last_error"] is None, seen
