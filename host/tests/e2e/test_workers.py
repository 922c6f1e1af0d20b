"""Models in worker processes (`model_workers = true`), against a real
`corral serve` with the demo model: a worker killed with SIGKILL in the
middle of an answer ends that answer with `worker_crashed` (its text
kept), while the host keeps its PID and keeps answering; the next request
is answered by a new worker.

The module runs its own server, on the store CORRAL_E2E_STORE names."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests
from openai import OpenAI

from corral import (
    DEMO_NAME,
    Api,
    account,
    demo_server_config,
    demo_technician,
    module_server,
    sse_events,
)

LONG = "Write a long story about a lighthouse keeper and her cat, in many chapters."


def backends_with_fault(corral_bin: str, into: Path) -> Path:
    """A backends folder with the backends next to `corral_bin` (or in
    CORRAL_BACKENDS_DIR) and the test backend `fault`, built as
    `libfault_backend.so` by `cargo build -p corral-fault`."""
    source = Path(os.environ.get("CORRAL_BACKENDS_DIR") or Path(corral_bin).parent)
    fault = Path(corral_bin).parent / "libfault_backend.so"
    assert fault.is_file(), f"{fault} is missing: build it with `cargo build -p corral-fault`"
    into.mkdir()
    for lib in source.glob("libcorral_*.so"):
        (into / lib.name).symlink_to(lib.resolve())
    (into / "libcorral_fault.so").symlink_to(fault.resolve())
    return into


@pytest.fixture(scope="module")
def srv(corral_bin, demo_model, module_database, tmp_path_factory):
    work = tmp_path_factory.mktemp("workers")
    # A stuck engine is given up after 3 s here (60 s by default).
    config = demo_server_config(demo_model, extra="model_workers = true\nmodel_worker_stall_secs = 3\n")
    backends = str(backends_with_fault(corral_bin, work / "backends"))
    with module_server(corral_bin, work, config, module_database, backends) as server:
        yield server


@pytest.fixture(scope="module")
def tech(srv) -> Api:
    return demo_technician(srv)


@pytest.fixture(scope="module")
def user(srv, tech) -> Api:
    return account(srv, "ada", "user")


def fault_model(srv, tech: Api, name: str, text: str) -> dict:
    """A model of the `fault` backend whose file says `text`."""
    folder = srv.data / "models"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.gguf"
    path.write_text("GGUF\n" + text + "\n")
    return tech.ok(
        "POST",
        "/api/models",
        json={"name": name, "backend": "fault", "source": str(path), "slots": 2},
        expect=(202,),
    )


def stream_chat(user: Api, model: str, content: str, max_tokens: int) -> tuple[str, str, dict, str]:
    """(chat id, end event name, its data, the text streamed) of a chat answer."""
    chat = user.ok("POST", "/api/chats", json={"model": model}, expect=(201,))
    r = user.session.post(
        f"{user.base}/api/chats/{chat['id']}/stream",
        json={"content": content, "sampling": {"max_tokens": max_tokens, "temperature": 0, "seed": 1}},
        stream=True,
        timeout=(5, 120),
    )
    assert r.status_code == 200, r.text
    text, end = "", ("", {})
    for name, data in sse_events(r):
        if name == "delta":
            text += data.get("text") or data.get("delta") or ""
        if name in ("done", "error"):
            end = (name, data)
            break
    r.close()
    return chat["id"], end[0], end[1], text


@pytest.fixture(scope="module")
def ai(srv, user) -> OpenAI:
    key = user.ok("POST", "/api/me/keys", json={"name": "workers e2e"}, expect=(201,))["key"]
    return OpenAI(base_url=srv.base + "/v1", api_key=key, timeout=180, max_retries=0)


def workers_of(pid: int) -> list[int]:
    """PIDs of the `corral worker` processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and b"worker" in cmdline[1:2]:
            found.append(int(entry.name))
    return sorted(found)


def greedy(ai: OpenAI, max_tokens: int = 8) -> str:
    answer = ai.chat.completions.create(
        model=DEMO_NAME,
        messages=[{"role": "user", "content": "Name three colours of the rainbow."}],
        max_tokens=max_tokens,
        temperature=0,
        seed=1,
    )
    return answer.choices[0].message.content


def test_the_model_runs_in_a_worker_process(srv, ai):
    first = greedy(ai)
    assert first, "an answer"
    host_pid = srv.proc.pid
    workers = workers_of(host_pid)
    assert len(workers) == 1, f"one worker for the one loaded model: {workers}"
    # Out of memory, the kernel takes the worker before the host: a model
    # (or its chat template) that eats the machine ends only itself.
    assert Path(f"/proc/{workers[0]}/oom_score_adj").read_text().strip() == "1000"
    assert Path(f"/proc/{host_pid}/oom_score_adj").read_text().strip() != "1000"
    # The worker outlives the thread that started it (threads of the
    # blocking pool end after 10 s idle; the parent-death signal must not
    # fire with them), and the next request goes to it.
    time.sleep(12)
    assert workers_of(host_pid) == workers
    assert greedy(ai)
    assert workers_of(host_pid) == workers


def test_a_killed_worker_ends_only_its_answer(srv, user, ai):
    host_pid = srv.proc.pid
    greedy(ai, 1)
    [worker] = workers_of(host_pid)

    # /healthz answers throughout.
    health_failures: list[str] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                r = requests.get(srv.base + "/healthz", timeout=2)
                if r.status_code != 200:
                    health_failures.append(f"{r.status_code}")
            except requests.RequestException as e:
                health_failures.append(str(e))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    chat = user.ok("POST", "/api/chats", json={"model": DEMO_NAME}, expect=(201,))
    r = user.session.post(
        f"{user.base}/api/chats/{chat['id']}/stream",
        json={"content": LONG, "sampling": {"max_tokens": 2000, "temperature": 0, "seed": 1}},
        stream=True,
        timeout=(5, 120),
    )
    assert r.status_code == 200, r.text
    text, killed_at, end = "", None, None
    for name, data in sse_events(r):
        if name == "delta":
            text += data.get("text") or data.get("delta") or ""
            if killed_at is None and len(text) > 40:
                os.kill(worker, signal.SIGKILL)
                killed_at = time.monotonic()
        if name in ("done", "error"):
            end = (name, data, time.monotonic())
            break
    r.close()
    stop.set()
    watcher.join()

    assert killed_at is not None, f"the answer ended before it was long enough to cut: {text!r}"
    name, data, at = end
    assert name == "error", (name, data)
    assert "worker_crashed" in str(data), data
    assert at - killed_at < 2.0, f"the stream ended {at - killed_at:.1f} s after the kill"
    assert srv.proc.poll() is None and srv.proc.pid == host_pid, "the host lives on"
    assert health_failures == [], health_failures

    stored = user.ok("GET", f"/api/chats/{chat['id']}")["messages"][-1]
    assert stored["role"] == "assistant", stored
    assert stored["status"] == "interrupted", stored
    assert stored["content"] and text.startswith(stored["content"][:40]), (stored["content"], text)

    # The next request is answered, by a new worker.
    assert greedy(ai)
    workers = workers_of(host_pid)
    assert len(workers) == 1 and workers != [worker], workers


def test_an_engine_that_aborts_takes_down_only_its_worker(srv, tech, user, ai):
    """The `fault` backend calls abort() three tokens into an answer, as
    llama.cpp does on a failed assertion: that answer ends with
    `worker_crashed` and keeps the text it had shown, an answer of another
    model running at the same time gets every token, and the next request
    to the aborted model is answered by a new worker."""
    fault_model(srv, tech, "faulty", "misbehaves on command")
    host_pid = srv.proc.pid
    other: dict = {}

    def demo_answer():
        other["answer"] = stream_chat(user, DEMO_NAME, LONG, 48)

    thread = threading.Thread(target=demo_answer)
    thread.start()
    time.sleep(0.5)
    chat_id, name, data, text = stream_chat(user, "faulty", "ABORT now", 50)
    thread.join()

    assert name == "error" and "worker_crashed" in str(data), (name, data)
    assert "told to abort" in str(data), "the worker's last stderr line is in the reason"
    # What reached the client before the abort (at most the three ticks;
    # the last 20 ms of a batch die with the worker) is what is stored.
    assert text in ("tick ", "tick " * 2, "tick " * 3), text
    stored = user.ok("GET", f"/api/chats/{chat_id}")["messages"][-1]
    assert stored["status"] == "interrupted" and stored["content"] == text, stored

    demo_chat, demo_end, demo_data, demo_text = other["answer"]
    assert demo_end == "done", (demo_end, demo_data)
    demo_stored = user.ok("GET", f"/api/chats/{demo_chat}")["messages"][-1]
    assert demo_stored["status"] == "complete", demo_stored
    assert demo_stored["content"] == demo_text and demo_stored["usage"]["completion_tokens"] == 48, demo_stored
    assert srv.proc.poll() is None and srv.proc.pid == host_pid

    _, name, data, text = stream_chat(user, "faulty", "count for me", 5)
    assert name == "done" and text == "tick " * 5, (name, data, text)


def test_an_answer_cut_off_by_a_crash_counts_every_token_it_delivered(srv, tech, user):
    """A fast engine (a token a millisecond) fills each worker frame with up
    to 16 tokens. When its worker is killed mid-answer, the stored answer,
    its usage and the user's statistics count every token delivered, not
    one per frame."""
    fault_model(srv, tech, "rapid", "pace: 1")
    host_pid = srv.proc.pid
    before = set(workers_of(host_pid))
    counted_before = sum(m["completion_tokens"] for m in user.ok("GET", "/api/me/stats")["models"]
                         if m["model"] == "rapid")
    chat = user.ok("POST", "/api/chats", json={"model": "rapid"}, expect=(201,))
    r = user.session.post(
        f"{user.base}/api/chats/{chat['id']}/stream",
        json={"content": "count for me", "sampling": {"max_tokens": 60000}},
        stream=True,
        timeout=(5, 120),
    )
    assert r.status_code == 200, r.text
    text, end, killed = "", None, False
    for name, data in sse_events(r):
        if name == "delta":
            text += data.get("text") or data.get("delta") or ""
            if not killed and text.count("tick") >= 1500:
                (worker,) = set(workers_of(host_pid)) - before
                os.kill(worker, signal.SIGKILL)
                killed = True
        if name in ("done", "error"):
            end = (name, data)
            break
    r.close()
    assert killed and end and end[0] == "error" and "worker_crashed" in str(end[1]), end

    stored = user.ok("GET", f"/api/chats/{chat['id']}")["messages"][-1]
    assert stored["status"] == "interrupted" and stored["content"] == text, stored["status"]
    delivered = text.count("tick")
    assert stored["usage"] and stored["usage"]["completion_tokens"] == delivered, (stored["usage"], delivered)
    counted = sum(m["completion_tokens"] for m in user.ok("GET", "/api/me/stats")["models"]
                  if m["model"] == "rapid")
    assert counted - counted_before == delivered, (counted - counted_before, delivered)


def test_a_stuck_engine_is_killed_and_its_answer_ends(srv, tech, user):
    """The `fault` backend stops three tokens into an answer and never
    looks at its cancel token again, as an engine stuck in native code:
    its worker keeps sending heartbeats, but their count of the engine's
    cancel checks stops growing. After `model_worker_stall_secs` the host
    kills the worker; the answer ends with `worker_crashed` and keeps its
    text, and the next request is answered by a new worker."""
    fault_model(srv, tech, "stuck", "misbehaves on command")
    host_pid = srv.proc.pid
    # Load the model, so that its worker is known before it hangs.
    _, name, data, text = stream_chat(user, "stuck", "count for me", 2)
    assert name == "done", (name, data)
    before = set(workers_of(host_pid))

    started = time.monotonic()
    chat_id, name, data, text = stream_chat(user, "stuck", "HANG now", 50)
    took = time.monotonic() - started
    assert name == "error" and "worker_crashed" in str(data), (name, data)
    assert "no progress" in str(data), data
    assert "fault: hanging" in str(data), "the worker's last stderr line is in the reason"
    assert 3 <= took < 8, f"the stuck answer ended after {took:.1f} s"
    assert text in ("tick ", "tick " * 2, "tick " * 3), text
    stored = user.ok("GET", f"/api/chats/{chat_id}")["messages"][-1]
    assert stored["status"] == "interrupted" and stored["content"] == text, stored
    # The stuck worker is gone (the other models' workers run on), not
    # left running beside its successor.
    deadline = time.monotonic() + 5
    while len(before - set(workers_of(host_pid))) != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    gone = before - set(workers_of(host_pid))
    assert len(gone) == 1, f"workers before {sorted(before)}, now {workers_of(host_pid)}"

    _, name, data, text = stream_chat(user, "stuck", "count for me", 5)
    assert name == "done" and text == "tick " * 5, (name, data, text)
    assert srv.proc.poll() is None and srv.proc.pid == host_pid


def test_a_model_that_fails_to_load_in_its_worker_is_refused_with_the_reason(srv, tech, ai):
    fault_model(srv, tech, "unloadable", "fail-load")
    r = requests.post(
        srv.base + "/v1/chat/completions",
        json={"model": "unloadable", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2},
        headers={"Authorization": f"Bearer {ai.api_key}"},
        timeout=60,
    )
    assert r.status_code == 503, r.text
    assert "told to fail to load" in r.text, r.text
    assert srv.proc.poll() is None
    assert requests.get(srv.base + "/healthz", timeout=2).status_code == 200


def test_a_file_that_kills_its_worker_while_loading_is_marked_failed(srv, tech, ai):
    """A model file whose engine aborts while loading it (as llama.cpp does
    on a failed GGML_ASSERT) is loaded afresh by every request, and each
    death counts as a crash: after five within a minute the model is refused
    at once with `model_failed`, and no further worker is started for it."""
    model = fault_model(srv, tech, "aborts-loading", "abort-load")
    host_pid = srv.proc.pid

    def ask() -> requests.Response:
        return requests.post(
            srv.base + "/v1/chat/completions",
            json={"model": "aborts-loading", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            headers={"Authorization": f"Bearer {ai.api_key}"},
            timeout=60,
        )

    codes = []
    for _ in range(5):
        r = ask()
        assert r.status_code == 503, r.text
        codes.append(r.json()["error"]["code"])
    assert codes[-1] == "model_failed", codes

    def crashes() -> int:
        lines = srv.log_path.read_text(errors="replace").splitlines()
        return sum(1 for line in lines if "model worker crashed" in line and "aborts-loading.gguf" in line)

    assert crashes() == 5, srv.log_tail()
    for _ in range(2):
        started = time.monotonic()
        r = ask()
        took = time.monotonic() - started
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "model_failed", error
        assert "crashed 5 times" in error["message"], error
        assert took < 0.1, f"the refusal took {took * 1000:.0f} ms"
    assert crashes() == 5, "a worker was started for a model marked failed"
    assert srv.proc.poll() is None and srv.proc.pid == host_pid
    assert requests.get(srv.base + "/healthz", timeout=2).status_code == 200
    assert tech.delete(f"/api/models/{model['id']}").status_code == 204


def test_five_crashes_in_a_minute_mark_the_model_failed(srv, user, ai):
    """Each crash is followed by a restart (after a growing pause); the
    fifth within a minute marks the model failed, and its requests get a
    503 with the reason at once. Runs last: the model stays failed."""
    host_pid = srv.proc.pid
    # The crash of the test before counts too; crash until the host says so.
    for _ in range(5):
        try:
            greedy(ai, 1)
        except Exception:  # noqa: BLE001 - the request that finds the fifth crash
            break
        for pid in workers_of(host_pid):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    key = ai.api_key
    body = {
        "model": DEMO_NAME,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 1,
    }
    for _ in range(2):
        started = time.monotonic()
        r = requests.post(
            srv.base + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        took = time.monotonic() - started
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "model_failed", error
        assert "crashed" in error["message"], error
        assert took < 0.1, f"the refusal took {took * 1000:.0f} ms"
    assert srv.proc.poll() is None and srv.proc.pid == host_pid
    assert workers_of(host_pid) == [], "no worker is started for a failed model"
    assert requests.get(srv.base + "/healthz", timeout=2).status_code == 200
