"""Fixtures of the end-to-end suite.

One `corral serve` for the whole session, on a free port of 127.0.0.1 with
a fresh data directory, plus a local file server that serves the demo model
to it. Accounts are created with `corral admin create`; the models are
added by URL through the REST API, as a technician would.

The session's server uses the store that CORRAL_E2E_STORE names:
`sqlite` (the default, the embedded store) or `mongodb` (a SecantusDB
server, MongoDB wire protocol, that the fixtures start). Tests that must
run on both stores whatever the session uses take `store_database` (a
`database` for `CorralServer`: None, then a mongodb:// URL); `mongo_url`
gives a fresh MongoDB database on the session's SecantusDB.

Environment:
  CORRAL_BIN         the corral binary (backend libraries beside it)
  CORRAL_DEMO_MODEL  gemma-3-270m-q4_k_m.gguf (scripts/fetch-demo-model.sh)
  CORRAL_BACKENDS_DIR  where libcorral_*.so are, when not beside CORRAL_BIN
  CORRAL_E2E_STORE   `sqlite` (default) or `mongodb`
  CORRAL_SECANTUSD   the SecantusDB server (default: secantusd-py of the
                     test venv, from scripts/test-deps.sh)
  CORRAL_PLUGINS_DIST  built plugins, `<id>/plugin.wasm` + `<id>/plugin.toml`
                     (default: scripts/build-plugins.sh into a temporary
                     folder, once per session)
  CORRAL_EMBED_MODEL_DIR  all-MiniLM-L6-v2 (scripts/fetch-embed-model.sh)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral import Api, CorralServer, EventListener, SecantusServer, wait_for_model
from fileserver import FileServer

DEMO_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
DEMO_SIZE = 253_113_024
DEMO_FILE = "gemma-3-270m-q4_k_m.gguf"

# The first request of the resumed download breaks off after this many bytes.
CUT_AFTER = 48 * 1024 * 1024
# Bytes per second of the throttled download, so that progress can be seen.
THROTTLE = 64 * 1024 * 1024

# The models' default sampling: requests that set none (a regenerate over
# the WebSocket) stay short.
DEFAULT_SAMPLING = {"max_tokens": 64}

SERVER_CONFIG = """\
# Written by the end-to-end tests.
access_token_ttl_secs = 7200
idle_unload_secs = 3600
queue_max_waiting = 64
# Eight concurrent chats of one user must not be refused.
per_user_generations = 16
"""


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="session")
def corral_bin() -> str:
    path = os.environ.get("CORRAL_BIN")
    assert path, "set CORRAL_BIN to the corral binary (scripts/e2e.sh does)"
    assert os.access(path, os.X_OK), f"CORRAL_BIN={path} is not an executable file"
    return os.path.abspath(path)


@pytest.fixture(scope="session")
def demo_model() -> str:
    path = os.environ.get("CORRAL_DEMO_MODEL")
    assert path, "set CORRAL_DEMO_MODEL (scripts/fetch-demo-model.sh | tail -1)"
    assert os.path.getsize(path) == DEMO_SIZE, f"{path} is not the demo model (size)"
    return os.path.abspath(path)


def e2e_store() -> str:
    store = os.environ.get("CORRAL_E2E_STORE", "sqlite") or "sqlite"
    assert store in ("sqlite", "mongodb"), f"CORRAL_E2E_STORE={store}: give sqlite or mongodb"
    return store


@pytest.fixture(scope="session")
def secantus(tmp_path_factory):
    """A SecantusDB server for the session, started on first use."""
    srv = SecantusServer(tmp_path_factory.mktemp("secantus")).start()
    yield srv
    srv.stop()


@pytest.fixture
def mongo_url(secantus) -> str:
    """A mongodb:// URL of a fresh database on the session's SecantusDB."""
    return secantus.url()


@pytest.fixture(params=["sqlite", "mongodb"])
def store_database(request):
    """Each store in turn, as `CorralServer(..., database=store_database)`
    takes it: None (SQLite in the data directory), then a fresh MongoDB
    database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("mongo_url")


@pytest.fixture(scope="session")
def server(request, corral_bin, tmp_path_factory, files):
    work = tmp_path_factory.mktemp("corral")
    database = None
    if e2e_store() == "mongodb":
        database = request.getfixturevalue("secantus").url("corral_e2e_session")
    # The local file server is on 127.0.0.1, which downloads may reach
    # only as an allowed origin (a local mirror).
    config = SERVER_CONFIG + f'download_allowed_origins = ["{files.base}"]\n'
    srv = CorralServer(corral_bin, work, config, database=database)
    srv.start(backends_dir=os.environ.get("CORRAL_BACKENDS_DIR") or None)
    pytest.corral_server = srv  # for the failure report hook
    yield srv
    srv.stop()
    pytest.corral_server = None
    shutil.rmtree(srv.data / "models", ignore_errors=True)


@pytest.fixture(scope="session")
def files():
    fs = FileServer()
    yield fs
    fs.close()


@pytest.fixture(scope="session")
def technician(server) -> Api:
    password = server.create_account("tech", "technician")
    return Api.login(server, "tech", password)


@pytest.fixture(scope="session")
def user(server) -> Api:
    password = server.create_account("ada", "user")
    return Api.login(server, "ada", password)


@pytest.fixture(scope="session")
def api_key(user) -> str:
    """A personal API key of `user`, made through the REST API."""
    created = user.ok("POST", "/api/me/keys", json={"name": "e2e openai client"}, expect=(201,))
    assert created["key"]
    return created["key"]


@dataclass
class Download:
    """A model added by URL, and what was seen while it downloaded."""

    model: dict
    route: str
    samples: list
    events: list
    requests: list
    seconds: float


def add_model(technician: Api, **body) -> dict:
    return technician.ok("POST", "/api/models", json=body, expect=(202,))


@pytest.fixture(scope="session")
def llama_model(server, files, technician, demo_model) -> Download:
    """The demo model for the llama backend, downloaded over a connection
    that breaks off once (so the download must resume), throttled so that
    its progress can be watched."""
    route = f"/resume/{DEMO_FILE}"
    url = files.add(route, demo_model, cut_after=CUT_AFTER, rate=THROTTLE)
    listener = EventListener(technician)
    try:
        began = time.monotonic()
        created = add_model(
            technician,
            name="gemma-llama",
            backend="llama",
            source=url,
            sha256=DEMO_SHA256,
            description="demo model, llama.cpp",
            slots=8,
            threads=2,
            context_length=4096,
            sampling=DEFAULT_SAMPLING,
        )
        assert created["status"] == "downloading", created
        model, samples = wait_for_model(technician, created["id"], every=0.1)
        seconds = time.monotonic() - began
        # The status event that ends the download comes after the progress.
        listener.wait_until(
            lambda: any(
                e.get("type") == "model_status" and e.get("status") == model["status"]
                for e in listener.of(created["id"])
            )
        )
    finally:
        listener.close()
    return Download(
        model=model,
        route=route,
        samples=samples,
        events=listener.of(created["id"]),
        requests=files.requests(route),
        seconds=seconds,
    )


@pytest.fixture(scope="session")
def candle_model(server, files, technician, demo_model) -> Download:
    """The same file for the candle backend, by its own URL."""
    route = f"/plain/{DEMO_FILE}"
    url = files.add(route, demo_model)
    began = time.monotonic()
    created = add_model(
        technician,
        name="gemma-candle",
        backend="candle",
        source=url,
        sha256=DEMO_SHA256,
        description="demo model, candle",
        slots=2,
        context_length=4096,
        sampling=DEFAULT_SAMPLING,
    )
    model, samples = wait_for_model(technician, created["id"])
    return Download(model, route, samples, [], files.requests(route), time.monotonic() - began)


@pytest.fixture(scope="session")
def models(llama_model, candle_model) -> dict:
    """Both backends' models, ready: backend name → model record."""
    out = {}
    for backend, d in (("llama", llama_model), ("candle", candle_model)):
        assert d.model["status"] == "ready", f"{backend} model did not download: {d.model}"
        out[backend] = d.model
    return out


@pytest.fixture(params=["llama", "candle"])
def backend(request) -> str:
    return request.param


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test shows the end of the server log, and says so when the
    server is gone."""
    outcome = yield
    report = outcome.get_result()
    srv = getattr(pytest, "corral_server", None)
    if report.failed and srv is not None:
        alive = srv.proc is not None and srv.proc.poll() is None
        state = "running" if alive else f"EXITED with status {srv.proc.returncode}"
        report.sections.append(("corral server", f"server {state}\n{srv.log_tail(40)}"))


def pytest_report_header(config):
    return f"corral store: {e2e_store()}"


# ---------------------------------------------------------------------------
# Plugins (test_plugins.py, test_plugins_hostile.py)


def lacking(reason: str):
    """Fails the test for want of `reason`; with CORRAL_ALLOW_SKIP=1 it
    reports the test skipped instead (and says so on stderr)."""
    if os.environ.get("CORRAL_ALLOW_SKIP") == "1":
        test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
        print(f"SKIPPED {test}: {reason}", file=sys.stderr)
        pytest.skip(reason)
    pytest.fail(f"{reason} (set CORRAL_ALLOW_SKIP=1 to report this test skipped instead)")


@pytest.fixture(scope="session")
def plugin_dist(tmp_path_factory) -> Path:
    """Corral's plugins built as components: CORRAL_PLUGINS_DIST when it is
    set (a folder of `<id>/plugin.wasm` + `<id>/plugin.toml`), else what
    scripts/build-plugins.sh builds into a temporary folder, once per
    session."""
    given = os.environ.get("CORRAL_PLUGINS_DIST")
    if given:
        dist = Path(given)
        assert dist.is_dir(), f"CORRAL_PLUGINS_DIST={given} is not a folder"
        return dist
    root = Path(__file__).resolve().parents[3]
    script = root / "scripts" / "build-plugins.sh"
    assert script.is_file(), f"{script} is missing"
    dist = tmp_path_factory.mktemp("plugins-dist")
    try:
        out = subprocess.run(
            [str(script), str(dist)],
            cwd=root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=1200,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/build-plugins.sh ran past 20 minutes (set CORRAL_PLUGINS_DIST to built plugins)")
    if out.returncode != 0:
        pytest.fail(
            "scripts/build-plugins.sh failed, so the plugin tests have no plugins "
            f"(exit {out.returncode}; set CORRAL_PLUGINS_DIST to a folder of built plugins):\n"
            + out.stderr[-4000:]
        )
    return dist


@pytest.fixture(scope="module")
def module_database(request) -> str | None:
    """The store of a server that a test module starts for itself, on the
    session's store kind: None (SQLite in its data directory) or a fresh
    database on the session's SecantusDB."""
    if e2e_store() == "sqlite":
        return None
    return request.getfixturevalue("secantus").url()


@pytest.fixture(scope="session")
def embed_model_dir() -> str:
    """all-MiniLM-L6-v2's folder (CORRAL_EMBED_MODEL_DIR, which
    scripts/e2e.sh sets)."""
    path = os.environ.get("CORRAL_EMBED_MODEL_DIR")
    if not path:
        lacking(
            "CORRAL_EMBED_MODEL_DIR is not set: export "
            'CORRAL_EMBED_MODEL_DIR="$(scripts/fetch-embed-model.sh | tail -1)"'
        )
    assert os.path.isdir(path), f"CORRAL_EMBED_MODEL_DIR={path} is not a folder"
    return os.path.abspath(path)


@pytest.fixture
def fresh_database(request) -> str | None:
    """The store of a server that one test starts for itself, on the
    session's store kind: None (SQLite in its data directory) or a fresh
    database on the session's SecantusDB."""
    if e2e_store() == "sqlite":
        return None
    return request.getfixturevalue("secantus").url()
