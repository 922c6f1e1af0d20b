"""Helpers for the end-to-end tests: a `corral serve` process, a small REST
client, and a Server-Sent Events reader. Every HTTP call has a timeout."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

# Seconds for ordinary REST calls (connect, read).
TIMEOUT = (5, 60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict:
    """The environment without any CORRAL_* setting, so only our flags count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.setdefault("RUST_LOG", "info")
    # A panic in the server log comes with its backtrace.
    env.setdefault("RUST_BACKTRACE", "1")
    return env


def wait_until(condition, within: float, what: str, every: float = 0.05):
    """Polls `condition()` until it returns a true value, which is returned;
    fails naming `what` when `within` seconds pass first."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {within:.0f} s"
        time.sleep(every)


def stop_process(proc: subprocess.Popen | None, log=None):
    """SIGTERM, then SIGKILL after 15 s; closes the process's log file."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if log:
        log.close()


def closed_by_server(s: socket.socket, within: float) -> bool:
    """Whether the server closes `s` within `within` seconds (reading and
    dropping whatever it sends first)."""
    s.settimeout(within)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if not s.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


def make_certificate(cert: Path, key: Path, name: str, ip: str = "127.0.0.1"):
    """A self-signed certificate for `ip` and localhost, as `openssl` makes
    one, written to `cert` and `key` the way a renewal writes them: new
    files renamed over the old ones."""
    new_cert, new_key = cert.with_name(cert.name + ".new"), key.with_name(key.name + ".new")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(new_key), "-out", str(new_cert), "-days", "2", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=IP:{ip},DNS:localhost"],
        check=True, capture_output=True,
    )
    os.replace(new_key, key)
    os.replace(new_cert, cert)


def fingerprint_of(cert: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


def fingerprint_of(cert: Path) -> str:
    """The SHA-256 fingerprint of a PEM certificate, as lower-case hex."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


def served_fingerprint(host: str, port: int) -> str:
    """The SHA-256 fingerprint (lower-case hex) of the certificate a new
    TLS connection to `host`:`port` is shown."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def shown_fingerprint(cert: Path) -> str:
    """`fingerprint_of` as Corral and `openssl x509 -fingerprint` show it:
    upper-case pairs joined by colons."""
    pin = fingerprint_of(cert).upper()
    return ":".join(pin[i:i + 2] for i in range(0, len(pin), 2))


class ServerDied(AssertionError):
    pass


def wait_for_port(port: int, within: float, alive=lambda: None):
    """Waits until 127.0.0.1:`port` accepts connections; `alive()` raises
    when the process behind it is gone."""
    deadline = time.monotonic() + within
    while True:
        alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing accepts connections on port {port} after {within:.0f} s")
        time.sleep(0.1)


def secantusd_binary() -> str:
    """The SecantusDB server (MongoDB wire protocol) of the test venv:
    CORRAL_SECANTUSD, or `secantusd-py` beside this Python."""
    path = os.environ.get("CORRAL_SECANTUSD") or str(Path(sys.executable).parent / "secantusd-py")
    assert os.access(path, os.X_OK), (
        f"SecantusDB server not found at {path}: run scripts/test-deps.sh (or set CORRAL_SECANTUSD)"
    )
    return path


class SecantusServer:
    """A SecantusDB server (the MongoDB store's test server) on
    127.0.0.1:<free port> with its own storage directory; stopped by its
    own PID."""

    def __init__(self, work: Path, port: int | None = None):
        self.work = work
        self.storage = work / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.log_path = work / "secantusd.log"
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, ready_within: float = 60.0) -> "SecantusServer":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                secantusd_binary(),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--storage-path",
                str(self.storage),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
        wait_for_port(self.port, ready_within, self.check_alive)
        return self

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            text = self.log_path.read_text(errors="replace")[-4000:]
            raise AssertionError(f"SecantusDB exited with status {self.proc.returncode}\n{text}")

    def url(self, database: str | None = None) -> str:
        """A connection string; `database` defaults to a fresh name."""
        database = database or "corral_e2e_" + secrets.token_hex(6)
        return f"mongodb://127.0.0.1:{self.port}/{database}?directConnection=true"

    def stop(self):
        stop_process(self.proc, self._log)
        self._log = None


class CorralServer:
    """`corral serve` on 127.0.0.1:<free port> with its own data directory;
    on the embedded SQLite store, or on `database` (a mongodb:// URL). With
    `tls` (a PEM certificate and key) it serves HTTPS, and clients trust
    that certificate."""

    def __init__(self, binary: str, work: Path, config: str = "", database: str | None = None,
                 tls: tuple[Path, Path] | None = None, tls_flags: bool = True):
        self.binary = binary
        self.tls = tls
        # False: `config` names the certificate itself, not the flags.
        self.tls_flags = tls_flags
        # What `requests` checks the server's certificate against.
        self.verify: str | bool = str(tls[0]) if tls else True
        self.work = work
        self.data = work / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = work / "corral.toml"
        self.database = database
        if database:
            # First, before any table of the rest.
            config = f"database = {json.dumps(database)}\n" + config
        self.config.write_text(config)
        self.log_path = work / "server.log"
        self.port = free_port()
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, ready_within: float = 60.0, backends_dir: str | None = None):
        self._log = open(self.log_path, "ab")
        args = [
            self.binary,
            "serve",
            "--config",
            str(self.config),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--data-dir",
            str(self.data),
        ]
        if backends_dir:
            args += ["--backends-dir", backends_dir]
        if self.tls and self.tls_flags:
            args += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
        deadline = time.monotonic() + ready_within
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if requests.get(self.base + "/readyz", timeout=2, verify=self.verify).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(
            f"corral was not ready within {ready_within:.0f} s\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return f"--- last {lines} lines of {self.log_path} ---\n" + "\n".join(text[-lines:])

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerDied(
                f"corral exited early with status {self.proc.returncode}\n{self.log_tail()}"
            )

    def create_account(self, username: str, role: str, password: str | None = None) -> str:
        password = password or "e2e-" + secrets.token_urlsafe(18)
        out = subprocess.run(
            [
                self.binary,
                "admin",
                "create",
                "--config",
                str(self.config),
                "--data-dir",
                str(self.data),
                "--username",
                username,
                "--role",
                role,
                "--password",
                password,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
        )
        assert out.returncode == 0, f"admin create failed: {out.stdout}\n{out.stderr}"
        return password

    def stop(self):
        if self.proc is None:
            return
        stop_process(self.proc, self._log)


class Api:
    """REST calls as one account, with a Bearer token."""

    def __init__(self, server: CorralServer, token: str | None = None):
        self.server = server
        self.base = server.base
        self.session = requests.Session()
        self.token = token
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def login(cls, server: CorralServer, username: str, password: str) -> "Api":
        r = requests.post(
            server.base + "/api/auth/login",
            json={"username": username, "password": password},
            timeout=TIMEOUT,
            verify=server.verify,
        )
        assert r.status_code == 200, f"login as {username}: {r.status_code} {r.text}"
        return cls(server, r.json()["access_token"])

    def request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", TIMEOUT)
        # Per request: a session's own `verify` loses to REQUESTS_CA_BUNDLE.
        kw.setdefault("verify", self.server.verify)
        try:
            return self.session.request(method, self.base + path, **kw)
        except requests.RequestException:
            self.server.check_alive()
            raise

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json=None, **kw):  # noqa: A002
        return self.request("POST", path, json=json, **kw)

    def patch(self, path, json=None, **kw):  # noqa: A002
        return self.request("PATCH", path, json=json, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def ok(self, method: str, path: str, expect=(200, 201, 202, 204), **kw):
        r = self.request(method, path, **kw)
        assert r.status_code in expect, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None


def sse_events(response: requests.Response):
    """Yields `(event name, data)` for each event of a text/event-stream
    answer; data is parsed as JSON when it is JSON. The stream is UTF-8
    whatever the Content-Type says (requests takes text/* without a charset
    for ISO-8859-1)."""
    name, data = None, []
    for raw in response.iter_lines():
        line = raw.decode("utf-8") if raw else ""
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    value = json.loads(text)
                except ValueError:
                    value = text
                yield (name or "message", value)
            name, data = None, []
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)


class EventListener:
    """Collects `/api/events` in a background thread."""

    def __init__(self, api: Api):
        self.events: list[tuple[float, str, dict]] = []
        self.error: Exception | None = None
        self._response = api.session.get(
            api.base + "/api/events", stream=True, timeout=(5, 120)
        )
        assert self._response.status_code == 200, self._response.text
        assert self._response.headers["content-type"].startswith("text/event-stream")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for name, data in sse_events(self._response):
                self.events.append((time.monotonic(), name, data))
        except Exception as err:  # closed by close(), or the server went away
            self.error = err

    def of(self, model_id: str, name: str | None = None) -> list[dict]:
        return [
            d
            for _, n, d in list(self.events)
            if isinstance(d, dict) and d.get("model_id") == model_id and (name is None or n == name)
        ]

    def wait_until(self, condition, within: float = 30.0):
        """Waits until `condition()` holds for the events seen so far."""
        deadline = time.monotonic() + within
        while not condition():
            assert self.error is None, f"the event stream broke: {self.error!r}"
            assert time.monotonic() < deadline, f"no such event within {within:.0f} s: {self.events[-5:]}"
            time.sleep(0.05)

    def close(self):
        try:
            self._response.close()
        except Exception:
            pass
        self._thread.join(timeout=5)


def wait_for_model(api: Api, model_id: str, timeout: float = 300.0, every: float = 0.2):
    """Polls the model until it leaves `downloading`; returns the final
    record and the progress samples seen meanwhile."""
    samples = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        api.server.check_alive()
        model = api.ok("GET", f"/api/models/{model_id}")
        progress = api.ok("GET", f"/api/models/{model_id}/progress")
        samples.append(progress)
        if model["status"] != "downloading":
            return model, samples
        time.sleep(every)
    raise AssertionError(f"model {model_id} still downloading after {timeout:.0f} s: {samples[-1:]}")


# ---------------------------------------------------------------------------
# Plugins


def plugin_parts(dist: str | Path, plugin_id: str) -> tuple[str, bytes]:
    """The manifest text and the component of plugin `plugin_id` in a
    folder that scripts/build-plugins.sh filled (`<id>/plugin.toml`,
    `<id>/plugin.wasm`)."""
    folder = Path(dist) / plugin_id
    manifest, component = folder / "plugin.toml", folder / "plugin.wasm"
    assert manifest.is_file() and component.is_file(), (
        f"{folder} lacks plugin.toml or plugin.wasm: rebuild the plugins (scripts/build-plugins.sh)"
    )
    return manifest.read_text(), component.read_bytes()


def upload_plugin(
    api: Api, method: str, path: str, manifest: str, component: bytes, **kw
) -> requests.Response:
    """Sends a plugin as `multipart/form-data` with the parts `manifest`
    and `component`, as `POST /api/plugins` and
    `PUT /api/plugins/{id}/component` take it."""
    files = {
        "manifest": ("plugin.toml", manifest.encode(), "application/toml"),
        "component": ("plugin.wasm", component, "application/wasm"),
    }
    kw.setdefault("timeout", (5, 180))
    return api.request(method, path, files=files, **kw)


def with_manifest_line(manifest: str, key: str, value: str) -> str:
    """`manifest` with the top-level `key = value` (a TOML value) set:
    replaced where the manifest has it, else added before the first table.
    For installing a built plugin under another policy or version."""
    lines = manifest.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("["):
            break
        if line.split("=", 1)[0].strip() == key:
            lines[i] = f"{key} = {value}"
            return "\n".join(lines) + "\n"
    first_table = next((i for i, line in enumerate(lines) if line.startswith("[")), len(lines))
    lines.insert(first_table, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def error_of(r: requests.Response) -> dict:
    """The `{"code", "message", ...}` body of an error answer."""
    try:
        body = r.json()
    except ValueError:
        raise AssertionError(f"{r.status_code} without a JSON error body: {r.text[:300]}") from None
    assert isinstance(body, dict) and "code" in body and "message" in body, body
    return body


def plugin_stats(view: dict) -> dict:
    """A plugin view's stats by hook name."""
    return {s["hook"]: s for s in view["stats"]}


def calls_of(view: dict, hook: str) -> tuple[int, int]:
    """(calls, errors) of one hook of a plugin view; (0, 0) before any."""
    s = plugin_stats(view).get(hook)
    return (s["calls"], s["errors"]) if s else (0, 0)


def demo_server_config(demo_model: str, embed_dir: str | None = None, extra: str = "") -> str:
    """A configuration for a server of a test module's own: the demo model
    registered at start as `gemma-3-270m` and, with `embed_dir`, the
    embedding model's folder allowed as a model source."""
    config = [
        f"demo_model = {json.dumps(demo_model)}",
        "access_token_ttl_secs = 7200",
        "per_user_generations = 8",
    ]
    if embed_dir:
        config.append(f"model_dirs = [{json.dumps(str(Path(embed_dir).parent))}]")
    return "\n".join(config) + "\n" + extra


DEMO_NAME = "gemma-3-270m"


@contextlib.contextmanager
def module_server(corral_bin: str, work: Path, config: str, database: str | None, backends_dir: str | None = None,
                  tls: tuple[Path, Path] | None = None):
    """A server of a test module's own, started with the backends of
    CORRAL_BACKENDS_DIR (or `backends_dir`), over HTTPS with `tls`; while it
    runs, a failing test's report shows its log."""
    import pytest

    server = CorralServer(corral_bin, work, config, database=database, tls=tls)
    server.start(backends_dir=backends_dir or os.environ.get("CORRAL_BACKENDS_DIR") or None)
    before, pytest.corral_server = getattr(pytest, "corral_server", None), server
    try:
        yield server
    finally:
        pytest.corral_server = before
        server.stop()


def account(server: CorralServer, name: str, role: str) -> Api:
    """A new account with `role`, signed in."""
    return Api.login(server, name, server.create_account(name, role))


def demo_technician(server: CorralServer) -> Api:
    """A technician of `server`, once its demo model is ready."""
    api = account(server, "tech", "technician")
    wait_for_demo(api)
    return api


def wait_for_demo(api: Api, within: float = 120) -> dict:
    """The demo model once the server registered it and it is ready."""

    def ready():
        models = api.ok("GET", "/api/models")
        items = models["items"] if isinstance(models, dict) else models
        found = [m for m in items if m["name"] == DEMO_NAME]
        return found[0] if found and found[0]["status"] == "ready" else None

    return wait_until(ready, within, "the demo model is ready", every=0.2)
