"""Data that must survive: writes that race each other, a server killed
mid-answer, a server told to stop, and a data directory other local users
must not read. Each test runs a real `corral serve` of its own."""

from __future__ import annotations

import json
import os
import signal
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from corral import Api, CorralServer, sse_events, wait_until

DEMO = "gemma-3-270m"
# An answer far longer than any test waits for.
LONG_ANSWER = {"max_tokens": 2000, "ignore_eos": True, "temperature": 0}
SHORT_ANSWER = {"max_tokens": 48, "ignore_eos": True, "temperature": 0}
GRACE_SECS = 3


def server_config(demo_model: str | None, extra: str = "") -> str:
    config = (
        "access_token_ttl_secs = 7200\n"
        f"shutdown_grace_secs = {GRACE_SECS}\n"
        "per_user_generations = 8\n"
    )
    if demo_model:
        config += f"demo_model = {json.dumps(demo_model)}\n"
    return config + extra


def start(corral_bin: str, work: Path, database: str | None, demo_model: str | None = None):
    srv = CorralServer(corral_bin, work, server_config(demo_model), database=database)
    srv.start(backends_dir=os.environ.get("CORRAL_BACKENDS_DIR") or None)
    return srv


def restart(old: CorralServer) -> CorralServer:
    """A new process on the same data directory, store and configuration."""
    srv = CorralServer(old.binary, old.work, old.config.read_text())
    srv.database = old.database
    srv.start(backends_dir=os.environ.get("CORRAL_BACKENDS_DIR") or None)
    return srv


def demo_ready(api: Api) -> dict:
    def ready():
        models = api.ok("GET", "/api/models")
        items = models["items"] if isinstance(models, dict) else models
        found = [m for m in items if m["name"] == DEMO]
        return found[0] if found and found[0]["status"] == "ready" else None

    return wait_until(ready, 120, "the demo model ready", every=0.2)


def error_code(r: requests.Response) -> str:
    try:
        return r.json().get("code", "")
    except ValueError:
        return ""


@pytest.fixture(params=["sqlite", "mongodb"])
def database(request):
    """None (SQLite in the data directory), then a fresh MongoDB database on
    the session's SecantusDB."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("secantus").url()


@pytest.fixture
def server(corral_bin, demo_model, database, tmp_path):
    srv = start(corral_bin, tmp_path / "corral", database, demo_model)
    pytest.corral_server = srv
    yield srv
    srv.stop()
    pytest.corral_server = None


def accounts(srv: CorralServer):
    admin_pw = srv.create_account("boss", "admin")
    user_pw = srv.create_account("victim", "user")
    return Api.login(srv, "boss", admin_pw), user_pw


def burst(fn, count: int, workers: int = 8):
    """Runs `fn(i)` `count` times on `workers` threads; returns the results.
    A request on a kept-alive connection that the server closed after
    refusing an earlier one (its body unread) counts as `dropped`."""

    def attempt(i):
        try:
            return fn(i)
        except requests.ConnectionError:
            return "dropped"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(attempt, range(count)))


# Tries of a race before a test gives up on the write landing in the burst.
RACE_TRIES = 6


def straddle(fn, count: int, write, workers: int = 8):
    """Runs `fn(i)` `count` times on `workers` threads and `write()` once a
    few have been answered. Returns the write's result, every call's code,
    the codes of calls answered before the write began, and those of calls
    sent after it returned: both non-empty means the write landed inside
    the burst."""
    lock = threading.Lock()
    spans = []
    answered = threading.Event()

    def timed(i):
        begun = time.monotonic()
        try:
            code = fn(i)
        except requests.ConnectionError:
            code = "dropped"
        with lock:
            spans.append((begun, time.monotonic(), code))
            if len(spans) >= 3:
                answered.set()
        return code

    with ThreadPoolExecutor(max_workers=1) as side:
        calls = side.submit(burst, timed, count, workers)
        assert answered.wait(30), "the burst did not start"
        write_began = time.monotonic()
        result = write()
        write_ended = time.monotonic()
        calls.result(timeout=120)
    codes = [code for _, _, code in spans]
    before = [code for _, end, code in spans if end < write_began]
    after = [code for begun, _, code in spans if begun > write_ended]
    return result, codes, before, after


# ---------------------------------------------------------------------------
# Stale whole-record writes


def test_profile_edits_racing_a_disable_leave_the_account_disabled(server):
    admin, user_pw = accounts(server)
    raced = 0
    for round_no in range(RACE_TRIES * 2):
        if raced == 2:
            break
        victim = Api.login(server, "victim", user_pw)
        me = victim.ok("GET", "/api/me")

        def edit(i):
            return victim.patch("/api/me", json={"display_name": f"Name {round_no}.{i}"}).status_code

        _, codes, before, after = straddle(
            edit,
            80,
            lambda: admin.ok("PATCH", f"/api/users/{me['id']}", json={"disabled": True}),
        )
        assert set(codes) <= {200, 401, 403, "dropped"}, codes
        if 200 in before and set(after) & {401, 403}:
            raced += 1
        stored = admin.ok("GET", f"/api/users/{me['id']}")
        assert stored["disabled"] is True, f"round {round_no}: a profile edit re-enabled the account"
        r = requests.post(
            server.base + "/api/auth/login",
            json={"username": "victim", "password": user_pw},
            timeout=30,
        )
        assert (r.status_code, error_code(r)) == (403, "account_disabled"), r.text
        admin.ok("PATCH", f"/api/users/{me['id']}", json={"disabled": False})
    assert raced == 2, f"the disable landed inside the edits in {raced} of {round_no + 1} rounds"


def test_profile_edits_racing_a_password_reset_cannot_restore_the_old_password(server):
    admin, password = accounts(server)
    raced = 0
    for round_no in range(RACE_TRIES * 2):
        if raced == 2:
            break
        victim = Api.login(server, "victim", password)
        me = victim.ok("GET", "/api/me")

        def edit(i):
            return victim.patch("/api/me", json={"display_name": f"Name {round_no}.{i}"}).status_code

        new_password = f"fresh-password-{round_no}-of-the-reset"
        _, codes, before, after = straddle(
            edit,
            80,
            lambda: admin.ok(
                "POST",
                f"/api/users/{me['id']}/password",
                json={"new_password": new_password},
                expect=(204,),
            ),
        )
        assert set(codes) <= {200, 401, "dropped"}, codes
        if 200 in before and 401 in after:
            raced += 1
        old = requests.post(
            server.base + "/api/auth/login",
            json={"username": "victim", "password": password},
            timeout=30,
        )
        assert (old.status_code, error_code(old)) == (401, "unauthorized"), (
            f"round {round_no}: the old password works again: {old.status_code} {old.text}"
        )
        r = victim.get("/api/me")
        assert r.status_code == 401, f"round {round_no}: an access token from before the reset works"
        password = new_password
    assert raced == 2, f"the reset landed inside the edits in {raced} of {round_no + 1} rounds"


def test_a_rename_during_an_answer_survives_the_answer_ending(server):
    _, user_pw = accounts(server)
    user = Api.login(server, "victim", user_pw)
    demo_ready(user)
    for round_no in range(2):
        chat = user.ok("POST", "/api/chats", json={"model": DEMO}, expect=(201,))
        with user.session.post(
            f"{server.base}/api/chats/{chat['id']}/stream",
            json={"content": "Count to fifty.", "sampling": SHORT_ANSWER},
            stream=True,
            timeout=(5, 120),
        ) as r:
            assert r.status_code == 200, r.text
            renamed = None
            last = None
            for name, data in sse_events(r):
                if name == "delta" and renamed is None:
                    title = f"Renamed mid-answer {round_no}"
                    renamed = user.ok(
                        "PATCH", f"/api/chats/{chat['id']}", json={"title": title, "pinned": True}
                    )
                    assert renamed["title"] == title
                last = (name, data)
                if name in ("done", "error"):
                    break
        assert renamed is not None, "no delta came"
        assert last[0] == "done", last
        stored = user.ok("GET", f"/api/chats/{chat['id']}")
        assert (stored["title"], stored["pinned"]) == (renamed["title"], True), (
            "the answer's end undid the rename"
        )
        assert stored["messages"][-1]["status"] == "complete"


def test_comments_racing_a_status_change_leave_the_new_status(server):
    admin, user_pw = accounts(server)
    owner = Api.login(server, "victim", user_pw)
    # A fresh ticket per try: a try counts once every status change landed
    # inside its burst of comments.
    for _ in range(RACE_TRIES):
        if comments_raced_every_step(admin, owner):
            return
    pytest.fail(f"in none of {RACE_TRIES} tries did every status change land inside the comments")


def comments_raced_every_step(admin: Api, owner: Api) -> bool:
    ticket = owner.ok(
        "POST",
        "/api/tickets",
        json={"subject": "Races", "body": "Status changes under comments", "category": "bug"},
        expect=(201,),
    )
    path = f"/api/tickets/{ticket['id']}"
    raced = True
    # Each step is legal from the one before; a comment that writes back
    # a ticket read before the step undoes it.
    for status in ["in_progress", "resolved", "in_progress", "resolved", "closed"]:

        def comment(i):
            who = owner if i % 2 else admin
            return who.post(path + "/comments", json={"body": f"note {status} {i}"}).status_code

        changed, codes, before, after = straddle(
            comment, 60, lambda: admin.ok("PATCH", path, json={"status": status})
        )
        assert changed["status"] == status
        assert set(codes) <= {201, 409, "dropped"}, codes
        raced = raced and bool(set(before) & {201, 409}) and bool(set(after) & {201, 409})
        stored = admin.ok("GET", path)
        stored = stored.get("ticket", stored)
        if status == "resolved":
            # Only the owner's reply may reopen it, and only after the
            # status change: then it is open, never the status before.
            assert stored["status"] in ("resolved", "open"), stored["status"]
            if stored["status"] == "open":
                admin.ok("PATCH", path, json={"status": "resolved"})
        else:
            assert stored["status"] == status, f"a comment undid the move to {status}"
    return raced


# ---------------------------------------------------------------------------
# A crash mid-answer, and a graceful stop


class Reader(threading.Thread):
    """Reads an SSE answer, keeping each event with the time it came."""

    def __init__(self, response: requests.Response):
        super().__init__(daemon=True)
        self.response = response
        self.events: list[tuple[float, str, object]] = []
        self.error: Exception | None = None
        self.start()

    def run(self):
        try:
            for name, data in sse_events(self.response):
                self.events.append((time.monotonic(), name, data))
        except Exception as err:  # the server went away
            self.error = err

    def text(self, until: float | None = None) -> str:
        return "".join(
            d["text"]
            for t, n, d in list(self.events)
            if n == "delta" and (until is None or t <= until)
        )

    def names(self) -> list[str]:
        return [n for _, n, _ in list(self.events)]


def stream_answer(api: Api, chat_id: str, content: str) -> Reader:
    r = api.session.post(
        f"{api.base}/api/chats/{chat_id}/stream",
        json={"content": content, "sampling": LONG_ANSWER},
        stream=True,
        timeout=(5, 120),
    )
    assert r.status_code == 200, r.text
    return Reader(r)


def test_a_killed_server_keeps_the_answer_the_client_saw(corral_bin, demo_model, database, tmp_path):
    srv = start(corral_bin, tmp_path / "corral", database, demo_model)
    pytest.corral_server = srv
    try:
        password = srv.create_account("reader", "user")
        user = Api.login(srv, "reader", password)
        demo_ready(user)
        chat = user.ok("POST", "/api/chats", json={"model": DEMO}, expect=(201,))
        reader = stream_answer(user, chat["id"], "Tell me a very long story about a fox.")
        wait_until(lambda: reader.text(), 120, "the first piece of the answer")
        first = time.monotonic()
        wait_until(lambda: time.monotonic() - first >= 3.0, 10, "three seconds of answer")
        assert reader.error is None and "done" not in reader.names(), reader.events[-3:]
        killed_at = time.monotonic()
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(timeout=30)
        reader.join(timeout=10)
        seen = reader.text()
        seen_well_before = reader.text(until=killed_at - 1.5)
        assert seen_well_before, "no text reached the client 1.5 s before the kill"

        srv = restart(srv)
        pytest.corral_server = srv
        user = Api.login(srv, "reader", password)
        stored = user.ok("GET", f"/api/chats/{chat['id']}")
        answer = stored["messages"][-1]
        assert answer["role"] == "assistant"
        assert answer["status"] == "interrupted", answer
        content = answer["content"]
        assert content, "the interrupted answer lost its text"
        assert seen.startswith(content), (
            f"stored text is not what the client saw:\nstored {content!r}\nseen   {seen!r}"
        )
        assert len(content) >= len(seen_well_before), (
            f"the stored text lags more than 1.5 s: {len(content)} of {len(seen)} characters, "
            f"{len(seen_well_before)} seen 1.5 s before the kill"
        )
        assert answer["usage"]["completion_tokens"] > 0, answer["usage"]
        stats = user.ok("GET", "/api/me/stats")
        usage = [m for m in stats["models"] if m["model"] == DEMO]
        assert usage and usage[0]["generations"] == 1, stats["models"]
        assert usage[0]["completion_tokens"] == answer["usage"]["completion_tokens"], usage
        # The interrupted answer is history like a stopped one: the chat
        # goes on.
        with user.session.post(
            f"{srv.base}/api/chats/{chat['id']}/stream",
            json={"content": "And then?", "sampling": SHORT_ANSWER},
            stream=True,
            timeout=(5, 120),
        ) as r:
            assert r.status_code == 200, r.text
            names = [n for n, _ in sse_events(r)]
        assert names[-1] == "done", names[-3:]
    finally:
        srv.stop()
        pytest.corral_server = None


def test_sigterm_ends_streams_stores_the_answer_and_exits_cleanly(corral_bin, demo_model, tmp_path):
    srv = start(corral_bin, tmp_path / "corral", None, demo_model)
    pytest.corral_server = srv
    try:
        password = srv.create_account("reader", "user")
        tech = Api.login(srv, "tech", srv.create_account("tech", "technician"))
        user = Api.login(srv, "reader", password)
        demo_ready(user)
        events = Reader(
            tech.session.get(srv.base + "/api/events", stream=True, timeout=(5, 120))
        )
        chat = user.ok("POST", "/api/chats", json={"model": DEMO}, expect=(201,))
        answer = stream_answer(user, chat["id"], "Tell me a very long story about a fox.")
        wait_until(lambda: answer.text(), 120, "the first piece of the answer")
        term_at = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        code = srv.proc.wait(timeout=GRACE_SECS + 15)
        took = time.monotonic() - term_at
        assert code == 0, f"exit status {code}\n{srv.log_tail()}"
        assert took < GRACE_SECS + 10, f"took {took:.1f} s to stop"
        answer.join(timeout=10)
        events.join(timeout=10)
        assert not answer.is_alive() and not events.is_alive(), "a stream did not end"
        assert events.names()[-1:] == ["shutting_down"], events.events[-3:]
        last = answer.events[-1]
        assert last[1] == "done", answer.events[-3:]
        done = last[2]["message"]
        assert done["status"] in ("complete", "cancelled"), done
        assert done["content"] == answer.text(), "the done event's text is not what streamed"

        srv = restart(srv)
        pytest.corral_server = srv
        user = Api.login(srv, "reader", password)
        stored = user.ok("GET", f"/api/chats/{chat['id']}")["messages"][-1]
        assert (stored["status"], stored["content"]) == (done["status"], done["content"])
        r = requests.get(srv.base + "/healthz", timeout=10)
        assert r.status_code == 200
    finally:
        srv.stop()
        pytest.corral_server = None


# ---------------------------------------------------------------------------
# The data directory


def modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        if not path.is_symlink():
            out[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return out


def loose(found: dict[str, int], root: Path) -> dict[str, str]:
    return {
        name: oct(mode)
        for name, mode in found.items()
        if mode != (0o700 if (root / name).is_dir() else 0o600)
    }


def test_the_data_dir_is_private_to_the_server_user(corral_bin, tmp_path):
    srv = CorralServer(corral_bin, tmp_path / "corral", server_config(None))
    # A data directory from before, as readable as a default umask makes it.
    srv.data.chmod(0o755)
    leftover = srv.data / "models" / "old.gguf.partial"
    leftover.parent.mkdir(mode=0o755)
    leftover.write_bytes(b"GGUF")
    leftover.chmod(0o644)
    srv.start(backends_dir=os.environ.get("CORRAL_BACKENDS_DIR") or None)
    pytest.corral_server = srv
    try:
        password = srv.create_account("owner", "admin")
        Api.login(srv, "owner", password).ok("PATCH", "/api/me", json={"display_name": "Owner"})
        running = modes(srv.data)
        assert {"corral.db", "corral.db-wal"} <= set(running), sorted(running)
        assert loose(running, srv.data) == {}, f"readable by others while running: {running}"
    finally:
        srv.stop()
        pytest.corral_server = None
    after = modes(srv.data)
    assert loose(after, srv.data) == {}, f"readable by others after the run: {after}"
