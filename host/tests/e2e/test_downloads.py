"""Models added by URL: progress, resuming, and the files Corral refuses."""

from __future__ import annotations

import hashlib
import os

import requests

from conftest import CUT_AFTER, DEMO_FILE, DEMO_SHA256, DEMO_SIZE, add_model, sha256_of
from corral import TIMEOUT, wait_for_model


def healthy(server):
    server.check_alive()
    r = requests.get(server.base + "/healthz", timeout=TIMEOUT)
    assert r.status_code == 200, r.text


def test_interrupted_download_resumes_with_range(llama_model, demo_model):
    d = llama_model
    model = d.model
    assert model["status"] == "ready", model
    assert model["error"] is None
    assert model["size_bytes"] == DEMO_SIZE
    assert model["sha256"] == DEMO_SHA256

    gets = [r for r in d.requests if r.method == "GET"]
    assert len(gets) >= 2, [(r.range, r.status, r.sent) for r in gets]
    first, second = gets[0], gets[1]
    assert first.range is None
    assert first.status == 200 and first.cut and first.sent == CUT_AFTER
    # The second request picks up exactly where the first broke off.
    assert second.range == f"bytes={CUT_AFTER}-", second.headers
    assert second.status == 206
    assert second.sent == DEMO_SIZE - CUT_AFTER
    assert not second.cut

    # The whole file, in place, with the right hash.
    path = model["file_path"]
    assert path and os.path.isfile(path), path
    assert os.path.basename(path) == DEMO_FILE
    assert os.path.getsize(path) == DEMO_SIZE
    assert sha256_of(path) == DEMO_SHA256
    # No partial file left beside it.
    leftovers = [n for n in os.listdir(os.path.dirname(path)) if n != DEMO_FILE]
    assert leftovers == []


def test_download_progress_is_observable(llama_model):
    d = llama_model
    # Polling: the progress endpoint showed an active download growing
    # towards the known total.
    # While it resumes, Corral re-reads the partial file to hash it; those
    # samples count the bytes checked and have no total, so the numbers with
    # the total are the transfer's.
    active = [s for s in d.samples if s["active"]]
    assert len(active) >= 3, f"too few progress samples while downloading: {d.samples}"
    assert all(s["status"] == "downloading" for s in active)
    assert all(s["total"] in (None, DEMO_SIZE) for s in active)
    fetched = [s["bytes"] for s in active if s["total"] == DEMO_SIZE]
    assert fetched == sorted(fetched), fetched
    assert len(set(fetched)) >= 3, fetched
    assert any(s["rate"] > 0 for s in active)
    assert 0 < fetched[-1] <= DEMO_SIZE
    final = d.samples[-1]
    assert final["status"] == "ready" and not final["active"]
    assert final["bytes"] == DEMO_SIZE and final["total"] == DEMO_SIZE

    # Server-Sent Events: model_download events with bytes and total, then
    # the status change to ready.
    downloads = [e for e in d.events if e["type"] == "model_download"]
    assert len(downloads) >= 3, d.events
    fetched = [e["bytes"] for e in downloads if e["total"] == DEMO_SIZE]
    assert fetched == sorted(fetched), fetched
    assert fetched[0] < CUT_AFTER < fetched[-1] == DEMO_SIZE, fetched
    # The resumed attempt starts at the cut, not at zero.
    assert CUT_AFTER in fetched, fetched
    statuses = [e for e in d.events if e["type"] == "model_status"]
    assert statuses and statuses[-1]["status"] == "ready", statuses
    assert statuses[-1]["error"] is None


def test_wrong_sha256_is_rejected_with_a_reason(server, files, technician, user, demo_model):
    url = files.add(f"/wrong-sha/{DEMO_FILE}", demo_model)
    wrong = hashlib.sha256(b"not the demo model").hexdigest()
    created = add_model(technician, name="gemma-wrong-sha", backend="llama", source=url, sha256=wrong)
    model, _ = wait_for_model(technician, created["id"])
    assert model["status"] == "failed", model
    error = model["error"] or ""
    assert "sha256" in error and wrong in error and DEMO_SHA256 in error, error
    assert model["file_path"] is None
    # The wrong file is not kept.
    model_dir = os.path.join(server.data, "models", created["id"])
    kept = [os.path.join(r, n) for r, _, ns in os.walk(model_dir) for n in ns]
    assert kept == [], kept
    # Users do not see a model that has no file.
    names = [m["name"] for m in user.ok("GET", "/api/models")["items"]]
    assert "gemma-wrong-sha" not in names
    healthy(server)

    # The technician fixes the hash; the same source downloads again.
    fixed = technician.ok("PATCH", f"/api/models/{created['id']}", json={"sha256": DEMO_SHA256})
    assert fixed["status"] == "downloading", fixed
    model, _ = wait_for_model(technician, created["id"])
    assert model["status"] == "ready" and model["error"] is None, model
    assert sha256_of(model["file_path"]) == DEMO_SHA256
    technician.ok("DELETE", f"/api/models/{created['id']}", expect=(204,))
    assert not os.path.exists(model_dir)


def test_truncated_copy_with_sha256_is_rejected(server, files, technician, demo_model):
    route = f"/truncated/{DEMO_FILE}"
    url = files.add(route, demo_model, truncate_to=DEMO_SIZE // 2)
    created = add_model(
        technician, name="gemma-truncated", backend="llama", source=url, sha256=DEMO_SHA256
    )
    model, _ = wait_for_model(technician, created["id"])
    assert model["status"] == "failed", model
    assert "sha256 mismatch" in (model["error"] or ""), model["error"]
    assert model["file_path"] is None
    healthy(server)
    technician.ok("DELETE", f"/api/models/{created['id']}", expect=(204,))


def test_connection_that_always_breaks_off_fails_with_a_reason(server, files, technician, demo_model):
    # Every answer promises the whole file but stops after 8 MiB: the
    # download resumes, makes no more progress, and gives up.
    route = f"/short/{DEMO_FILE}"
    url = files.add(route, demo_model, short_body=8 * 1024 * 1024)
    created = add_model(technician, name="gemma-short", backend="llama", source=url)
    model, _ = wait_for_model(technician, created["id"], timeout=120)
    assert model["status"] == "failed", model
    error = model["error"] or ""
    assert str(8 * 1024 * 1024) in error, error
    gets = [r for r in files.requests(route) if r.method == "GET"]
    assert len(gets) >= 2
    assert gets[0].range is None
    assert all(r.range == f"bytes={8 * 1024 * 1024}-" for r in gets[1:]), [r.range for r in gets]
    healthy(server)
    technician.ok("DELETE", f"/api/models/{created['id']}", expect=(204,))


def test_truncated_file_without_sha256_fails_clearly_when_used(
    server, files, technician, api_key, demo_model, backend
):
    """Without a hash the download cannot know the copy is short; using it
    must fail with a clear, one-line error (no backtrace, which the server
    logs carry with RUST_BACKTRACE=1), and the server keeps running."""
    from openai import APIStatusError, OpenAI

    name = f"gemma-truncated-nohash-{backend}"
    route = f"/truncated-nohash-{backend}/{DEMO_FILE}"
    url = files.add(route, demo_model, truncate_to=DEMO_SIZE // 2)
    created = add_model(technician, name=name, backend=backend, source=url)
    model, _ = wait_for_model(technician, created["id"])
    if model["status"] == "failed":
        # Rejected at download time: it must say why.
        assert model["error"], model
    else:
        assert model["status"] == "ready", model
        client = OpenAI(base_url=server.base + "/v1", api_key=api_key, timeout=120, max_retries=0)

        def attempt():
            try:
                client.chat.completions.create(
                    model=name, messages=[{"role": "user", "content": "Hello"}], max_tokens=4
                )
            except APIStatusError as err:
                body = err.body if isinstance(err.body, dict) else {}
                return err.status_code, str(body.get("message") or body)
            raise AssertionError("a chat with a truncated model file answered")

        status, message = attempt()
        assert status == 503, (status, message)
        assert name in message and "load" in message, message
        assert "\n" not in message and len(message) < 1000, (
            f"the error sent to the client is {len(message)} characters over "
            f"{message.count(chr(10)) + 1} lines: {message[:400]}"
        )
        healthy(server)
        # The model is then marked failed with the backend's reason, and
        # is gone for users: the next try does not load the file again.
        model = technician.ok("GET", f"/api/models/{created['id']}")
        assert model["status"] == "failed", model
        assert "cannot load" in (model["error"] or ""), model
        status, message = attempt()
        assert status == 404, (status, message)
    healthy(server)
    technician.ok("DELETE", f"/api/models/{created['id']}", expect=(204,))
