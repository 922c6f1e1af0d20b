"""Attacks on the model registry through a real `corral serve`: server files
outside the model folders, downloads aimed at internal addresses, files
that are too large or not models, and model records that say too much."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import time
from pathlib import Path

import pytest
import requests

from conftest import SERVER_CONFIG, add_model
from corral import Api, CorralServer, wait_for_model

# What a user's model view must not contain.
STAFF_ONLY = {
    "source", "sha256", "file_path", "error", "access", "progress", "threads", "slots",
    "sampling", "chat_template",
}


def refused(r: requests.Response, field: str = "source") -> dict:
    """Asserts the one answer a refused model gets: 422, naming the field."""
    assert r.status_code == 422, f"{r.status_code} {r.text}"
    body = r.json()
    assert body["code"] == "validation_failed", body
    assert [d["field"] for d in body["details"]] == [field], body
    return body


def model_names(api: Api) -> list[str]:
    return [m["name"] for m in api.ok("GET", "/api/models")["items"]]


def gguf_file(path: Path, size: int = 256 * 1024) -> str:
    """A small file that starts like a GGUF file; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"GGUF" + os.urandom(size - 4)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def model_dir(server) -> Path:
    """A folder inside the server's default model folder (data/models)."""
    path = server.data / "models" / "local-e2e"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("outside-model-dirs")


def wait_settled(api: Api, model_id: str, timeout: float = 60.0) -> dict:
    model, _ = wait_for_model(api, model_id, timeout=timeout)
    return model


# ---------------------------------------------------------------------------
# Server paths


def test_a_server_file_outside_the_model_folders_is_refused_and_never_hashed(
    server, technician
):
    shadow = Path("/etc/shadow")
    secret_hash = None
    try:
        secret_hash = hashlib.sha256(shadow.read_bytes()).hexdigest()
    except OSError:
        pass  # not readable by the tests; the refusal is checked all the same
    wrong = "0" * 64
    r = technician.post(
        "/api/models",
        json={"name": "shadow", "backend": "llama", "source": str(shadow), "sha256": wrong},
    )
    body = refused(r)
    assert "/etc" not in r.text, r.text
    if secret_hash:
        assert secret_hash not in r.text

    # An edit of an existing model cannot point it there either.
    local = server.data / "models" / "local-e2e" / "edit-target.gguf"
    gguf_file(local)
    created = add_model(technician, name="edit-target", backend="llama", source=str(local))
    assert created["status"] == "ready", created
    r = technician.patch(
        f"/api/models/{created['id']}", json={"source": str(shadow), "sha256": wrong}
    )
    refused(r)
    after = technician.ok("GET", f"/api/models/{created['id']}")
    assert after["source"] == str(local) and after["status"] == "ready", after

    # Nothing anywhere names the file or its hash.
    listing = technician.get("/api/models").text
    audit = technician.get("/api/audit?limit=200").text
    for text in (listing, audit, server.log_path.read_text(errors="replace")):
        assert "/etc/shadow" not in text
        if secret_hash:
            assert secret_hash not in text
    assert "shadow" not in model_names(technician)
    assert body["message"]
    technician.ok("DELETE", f"/api/models/{created['id']}", expect=(204,))


def test_the_root_directory_is_refused_quickly(server, technician):
    began = time.monotonic()
    r = technician.post("/api/models", json={"name": "root", "backend": "candle", "source": "/"})
    took = time.monotonic() - began
    refused(r)
    assert took < 5, f"refusing / took {took:.1f} s"
    assert "root" not in model_names(technician)


def test_parent_components_are_refused(technician, model_dir):
    source = f"{model_dir}/../../../../etc/passwd"
    refused(technician.post("/api/models", json={"name": "dots", "backend": "llama", "source": source}))


def test_a_link_inside_a_model_folder_that_leads_outside_is_refused(technician, model_dir, outside):
    target = outside / "elsewhere.gguf"
    gguf_file(target)
    link = model_dir / "link-out.gguf"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(target)
    r = technician.post("/api/models", json={"name": "link-out", "backend": "llama", "source": str(link)})
    refused(r)
    assert str(outside) not in r.text

    # A directory source whose files link outside is refused as well.
    folder = model_dir / "folder-with-link"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").symlink_to(target)
    r = technician.post(
        "/api/models",
        json={"name": "folder-out", "backend": "candle", "kind": "embedding", "source": str(folder)},
    )
    refused(r)
    assert str(outside) not in r.text
    names = model_names(technician)
    assert "link-out" not in names and "folder-out" not in names


def test_a_file_inside_a_model_folder_works_and_a_wrong_hash_shows_no_hash(
    server, technician, model_dir
):
    path = model_dir / "good.gguf"
    sha = gguf_file(path)
    created = add_model(technician, name="local-good", backend="llama", source=str(path))
    assert created["status"] == "ready", created
    assert created["file_path"] == str(path.resolve())
    assert created["size_bytes"] == path.stat().st_size

    checked = add_model(technician, name="local-checked", backend="llama", source=str(path), sha256=sha)
    assert wait_settled(technician, checked["id"])["status"] == "ready"

    wrong = "1" * 64
    bad = add_model(technician, name="local-wrong", backend="llama", source=str(path), sha256=wrong)
    bad = wait_settled(technician, bad["id"])
    assert bad["status"] == "failed", bad
    error = bad["error"] or ""
    assert error.startswith("sha256 mismatch"), error
    assert sha not in error and str(model_dir) not in error, error
    assert sha not in technician.get(f"/api/models/{bad['id']}").text
    for m in (created, checked, bad):
        technician.ok("DELETE", f"/api/models/{m['id']}", expect=(204,))
    assert path.exists(), "a local source is never deleted"


# ---------------------------------------------------------------------------
# Downloads


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:{port}",
        "169.254.169.254",
        "[::ffff:169.254.169.254]",
        "[::ffff:127.0.0.1]:{port}",
        "[::1]:{port}",
        "0.0.0.0:{port}",
        "[fe80::1]",
        "2130706433:{port}",
        "10.20.30.40",
        "192.168.1.1:8080",
        "[fd00::1]",
    ],
)
def test_a_download_from_an_internal_address_literal_is_refused_at_once(server, technician, host):
    url = f"http://{host.format(port=server.port)}/openapi.json"
    name = f"internal-{secrets.token_hex(3)}"
    r = technician.post("/api/models", json={"name": name, "backend": "llama", "source": url})
    refused(r)
    assert name not in model_names(technician)


def test_a_name_that_resolves_to_loopback_fails_at_download(server, technician):
    url = f"http://localhost:{server.port}/openapi.json"
    created = add_model(technician, name="via-localhost", backend="llama", source=url)
    model = wait_settled(technician, created["id"])
    assert model["status"] == "failed", model
    assert "loopback" in model["error"], model["error"]
    assert model["file_path"] is None
    technician.ok("DELETE", f"/api/models/{created['id']}", expect=(204,))


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/openapi.json",
        "http://localhost:{port}/openapi.json",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
def test_a_redirect_to_an_internal_address_fails(server, files, technician, target):
    location = target.format(port=server.port)
    tag = secrets.token_hex(3)
    url = files.redirect(f"/redirect-{tag}/model.gguf", location)
    created = add_model(technician, name=f"redirected-{tag}", backend="llama", source=url)
    model = wait_settled(technician, created["id"])
    assert model["status"] == "failed", model
    error = model["error"] or ""
    assert "loopback" in error or "link-local" in error, error
    assert model["file_path"] is None
    technician.ok("DELETE", f"/api/models/{created['id']}", expect=(204,))


def test_a_file_that_is_not_gguf_fails_at_download(server, files, technician, tmp_path):
    page = tmp_path / "page.json"
    page.write_text('{"openapi": "3.1.0"}' * 100)
    url = files.add("/not-a-model/model.bin", str(page))
    created = add_model(technician, name="not-gguf", backend="candle", source=url)
    model = wait_settled(technician, created["id"])
    assert model["status"] == "failed", model
    assert "GGUF" in model["error"], model["error"]
    assert model["file_path"] is None
    technician.ok("DELETE", f"/api/models/{created['id']}", expect=(204,))


def test_a_file_over_max_download_bytes_fails_with_the_limit(corral_bin, files, tmp_path):
    limit = 1024 * 1024
    big = tmp_path / "big.gguf"
    gguf_file(big, size=3 * limit)
    config = SERVER_CONFIG + (
        f'max_download_bytes = {limit}\ndownload_allow_private = true\n'
        f'download_allowed_origins = ["{files.base}"]\n'
    )
    srv = CorralServer(corral_bin, tmp_path / "limited", config)
    srv.start(backends_dir=os.environ.get("CORRAL_BACKENDS_DIR") or None)
    try:
        tech = Api.login(srv, "limits", srv.create_account("limits", "technician"))
        url = files.add("/too-big/big.gguf", str(big))
        created = add_model(tech, name="too-big", backend="llama", source=url)
        model = wait_settled(tech, created["id"])
        assert model["status"] == "failed", model
        assert str(limit) in model["error"] and "max_download_bytes" in model["error"], model["error"]
        model_files = [n for _, _, ns in os.walk(srv.data / "models" / created["id"]) for n in ns]
        assert model_files == [], model_files
        # With `download_allow_private`, a LAN mirror may be named; loopback
        # stays refused.
        lan = add_model(tech, name="lan-mirror", backend="llama", source="http://10.20.30.40/m.gguf")
        tech.ok("DELETE", f"/api/models/{lan['id']}", expect=(204,))
        refused(tech.post("/api/models", json={
            "name": "still-loopback", "backend": "llama", "source": f"http://127.0.0.1:{srv.port}/x",
        }))
        srv.check_alive()
    finally:
        srv.stop()


# ---------------------------------------------------------------------------
# What model records show


def test_users_get_a_trimmed_view_and_credentials_never_show(server, files, technician, user, tmp_path):
    password = "pw-" + secrets.token_hex(8)
    token = "tk-" + secrets.token_hex(8)
    file = tmp_path / "private.gguf"
    gguf_file(file)
    files.add("/private/model.gguf", str(file))
    source = f"http://mirror:{password}@127.0.0.1:{files.port}/private/model.gguf?token={token}&rev=main"
    me = user.ok("GET", "/api/me")
    created = add_model(
        technician,
        name="private-mirror",
        backend="llama",
        source=source,
        description="from a mirror with credentials",
        access={"everyone": False, "users": [me["id"]]},
    )
    model = wait_settled(technician, created["id"])
    assert model["status"] == "ready", model
    # Technicians see the source, its credentials redacted.
    assert model["source"].startswith("http://***@127.0.0.1:"), model["source"]
    assert "token=***" in model["source"] and "rev=main" in model["source"], model["source"]

    # A failing download with credentials names them nowhere either.
    failing = add_model(
        technician,
        name="private-missing",
        backend="llama",
        source=f"http://mirror:{password}@127.0.0.1:{files.port}/private/missing.gguf?token={token}",
    )
    failing = wait_settled(technician, failing["id"])
    assert failing["status"] == "failed" and "404" in failing["error"], failing

    # The user sees what picking the model takes, nothing more.
    listed = [m for m in user.ok("GET", "/api/models")["items"] if m["name"] == "private-mirror"]
    assert len(listed) == 1, listed
    one = user.ok("GET", f"/api/models/{created['id']}")
    for view in (listed[0], one):
        assert not (STAFF_ONLY & view.keys()), view
        assert view["usable"] is True and view["status"] == "ready"
        assert view["description"] == "from a mirror with credentials"
        assert view["kind"] == "chat"

    # Echoing the shown source back changes nothing.
    same = technician.ok("PATCH", f"/api/models/{created['id']}", json={"source": model["source"]})
    assert same["status"] == "ready" and same["updated_at"] == model["updated_at"], same

    texts = [
        technician.get("/api/models").text,
        technician.get(f"/api/models/{created['id']}").text,
        technician.get(f"/api/models/{failing['id']}/progress").text,
        user.get("/api/models").text,
        technician.get("/api/audit?limit=500").text,
    ]
    for m in (created, failing):
        technician.ok("DELETE", f"/api/models/{m['id']}", expect=(204,))
    texts.append(technician.get("/api/audit?limit=500").text)
    texts.append(server.log_path.read_text(errors="replace"))
    for text in texts:
        assert password not in text and token not in text, text[-2000:]
