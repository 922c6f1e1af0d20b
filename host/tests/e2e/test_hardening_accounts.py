"""Attacks on accounts against a real `corral serve`: an admin taking over a
technician, access that outlives a password change or a disabled account,
memory growth from anonymous requests, sign-in lock-out and throttling
(behind a trusted proxy and without), and creating the first admin without
a terminal."""

from __future__ import annotations

import json
import os
import re
import secrets
import string
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import websocket

from corral import TIMEOUT, Api, CorralServer, clean_env

# ratelimit.rs: the longest wait wrong passwords impose on their account,
# and the failed attempts one address may make per window.
MAX_DELAY_S = 4
PER_ADDRESS = 30
# policy.rs: how often an open WebSocket or event stream checks its credential.
RECHECK_EVERY_S = 5


@pytest.fixture
def own_server(corral_bin, tmp_path):
    """Starts servers of this test's own, each with its config; all are
    stopped after the test."""
    started = []

    def start(config: str = "", database: str | None = None) -> CorralServer:
        srv = CorralServer(corral_bin, tmp_path / f"corral{len(started)}", config, database=database)
        started.append(srv)
        srv.start(backends_dir=os.environ.get("CORRAL_BACKENDS_DIR") or None)
        return srv

    yield start
    for srv in started:
        srv.stop()


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


def login(server: CorralServer, username: str, password: str, xff: str | None = None):
    headers = {"X-Forwarded-For": xff} if xff else {}
    return requests.post(
        server.base + "/api/auth/login",
        json={"username": username, "password": password},
        headers=headers,
        timeout=TIMEOUT,
    )


def assert_error(r: requests.Response, status: int, code: str):
    assert r.status_code == status, f"{r.status_code} {r.text}"
    assert r.json()["code"] == code, r.text


def account(server: CorralServer, role: str) -> tuple[str, str, Api]:
    """A new account of `role`: username, password, signed-in client."""
    name = unique(role[:4])
    password = server.create_account(name, role)
    return name, password, Api.login(server, name, password)


def user_id(api: Api) -> str:
    return api.ok("GET", "/api/me")["id"]


# --- An admin must not take over a technician ----------------------------------


def test_an_admin_cannot_take_over_a_technician(server, technician):
    _, _, admin = account(server, "admin")
    tech_name, tech_password, victim = account(server, "technician")
    victim_id = user_id(victim)

    # Reset the technician's password, to sign in as them: refused.
    r = admin.post(f"/api/users/{victim_id}/password", json={"new_password": "taken over!!"})
    assert_error(r, 403, "forbidden")
    assert "technician" in r.json()["message"], r.text
    assert_error(login(server, tech_name, "taken over!!"), 401, "unauthorized")
    assert login(server, tech_name, tech_password).status_code == 200
    victim.ok("GET", "/api/me")

    # Disable, enable, rename, demote: refused, nothing changed.
    for body in ({"disabled": True}, {"disabled": False}, {"display_name": "owned"}, {"role": "user"}):
        assert_error(admin.patch(f"/api/users/{victim_id}", json=body), 403, "forbidden")
    # Nor a quota on the technician, or on the technician role.
    quotas = admin.ok("GET", "/api/quotas")
    for body in (
        {**quotas, "users": {**quotas["users"], victim_id: 0}},
        {**quotas, "roles": {**quotas["roles"], "technician": 0}},
    ):
        assert_error(admin.request("PUT", "/api/quotas", json=body), 403, "forbidden")
    seen = technician.ok("GET", f"/api/users/{victim_id}")
    assert (seen["disabled"], seen["display_name"], seen["role"]) == (False, tech_name, "technician")
    assert victim_id not in admin.ok("GET", "/api/quotas")["users"]

    # An admin still manages users and admins.
    for role in ("user", "admin"):
        name = unique(role[:4])
        created = admin.ok(
            "POST",
            "/api/users",
            json={"username": name, "password": "first password", "role": role},
            expect=(201,),
        )
        admin.ok("PATCH", f"/api/users/{created['id']}", json={"display_name": "renamed"})
        admin.ok("POST", f"/api/users/{created['id']}/password", json={"new_password": "second password"})
        assert login(server, name, "second password").status_code == 200
        admin.ok("PATCH", f"/api/users/{created['id']}", json={"disabled": True})
        admin.ok("PATCH", f"/api/users/{created['id']}", json={"disabled": False})
        admin.ok("PUT", "/api/quotas", json={**quotas, "users": {created["id"]: 1000}})
        admin.ok("PUT", "/api/quotas", json=quotas)
    # A technician manages technicians.
    technician.ok("PATCH", f"/api/users/{victim_id}", json={"display_name": "still theirs"})


# --- Access that survives a password change -----------------------------------


def test_a_key_made_before_a_password_change_dies_with_it(server):
    name, password, owner = account(server, "user")
    # Made with a stolen token, say.
    key = owner.ok("POST", "/api/me/keys", json={"name": "stolen"}, expect=(201,))["key"]
    assert Api(server, key).get("/api/me").status_code == 200
    fresh = owner.ok(
        "POST",
        "/api/me/password",
        json={"current_password": password, "new_password": "a brand new password"},
    )
    assert_error(Api(server, key).get("/api/me"), 401, "unauthorized")
    assert_error(owner.get("/api/me"), 401, "unauthorized")
    assert Api(server, fresh["access_token"]).ok("GET", "/api/me/keys") == []


def test_disable_then_enable_brings_no_old_access_back(own_server, store_database):
    srv = own_server(database=store_database)
    tech_password = srv.create_account("tech", "technician")
    tech = Api.login(srv, "tech", tech_password)
    name, password, _ = account(srv, "user")
    tokens = login(srv, name, password).json()
    holder = Api(srv, tokens["access_token"])
    key = holder.ok("POST", "/api/me/keys", json={"name": "old"}, expect=(201,))["key"]
    uid = user_id(holder)

    tech.ok("PATCH", f"/api/users/{uid}", json={"disabled": True})
    tech.ok("PATCH", f"/api/users/{uid}", json={"disabled": False})

    assert_error(holder.get("/api/me"), 401, "unauthorized")
    assert_error(Api(srv, key).get("/api/me"), 401, "unauthorized")
    r = requests.post(
        srv.base + "/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}, timeout=TIMEOUT
    )
    assert_error(r, 401, "unauthorized")
    # The account itself works again, with a new sign-in.
    again = Api.login(srv, name, password)
    assert again.ok("GET", "/api/me/keys") == []


def ws_connect(server: CorralServer, token: str) -> websocket.WebSocket:
    url = server.base.replace("http://", "ws://", 1) + "/api/chats/ws"
    return websocket.create_connection(url, header=[f"Authorization: Bearer {token}"], timeout=10)


def until_closed(ws: websocket.WebSocket, within: float) -> tuple[list[dict], int, str]:
    """Reads frames until the server closes: the events before, the close
    code and reason."""
    events = []
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the socket is still open after {within:.0f} s; events: {events}"
        ws.settimeout(left)
        try:
            frame = ws.recv_frame()
        except websocket.WebSocketTimeoutException:
            continue
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            data = frame.data or b""
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 0
            return events, code, data[2:].decode("utf-8", "replace")
        if frame.opcode == websocket.ABNF.OPCODE_TEXT:
            events.append(json.loads(frame.data.decode("utf-8")))


def test_a_websocket_open_across_a_reset_is_closed_and_starts_nothing(server, technician, llama_model):
    name, password, holder = account(server, "user")
    chat = holder.ok("POST", "/api/chats", json={"model": llama_model.model["name"]}, expect=(201,))
    ws = ws_connect(server, holder.token)
    try:
        technician.ok("POST", f"/api/users/{user_id(holder)}/password", json={"new_password": "reset by staff"})
        try:
            ws.send(json.dumps({"type": "send", "chat_id": chat["id"], "content": "Still here?"}))
        except (websocket.WebSocketConnectionClosedException, OSError):
            pass  # already closed by the periodic check
        events, code, reason = until_closed(ws, RECHECK_EVERY_S + 10)
    finally:
        ws.close()
    assert code == 1008, (code, reason)
    assert "password" in reason, reason
    assert [e["type"] for e in events] == ["error"], events
    assert events[0]["error"]["code"] == "unauthorized", events
    # No answer was started: nothing was stored in the chat.
    again = Api.login(server, name, "reset by staff")
    assert again.ok("GET", f"/api/chats/{chat['id']}")["messages"] == []


def test_a_websocket_closes_when_its_api_key_is_revoked(server):
    _, _, owner = account(server, "user")
    created = owner.ok("POST", "/api/me/keys", json={"name": "ws"}, expect=(201,))
    ws = ws_connect(server, created["key"])
    try:
        owner.ok("DELETE", f"/api/me/keys/{created['id']}", expect=(204,))
        events, code, reason = until_closed(ws, RECHECK_EVERY_S + 10)
    finally:
        ws.close()
    assert (code, reason) == (1008, "the API key was revoked"), events


def test_a_websocket_closes_when_its_access_token_expires(own_server):
    srv = own_server("access_token_ttl_secs = 30\n")
    name, password, _ = account(srv, "user")
    began = time.monotonic()
    holder = Api.login(srv, name, password)
    ws = ws_connect(srv, holder.token)
    try:
        events, code, reason = until_closed(ws, 60)
    finally:
        ws.close()
    took = time.monotonic() - began
    assert (code, reason) == (1008, "the access token expired; sign in again"), events
    assert [e["error"]["code"] for e in events] == ["unauthorized"], events
    # Closed at the expiry, not at some later sweep.
    assert 25 <= took <= 40, took



def open_events(server: CorralServer, token: str) -> tuple[requests.Response, threading.Thread, list]:
    """Opens `/api/events` with `token` and reads it in a thread until it
    ends; the list gets when it ended (monotonic seconds), then the lines
    read."""
    r = requests.get(server.base + "/api/events", headers={"Authorization": f"Bearer {token}"},
                     stream=True, timeout=(5, 120))
    assert r.status_code == 200, r.text
    ended: list = []

    def read():
        lines = []
        try:
            for line in r.iter_lines(decode_unicode=True):
                lines.append(line)
        except requests.RequestException:
            pass
        ended.extend([time.monotonic(), lines])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return r, reader, ended


def test_the_event_stream_ends_when_its_technician_loses_access(server, technician):
    """`/api/events` (technicians' model news) ends within a recheck of
    its technician being demoted, and of the API key it was opened with
    being revoked; reconnecting is then refused."""
    _, _, demoted = account(server, "technician")
    r, reader, ended = open_events(server, demoted.token)
    try:
        time.sleep(1)
        assert not ended, "the stream ended by itself"
        changed_at = time.monotonic()
        technician.ok("PATCH", f"/api/users/{user_id(demoted)}", json={"role": "user"})
        reader.join(RECHECK_EVERY_S + 10)
        assert ended, "the stream of a demoted technician goes on"
        assert ended[0] - changed_at <= RECHECK_EVERY_S + 3, ended[0] - changed_at
        # It just ends: the server is not stopping.
        assert "event: shutting_down" not in ended[1], ended[1]
    finally:
        r.close()
    again = requests.get(server.base + "/api/events", headers={"Authorization": f"Bearer {demoted.token}"},
                         timeout=TIMEOUT)
    assert_error(again, 403, "forbidden")

    _, _, keeper = account(server, "technician")
    created = keeper.ok("POST", "/api/me/keys", json={"name": "events"}, expect=(201,))
    r, reader, ended = open_events(server, created["key"])
    try:
        keeper.ok("DELETE", f"/api/me/keys/{created['id']}", expect=(204,))
        reader.join(RECHECK_EVERY_S + 10)
        assert ended, "the stream of a revoked key goes on"
    finally:
        r.close()


def test_an_auth_frame_moves_a_websocket_onto_a_renewed_token(own_server):
    srv = own_server("access_token_ttl_secs = 30\n")
    name, password, _ = account(srv, "user")
    began = time.monotonic()
    first = Api.login(srv, name, password)
    ws = ws_connect(srv, first.token)
    try:
        # A later sign-in's token outlives the first by about 12 s.
        time.sleep(12)
        renewed = Api.login(srv, name, password)
        ws.send(json.dumps({"type": "auth", "access_token": renewed.token}))
        # Past the first token's expiry the socket still takes commands.
        time.sleep(max(0.0, 34 - (time.monotonic() - began)))
        ws.send(json.dumps({"type": "stop", "chat_id": "no-such-chat"}))
        ws.settimeout(10)
        reply = json.loads(ws.recv())
        assert reply["type"] == "error" and reply["chat_id"] == "no-such-chat", reply
        assert reply["error"]["code"] == "not_found", reply
        # It closes when the renewed token expires.
        events, code, reason = until_closed(ws, 20)
    finally:
        ws.close()
    took = time.monotonic() - began
    assert (code, reason) == (1008, "the access token expired; sign in again"), events
    assert 38 <= took <= 52, took


@pytest.mark.parametrize("which", ["another account", "invalid", "api key"])
def test_an_auth_frame_with_a_foreign_or_bad_token_closes_the_websocket(server, which):
    _, _, holder = account(server, "user")
    if which == "another account":
        token = account(server, "user")[2].token
    elif which == "invalid":
        token = holder.token[:-4] + "AAAA"
    else:
        token = holder.ok("POST", "/api/me/keys", json={"name": "ws"}, expect=(201,))["key"]
    ws = ws_connect(server, holder.token)
    try:
        ws.send(json.dumps({"type": "auth", "access_token": token}))
        events, code, reason = until_closed(ws, 10)
    finally:
        ws.close()
    assert code == 1008, (code, reason, events)
    assert [e["error"]["code"] for e in events] == ["unauthorized"], events
    assert token not in reason
    if which == "another account":
        assert reason == "the access token belongs to another account", reason


def test_debug_logs_keep_the_websocket_token_out(own_server, monkeypatch):
    monkeypatch.setenv("RUST_LOG", "debug")
    srv = own_server()
    _, _, holder = account(srv, "user")
    url = srv.base.replace("http://", "ws://", 1) + "/api/chats/ws?access_token=" + holder.token
    ws = websocket.create_connection(url, timeout=10)
    ws.send(json.dumps({"type": "stop", "chat_id": "no-such-chat"}))
    ws.settimeout(10)
    assert json.loads(ws.recv())["type"] == "error"
    ws.close()
    log = srv.log_path.read_text(errors="replace")
    assert "/api/chats/ws?access_token=***" in log, srv.log_tail()
    assert holder.token not in log
    assert holder.token.split(".")[2] not in log

# --- Unauthenticated memory growth -------------------------------------------


def metric_lines(api: Api, family: str) -> list[str]:
    r = api.get("/metrics")
    assert r.status_code == 200, r.text
    text = r.text
    return [line for line in text.splitlines() if line.startswith(family + "{")]


def test_random_methods_and_usernames_do_not_grow_memory(own_server):
    srv = own_server()
    tech_password = srv.create_account("tech", "technician")
    # Signed in first: the flood below uses up this address's window.
    tech = Api.login(srv, "tech", tech_password)
    session = requests.Session()
    letters = string.ascii_uppercase
    for _ in range(1000):
        method = "".join(secrets.choice(letters) for _ in range(12))
        r = session.request(method, srv.base + "/api/me", timeout=TIMEOUT)
        assert r.status_code == 405, (method, r.status_code)

    def attempt(_):
        username = "".join(secrets.choice(string.ascii_lowercase) for _ in range(2000))
        return login(srv, username, "guess").status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(attempt, range(1000)))
    # The first window's worth reached the password check; the rest were
    # turned away at the address.
    assert statuses.count(401) == PER_ADDRESS, statuses
    assert statuses.count(429) == 1000 - PER_ADDRESS, statuses

    series = metric_lines(tech, "corral_http_requests_total")
    methods = {re.search(r'method="([^"]*)"', line).group(1) for line in series}
    assert methods <= {"GET", "POST", "other"}, methods
    assert len(series) <= 10, series
    tracked = metric_lines(tech, "corral_sign_in_tracked_keys")
    # One address (127.0.0.1), and one entry per name that reached the
    # password check: unknown names are counted like known ones, so the
    # wait does not tell which exist (the map keeps a bounded number).
    assert sorted(tracked) == [
        f'corral_sign_in_tracked_keys{{kind="account"}} {PER_ADDRESS}',
        'corral_sign_in_tracked_keys{kind="address"} 1',
    ], tracked


# --- Lock-out and throttling ---------------------------------------------------


def concurrently(n: int, call, workers: int = 10) -> list[requests.Response]:
    """`n` calls, `workers` at a time (more would only queue for the
    server's bounded password hashing)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda _: call(), range(n)))


def test_wrong_passwords_slow_an_account_down_but_do_not_lock_it_out(own_server):
    srv = own_server('trusted_proxies = ["127.0.0.1"]\n')
    password = srv.create_account("admin", "admin")
    attacker, owner = "203.0.113.7", "198.51.100.20"
    # One guess after another until each next one waits the longest.
    for _ in range(8):
        assert_error(login(srv, "admin", "wrong guess", attacker), 401, "unauthorized")
    # Guesses sent together take turns: the answers come one wait apart,
    # not all at once after a single wait.
    began = time.monotonic()

    def guess():
        r = login(srv, "admin", "wrong again", attacker)
        return r, time.monotonic() - began

    answers = [(r.status_code, took) for r, took in concurrently(4, guess, workers=4)]
    assert [status for status, _ in answers] == [401] * 4, answers
    took = sorted(t for _, t in answers)
    assert took[-1] >= 3 * MAX_DELAY_S, answers
    for earlier, later in zip(took, took[1:]):
        assert later - earlier >= MAX_DELAY_S / 2, answers
    # The owner, from their own address, signs in within one more wait.
    began = time.monotonic()
    r = login(srv, "admin", password, owner)
    took = time.monotonic() - began
    assert r.status_code == 200, r.text
    assert took <= MAX_DELAY_S + 6, took


def test_an_unknown_name_waits_like_a_known_one(own_server):
    srv = own_server('trusted_proxies = ["127.0.0.1"]\n')
    srv.create_account("known", "user")
    for name in ("known", "made-up"):
        for _ in range(7):
            assert_error(login(srv, name, "wrong guess", "203.0.113.7"), 401, "unauthorized")
        # The name that failed waits; a fresh name does not inherit that.
        began = time.monotonic()
        assert_error(login(srv, name, "wrong guess", "203.0.113.8"), 401, "unauthorized")
        slow = time.monotonic() - began
        began = time.monotonic()
        assert_error(login(srv, unique("other"), "guess", "203.0.113.9"), 401, "unauthorized")
        fresh = time.monotonic() - began
        assert slow >= 1.5 and fresh < slow - 1.0, (name, slow, fresh)


def flood(srv: CorralServer, xff: str | None) -> list[requests.Response]:
    """Failed sign-ins from one address until it is refused: a window's
    worth, then one more."""
    out = concurrently(PER_ADDRESS, lambda: login(srv, unique("nobody"), "guess", xff))
    assert [r.status_code for r in out] == [401] * PER_ADDRESS, [r.text for r in out]
    return out


def assert_limited(r: requests.Response):
    assert_error(r, 429, "rate_limited")
    assert 1 <= int(r.headers["Retry-After"]) <= 300, r.headers


def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(own_server):
    srv = own_server('trusted_proxies = ["127.0.0.1"]\n')
    flood(srv, "203.0.113.7")
    assert_limited(login(srv, "nobody", "guess", "203.0.113.7"))
    # The proxy appends the client it saw: what a client wrote on the left
    # does not count.
    assert_limited(login(srv, "nobody", "guess", "198.51.100.1, 203.0.113.7"))
    assert_error(login(srv, "nobody", "guess", "203.0.113.8"), 401, "unauthorized")
    # IPv6 clients are counted by their /64.
    flood(srv, "2001:db8:1:2::1")
    assert_limited(login(srv, "nobody", "guess", "2001:db8:1:2:ffff::9"))
    assert_error(login(srv, "nobody", "guess", "2001:db8:1:3::1"), 401, "unauthorized")


def test_without_a_trusted_proxy_forwarded_for_is_ignored(own_server):
    srv = own_server()
    flood(srv, "203.0.113.7")
    # A spoofed header does not escape the peer's bucket.
    r = login(srv, "nobody", "guess", "198.51.100.99")
    assert_limited(r)
    assert_limited(login(srv, "nobody", "guess"))


# --- `corral admin create` without a terminal -----------------------------------


def admin_create(server: CorralServer, username: str, *extra: str, stdin: str | None = None):
    return subprocess.run(
        [
            server.binary,
            "admin",
            "create",
            "--config",
            str(server.config),
            "--data-dir",
            str(server.data),
            "--username",
            username,
            "--role",
            "admin",
            *extra,
        ],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        # No controlling terminal, as in a container or a script.
        start_new_session=True,
    )


def test_admin_create_reads_the_password_from_stdin(server):
    name = unique("first")
    out = admin_create(server, name, "--password-stdin", stdin="piped in password\n")
    assert out.returncode == 0, out.stderr
    assert f"`{name}`" in out.stdout, out.stdout
    assert login(server, name, "piped in password").status_code == 200
    assert_error(login(server, name, "piped in password\n"), 401, "unauthorized")


def test_admin_create_without_a_terminal_or_password_says_what_to_do(server):
    name = unique("nopw")
    out = admin_create(server, name)
    assert out.returncode != 0
    assert "--password-stdin" in out.stderr, out.stderr
    assert "No such device or address" not in out.stderr, out.stderr
    assert_error(login(server, name, "anything at all"), 401, "unauthorized")
