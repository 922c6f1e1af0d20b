"""Faults and limits that the README promises, against real servers:
`/readyz` answers 503 while the MongoDB store is down (and 200 once it is
back, with nothing lost), a store upgraded by a newer Corral takes an older
host out of service without touching the data, a WebSocket that closes
stops its answers, and sign-in attempts from one address are limited with
429 and Retry-After."""

from __future__ import annotations

import json
import sqlite3
import time

import pymongo
import pytest
import requests

from corral import TIMEOUT, Api, CorralServer, SecantusServer, ServerDied
from test_chat_stream import LONG, LONG_PROMPT, new_chat, wait_until_settled, ws_connect


def readyz(server: CorralServer) -> requests.Response:
    # The store's own timeout decides how long a probe of a dead store
    # takes; the client waits longer than that.
    return requests.get(server.base + "/readyz", timeout=(5, 90))


def test_readyz_is_503_while_the_mongodb_store_is_down(corral_bin, tmp_path):
    db = SecantusServer(tmp_path / "db").start()
    srv = CorralServer(corral_bin, tmp_path / "corral", database=db.url("corral_readyz"))
    try:
        srv.start()
        r = readyz(srv)
        assert (r.status_code, r.json()) == (200, {"status": "ok", "store": "mongodb"}), r.text
        password = srv.create_account("keeper", "user")
        Api.login(srv, "keeper", password)

        db.stop()
        began = time.monotonic()
        r = readyz(srv)
        assert r.status_code == 503, r.text
        assert r.json() == {"status": "unavailable", "store": "mongodb"}, r.text
        print(f"/readyz answered 503 after {time.monotonic() - began:.1f} s")
        # The process lives on and says so.
        r = requests.get(srv.base + "/healthz", timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        srv.check_alive()

        # The same server comes back on the same port and files: ready
        # again, and the account is still there.
        db = SecantusServer(tmp_path / "db", port=db.port).start()
        deadline = time.monotonic() + 90
        while readyz(srv).status_code != 200:
            assert time.monotonic() < deadline, "not ready again within 90 s of the store's return"
            time.sleep(0.5)
        Api.login(srv, "keeper", password)
    finally:
        srv.stop()
        db.stop()


class StoreLayout:
    """Reads and sets the store's layout number behind Corral's back, as a
    newer Corral would: SQLite's `user_version`, or MongoDB's `meta` record."""

    def __init__(self, server: CorralServer):
        self.server = server

    def get(self) -> tuple[int, str | None]:
        if self.server.database:
            with pymongo.MongoClient(self.server.database) as client:
                record = client.get_default_database()["meta"].find_one({"_id": "schema"})
                return record["version"], record["written_by"]
        with sqlite3.connect(self.server.data / "corral.db") as db:
            return db.execute("PRAGMA user_version").fetchone()[0], None

    def set(self, version: int):
        if self.server.database:
            with pymongo.MongoClient(self.server.database) as client:
                client.get_default_database()["meta"].update_one(
                    {"_id": "schema"}, {"$set": {"version": version, "written_by": "corral 99.0.0"}})
            return
        db = sqlite3.connect(self.server.data / "corral.db")
        try:
            db.execute(f"PRAGMA user_version = {int(version)}")
        finally:
            db.close()

    def users(self) -> list[str]:
        if self.server.database:
            with pymongo.MongoClient(self.server.database) as client:
                return sorted(u["username"] for u in client.get_default_database()["users"].find())
        with sqlite3.connect(self.server.data / "corral.db") as db:
            return sorted(r[0] for r in db.execute("SELECT username FROM users"))


def test_a_store_upgraded_by_a_newer_corral_takes_this_host_out_of_service(corral_bin, tmp_path, store_database):
    """When a newer Corral moves the store past this build's layout, the
    running host says it is not ready (and why) while staying alive, a
    restart of it is refused with the reason, and the data stays as the
    newer Corral left it. Back on a layout it knows, it serves again."""
    srv = CorralServer(corral_bin, tmp_path / "corral", database=store_database)
    layout = StoreLayout(srv)
    try:
        srv.start()
        password = srv.create_account("keeper", "user")
        Api.login(srv, "keeper", password)
        known, written_by = layout.get()
        assert known >= 1
        if store_database:
            assert written_by and written_by.startswith("corral "), written_by

        layout.set(known + 1)
        r = requests.get(srv.base + "/readyz", timeout=TIMEOUT)
        assert r.status_code == 503, r.text
        body = r.json()
        assert (body["status"], body["store"]) == ("upgraded", srv.database and "mongodb" or "sqlite"), body
        assert f"{known + 1}" in body["reason"] and f"up to {known}" in body["reason"], body
        assert requests.get(srv.base + "/healthz", timeout=TIMEOUT).status_code == 200
        srv.check_alive()

        srv.stop()
        with pytest.raises(ServerDied) as died:
            srv.start(ready_within=30)
        assert "corral exited early with status 1" in str(died.value), died.value
        said = srv.log_path.read_text(errors="replace")
        assert f"knows {'layouts' if store_database else 'versions'} up to {known}" in said, said[-3000:]
        assert layout.get()[0] == known + 1
        if store_database:
            assert layout.get()[1] == "corral 99.0.0", "the refused host rewrote the layout record"
        assert layout.users() == ["keeper"]

        # Back to a layout this build knows (as when the newer Corral's
        # version is rolled back with its data): served again, nothing lost.
        layout.set(known)
        srv.start()
        Api.login(srv, "keeper", password)
    finally:
        srv.stop()


def test_a_closed_websocket_stops_its_answer(user, models):
    """Closing the socket mid-answer cancels the answer: it is stored
    `cancelled` with what was written, not generated to the end."""
    chat_id = new_chat(user, models["llama"]["name"])
    ws = ws_connect(user)
    closed = False
    try:
        ws.send(json.dumps({"type": "send", "chat_id": chat_id, "content": LONG_PROMPT, "sampling": LONG}))
        deadline = time.monotonic() + 180
        while True:
            assert time.monotonic() < deadline, "no delta within 180 s"
            event = json.loads(ws.recv())
            assert event["type"] != "error", event
            if event["type"] == "delta" and event.get("chat_id") == chat_id:
                break
        ws.close()
        closed = True
        answer = wait_until_settled(user, chat_id)
        assert answer["role"] == "assistant", answer
        assert answer["status"] == "cancelled", answer
        assert answer["content"], answer
        assert answer["usage"]["completion_tokens"] < LONG["max_tokens"], answer
        # The chat takes the next message at once: nothing runs in it.
        r = user.post(f"/api/chats/{chat_id}/stop", json=None)
        assert (r.status_code, r.json()) == (200, {"stopped": False}), r.text
    finally:
        if not closed:
            ws.close()


def test_sign_in_attempts_per_address_are_limited(corral_bin, tmp_path):
    """Failed sign-ins and registrations from one address share a window;
    past it every attempt from that address, the right password too, is
    answered 429 `rate_limited` with a Retry-After, and the server keeps
    serving everything else."""
    srv = CorralServer(corral_bin, tmp_path / "corral")
    try:
        srv.start()
        password = srv.create_account("often", "user")
        me = Api.login(srv, "often", password)
        login = srv.base + "/api/auth/login"
        # A few wrong passwords (too few to slow the account down)...
        for _ in range(3):
            r = requests.post(login, json={"username": "often", "password": "wrong-password"}, timeout=TIMEOUT)
            assert r.status_code == 401, r.text
        # ...then registrations the server refuses, until the window is full.
        bad_registration = {"username": "x", "password": "short"}
        for attempt in range(4, 201):
            r = requests.post(srv.base + "/api/auth/register", json=bad_registration, timeout=TIMEOUT)
            if r.status_code != 422:
                break
        else:
            raise AssertionError("200 failed attempts from one address were all let through")
        assert r.status_code == 429, r.text
        assert r.json()["code"] == "rate_limited", r.text
        retry_after = int(r.headers["Retry-After"])
        assert 0 < retry_after <= 3600, retry_after
        print(f"the address limit tripped at attempt {attempt}; Retry-After {retry_after} s")

        # The right password from the same address waits its turn too.
        r = requests.post(login, json={"username": "often", "password": password}, timeout=TIMEOUT)
        assert r.status_code == 429, r.text
        assert r.json()["code"] == "rate_limited", r.text
        assert int(r.headers["Retry-After"]) > 0, r.headers
        # What was issued before keeps working.
        assert me.ok("GET", "/api/me")["username"] == "often"
    finally:
        srv.stop()
