"""Worker nodes: two real `corral node` processes on one machine, one
listening on 127.0.0.2 and one on 127.0.0.3, and the host under test (on
the store CORRAL_E2E_STORE names) that runs models on them.

The host reaches node A only through a user-space TCP proxy that can
freeze traffic without closing a socket: the network going silent, as a
machine that hangs or a cable pulled out does. Each node runs the `fault`
backend, whose models write one word per token: the host's copy of a
model file says `local`, node A's `alpha`, node B's `bravo`, so an answer
says where it ran."""

from __future__ import annotations

import http.server
import json
import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import openai
import pytest
import requests
from openai import OpenAI

from corral import (
    Api,
    CorralServer,
    account,
    clean_env,
    error_of,
    fingerprint_of,
    free_port,
    make_certificate,
    module_server,
    served_fingerprint,
    sse_events,
    stop_process,
    wait_until,
)
from test_workers import backends_with_fault

NODE_A, NODE_B = "127.0.0.2", "127.0.0.3"
FILE = "words.gguf"


def model_text(word: str) -> str:
    return f"GGUF\nword: {word}\n"


class FreezingProxy:
    """Forwards TCP from 127.0.0.1:`port` to `target`; `freeze()` stops
    moving bytes both ways (and connecting new clients onwards) while
    every socket stays open; `thaw()` moves them again, and `thaw(lose=True)`
    first drops every connection with what was sent while frozen, as a
    network that comes back after losing it does."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.moving = threading.Event()
        self.moving.set()
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def freeze(self):
        self.moving.clear()

    def thaw(self, lose: bool = False):
        if lose:
            with self.lock:
                lost, self.sockets = self.sockets, set()
            for s in lost:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        self.moving.set()

    def _track(self, s: socket.socket):
        with self.lock:
            self.sockets.add(s)

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket):
        self.moving.wait()
        if client.fileno() < 0:
            return  # lost while frozen
        try:
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        self._track(upstream)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket):
        try:
            while True:
                self.moving.wait()
                data = source.recv(65536)
                if not data:
                    break
                self.moving.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.thaw()
        self.listener.close()


class Node:
    """A `corral node` on `address` with the fault backend, whose copy of
    the model file says `word`."""

    def __init__(self, corral_bin: str, work: Path, address: str, word: str, backends: str, extra: tuple = ()):
        self.work = work
        self.models = work / "models"
        self.models.mkdir(parents=True)
        (self.models / FILE).write_text(model_text(word))
        self.token = secrets.token_hex(24)
        token_file = work / "token"
        token_file.write_text(self.token + "\n")
        self.port = free_port()
        self.address = address
        self.url = f"http://{address}:{self.port}"
        self.log = open(work / "node.log", "wb")
        self.proc = subprocess.Popen(
            [
                corral_bin,
                "node",
                "--listen",
                f"{address}:{self.port}",
                "--token-file",
                str(token_file),
                "--models-dir",
                str(self.models),
                "--backends-dir",
                backends,
                "--data-dir",
                str(work / "data"),
                *extra,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((address, self.port), timeout=0.5).close()
                break
            except OSError:
                assert self.proc.poll() is None, (work / "node.log").read_text()
                assert time.monotonic() < deadline, "the node did not start listening"
                time.sleep(0.05)

    def call(self, method: str, path: str, token: str | None = "", headers: dict | None = None, **kw) -> requests.Response:
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token or self.token}"
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kw)

    def stop(self):
        stop_process(self.proc)
        self.log.close()

    def held(self, model_id: str) -> list[dict]:
        """The node's own report of model `model_id`."""
        return [m for m in self.call("GET", "/health").json()["models"] if m["id"] == model_id]


@pytest.fixture(scope="module")
def nodes(corral_bin, tmp_path_factory):
    work = tmp_path_factory.mktemp("nodes")
    backends = str(backends_with_fault(corral_bin, work / "backends"))
    a = Node(corral_bin, work / "a", NODE_A, "alpha", backends)
    b = Node(corral_bin, work / "b", NODE_B, "bravo", backends)
    proxy = FreezingProxy((NODE_A, a.port))
    yield a, b, proxy
    proxy.close()
    a.stop()
    b.stop()


class HostileNode(http.server.BaseHTTPRequestHandler):
    """A node that answers its health and loads, then streams what
    `generation` says: a frame line that never ends (`endless_line`),
    heartbeats for ten minutes whatever the host asks (`heartbeats`), an
    answer that claims billions of tokens (`greedy`) or an error of 2 MB
    (`long_error`). With `huge_health` its health answer is 2 MB."""

    huge_health = False
    generation = "endless_line"

    def log_message(self, *args):
        pass

    def reply(self, status: int, body: bytes, kind: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        report = {"version": "0", "backends": ["fault"], "memory_total_bytes": 2, "memory_available_bytes": 1, "models": []}
        if HostileNode.huge_health:
            report["version"] = "x" * (2 * 1024 * 1024)
        self.reply(200, json.dumps(report).encode())

    def do_PUT(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        info = {
            "architecture": "hostile", "capabilities": {"chat": True, "completion": True, "embeddings": False},
            "context_length": 4096, "trained_context_length": None, "slots": 4, "vocab_size": 10,
            "embedding_length": None, "chat_template": None, "chat_template_source": None, "memory_bytes": 1,
        }
        self.reply(200, json.dumps(info).encode())

    def do_DELETE(self):  # noqa: N802
        self.reply(204, b"")

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.endswith("/template"):
            return self.reply(200, b'"hi"')
        if self.path.endswith("/tokenize"):
            return self.reply(200, b"[1, 2]")
        if "/cancel/" in self.path:
            return self.reply(204, b"")
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        huge = 4_000_000_000
        try:
            if HostileNode.generation == "heartbeats":
                self.wfile.write(b'{"type":"started","prompt_tokens":1}\n')
                for _ in range(1200):
                    self.wfile.write(b'{"type":"heartbeat","polls":0}\n')
                    self.wfile.flush()
                    time.sleep(0.5)
            elif HostileNode.generation == "greedy":
                summary = {
                    "finish_reason": "length", "prompt_tokens": huge, "completion_tokens": huge,
                    "truncated_tokens": 0, "cached_tokens": huge, "time_to_first_token": 0.1, "total_time": 0.2,
                }
                self.wfile.write(
                    json.dumps({"type": "started", "prompt_tokens": huge}).encode() + b"\n"
                    + b'{"type":"delta","tokens":1,"text":"hi"}\n'
                    + json.dumps({"type": "done", "summary": summary}).encode() + b"\n"
                )
            elif HostileNode.generation == "long_error":
                error = {"kind": "invalid_request", "message": "x" * (2 * 1024 * 1024)}
                self.wfile.write(json.dumps({"type": "error", "code": "backend", "error": error}).encode() + b"\n")
            else:
                self.wfile.write(b'{"type":"started","prompt_tokens":1}\n{"type":"delta","tokens":1,"text":"')
                for _ in range(80):
                    self.wfile.write(b"a" * 65536)
                time.sleep(10)
        except OSError:
            pass


def self_signed(work: Path) -> tuple[Path, Path]:
    """A self-signed certificate of the node and its key."""
    cert, key = work / "node.crt", work / "node.key"
    make_certificate(cert, key, "corral-node", ip=NODE_A)
    return cert, key


def openssl_fingerprint(cert: Path) -> str:
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(cert)],
        check=True, capture_output=True, text=True,
    ).stdout
    return out.strip().split("=", 1)[1]


@pytest.fixture(scope="module")
def tls_node(corral_bin, tmp_path_factory):
    """A node on 127.0.0.2 serving HTTPS with a self-signed certificate;
    its model says `tango`."""
    work = tmp_path_factory.mktemp("tls-node")
    backends = str(backends_with_fault(corral_bin, work / "backends"))
    cert, key = self_signed(work)
    node = Node(corral_bin, work / "n", NODE_A, "tango", backends,
                extra=("--tls-cert", str(cert), "--tls-key", str(key)))
    node.url = f"https://{NODE_A}:{node.port}"
    node.cert = cert
    yield node
    node.stop()


@pytest.fixture(scope="module")
def hostile():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HostileNode)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def host(corral_bin, demo_model, module_database, tmp_path_factory, nodes, hostile, tls_node):
    a, b, proxy = nodes
    work = tmp_path_factory.mktemp("node-host")
    backends = str(backends_with_fault(corral_bin, work / "backends"))
    folders = [str(Path(demo_model).resolve().parent), str(work / "data" / "models")]
    config = (
        "access_token_ttl_secs = 7200\nper_user_generations = 8\n"
        f"node_allowed_origins = {json.dumps([proxy.url, b.url, hostile, tls_node.url])}\n"
        f"model_dirs = {json.dumps(folders)}\n"
    )
    with module_server(corral_bin, work, config, module_database, backends) as server:
        models = server.data / "models"
        models.mkdir(exist_ok=True)
        (models / FILE).write_text(model_text("local"))
        server.tech = account(server, "node-tech", "technician")
        server.user = account(server, "node-user", "user")
        yield server


@pytest.fixture(scope="module")
def registered(host, nodes):
    """Both nodes registered (A through the proxy) and a model `words`
    on the host."""
    a, b, proxy = nodes
    tech = host.tech
    tech.ok("POST", "/api/nodes", json={"name": "node-a", "url": proxy.url, "token": a.token}, expect=(201,))
    tech.ok("POST", "/api/nodes", json={"name": "node-b", "url": b.url, "token": b.token}, expect=(201,))
    model = tech.ok(
        "POST",
        "/api/models",
        json={"name": "words", "backend": "fault", "source": str(host.data / "models" / FILE), "slots": 4},
        expect=(202,),
    )
    return model


def node_view(tech: Api, name: str) -> dict:
    [view] = [n for n in tech.ok("GET", "/api/nodes")["items"] if n["name"] == name]
    return view


def words(ai: OpenAI, n: int = 4) -> str:
    answer = ai.chat.completions.create(
        model="words", messages=[{"role": "user", "content": "hello"}], max_tokens=n, temperature=0
    )
    return answer.choices[0].message.content.strip()


@pytest.fixture(scope="module")
def ai(host) -> OpenAI:
    key = host.user.ok("POST", "/api/me/keys", json={"name": "nodes e2e"}, expect=(201,))["key"]
    return OpenAI(base_url=host.base + "/v1", api_key=key, timeout=60, max_retries=0)


def model_on_new_node(tech: Api, node_name: str, node: Node, name: str, source: Path) -> dict:
    """Registers `node` as `node_name` and a `fault` model `name` placed on it."""
    tech.ok("POST", "/api/nodes", json={"name": node_name, "url": node.url, "token": node.token}, expect=(201,))
    return tech.ok(
        "POST",
        "/api/models",
        json={"name": name, "backend": "fault", "source": str(source), "node": node_name},
        expect=(202,),
    )


def place(tech: Api, model: dict, node: str) -> dict:
    return tech.ok("PATCH", f"/api/models/{model['id']}", json={"node": node})


def test_a_registered_node_reports_itself_and_its_token_is_never_shown(host, nodes, registered):
    a, b, proxy = nodes
    # One health answer late by 2 s on a busy machine marks a node down until
    # the next, so "up" is waited for rather than read once.
    wait_until(lambda: node_view(host.tech, "node-b")["status"] == "up", 5, "node B is up")
    view = node_view(host.tech, "node-b")
    assert "fault" in view["backends"], view
    assert view["memory_total_bytes"] > view["memory_available_bytes"] > 0, view
    assert view["url"] == b.url
    listing = json.dumps(host.tech.ok("GET", "/api/nodes"))
    audit = json.dumps(host.tech.ok("GET", "/api/audit", params={"action": "node.create"}))
    for token in (a.token, b.token):
        assert token not in listing and token not in audit
    assert "node-b" in audit

    # A wrong token: registered, but down with the reason.
    r = host.tech.post("/api/nodes", json={"name": "node-wrong", "url": b.url, "token": "w" * 32})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "down" and "token" in r.json()["reason"], r.json()
    host.tech.ok("DELETE", "/api/nodes/node-wrong", expect=(204,))
    assert host.tech.delete("/api/nodes/node-wrong").status_code == 404


def test_only_technicians_manage_nodes(host, registered):
    admin = account(host, "node-admin", "admin")
    body = {"name": "x", "url": "http://10.0.0.9:7000", "token": "t" * 32}
    for api in (admin, host.user):
        assert api.get("/api/nodes").status_code == 403
        r = api.post("/api/nodes", json=body)
        assert r.status_code == 403, r.text
        assert api.delete("/api/nodes/node-b").status_code == 403
        assert api.patch("/api/nodes/node-b", json={"token": "t" * 32}).status_code == 403
    assert [n["name"] for n in host.tech.ok("GET", "/api/nodes")["items"]].count("node-b") == 1
    wait_until(lambda: node_view(host.tech, "node-b")["status"] == "up", 5, "node B is up")


def test_node_addresses_and_tokens_are_checked(host, nodes, registered):
    a, b, proxy = nodes
    tech = host.tech

    def refused(body: dict, field: str):
        base = {"name": "bad", "url": "http://10.0.0.9:7000", "token": "t" * 32}
        r = tech.post("/api/nodes", json={**base, **body})
        assert r.status_code == 422, (body, r.text)
        assert error_of(r)["details"][0]["field"] == field, (body, r.text)

    # Loopback and link-local addresses only as the listed origins.
    refused({"url": f"http://127.0.0.1:{free_port()}"}, "url")
    refused({"url": f"http://{NODE_A}:{a.port}"}, "url")
    refused({"url": "http://169.254.169.254/"}, "url")
    refused({"url": "http://[::1]:7000"}, "url")
    refused({"url": "file:///etc/passwd"}, "url")
    refused({"url": f"http://user:pw@{NODE_B}:{b.port}"}, "url")
    refused({"token": "short"}, "token")
    refused({"token": "t" * 20 + "\r\nX-Evil: 1"}, "token")
    refused({"name": "../x"}, "name")
    r = tech.post("/api/nodes", json={"name": "node-b", "url": b.url, "token": b.token})
    assert r.status_code == 409, r.text
    # Moving a node to another server needs its token again.
    r = tech.patch("/api/nodes/node-b", json={"url": proxy.url})
    assert r.status_code == 422 and error_of(r)["details"][0]["field"] == "token", r.text
    assert node_view(tech, "node-b")["url"] == b.url
    # A placement on a node that does not exist.
    r = tech.patch(f"/api/models/{registered['id']}", json={"node": "nowhere"})
    assert r.status_code == 422 and error_of(r)["details"][0]["field"] == "node", r.text


def test_the_node_itself_wants_its_token_and_plain_file_names(nodes):
    a, b, proxy = nodes
    assert b.call("GET", "/health", token=None).status_code == 401
    assert b.call("GET", "/health", token="x" * 32).status_code == 401
    assert b.call("GET", "/health").status_code == 200
    placement = {
        "backend": "fault",
        "size_bytes": None,
        "request": {"path": "", "context_length": 0, "threads": 0, "slots": 1, "chat_template": None, "prompt_cache": False},
    }
    secret = b.work / "secret.gguf"
    secret.write_text(model_text("stolen"))
    for name in ("../secret.gguf", str(secret), "/etc/passwd", ".", ""):
        r = b.call("PUT", "/models/probe", json={**placement, "file": name})
        assert r.status_code == 422, (name, r.text)
        assert r.json()["code"] in ("file_missing",), r.text
    r = b.call("PUT", "/models/probe", json={**placement, "file": "missing.gguf"})
    assert r.status_code == 422 and "copy it there" in r.text
    r = b.call("PUT", "/models/probe", json={**placement, "file": FILE, "size_bytes": 3})
    assert r.status_code == 422 and r.json()["code"] == "file_differs", r.text
    assert not b.held("probe")
    # A host letting go of an older placement does not remove a newer one.
    r = b.call("PUT", "/models/probe", json={**placement, "file": FILE})
    assert r.status_code == 200 and r.json()["architecture"], r.text
    assert b.call("DELETE", "/models/probe", headers={"x-corral-placement": "0" * 24}).status_code == 409
    assert b.held("probe")
    assert b.call("DELETE", "/models/probe").status_code == 204
    assert not b.held("probe")
    # Two hosts place the same model: it is held for both, and one letting
    # go (or a host that never held it) leaves it to the other.
    for host_id in ("host-one", "host-two"):
        r = b.call("PUT", "/models/probe", json={**placement, "file": FILE}, headers={"x-corral-host": host_id})
        assert r.status_code == 200, r.text
    [probe] = [m for m in b.call("GET", "/health").json()["models"] if m["id"] == "probe"]
    assert sorted(probe["owners"]) == ["host-one", "host-two"], probe
    for host_id in ("host-one", "host-three"):
        assert b.call("DELETE", "/models/probe", headers={"x-corral-host": host_id}).status_code == 204
        assert b.held("probe"), f"{host_id} freed a model another host holds"
    assert b.call("DELETE", "/models/probe", headers={"x-corral-host": "host-two"}).status_code == 204
    assert not b.held("probe")


def test_a_model_runs_on_the_node_it_is_placed_on(host, nodes, registered, ai):
    tech = host.tech
    assert words(ai) == "local local local local"
    view = place(tech, registered, "node-b")
    assert view["node"] == "node-b"
    assert words(ai) == "bravo bravo bravo bravo"
    # The node's report (asked for every second) shows it.
    wait_until(
        lambda: [m["name"] for m in node_view(tech, "node-b")["loaded"]] == ["words"],
        10,
        "node B reports the model",
    )
    assert node_view(tech, "node-b")["placed"] == ["words"]
    # The user sees neither the node nor its address.
    user_view = host.user.ok("GET", f"/api/models/{registered['id']}")
    assert "node" not in user_view and "source" not in user_view

    place(tech, registered, "node-a")
    assert words(ai) == "alpha alpha alpha alpha"
    # The model left node B: B frees it.
    wait_until(lambda: node_view(tech, "node-b")["loaded"] == [], 5, "node B unloads the model")
    # A node with models on it stays.
    r = tech.delete("/api/nodes/node-a")
    assert r.status_code == 409 and "words" in r.text, r.text

    # Usage is counted on the host, per user, like any model's.
    stats = host.user.ok("GET", "/api/me/stats")
    assert json.dumps(stats).count("words") >= 1, stats


def test_a_node_serves_its_renewed_certificate_without_a_restart(corral_bin, tmp_path):
    backends = str(backends_with_fault(corral_bin, tmp_path / "backends"))
    cert, key = self_signed(tmp_path)
    node = Node(corral_bin, tmp_path / "n", NODE_A, "renewed", backends,
                extra=("--tls-cert", str(cert), "--tls-key", str(key)))
    try:
        assert served_fingerprint(NODE_A, node.port) == fingerprint_of(cert)
        make_certificate(cert, key, "corral-node-renewed", ip=NODE_A)
        node.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: served_fingerprint(NODE_A, node.port) == fingerprint_of(cert), 5,
                   "the node serves its renewed certificate")
        assert node.proc.poll() is None, "SIGHUP stopped the node"
        assert "read the TLS certificate files again" in (node.work / "node.log").read_text()
    finally:
        node.stop()


def test_a_node_with_its_own_certificate_is_trusted_by_its_pinned_fingerprint(host, nodes, tls_node, ai):
    tech, node, plain = host.tech, tls_node, nodes[1].url
    pin = openssl_fingerprint(node.cert)
    # The node prints the fingerprint `openssl x509 -fingerprint -sha256` shows.
    assert f"TLS certificate SHA-256 fingerprint: {pin}" in (node.work / "node.log").read_text()
    # It speaks TLS only: plain HTTP gets no answer.
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://{NODE_A}:{node.port}/health", timeout=5)
    assert requests.get(node.url + "/health", headers={"Authorization": f"Bearer {node.token}"},
                        verify=str(node.cert), timeout=5).status_code == 200

    def refused(body: dict, field: str):
        r = tech.post("/api/nodes", json={"name": "tls-bad", "url": node.url, "token": node.token, **body})
        assert r.status_code == 422 and error_of(r)["details"][0]["field"] == field, (body, r.text)

    refused({"tls_fingerprint": pin[:-3]}, "tls_fingerprint")
    refused({"tls_fingerprint": "zz" * 32}, "tls_fingerprint")
    refused({"tls_fingerprint": pin + ":" * 200}, "tls_fingerprint")  # over the 200-byte limit
    refused({"tls_fingerprint": "\u00e9" * 32}, "tls_fingerprint")  # 64 bytes, none of them hex
    r = tech.post("/api/nodes", json={"name": "tls-bad", "url": node.url, "token": node.token, "tls_fingerprint": 5})
    assert r.status_code == 422 and "tls_fingerprint" in r.text, r.text
    assert "tls-bad" not in [n["name"] for n in tech.ok("GET", "/api/nodes")["items"]], "a refused node was stored"
    # A pin on a plain HTTP URL would send the token in the clear.
    refused({"url": plain, "tls_fingerprint": pin}, "tls_fingerprint")

    # Without a pin the certificate must come from a public authority, and
    # a self-signed one does not: the node is down with TLS's reason.
    tech.ok("POST", "/api/nodes", json={"name": "tls", "url": node.url, "token": node.token}, expect=(201,))
    wait_until(lambda: node_view(tech, "tls")["status"] == "down", 5, "the untrusted node is down")
    assert "TLS refused its certificate" in node_view(tech, "tls")["reason"], node_view(tech, "tls")
    # A wrong pin: down, and the reason says the fingerprint differs.
    other = "AB:" * 31 + "AB"
    r = tech.patch("/api/nodes/tls", json={"tls_fingerprint": other})
    assert r.status_code == 422 and error_of(r)["details"][0]["field"] == "token", r.text
    view = tech.ok("PATCH", "/api/nodes/tls", json={"tls_fingerprint": other.lower(), "token": node.token})
    assert view["tls_fingerprint"] == other, view
    wait_until(lambda: "fingerprint differs" in (node_view(tech, "tls")["reason"] or ""), 5, "the wrong pin is named")
    assert node.call("GET", "/health", verify=str(node.cert)).json()["models"] == []

    # The right pin (written without colons): up, and a model runs there.
    bare = pin.replace(":", "").lower()
    view = tech.ok("PATCH", "/api/nodes/tls", json={"tls_fingerprint": bare, "token": node.token})
    assert view["tls_fingerprint"] == pin, view
    wait_until(lambda: node_view(tech, "tls")["status"] == "up", 5, "the pinned node is up")
    assert "fault" in node_view(tech, "tls")["backends"]
    model = tech.ok(
        "POST", "/api/models",
        json={"name": "tango", "backend": "fault", "source": str(host.data / "models" / FILE), "node": "tls"},
        expect=(202,),
    )
    answer = ai.chat.completions.create(
        model="tango", messages=[{"role": "user", "content": "hello"}], max_tokens=3, temperature=0
    )
    assert answer.choices[0].message.content.strip() == "tango tango tango"
    held = node.call("GET", "/health", verify=str(node.cert)).json()["models"]
    assert [m["id"] for m in held] == [model["id"]], held
    # A pinned node cannot move to plain HTTP, and dropping the pin needs
    # the token.
    r = tech.patch("/api/nodes/tls", json={"url": plain, "token": node.token})
    assert r.status_code == 422 and error_of(r)["details"][0]["field"] == "tls_fingerprint", r.text
    r = tech.patch("/api/nodes/tls", json={"tls_fingerprint": ""})
    assert r.status_code == 422 and error_of(r)["details"][0]["field"] == "token", r.text
    assert node_view(tech, "tls")["tls_fingerprint"] == pin
    # Audit entries name the pin, never the token.
    audit = tech.get("/api/audit").text
    assert pin in audit and node.token not in audit

    tech.ok("DELETE", f"/api/models/{model['id']}", expect=(204,))
    tech.ok("DELETE", "/api/nodes/tls", expect=(204,))


def stream_answer(user: Api, chat_id: str, max_tokens: int, on_text=None):
    r = user.session.post(
        f"{user.base}/api/chats/{chat_id}/stream",
        json={"content": "go on", "sampling": {"max_tokens": max_tokens, "temperature": 0}},
        stream=True,
        timeout=(5, 60),
    )
    assert r.status_code == 200, r.text
    text, end = "", None
    for name, data in sse_events(r):
        if name == "delta":
            text += data.get("text") or data.get("delta") or ""
            if on_text:
                on_text(text)
        if name in ("done", "error"):
            end = (name, data, time.monotonic())
            break
    r.close()
    return text, end


def test_a_frozen_node_fails_fast_is_marked_down_and_comes_back(host, nodes, registered, ai):
    a, b, proxy = nodes
    tech, user = host.tech, host.user
    place(tech, registered, "node-a")
    assert words(ai, 1) == "alpha"
    # A second model, on node B, answers throughout.
    (host.data / "models" / "other.gguf").write_text(model_text("local"))
    (b.models / "other.gguf").write_text(model_text("bravo"))
    other = tech.ok(
        "POST",
        "/api/models",
        json={"name": "other", "backend": "fault", "source": str(host.data / "models" / "other.gguf"), "node": "node-b"},
        expect=(202,),
    )
    chat = user.ok("POST", "/api/chats", json={"model": "words"}, expect=(201,))
    other_chat = user.ok("POST", "/api/chats", json={"model": "other"}, expect=(201,))

    beside: dict = {}

    def other_answer():
        beside["text"], beside["end"] = stream_answer(user, other_chat["id"], 150)

    frozen_at: list[float] = []

    def freeze_once(text: str):
        if not frozen_at and text.count("alpha") >= 5:
            proxy.freeze()
            frozen_at.append(time.monotonic())

    try:
        runner = threading.Thread(target=other_answer)
        runner.start()
        text, end = stream_answer(user, chat["id"], 500, freeze_once)
        assert frozen_at, f"the answer ended before the freeze: {text!r}"
        name, data, at = end
        assert name == "error" and data["error"]["code"] == "worker_unreachable", end
        assert at - frozen_at[0] < 5.0, f"the stream ended {at - frozen_at[0]:.1f} s after the freeze"

        # Marked down with a reason, within 5 s of the freeze.
        wait_until(
            lambda: node_view(tech, "node-a")["status"] == "down",
            max(0.1, frozen_at[0] + 5 - time.monotonic()),
            "node A is marked down",
        )
        assert node_view(tech, "node-a")["reason"]
        assert "unreachable" in host.user.ok("GET", f"/api/models/{registered['id']}")["unavailable"]
        # New requests fail at once.
        started = time.monotonic()
        r = requests.post(
            host.base + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {ai.api_key}"},
            json={"model": "words", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            timeout=10,
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "worker_unreachable", r.text
        assert time.monotonic() - started < 1.0
        # With a fallback on another node, the fallback answers instead.
        tech.ok("PATCH", f"/api/models/{registered['id']}", json={"fallbacks": ["other"]})
        assert words(ai, 2) == "bravo bravo"
        tech.ok("PATCH", f"/api/models/{registered['id']}", json={"fallbacks": []})

        # What the user saw is kept.
        [*_, answer] = user.ok("GET", f"/api/chats/{chat['id']}")["messages"]
        assert answer["status"] == "interrupted", answer
        assert answer["content"] == text and text.count("alpha") >= 5
    finally:
        proxy.thaw()
        thawed_at = time.monotonic()
        runner.join()

    # The other node's answer got every token.
    name, data, _ = beside["end"]
    assert name == "done", beside["end"]
    assert beside["text"].split() == ["bravo"] * 150, beside["text"]

    # Back within 10 s of the freeze ending, and answering.
    wait_until(lambda: node_view(tech, "node-a")["status"] == "up", 10, "node A is up again")
    assert time.monotonic() - thawed_at < 10
    assert "unavailable" not in host.user.ok("GET", f"/api/models/{registered['id']}")
    assert words(ai, 2) == "alpha alpha"
    tech.ok("DELETE", f"/api/models/{other['id']}", expect=(204,))
    print(f"stream ended {at - frozen_at[0]:.2f} s after the freeze; up {time.monotonic() - thawed_at:.2f} s after the thaw")


def test_an_idle_node_that_freezes_is_seen_by_its_heartbeats(host, nodes, registered):
    a, b, proxy = nodes
    tech = host.tech
    wait_until(lambda: node_view(tech, "node-a")["status"] == "up", 10, "node A is up")
    proxy.freeze()
    frozen_at = time.monotonic()
    try:
        wait_until(lambda: node_view(tech, "node-a")["status"] == "down", 5, "node A is marked down")
        down_after = time.monotonic() - frozen_at
        assert "no answer" in node_view(tech, "node-a")["reason"]
    finally:
        proxy.thaw()
    thawed_at = time.monotonic()
    wait_until(lambda: node_view(tech, "node-a")["status"] == "up", 10, "node A is up again")
    print(f"idle node: down {down_after:.2f} s after the freeze, up {time.monotonic() - thawed_at:.2f} s after the thaw")


def test_a_model_let_go_of_while_its_node_was_cut_off_is_freed_when_it_returns(host, nodes, registered, ai):
    """The host unloads a model while the network to its node is gone, so
    the node never hears of it; once the node answers again, the host frees
    it there."""
    a, b, proxy = nodes
    tech = host.tech
    place(tech, registered, "node-a")
    wait_until(lambda: node_view(tech, "node-a")["status"] == "up", 10, "node A is up")
    assert words(ai, 1) == "alpha"
    [hosted] = a.held(registered["id"])
    assert len(hosted["owners"]) == 1, hosted  # the host named itself when it placed the model
    proxy.freeze()
    try:
        wait_until(lambda: node_view(tech, "node-a")["status"] == "down", 5, "node A is marked down")
        tech.ok("POST", f"/api/models/{registered['id']}/unload", expect=(204,))
        # The host's call to free the model went into the frozen network,
        # and has given up by now.
        time.sleep(3)
        assert a.held(registered["id"]), "node A heard of the unload through a frozen network"
    finally:
        proxy.thaw(lose=True)
    thawed_at = time.monotonic()
    wait_until(lambda: not a.held(registered["id"]), 10, "node A frees the model its host let go of")
    print(f"a model let go of during a partition: freed {time.monotonic() - thawed_at:.2f} s after it ended")
    wait_until(lambda: node_view(tech, "node-a")["status"] == "up", 10, "node A is up")
    # The next request places it there again.
    assert words(ai, 1) == "alpha"
    assert a.held(registered["id"])


def test_a_node_frees_what_a_killed_host_placed_once_its_lease_runs_out(corral_bin, tmp_path):
    """A host killed with SIGKILL cannot free its models; its node does, once
    it has not heard from the host for its lease (10 s here, the shortest), and
    not while the host is alive."""
    backends = str(backends_with_fault(corral_bin, tmp_path / "backends"))
    node = Node(corral_bin, tmp_path / "c", NODE_B, "cedar", backends, ("--lease-secs", "10"))
    server = None
    try:
        models = tmp_path / "host-models"
        models.mkdir()
        (models / FILE).write_text(model_text("local"))
        config = f"node_allowed_origins = {json.dumps([node.url])}\nmodel_dirs = {json.dumps([str(models)])}\n"
        server = CorralServer(corral_bin, tmp_path / "host", config)
        server.start(backends_dir=backends)
        tech = account(server, "lease-tech", "technician")
        model = model_on_new_node(tech, "node-c", node, "words", models / FILE)
        key = tech.ok("POST", "/api/me/keys", json={"name": "lease"}, expect=(201,))["key"]
        ai = OpenAI(base_url=server.base + "/v1", api_key=key, timeout=60, max_retries=0)
        assert words(ai, 1) == "cedar"
        # The host's health calls keep its lease: the model stays past it.
        time.sleep(12)
        assert node.held(model["id"]), "the node freed a model whose host is alive"
        server.proc.kill()
        server.proc.wait(timeout=10)
        killed_at = time.monotonic()
        wait_until(lambda: not node.held(model["id"]), 20, "the node frees the killed host's model")
        freed_after = time.monotonic() - killed_at
        # The lease runs from the last health call the node heard: about a
        # second before the kill, a few seconds on a busy machine.
        assert freed_after >= 6.0, f"freed {freed_after:.2f} s after the kill, before the lease ran out"
        print(f"a killed host's model: freed {freed_after:.2f} s after the kill (lease 10 s)")
        assert node.proc.poll() is None
    finally:
        if server is not None:
            server.stop()
        node.stop()


def test_hosts_sharing_a_store_follow_each_others_node_edits(corral_bin, tmp_path, host, nodes, registered):
    """Two hosts on one MongoDB database: a node registered through one is
    followed (polled, up) by the other within seconds, without a restart."""
    if not host.database:
        pytest.skip("hosts share a store only on MongoDB (CORRAL_E2E_STORE=mongodb)")
    a, b, proxy = nodes
    config = f"node_allowed_origins = {json.dumps([proxy.url, b.url])}\n"
    other = CorralServer(corral_bin, tmp_path / "other", config, database=host.database)
    other.start()
    try:
        tech = account(other, "other-tech", "technician")
        wait_until(lambda: node_view(tech, "node-b")["status"] == "up", 10, "the other host follows node B")
        host.tech.ok("POST", "/api/nodes", json={"name": "node-b2", "url": b.url, "token": b.token}, expect=(201,))
        registered_at = time.monotonic()
        wait_until(lambda: node_view(tech, "node-b2")["status"] == "up", 15, "the other host follows the new node")
        print(f"a node registered on one host: up on the other {time.monotonic() - registered_at:.2f} s later")
        host.tech.ok("DELETE", "/api/nodes/node-b2", expect=(204,))
        assert "node-b2" not in json.dumps(tech.ok("GET", "/api/nodes"))

        # Technicians on both hosts edit the one stored list at once: no
        # edit is lost, on either host.
        names = [f"{side}-{i}" for side in ("here", "there") for i in range(6)]

        failures = []

        def edit(method, name):
            client = host.tech if name.startswith("here") else tech
            try:
                if method == "POST":
                    body = {"name": name, "url": b.url, "token": b.token}
                    client.ok("POST", "/api/nodes", json=body, expect=(201,))
                else:
                    client.ok("DELETE", f"/api/nodes/{name}", expect=(204,))
            except Exception as e:  # noqa: BLE001 - reported below
                failures.append(f"{method} {name}: {e}")

        def listed(client):
            return {n["name"] for n in client.ok("GET", "/api/nodes")["items"]}

        for method in ("POST", "DELETE"):
            threads = [threading.Thread(target=edit, args=(method, n)) for n in names]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not failures, failures
            wanted = set(names) if method == "POST" else set()
            for client in (host.tech, tech):
                assert listed(client) & set(names) == wanted, f"after concurrent {method}s"
    finally:
        other.stop()


def second_host(corral_bin: str, tmp_path: Path, host: CorralServer, nodes) -> CorralServer:
    """Another host on the MongoDB database of `host`, with the `fault`
    backend and the host's models folder (the test is skipped on SQLite)."""
    if not host.database:
        pytest.skip("hosts share a store only on MongoDB (CORRAL_E2E_STORE=mongodb)")
    a, b, proxy = nodes
    config = (
        f"node_allowed_origins = {json.dumps([proxy.url, b.url])}\n"
        f"model_dirs = {json.dumps([str(host.data / 'models')])}\n"
    )
    other = CorralServer(corral_bin, tmp_path / "other", config, database=host.database)
    other.start(backends_dir=str(backends_with_fault(corral_bin, tmp_path / "backends")))
    return other


def test_a_node_moved_through_one_host_moves_the_models_the_other_host_runs(corral_bin, tmp_path, host, nodes):
    """Two hosts on one MongoDB database: when a technician on one host
    points a node at another server, the other host lets go of the model it
    runs there and runs it through the new address and token."""
    a, b, proxy = nodes
    models = host.data / "models"
    other = second_host(corral_bin, tmp_path, host, nodes)
    tech = host.tech
    model = None
    try:
        model = model_on_new_node(tech, "node-m", b, "moving", models / FILE)
        user = account(other, "moving-user", "user")
        key = user.ok("POST", "/api/me/keys", json={"name": "moving"}, expect=(201,))["key"]
        ai = OpenAI(base_url=other.base + "/v1", api_key=key, timeout=60, max_retries=0)

        def ask():
            """The word of the node that answered; None until the other
            host has read node-m from the store."""
            try:
                answer = ai.chat.completions.create(
                    model="moving", messages=[{"role": "user", "content": "hi"}], max_tokens=1, temperature=0
                )
            except openai.APIStatusError as e:
                # Until the other host reads node-m, or while it moves the
                # model: unavailable, never another kind of error.
                assert e.status_code == 503, e
                return None
            return answer.choices[0].message.content.strip()

        # The other host follows node-m (synced) and runs the model on B.
        wait_until(lambda: ask() == "bravo", 15, "the other host runs the model on node B")
        assert b.held(model["id"]) and not a.held(model["id"])

        tech.ok("PATCH", "/api/nodes/node-m", json={"url": proxy.url, "token": a.token})
        moved_at = time.monotonic()
        wait_until(lambda: ask() == "alpha", 15, "the other host runs the model on node A")
        print(f"a node moved on one host: the other host's model follows {time.monotonic() - moved_at:.2f} s later")
        wait_until(lambda: not b.held(model["id"]), 5, "node B frees what the other host let go of")
        assert a.held(model["id"])
    finally:
        other.stop()
        if model is not None:
            tech.ok("DELETE", f"/api/models/{model['id']}", expect=(204,))
            # A stopped host's placements stay for its lease (a restart finds
            # them loaded); free this one now, as its node's owner may.
            a.call("DELETE", f"/models/{model['id']}")
            assert not a.held(model["id"])
            tech.ok("DELETE", "/api/nodes/node-m", expect=(204,))


def test_a_node_removed_through_one_host_while_the_other_places_a_model_on_it(corral_bin, tmp_path, host, nodes):
    """Two hosts on one MongoDB database: one removes a node while the other
    places a model on it at the same moment, round after round: by a change,
    with a new model, or by a move from a node that is removed at the same
    moment too. At most one of removal and placement succeeds, and no model
    is ever left on a node that is gone."""
    a, b, proxy = nodes
    models = host.data / "models"
    other = second_host(corral_bin, tmp_path, host, nodes)
    here, here_too = host.tech, account(host, "racing-tech-here", "technician")
    source = str(models / FILE)
    moved = here.ok("POST", "/api/models", json={"name": "racing", "backend": "fault", "source": source}, expect=(202,))

    def register(node):
        here.ok("POST", "/api/nodes", json={"name": node, "url": b.url, "token": b.token}, expect=(201,))

    outcomes = []
    try:
        there = account(other, "racing-tech", "technician")
        for round_no in range(30):
            kind = ("change", "new model", "move")[round_no % 3]
            node, old = f"race-{round_no}", f"race-{round_no}-old"
            register(node)
            if kind == "move":
                register(old)
                place(here, moved, old)
            status = {}

            def remove():
                status["remove"] = here.request("DELETE", f"/api/nodes/{node}")

            def remove_old():
                status["remove old"] = here_too.request("DELETE", f"/api/nodes/{old}")

            def place_there():
                if kind == "new model":
                    body = {"name": f"racing-{round_no}", "backend": "fault", "source": source, "node": node}
                    status["place"] = there.request("POST", "/api/models", json=body)
                else:
                    status["place"] = there.request("PATCH", f"/api/models/{moved['id']}", json={"node": node})

            calls = [remove, place_there] + ([remove_old] if kind == "move" else [])
            start = threading.Barrier(len(calls))

            def at_once(call):
                start.wait()
                call()

            threads = [threading.Thread(target=at_once, args=(call,)) for call in calls]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            removed, placed = status["remove"], status["place"]
            assert removed.status_code in (204, 409), removed.text
            assert placed.status_code in (200, 202, 422), placed.text
            if removed.status_code == 409:
                assert "models are placed on" in error_of(removed)["message"], removed.text
            if placed.status_code == 422:
                assert "no worker node is called" in placed.text, placed.text
            if kind == "move":
                assert status["remove old"].status_code in (204, 409), status["remove old"].text
            removed_ok, placed_ok = removed.status_code == 204, placed.status_code in (200, 202)
            outcomes.append((removed_ok, placed_ok))
            assert not (removed_ok and placed_ok), f"round {round_no} ({kind}): both the removal and the placement succeeded"

            # What is stored agrees with the answers, seen from both hosts.
            for client in (here, there):
                listed = {n["name"] for n in client.ok("GET", "/api/nodes")["items"]}
                assert (node in listed) == (not removed_ok), f"round {round_no} ({kind}): {listed}"
                stranded = [
                    (m["name"], m["node"])
                    for m in client.ok("GET", "/api/models")["items"]
                    if m.get("node") and m["node"] not in listed
                ]
                assert stranded == [], f"round {round_no} ({kind}): models left on removed nodes"
                if kind != "new model" and not placed_ok:
                    # A placement taken back returns the model to its
                    # earlier node, or to the host when that one is gone (or
                    # was, for a moment, while its removal was undone).
                    earlier = old if kind == "move" and old in listed else None
                    assert client.ok("GET", f"/api/models/{moved['id']}").get("node") in (earlier, None), f"round {round_no}"

            # Back to the start: the model off the nodes, the nodes gone.
            if kind == "new model" and placed_ok:
                here.ok("DELETE", f"/api/models/{placed.json()['id']}", expect=(204,))
            if kind != "new model":
                place(here, moved, "")
            for name in (node, old):
                if name in {n["name"] for n in here.ok("GET", "/api/nodes")["items"]}:
                    here.ok("DELETE", f"/api/nodes/{name}", expect=(204,))
        print(
            "removal against placement on two hosts, 30 rounds: "
            f"{sum(r for r, _ in outcomes)} removals won, {sum(p for _, p in outcomes)} placements won, "
            f"{sum(not r and not p for r, p in outcomes)} both refused"
        )
    finally:
        other.stop()
        here.ok("DELETE", f"/api/models/{moved['id']}", expect=(204,))


def test_a_hostile_node_cannot_make_the_host_hold_its_garbage(host, hostile, registered, ai):
    tech = host.tech
    tech.ok("POST", "/api/nodes", json={"name": "hostile", "url": hostile, "token": "h" * 32}, expect=(201,))
    assert node_view(tech, "hostile")["status"] == "up"
    place(tech, registered, "hostile")
    # A frame line that never ends is given up after 4 MiB, not held.
    r = requests.post(
        host.base + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {ai.api_key}"},
        json={"model": "words", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        timeout=30,
    )
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "worker_unreachable", r.text
    # The client learns nothing of the node; the technician's view says why.
    assert "hostile" not in r.text and hostile not in r.text, r.text
    # That marked the node down. Its next health answer may already have
    # brought it back, so its last error is read: it outlives the recovery.
    view = node_view(tech, "hostile")
    assert "longer than" in view["last_error"], view
    assert view["status"] == "up" or "longer than" in view["reason"], view
    host.check_alive()
    wait_until(lambda: node_view(tech, "hostile")["status"] == "up", 5, "the hostile node is up again")
    # A health answer of 2 MB is not read to its end: the node is down.
    HostileNode.huge_health = True
    try:
        wait_until(lambda: node_view(tech, "hostile")["status"] == "down", 5, "the hostile node is down")
        assert "unreadable" in node_view(tech, "hostile")["reason"]
    finally:
        HostileNode.huge_health = False
    # Up again: no reason to be down, but the technician still sees the last.
    wait_until(lambda: node_view(tech, "hostile")["status"] == "up", 5, "the hostile node is up again")
    view = node_view(tech, "hostile")
    assert view["reason"] is None and "unreadable" in view["last_error"], view
    assert view["last_error_at"] <= view["since"], view
    place(tech, registered, "")
    tech.ok("DELETE", "/api/nodes/hostile", expect=(204,))


def test_a_hostile_node_cannot_hold_slots_charge_quota_or_flood_errors(host, hostile, registered, ai):
    """A node that goes on after a cancel is given up 30 s later, so it
    cannot keep a model's slots; the tokens it claims are capped by the
    request; its error text is cut."""
    tech = host.tech
    tech.ok("POST", "/api/nodes", json={"name": "hostile", "url": hostile, "token": "h" * 32}, expect=(201,))
    place(tech, registered, "hostile")
    chat = {"model": "words", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {ai.api_key}"}
    try:
        HostileNode.generation = "greedy"
        r = requests.post(host.base + "/v1/chat/completions", headers=headers, json=chat, timeout=30)
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        assert usage["completion_tokens"] <= 2, usage
        assert usage["prompt_tokens"] < 1000, usage
        assert usage["prompt_tokens_details"]["cached_tokens"] <= usage["prompt_tokens"], usage

        HostileNode.generation = "long_error"
        r = requests.post(host.base + "/v1/chat/completions", headers=headers, json=chat, timeout=30)
        assert r.status_code == 422, r.text[:300]
        assert len(r.content) < 4096, f"{len(r.content)} bytes of the node's error passed on"

        # Every slot of `words` (4) taken by a stream the node will not end;
        # each client hangs up after a second.
        HostileNode.generation = "heartbeats"

        def hang_up():
            with requests.post(host.base + "/v1/chat/completions", headers=headers,
                               json={**chat, "stream": True}, stream=True, timeout=30) as r:
                assert r.status_code == 200, r.text
                time.sleep(1)

        callers = [threading.Thread(target=hang_up) for _ in range(4)]
        for t in callers:
            t.start()
        for t in callers:
            t.join(timeout=40)
        # Back on the host, the model is answered once the host gave up on
        # the node's streams, not never: the hang-up is seen at the next
        # keep-alive (15 s), and the node's stream 30 s after the cancel.
        place(tech, registered, "")
        r = requests.post(host.base + "/v1/chat/completions", headers=headers, json=chat, timeout=90)
        assert r.status_code == 200, r.text
    finally:
        HostileNode.generation = "endless_line"
        place(tech, registered, "")
        tech.ok("DELETE", "/api/nodes/hostile", expect=(204,))


def test_a_real_model_runs_on_a_node(host, nodes, registered, ai, demo_model):
    """The demo model through llama.cpp on node B: the chat template and
    the token counts come from the node too."""
    a, b, proxy = nodes
    demo = Path(demo_model).resolve()
    link = b.models / demo.name
    if not link.exists():
        link.symlink_to(demo)
    model = host.tech.ok(
        "POST",
        "/api/models",
        json={"name": "gemma-on-b", "backend": "llama", "source": str(demo), "node": "node-b", "context_length": 1024, "slots": 1},
        expect=(202,),
    )
    answer = ai.chat.completions.create(
        model="gemma-on-b",
        messages=[{"role": "user", "content": "Name three colours of the rainbow."}],
        max_tokens=8,
        temperature=0,
        seed=1,
    )
    assert answer.choices[0].message.content
    assert answer.usage.prompt_tokens > 5 and answer.usage.completion_tokens == 8, answer.usage
    wait_until(
        lambda: "gemma-on-b" in [m["name"] for m in node_view(host.tech, "node-b")["loaded"]],
        10,
        "node B reports the model",
    )
    # The host's runtime lists it as loaded (there, on the node), with the
    # node's own figures.
    status = host.tech.ok("GET", "/api/status")
    [loaded] = [m for m in status["loaded"] if m["name"] == "gemma-on-b"]
    assert loaded["context_length"] == 1024 and loaded["memory_bytes"] > 0, loaded
    assert loaded["node"] == "node-b", loaded
    # That memory is the node's, not this machine's.
    assert status["limits"]["memory_used_bytes"] < loaded["memory_bytes"], status["limits"]
    host.tech.ok("DELETE", f"/api/models/{model['id']}", expect=(204,))


def test_a_node_that_restarts_gets_its_models_again(host, nodes, registered, ai):
    a, b, proxy = nodes
    place(host.tech, registered, "node-b")
    assert words(ai, 1) == "bravo"
    # The node loses what it held (as after a restart); the next request
    # loads the model there again.
    assert b.call("DELETE", f"/models/{registered['id']}").status_code == 204
    assert words(ai, 2) == "bravo bravo"
    # Removing a node: its models must move first.
    place(host.tech, registered, "")
    assert words(ai, 1) == "local"
    host.tech.ok("DELETE", "/api/nodes/node-b", expect=(204,))
    assert "node-b" not in json.dumps(host.tech.ok("GET", "/api/nodes"))
    r = host.tech.patch(f"/api/models/{registered['id']}", json={"node": "node-b"})
    assert r.status_code == 422, r.text
