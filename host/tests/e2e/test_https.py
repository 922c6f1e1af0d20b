"""`corral serve` with a certificate of its own (`--tls-cert`,
`--tls-key`): it speaks HTTPS only, every kind of client works over it (REST,
the web UI, WebSockets, the official OpenAI client), the refresh cookie is
`Secure`, and a renewed certificate is served without a restart."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import requests
import websocket
from openai import DefaultHttpxClient, OpenAI

from corral import (
    DEMO_NAME,
    TIMEOUT,
    Api,
    CorralServer,
    account,
    clean_env,
    closed_by_server,
    demo_server_config,
    demo_technician,
    fingerprint_of,
    free_port,
    make_certificate,
    module_server,
    served_fingerprint,
    shown_fingerprint,
    wait_until,
)


def log_count(srv, text: str) -> int:
    return srv.log_path.read_text(errors="replace").count(text)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    make_certificate(cert, key, "corral-first")
    return cert, key


@pytest.fixture(scope="module")
def srv(corral_bin, demo_model, module_database, tmp_path_factory, certificate):
    config = demo_server_config(demo_model)
    with module_server(corral_bin, tmp_path_factory.mktemp("https"), config, module_database,
                       tls=certificate) as server:
        yield server


@pytest.fixture(scope="module")
def tech(srv) -> Api:
    return demo_technician(srv)


@pytest.fixture(scope="module")
def ada(srv, tech) -> Api:
    return account(srv, "ada", "user")


def test_every_client_works_over_https_and_nothing_over_plain_http(srv, ada, certificate):
    cert, _ = certificate
    assert srv.base.startswith("https://")
    log = srv.log_path.read_text()
    assert f"Corral is listening on {srv.base}" in log
    # What another host pins to use this one as an upstream.
    assert f"TLS certificate SHA-256 fingerprint: {shown_fingerprint(cert)}" in log
    # HTTPS only: plain HTTP on the port gets no HTTP answer.
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{srv.port}/healthz", timeout=5)

    health = requests.get(srv.base + "/healthz", verify=srv.verify, timeout=TIMEOUT)
    assert health.status_code == 200
    assert health.headers["Strict-Transport-Security"] == "max-age=63072000"
    page = requests.get(srv.base + "/", verify=srv.verify, timeout=TIMEOUT)
    assert page.status_code == 200 and "<html" in page.text.lower(), page.text[:200]

    # A browser's sign-in: the refresh cookie may only travel over HTTPS.
    password = srv.create_account("browser", "user")
    login = requests.post(srv.base + "/api/auth/login", verify=srv.verify, timeout=TIMEOUT,
                          json={"username": "browser", "password": password, "refresh_cookie": True})
    assert login.status_code == 200, login.text
    assert "; Secure" in login.headers["Set-Cookie"], login.headers["Set-Cookie"]

    # The official OpenAI client, streaming, trusting only this certificate.
    key = ada.ok("POST", "/api/me/keys", json={"name": "https"}, expect=(201,))["key"]
    trust = ssl.create_default_context(cafile=str(cert))
    with DefaultHttpxClient(verify=trust, timeout=180) as http:
        client = OpenAI(base_url=srv.base + "/v1", api_key=key, http_client=http, max_retries=0)
        stream = client.chat.completions.create(
            model=DEMO_NAME, messages=[{"role": "user", "content": "Name a colour."}],
            max_tokens=12, temperature=0, seed=1, stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.strip(), "the streamed answer is empty"

    # The chat WebSocket over wss://.
    chat = ada.ok("POST", "/api/chats", json={"model": DEMO_NAME}, expect=(201,))["id"]
    ws = websocket.create_connection(
        srv.base.replace("https://", "wss://", 1) + "/api/chats/ws",
        header=[f"Authorization: Bearer {ada.token}"], sslopt={"ca_certs": str(cert)}, timeout=120,
    )
    try:
        ws.send(json.dumps({"type": "send", "chat_id": chat, "content": "Name a fruit.",
                            "sampling": {"max_tokens": 12, "temperature": 0, "seed": 1}}))
        while True:
            event = json.loads(ws.recv())
            if event.get("chat_id") == chat and event["type"] in ("done", "error"):
                break
    finally:
        ws.close()
    assert event["type"] == "done" and event["message"]["status"] == "complete", event
    stored = ada.ok("GET", f"/api/chats/{chat}")["messages"]
    assert stored[-1]["content"] == event["message"]["content"]


def test_a_renewed_certificate_is_served_without_a_restart(srv, certificate):
    cert, key = certificate
    pid = srv.proc.pid
    assert served_fingerprint("127.0.0.1", srv.port) == fingerprint_of(cert)
    # A client already connected keeps its connection across the renewal.
    kept = requests.Session()
    assert kept.get(srv.base + "/healthz", verify=srv.verify, timeout=TIMEOUT).status_code == 200
    # Renewed in place, as certbot does: the files change, nobody signals.
    first = fingerprint_of(cert)
    make_certificate(cert, key, "corral-renewed")
    renewed = fingerprint_of(cert)
    assert renewed != first
    wait_until(lambda: served_fingerprint("127.0.0.1", srv.port) == renewed, 20, "the renewed certificate is served")
    assert requests.get(srv.base + "/healthz", verify=srv.verify, timeout=TIMEOUT).status_code == 200
    assert kept.get(srv.base + "/healthz", verify=srv.verify, timeout=TIMEOUT).status_code == 200

    # SIGHUP reads the files at once, changed or not, and does not stop
    # the server (its default action would).
    reads = log_count(srv, "read the TLS certificate files again")
    srv.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: log_count(srv, "read the TLS certificate files again") > reads, 5,
               "SIGHUP made the server read its certificate again")
    srv.check_alive()
    assert srv.proc.pid == pid
    assert served_fingerprint("127.0.0.1", srv.port) == renewed


def test_a_renewal_that_cannot_be_read_leaves_the_working_certificate(srv, certificate):
    cert, key = certificate
    served = fingerprint_of(cert)
    good_key = key.read_bytes()
    warned = log_count(srv, "the previous TLS certificate is still served")
    try:
        key.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
        srv.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: log_count(srv, "the previous TLS certificate is still served") > warned, 5,
                   "the unreadable renewal is reported")
        srv.check_alive()
        assert served_fingerprint("127.0.0.1", srv.port) == served
        assert requests.get(srv.base + "/healthz", verify=srv.verify, timeout=TIMEOUT).status_code == 200
        # A key of another certificate is refused as well.
        other = cert.parent / "other"
        other.mkdir(exist_ok=True)
        make_certificate(other / "cert.pem", other / "key.pem", "corral-other")
        key.write_bytes((other / "key.pem").read_bytes())
        srv.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "do not make a TLS identity" in srv.log_path.read_text(errors="replace"), 5,
                   "the mismatched key is reported")
        assert served_fingerprint("127.0.0.1", srv.port) == served
    finally:
        key.write_bytes(good_key)
    srv.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert served_fingerprint("127.0.0.1", srv.port) == served
    srv.check_alive()


def test_clients_that_stall_the_handshake_cannot_hold_the_server(corral_bin, tmp_path):
    """A TLS handshake gets the time a request's headers get: silent
    connections and a half-sent ClientHello are closed, and meanwhile the
    server's few places come free for a real client."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_certificate(cert, key, "corral-strict")
    header_timeout = 2
    # The certificate from the configuration file this time, and no HSTS.
    config = (f"header_read_timeout_secs = {header_timeout}\nmax_connections = 3\nhsts_max_age_secs = 0\n"
              f"tls_cert = {json.dumps(str(cert))}\ntls_key = {json.dumps(str(key))}\n")
    strict = CorralServer(corral_bin, tmp_path / "srv", config, tls=(cert, key), tls_flags=False)
    strict.start()
    stalled = []
    try:
        stalled = [socket.create_connection(("127.0.0.1", strict.port), timeout=10) for _ in range(4)]
        # The start of a TLS record (a handshake of 512 bytes), never the rest.
        stalled[0].sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))
        began = time.monotonic()
        fresh = requests.get(strict.base + "/healthz", headers={"Connection": "close"}, verify=strict.verify,
                             timeout=(5, 20))
        assert fresh.status_code == 200
        assert "strict-transport-security" not in fresh.headers, fresh.headers
        took = time.monotonic() - began
        assert took < header_timeout * 4, f"served only after {took:.1f} s"
        for s in stalled:
            assert closed_by_server(s, header_timeout * 4), "a stalled handshake stayed open"
        strict.check_alive()
    finally:
        for s in stalled:
            s.close()
        strict.stop()


def serve_once(corral_bin: str, work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [corral_bin, "serve", "--data-dir", str(work / "data"), "--bind", f"127.0.0.1:{free_port()}", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=clean_env(), timeout=60,
    )


def test_tls_files_that_cannot_serve_stop_the_start_with_the_reason(corral_bin, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_certificate(cert, key, "corral-start")
    other_cert, other_key = tmp_path / "other.pem", tmp_path / "other-key.pem"
    make_certificate(other_cert, other_key, "corral-other")
    cases = [
        (("--tls-cert", str(cert)), "tls_cert and tls_key go together"),
        (("--tls-key", str(key)), "tls_cert and tls_key go together"),
        (("--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(key)), "missing.pem"),
        (("--tls-cert", str(key), "--tls-key", str(key)), "holds no certificate"),
        (("--tls-cert", str(cert), "--tls-key", str(cert)), "the key file"),
        (("--tls-cert", str(cert), "--tls-key", str(other_key)), "do not make a TLS identity"),
    ]
    for args, reason in cases:
        out = serve_once(corral_bin, tmp_path, *args)
        assert out.returncode != 0, (args, out.stdout)
        assert reason in out.stderr, (args, out.stderr[-2000:])
        assert "listening" not in out.stdout, (args, out.stdout)
        # Nothing was set up: the data directory was not even made.
        assert not (tmp_path / "data").exists(), args
