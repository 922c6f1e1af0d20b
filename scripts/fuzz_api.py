"""Seeding and the summary of scripts/fuzz-api.sh.

`seed BASE BIN DATA CONFIG_OUT ADMIN_CONFIG_OUT`: creates the accounts and
records that the fuzzer's requests name (a chat, a ticket, a model, an API
key, users, refresh tokens) on the running server, and writes schemathesis
configs that send each operation with real ids in its path: as a
technician (who may call every operation, so that the success path of
each can be reached), and as an admin. Operations that
destroy what they act on (a delete, a password change, a refresh) get
records and accounts of their own.

`summary STATS OPENAPI`: prints, per operation, how many answers there
were and how many were 2xx, and fails when an operation never answered
2xx (apart from the exceptions below, each with its reason) or any
answer was a 500.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

# Operations that answer 503 on a server without backend libraries.
NO_BACKEND = {
    "POST /api/chats/{id}/stream",
    "POST /api/chats/{id}/regenerate",
    "POST /api/models/{id}/load",
    "POST /v1/chat/completions",
    "POST /v1/completions",
    "POST /v1/embeddings",
}

# Operations whose success path the fuzzer cannot reach, and why.
EXCEPTIONS = {
    "GET /api/chats/ws": "a WebSocket upgrade; the end-to-end tests cover it",
    "POST /v1/chat/completions": "needs a model that generates; the end-to-end tests cover it",
    "POST /v1/completions": "needs a model that generates; the end-to-end tests cover it",
    "POST /v1/embeddings": "needs an embedding model; the end-to-end tests cover it",
    "POST /api/models/{id}/load": "needs a backend library and a real model file; the API tests cover it",
    "POST /api/plugins": "needs a built WebAssembly component; the end-to-end tests cover it",
    "PUT /api/plugins/{id}/component": "needs a built WebAssembly component; the end-to-end tests cover it",
    "POST /api/plugins/{id}/{path}": "a plugin's own route: what it accepts is the plugin's; the end-to-end tests cover it",
    "PUT /api/plugins/{id}/{path}": "a plugin's own route: what it accepts is the plugin's; the end-to-end tests cover it",
    "PATCH /api/plugins/{id}/{path}": "a plugin's own route: what it accepts is the plugin's; the end-to-end tests cover it",
}


def _session(token: str | None = None):
    import requests

    s = requests.Session()
    if token:
        s.headers["Authorization"] = f"Bearer {token}"
    return s


def _call(session, method: str, url: str, expect: int, **kw):
    r = session.request(method, url, timeout=60, **kw)
    if r.status_code != expect:
        sys.exit(f"seeding: {method} {url} answered {r.status_code}, not {expect}: {r.text[:500]}")
    return r.json() if r.content else None


def _password() -> str:
    return "fz-" + secrets.token_urlsafe(18)


def _admin_create(binary: str, data: str, username: str, role: str) -> str:
    password = _password()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    out = subprocess.run(
        [binary, "admin", "create", "--data-dir", data, "--username", username, "--role", role, "--password", password],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if out.returncode != 0:
        sys.exit(f"seeding: admin create {username} failed: {out.stdout}{out.stderr}")
    return password


def _toml_string(value: str) -> str:
    return json.dumps(value)


def seed(base: str, binary: str, data: str, config_out: str, admin_config_out: str) -> None:
    login = f"{base}/api/auth/login"

    def sign_in(username: str, password: str) -> dict:
        return _call(_session(), "POST", login, 200, json={"username": username, "password": password})

    tech_password = _admin_create(binary, data, "fuzztech", "technician")
    tech_token = sign_in("fuzztech", tech_password)["access_token"]
    tech = _session(tech_token)
    admin_password = _admin_create(binary, data, "fuzzadmin", "admin")
    admin_token = sign_in("fuzzadmin", admin_password)["access_token"]

    # Accounts that operations act on, never the fuzzing account itself.
    def new_user(username: str) -> tuple[str, str]:
        password = _password()
        user = _call(
            tech, "POST", f"{base}/api/users", 201, json={"username": username, "password": password, "role": "user"}
        )
        return user["id"], password

    target_id, _ = new_user("fuzztarget")
    reset_id, _ = new_user("fuzzreset")
    _, changer_password = new_user("fuzzchanger")
    changer_token = sign_in("fuzzchanger", changer_password)["access_token"]
    _, signer_password = new_user("fuzzsigner")
    refresh_tokens = [sign_in("fuzzsigner", signer_password)["refresh_token"] for _ in range(2)]

    # Models: a GGUF-looking file in the data directory's model folder.
    folder = Path(data) / "models" / "fuzz-seed"
    folder.mkdir(parents=True, exist_ok=True)

    def new_model(name: str) -> str:
        path = folder / f"{name}.gguf"
        path.write_bytes(b"GGUF" + bytes(4092))
        model = _call(tech, "POST", f"{base}/api/models", 202, json={"name": name, "backend": "llama", "source": str(path)})
        return model["id"]

    # New models the fuzzer adds name this file (the only folder models
    # may come from is the data directory's), with its right hash.
    source = folder / "source.gguf"
    source.write_bytes(b"GGUF" + bytes(8188))
    source_sha = hashlib.sha256(source.read_bytes()).hexdigest()

    # The chats' model is never edited (a new name or source would leave
    # the chat operations without a model); the fuzzer edits another.
    new_model("fuzz-model")
    model_id = new_model("fuzz-edited")
    doomed_model_id = new_model("fuzz-doomed")

    def new_chat(title: str) -> str:
        chat = _call(tech, "POST", f"{base}/api/chats", 201, json={"model": "fuzz-model", "title": title})
        return chat["id"]

    chat_id = new_chat("fuzzed")
    doomed_chat_id = new_chat("deleted by the fuzzer")
    _call(tech, "POST", f"{base}/api/chats/{chat_id}/messages", 201, json={"content": "A message to export."})

    ticket = _call(
        tech,
        "POST",
        f"{base}/api/tickets",
        201,
        json={"subject": "Fuzzed ticket", "body": "A ticket the fuzzer edits.", "category": "bug"},
    )
    key = _call(tech, "POST", f"{base}/api/me/keys", 201, json={"name": "deleted by the fuzzer"})

    # Plugins from scripts/build-plugins.sh (CORRAL_PLUGINS_DIST): one the
    # fuzzer changes, one whose routes it calls (kept on, optional), one
    # it deletes.
    dist = Path(os.environ.get("CORRAL_PLUGINS_DIST", Path(__file__).resolve().parent.parent / "plugins" / "dist"))

    def install(plugin_id: str, changes: dict) -> None:
        folder = dist / plugin_id
        if not (folder / "plugin.wasm").is_file():
            sys.exit(f"seeding: no {folder}/plugin.wasm; run scripts/build-plugins.sh (or set CORRAL_PLUGINS_DIST)")
        files = {
            "manifest": ("plugin.toml", (folder / "plugin.toml").read_bytes()),
            "component": ("plugin.wasm", (folder / "plugin.wasm").read_bytes()),
        }
        _call(tech, "POST", f"{base}/api/plugins", 201, files=files)
        _call(tech, "PATCH", f"{base}/api/plugins/{plugin_id}", 200, json=changes)

    install("template", {"approved": ["log", "config"]})
    install("code-mentor", {"approved": ["kv", "config"], "enabled": True, "optional": True})
    install("test-noop", {})

    # Per operation: fixed path ids and body fields, and another account
    # where the operation would end the fuzzing account's access.
    operations: list[tuple[str, dict, dict]] = [
        ("POST /api/chats", {"body.model": "fuzz-model"}, {}),
        ("POST /api/models", {"body.source": str(source), "body.sha256": source_sha}, {}),
        ("POST /v1/chat/completions", {"body.model": "fuzz-model"}, {}),
        ("POST /v1/completions", {"body.model": "fuzz-model"}, {}),
        ("POST /v1/embeddings", {"body.model": "fuzz-model"}, {}),
        ("GET /api/chats/{id}", {"path.id": chat_id}, {}),
        ("PATCH /api/chats/{id}", {"path.id": chat_id}, {}),
        ("GET /api/chats/{id}/export", {"path.id": chat_id}, {}),
        ("POST /api/chats/{id}/messages", {"path.id": chat_id}, {}),
        ("POST /api/chats/{id}/stop", {"path.id": chat_id}, {}),
        ("POST /api/chats/{id}/stream", {"path.id": chat_id}, {}),
        ("POST /api/chats/{id}/regenerate", {"path.id": chat_id}, {}),
        ("DELETE /api/chats/{id}", {"path.id": doomed_chat_id}, {}),
        ("GET /api/models/{id}", {"path.id": model_id}, {}),
        ("PATCH /api/models/{id}", {"path.id": model_id}, {}),
        ("GET /api/models/{id}/progress", {"path.id": model_id}, {}),
        ("POST /api/models/{id}/load", {"path.id": model_id}, {}),
        ("POST /api/models/{id}/unload", {"path.id": model_id}, {}),
        ("DELETE /api/models/{id}", {"path.id": doomed_model_id}, {}),
        ("GET /api/tickets/{id}", {"path.id": ticket["id"]}, {}),
        ("PATCH /api/tickets/{id}", {"path.id": ticket["id"]}, {}),
        ("POST /api/tickets/{id}/comments", {"path.id": ticket["id"]}, {}),
        ("DELETE /api/me/keys/{id}", {"path.id": key["id"]}, {}),
        ("GET /api/users/{id}", {"path.id": target_id}, {}),
        ("PATCH /api/users/{id}", {"path.id": target_id}, {}),
        ("POST /api/users/{id}/password", {"path.id": reset_id}, {}),
        (
            "POST /api/me/password",
            {"body.current_password": changer_password},
            {"Authorization": f"Bearer {changer_token}"},
        ),
        ("POST /api/auth/login", {"body.username": "fuzzsigner", "body.password": signer_password}, {}),
        ("POST /api/auth/refresh", {"body.refresh_token": refresh_tokens[0]}, {}),
        ("POST /api/auth/logout", {"body.refresh_token": refresh_tokens[1]}, {}),
        ("GET /api/plugins/{id}", {"path.id": "template"}, {}),
        ("PATCH /api/plugins/{id}", {"path.id": "template"}, {}),
        ("PUT /api/plugins/{id}/config", {"path.id": "template"}, {}),
        ("PUT /api/plugins/{id}/component", {"path.id": "template"}, {}),
        ("DELETE /api/plugins/{id}", {"path.id": "test-noop"}, {}),
        ("GET /api/plugins/{id}/{path}", {"path.id": "code-mentor", "path.path": "level"}, {}),
        ("DELETE /api/plugins/{id}/{path}", {"path.id": "code-mentor", "path.path": "level"}, {}),
        ("POST /api/plugins/{id}/{path}", {"path.id": "code-mentor", "path.path": "level"}, {}),
        ("PUT /api/plugins/{id}/{path}", {"path.id": "code-mentor", "path.path": "level"}, {}),
        ("PATCH /api/plugins/{id}/{path}", {"path.id": "code-mentor", "path.path": "level"}, {}),
        ("PUT /api/me/plugins/{id}", {"path.id": "code-mentor"}, {}),
        # Registration stays open for the register operation.
        ("PATCH /api/settings", {"body.registration_open": True}, {}),
        # No role's allowance is cut to nothing: the fuzzing account keeps
        # its own for the operations that generate. (Per-user allowances
        # are still fuzzed.)
        ("PUT /api/quotas", {"body.roles": {}}, {}),
    ]
    _write_config(config_out, tech_token, operations)
    _write_config(admin_config_out, admin_token, operations)
    print(f"seeded: chat {chat_id}, ticket #{ticket['number']}, model {model_id}, key {key['id']}, users fuzztarget, fuzzreset")


def _write_config(path: str, token: str, operations: list[tuple[str, dict, dict]]) -> None:
    """A schemathesis config that calls as the owner of `token`."""
    lines = [
        "# Written by scripts/fuzz-api.sh for one run.",
        "[headers]",
        f"Authorization = {_toml_string('Bearer ' + token)}",
        "",
    ]
    for name, parameters, headers in operations:
        lines.append("[[operations]]")
        lines.append(f"include-name = {_toml_string(name)}")
        if name in NO_BACKEND:
            # The server runs without backend libraries: 503 is its
            # documented answer here.
            lines.append('checks = { not_a_server_error = { expected-statuses = ["2xx", "3xx", "4xx", 503] } }')
        if parameters:
            pairs = ", ".join(f"{_toml_string(k)} = {json.dumps(v)}" for k, v in parameters.items())
            lines.append(f"parameters = {{ {pairs} }}")
        if headers:
            pairs = ", ".join(f"{_toml_string(k)} = {_toml_string(v)}" for k, v in headers.items())
            lines.append(f"headers = {{ {pairs} }}")
        lines.append("")
    Path(path).write_text("\n".join(lines))


def summary(stats_path: str, openapi_path: str, *flags: str) -> None:
    # `--partial`: the run was narrowed (extra `st run` arguments), so
    # operations it did not call are left out.
    partial = "--partial" in flags
    document = json.loads(Path(openapi_path).read_text())
    operations = sorted(
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch", "head", "options")
    )
    calls: dict[str, Counter] = defaultdict(Counter)
    stats = Path(stats_path)
    for line in stats.read_text().splitlines() if stats.exists() else []:
        label, _, status = line.rpartition("\t")
        calls[label][int(status)] += 1
    if partial:
        operations = [op for op in operations if op in calls]

    problems = []
    if not operations:
        sys.exit("no operation was called")
    width = max(len(op) for op in operations)
    print(f"{'operation':<{width}}  calls    2xx  other answers")
    for op in operations:
        counts = calls.get(op, Counter())
        total = sum(counts.values())
        ok = sum(n for s, n in counts.items() if 200 <= s < 300)
        other = ", ".join(f"{s}×{n}" for s, n in sorted(counts.items()) if not 200 <= s < 300)
        note = ""
        if ok == 0:
            reason = EXCEPTIONS.get(op)
            if reason:
                note = f"  (no 2xx expected: {reason})"
            else:
                note = "  <-- never reached its success path"
                problems.append(f"{op}: no 2xx answer in {total} calls ({other or 'none'})")
        print(f"{op:<{width}}  {total:>5}  {ok:>5}  {other}{note}")
        for status, n in counts.items():
            if status == 500:
                problems.append(f"{op}: {n} answers 500")
    for op in sorted(set(calls) - set(operations)):
        problems.append(f"{op}: called but not in the document")
    stale = [] if partial else sorted(op for op in EXCEPTIONS if op not in operations)
    for op in stale:
        problems.append(f"{op}: listed as an exception but not in the document")
    reached = sum(1 for op in operations if any(200 <= s < 300 for s in calls.get(op, ())))
    print(f"{reached} of {len(operations)} operations answered 2xx; {len(EXCEPTIONS)} exceptions listed")
    if problems:
        print("\n".join(["problems:"] + [f"  {p}" for p in problems]), file=sys.stderr)
        sys.exit(1)


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "seed":
        seed(*args)
    elif command == "summary":
        summary(*args)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
