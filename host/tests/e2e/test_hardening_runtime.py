"""Runtime limits seen from outside: how many chat WebSockets one account
may hold open. Each test runs a real `corral serve` of its own."""

from __future__ import annotations

import json
import os
import time

import pytest
import websocket

from corral import Api, CorralServer

CAP = 3


@pytest.fixture
def server(corral_bin, tmp_path):
    srv = CorralServer(corral_bin, tmp_path / "corral", f"max_websockets_per_user = {CAP}\n")
    srv.start(backends_dir=os.environ.get("CORRAL_BACKENDS_DIR") or None)
    yield srv
    srv.stop()


def connect(api: Api) -> websocket.WebSocket:
    url = api.base.replace("http://", "ws://", 1) + "/api/chats/ws"
    return websocket.create_connection(url, header=[f"Authorization: Bearer {api.token}"], timeout=30)


def refused(api: Api) -> tuple[int, str]:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        connect(api).close()
    return info.value.status_code, json.loads(info.value.resp_body)["code"]


def test_an_account_holds_at_most_its_websockets(server):
    ada_pw = server.create_account("ada", "user")
    ada = Api.login(server, "ada", ada_pw)
    bob = Api.login(server, "bob", server.create_account("bob", "user"))
    held = [connect(ada) for _ in range(CAP)]
    # The cap is the account's: a second sign-in shares it.
    assert refused(Api.login(server, "ada", ada_pw)) == (409, "limit_reached")
    # Another account is not affected.
    connect(bob).close()

    # A closed socket gives its place back (once the server has seen it go).
    held.pop().close()
    deadline = time.monotonic() + 30
    while True:
        try:
            held.append(connect(ada))
            break
        except websocket.WebSocketBadStatusException as err:
            assert err.status_code == 409, err
            assert time.monotonic() < deadline, "a closed WebSocket kept its place"
            time.sleep(0.1)
    assert refused(ada) == (409, "limit_reached")
    for ws in held:
        ws.close()
