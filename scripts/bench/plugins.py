#!/usr/bin/env python3
"""What plugins cost a generation: Corral's streamed chat answers without a
plugin, with the no-op plugin and with pii-redact, against one running Corral.

Three configurations, measured the same way as bench.py's single streams
(POST /v1/chat/completions, "stream": true, temperature 0, --max-tokens
tokens with "ignore_eos": true, one request at a time):

  none        no plugin on;
  noop        `test-noop` on (every hook, does nothing; no capability
              approved): the cost of calling a hook at all;
  pii-redact  `pii-redact` on (the capabilities among `config` and `log` it
              asks for approved, default configuration): a real filter on
              the prompt and on every streamed chunk.

The prompts hold personal data (an e-mail address, a phone number, a card
number that passes the Luhn check and a valid IBAN) and ask the model to
repeat it. pii-redact gets them as they are; the other two configurations
get them already masked the way pii-redact masks them ("[email]", ...), so
that the model reads the same text in all three and only the plugin
differs (the masks are much shorter than the data, and a prompt 60 tokens
shorter prefills and decodes measurably faster on the demo model; the
prompt tokens of each configuration are in the output to show they match).
--unmasked-baseline sends the raw data to all three instead. Each request's
prompt starts with its own number, so no request's prefill comes from an
earlier one's cache beyond the chat template's first tokens; the task after
the data is the same for the n-th request of every configuration.

Both plugins are installed once (POST /api/plugins, from the folders that
scripts/build-plugins.sh writes), then the configurations take turns in
rounds, none → noop → pii-redact, --rounds times with --per-round requests
each, so that drift on the machine (other work, heat) does not favour one.
At most one plugin is on at a time: the one on is turned off
(PATCH /api/plugins/{id} {"enabled": false}) before the next is turned on.
One untimed warm-up request per configuration runs before the rounds.

Per configuration, medians over its requests: decode tokens/s ((completion
tokens - 1) / time from the first streamed token to the last, as bench.py),
time to first token, and end-to-end tokens/s (completion tokens / time from
sending the request to the end of the stream); both rates over the
no-plugin ones, as the median over the rounds of each round's rate over the
same round's no-plugin rate (the machine's speed can change in the middle of
a run, and a ratio of the run's medians then measures where the change fell
rather than the plugin; it is in the JSON too); and each plugin's hook
statistics from GET /api/plugins/{id} (calls, errors, p50/p99 µs of
before-prompt, on-chunk, finish, after-answer). The host's counters cover a
plugin's life since it was (re)loaded: when turning a plugin on starts its
counters again, the figures of the rounds are combined (calls added up, p50
the median of the rounds' p50s weighted by their calls, p99 the median of
the rounds' p99s, which a round disturbed by other work moves less than the
highest would) and the output says so.

Checks that make the numbers mean something (a failure stops the run):
every request generates exactly --max-tokens tokens, the plugin that is on
has its before-prompt called once per request of its round and the one that
is off is not called at all, and no hook call fails.

Goals, printed with PASS or MISS, never asserted: every no-op hook's p50
under 50 µs; pii-redact's token rate at least 98% of the no-plugin one. The
rate goal is judged on the end-to-end rate: a stream filter that holds text
back (pii-redact holds text that could still turn out to be personal data,
such as the start of an e-mail address or a run of digits, until later text
decides) shows its first text later and so squeezes the decode window,
which makes its decode rate look higher than the same tokens without it.

Technician calls sign in with --username and the password in
$CORRAL_BENCH_PASSWORD (signing in again when the access token expires);
generations use --api-key. Results: a table on stdout, the figures as JSON
in --json FILE. Only the Python standard library is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (  # noqa: E402 - bench.py sits beside this file
    PROMPTS,
    CorralTarget,
    StreamResult,
    median,
    normalise_base,
    stream_chat,
    usable_cores,
)

NONE, NOOP, PII = "none", "noop", "pii-redact"
CONFIGS = (NONE, NOOP, PII)
# The plugin each configuration turns on.
PLUGIN_OF = {NONE: None, NOOP: "test-noop", PII: "pii-redact"}
# The capabilities pii-redact may have approved, of those it asks for.
PII_APPROVALS = ("config", "log")
HOOKS = ("before-prompt", "on-chunk", "finish", "after-answer")
# The exports behind each hook a manifest names.
EXPORTS_OF = {"before-prompt": ("before-prompt",), "stream": ("on-chunk", "finish"),
              "after-answer": ("after-answer",)}

GOAL_NOOP_P50_US = 50
GOAL_PII_MIN_RATIO = 0.98

# Personal data in every prompt. The card number passes the Luhn check and
# the IBAN the mod-97 check, so pii-redact masks them.
PII_VALUES = {
    "email": "marta.silva@example.com",
    "phone": "+44 20 7946 0958",
    "card": "4111 1111 1111 1111",
    "iban": "GB82 WEST 1234 5698 7654 32",
}


def pii_prompt(seq: int, nth: int, masked: bool) -> str:
    """The prompt of the seq-th request of the run, the nth of its
    configuration (both 0-based); with `masked`, its personal data replaced
    as pii-redact's default configuration replaces it."""
    task = PROMPTS[nth % len(PROMPTS)]
    v = {kind: f"[{kind}]" for kind in PII_VALUES} if masked else PII_VALUES
    return (
        f"({seq}) A customer, Marta Silva, wrote to us from {v['email']} and asked us to call her on "
        f"{v['phone']}. She paid with the card {v['card']} and wants refunds sent to the IBAN {v['iban']}. "
        f"First repeat her contact and payment details exactly, one per line, then: {task}"
    )


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Fail(Exception):
    """A check failed or the server answered an error: the run stops."""


# --------------------------------------------------------------------------
# Technician calls.


class Admin:
    """Corral's plugin API as a technician, signed in with a password."""

    def __init__(self, url: str, username: str, password: str, timeout: float):
        self.root = url.rstrip("/")
        if self.root.endswith("/v1"):
            self.root = self.root[: -len("/v1")]
        self.username = username
        self.password = password
        self.timeout = timeout
        self.token: str | None = None

    def sign_in(self) -> None:
        body = json.dumps({"username": self.username, "password": self.password}).encode()
        status, doc = self._send("POST", "/api/auth/login", body, "application/json", auth=False)
        if status != 200 or not isinstance(doc, dict) or "access_token" not in doc:
            raise Fail(f"signing in as {self.username!r} failed: HTTP {status}: {doc}")
        self.token = doc["access_token"]

    def _send(self, method: str, path: str, body: bytes | None, content_type: str | None,
              auth: bool = True) -> tuple[int, object]:
        req = urllib.request.Request(self.root + path, data=body, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        if auth and self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw[:500].decode("utf-8", "replace")

    def call(self, method: str, path: str, body: bytes | None = None,
             content_type: str | None = None, ok: tuple[int, ...] = (200,)) -> object:
        if self.token is None:
            self.sign_in()
        status, doc = self._send(method, path, body, content_type)
        if status == 401:
            self.sign_in()
            status, doc = self._send(method, path, body, content_type)
        if status not in ok:
            raise Fail(f"{method} {path}: HTTP {status}: {doc}")
        return doc

    def json(self, method: str, path: str, doc=None, ok: tuple[int, ...] = (200,)):
        body = None if doc is None else json.dumps(doc).encode()
        return self.call(method, path, body, "application/json" if body is not None else None, ok)

    def plugin(self, plugin_id: str) -> dict:
        return self.json("GET", f"/api/plugins/{plugin_id}")

    def install(self, folder: str) -> dict:
        """Installs the plugin in `folder` (plugin.toml + plugin.wasm); one
        of the same id installed already is deleted first, so every run
        starts from a fresh install and fresh counters."""
        with open(os.path.join(folder, "plugin.toml"), "rb") as f:
            manifest = f.read()
        with open(os.path.join(folder, "plugin.wasm"), "rb") as f:
            component = f.read()
        plugin_id = os.path.basename(os.path.normpath(folder))
        status, _ = self._send("GET", f"/api/plugins/{plugin_id}", None, None)
        if status == 200:
            log(f"    {plugin_id} is installed already: deleting it first")
            self.call("DELETE", f"/api/plugins/{plugin_id}", ok=(204,))
        boundary = "corral-bench-" + uuid.uuid4().hex
        parts = [
            (b'Content-Disposition: form-data; name="manifest"\r\n'
             b"Content-Type: text/plain; charset=utf-8\r\n\r\n", manifest),
            (b'Content-Disposition: form-data; name="component"; filename="plugin.wasm"\r\n'
             b"Content-Type: application/wasm\r\n\r\n", component),
        ]
        body = b""
        for head, data in parts:
            body += b"--" + boundary.encode() + b"\r\n" + head + data + b"\r\n"
        body += b"--" + boundary.encode() + b"--\r\n"
        view = self.call("POST", "/api/plugins", body, f"multipart/form-data; boundary={boundary}", ok=(201,))
        if view.get("id") != plugin_id:
            raise Fail(f"{folder}: the manifest's id is {view.get('id')!r}, not the folder's name")
        return view

    def set_enabled(self, plugin_id: str, on: bool) -> dict:
        view = self.json("PATCH", f"/api/plugins/{plugin_id}", {"enabled": on})
        if on and not view.get("active"):
            raise Fail(f"{plugin_id} is enabled but not active: {view.get('disabled_reason')}")
        return view


def hook_stats(view: dict) -> dict[str, dict]:
    return {s["hook"]: s for s in view.get("stats") or []}


# --------------------------------------------------------------------------
# The run.


class Counters:
    """One plugin's hook figures over the run, from snapshots of its view
    taken after it was turned on and after each of its rounds."""

    def __init__(self, plugin_id: str, manifest_hooks: list[str]):
        self.plugin_id = plugin_id
        self.exports = [e for h in manifest_hooks for e in EXPORTS_OF.get(h, ())]
        self.rounds: list[dict[str, dict]] = []  # per round: hook -> {calls, errors, p50_us, p99_us}
        self.restarted = False  # turning the plugin on started its counters again
        self.last: dict[str, dict] = {}  # the latest snapshot

    def calls(self, snapshot: dict[str, dict], hook: str) -> int:
        return int((snapshot.get(hook) or {}).get("calls", 0))

    def _advance(self, now: dict[str, dict]) -> None:
        if any(self.calls(now, h) < self.calls(self.last, h) for h in HOOKS):
            self.restarted = True
        self.last = now

    def observe_off(self, view: dict, label: str) -> None:
        """A snapshot taken while the plugin was off: nothing may have run."""
        now = hook_stats(view)
        before = self.calls(self.last, "before-prompt")
        after = self.calls(now, "before-prompt")
        if after > before:
            raise Fail(f"{self.plugin_id} was off during {label} but before-prompt ran "
                       f"{after - before} times")
        self._advance(now)

    def turned_on(self, view: dict) -> None:
        self._advance(hook_stats(view))

    def round_done(self, view: dict, requests: int, label: str, timed: bool) -> None:
        now = hook_stats(view)
        delta = {}
        for hook in HOOKS:
            a, b = self.last.get(hook) or {}, now.get(hook) or {}
            delta[hook] = {
                "calls": int(b.get("calls", 0)) - int(a.get("calls", 0)),
                "errors": int(b.get("errors", 0)) - int(a.get("errors", 0)),
                "p50_us": b.get("p50_us"),
                "p99_us": b.get("p99_us"),
            }
        ran = delta["before-prompt"]["calls"]
        if ran != requests:
            raise Fail(f"{self.plugin_id} was on for {requests} requests in {label} but its before-prompt "
                       f"ran {ran} times: are hooks running on /v1/chat/completions?")
        errors = {h: d["errors"] for h, d in delta.items() if d["errors"]}
        if errors:
            raise Fail(f"{self.plugin_id}: hook calls failed in {label} {errors}: "
                       f"{view.get('last_error')}")
        if timed:
            self.rounds.append(delta)
        self.last = now

    def summary(self) -> dict:
        """Per hook: calls and errors of the timed rounds, p50 and p99."""
        out = {}
        for hook in HOOKS:
            if hook not in self.exports:
                continue
            rounds = [r[hook] for r in self.rounds if r[hook]["calls"] > 0]
            calls = sum(r["calls"] for r in rounds)
            entry = {"calls": calls, "errors": sum(r["errors"] for r in rounds)}
            if not rounds:
                entry.update({"p50_us": None, "p99_us": None})
            elif self.restarted:
                entry["p50_us"] = weighted_median([(r["p50_us"], r["calls"]) for r in rounds])
                entry["p99_us"] = weighted_median([(r["p99_us"], 1) for r in rounds])
            else:
                # The counters ran on: the latest snapshot covers every call
                # since the install, the warm-up included.
                last = self.last.get(hook) or {}
                entry["p50_us"], entry["p99_us"] = last.get("p50_us"), last.get("p99_us")
            out[hook] = entry
        return out


def end_to_end_tps(r: StreamResult) -> float | None:
    """Completion tokens over the whole request, send to end of stream."""
    if r.t_done is None or r.t_done <= r.t_sent:
        return None
    return r.tokens / (r.t_done - r.t_sent)


def weighted_median(pairs: list[tuple[int, int]]) -> int | None:
    pairs = sorted((v, w) for v, w in pairs if v is not None and w > 0)
    total = sum(w for _, w in pairs)
    seen = 0
    for v, w in pairs:
        seen += w
        if 2 * seen >= total:
            return v
    return None


def run(args: argparse.Namespace) -> dict:
    admin = Admin(args.url, args.username, args.password, args.request_timeout)
    target = CorralTarget("corral", normalise_base(args.url), args.api_key, args.model_name)
    target.wait_ready(args.ready_timeout)
    log(f"    ready at {target.base_url}; model {args.model_name}")

    # Install both plugins, off; pii-redact with what it asks for of config and log approved.
    views = {}
    for config in (NOOP, PII):
        plugin_id = PLUGIN_OF[config]
        view = admin.install(os.path.join(args.plugins_dir, plugin_id))
        if config == PII:
            approve = [c for c in PII_APPROVALS if c in view.get("capabilities", [])]
            view = admin.json("PATCH", f"/api/plugins/{plugin_id}", {"approved": approve})
        else:
            approve = []
        log(f"    installed {plugin_id} {view.get('version')} (hooks {', '.join(view.get('hooks', []))}; "
            f"capabilities {view.get('capabilities')}, approved {approve})")
        views[plugin_id] = view
    counters = {p: Counters(p, views[p].get("hooks") or []) for p in (PLUGIN_OF[NOOP], PLUGIN_OF[PII])}
    for plugin_id, c in counters.items():
        c.last = hook_stats(views[plugin_id])

    state = {"on": None}  # the plugin on now

    def switch_to(config: str) -> None:
        want = PLUGIN_OF[config]
        if state["on"] == want:
            return
        if state["on"] is not None:
            counters[state["on"]].observe_off(admin.set_enabled(state["on"], False), "the switch")
            state["on"] = None
        if want is not None:
            counters[want].turned_on(admin.set_enabled(want, True))
            state["on"] = want

    seq = 0
    nth = {c: 0 for c in CONFIGS}  # requests sent per configuration
    results: dict[str, list[StreamResult]] = {c: [] for c in CONFIGS}
    round_rates: dict[str, list[float | None]] = {c: [] for c in CONFIGS}
    round_e2e: dict[str, list[float | None]] = {c: [] for c in CONFIGS}

    def one_round(config: str, n: int, label: str, timed: bool) -> None:
        nonlocal seq
        switch_to(config)
        for _ in range(n):
            masked = config != PII and not args.unmasked_baseline
            r = stream_chat(target, pii_prompt(seq, nth[config], masked), args)
            seq += 1
            nth[config] += 1
            if r.tokens != args.max_tokens:
                raise Fail(f"{label}, {config}: {r.tokens} tokens generated, not {args.max_tokens} "
                           f"(finish_reason {r.finish_reason}): ignore_eos not honoured?")
            if timed:
                results[config].append(r)
            log(f"    {label:>9} {config:>10}: TTFT {1000 * r.ttft:7.1f} ms, decode {r.decode_tps or 0:6.1f} tok/s, "
                f"{r.prompt_tokens} prompt tokens")
        if timed:
            round_rates[config].append(median([r.decode_tps for r in results[config][-n:]]))
            round_e2e[config].append(median([end_to_end_tps(r) for r in results[config][-n:]]))
        for plugin_id, c in counters.items():
            view = admin.plugin(plugin_id)
            if plugin_id == state["on"]:
                c.round_done(view, n, label, timed)
            else:
                c.observe_off(view, label)

    load_before = list(os.getloadavg())
    started = time.time()
    log("    warm-up: one untimed request per configuration")
    for config in CONFIGS:
        one_round(config, 1, "warm-up", timed=False)
    for k in range(args.rounds):
        for config in CONFIGS:
            one_round(config, args.per_round, f"round {k + 1}", timed=True)
    switch_to(NONE)
    load_after = list(os.getloadavg())

    out: dict = {
        "target": "corral",
        "base_url": target.base_url,
        "model_name": args.model_name,
        "max_tokens": args.max_tokens,
        "ignore_eos": True,
        "rounds": args.rounds,
        "per_round": args.per_round,
        "order": list(CONFIGS),
        "baseline_prompts": "unmasked" if args.unmasked_baseline else "masked as pii-redact masks them",
        "seconds": round(time.time() - started, 1),
        "host": {"cores": usable_cores(), "loadavg_before": load_before, "loadavg_after": load_after},
        "configurations": {},
        "goals": {},
    }
    base_tps = median([r.decode_tps for r in results[NONE]])
    base_e2e = median([end_to_end_tps(r) for r in results[NONE]])
    for config in CONFIGS:
        rs = results[config]
        tps = median([r.decode_tps for r in rs])
        e2e_rates = [end_to_end_tps(r) for r in rs]
        e2e = median(e2e_rates)
        entry = {
            "plugin": PLUGIN_OF[config],
            "requests": len(rs),
            "decode_tps_median": tps,
            "decode_tps": [round(r.decode_tps, 2) if r.decode_tps else None for r in rs],
            "ttft_ms_median": 1000 * median([r.ttft for r in rs]),
            "e2e_tps_median": e2e,
            "e2e_tps": [round(x, 2) for x in e2e_rates],
            "e2e_tps_over_none_of_medians": e2e / base_e2e if e2e and base_e2e else None,
            "round_e2e_tps_over_none": [
                a / b if a and b else None for a, b in zip(round_e2e[config], round_e2e[NONE])
            ],
            "ttft_ms": [round(1000 * r.ttft, 1) for r in rs],
            "prompt_tokens": [r.prompt_tokens for r in rs],
            # The prompt as the model read it: pii-redact's masks are shorter
            # than the data they replace, so its prefill (and TTFT) is less.
            "prompt_tokens_median": median([r.prompt_tokens for r in rs]),
            # Chunks that carried text, per request: fewer than the tokens
            # when a stream filter holds text back and lets it out together.
            "text_chunks_median": median([r.chunks for r in rs]),
            "tps_over_none_of_medians": tps / base_tps if tps and base_tps else None,
            # Per round, this configuration's median over the no-plugin one of
            # the same round; their median is the ratio reported.
            "round_tps_over_none": [
                a / b if a and b else None for a, b in zip(round_rates[config], round_rates[NONE])
            ],
            "answers_with_raw_pii": {
                kind: sum(1 for r in rs if value in r.text) for kind, value in PII_VALUES.items()
            },
            "answers_with_mask": sum(1 for r in rs if any(f"[{k}]" in r.text for k in PII_VALUES)),
        }
        entry["tps_over_none"] = median(entry["round_tps_over_none"])
        entry["e2e_tps_over_none"] = median(entry["round_e2e_tps_over_none"])
        plugin_id = PLUGIN_OF[config]
        if plugin_id:
            c = counters[plugin_id]
            hooks = c.summary()
            entry["hooks"] = hooks
            entry["counters_restarted_on_enable"] = c.restarted
            # Hook time per request: each hook's calls per request times its
            # median call (the mean is not reported; this is an estimate).
            per_request = sum(
                (h["calls"] / len(rs)) * h["p50_us"] for h in hooks.values() if h["p50_us"] is not None and rs
            )
            entry["hook_us_per_request_p50_estimate"] = round(per_request, 1)
        out["configurations"][config] = entry

    noop_hooks = out["configurations"][NOOP]["hooks"]
    noop_p50 = [h["p50_us"] for h in noop_hooks.values() if h["p50_us"] is not None]
    worst = max(noop_p50) if noop_p50 else None
    out["goals"]["noop_hook_p50_us"] = {
        "goal": f"every no-op hook's p50 under {GOAL_NOOP_P50_US} µs",
        "unit": "µs",
        "value": worst,
        "met": worst is not None and worst < GOAL_NOOP_P50_US,
    }
    ratio = out["configurations"][PII]["e2e_tps_over_none"]
    out["goals"]["pii_redact_tps_loss"] = {
        "goal": f"pii-redact token rate loss (end to end) under {round(100 * (1 - GOAL_PII_MIN_RATIO))}%",
        "unit": "fraction",
        "value": None if ratio is None else 1 - ratio,
        "met": ratio is not None and ratio >= GOAL_PII_MIN_RATIO,
    }
    missing = [h for h, e in noop_hooks.items() if e["calls"] == 0]
    if missing:
        out["goals"]["noop_hook_p50_us"]["hooks_never_called"] = missing
    return out


# --------------------------------------------------------------------------
# The table.


def fmt(v, digits: int = 1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def times(v) -> str:
    return "n/a" if v is None else f"{v:.3f}×"


def render(doc: dict) -> str:
    head = ["configuration", "decode tok/s (median)", "TTFT ms (median)", "tok/s / none (per round)",
            "end-to-end tok/s", "e2e / none (per round)", "prompt tokens"]
    head += [f"{h} p50/p99 µs" for h in HOOKS]
    rows = [head]
    for config, e in doc["configurations"].items():
        row = [config, fmt(e["decode_tps_median"]), fmt(e["ttft_ms_median"]), times(e["tps_over_none"]),
               fmt(e["e2e_tps_median"]), times(e["e2e_tps_over_none"]), fmt(e["prompt_tokens_median"])]
        for hook in HOOKS:
            h = (e.get("hooks") or {}).get(hook)
            if h is None:
                row.append("-")
            elif h["calls"] == 0:
                row.append("not called")
            else:
                row.append(f"{fmt(h['p50_us'])} / {fmt(h['p99_us'])}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for j, r in enumerate(rows):
        cells = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        lines.append("| " + " | ".join(cells) + " |")
        if j == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines.append("")
    c = doc["configurations"]
    lines.append(f"{doc['rounds']} rounds of {doc['per_round']} request(s) per configuration "
                 f"({c[NONE]['requests']} timed each, {doc['max_tokens']} tokens, ignore_eos), "
                 f"order {' → '.join(doc['order'])}; load average {doc['host']['loadavg_before'][0]:.2f} before, "
                 f"{doc['host']['loadavg_after'][0]:.2f} after, {doc['host']['cores']} cores.")
    for config in (NOOP, PII):
        e = c[config]
        calls = e["hooks"].get("on-chunk", {}).get("calls", 0) / max(e["requests"], 1)
        lines.append(f"{config}: hook time per request ≈ {fmt(e['hook_us_per_request_p50_estimate'])} µs "
                     f"(calls per request × p50; {calls:.0f} on-chunk calls and {fmt(e['text_chunks_median'])} chunks "
                     f"with text per request); ratio of the medians to none's (not per round): decode "
                     f"{times(e['tps_over_none_of_medians'])}, end to end {times(e['e2e_tps_over_none_of_medians'])}.")
        if e["counters_restarted_on_enable"]:
            lines.append(f"  {e['plugin']}'s counters start again when it is turned on: p50 is the rounds' "
                         "call-weighted median p50, p99 the median of the rounds' p99s.")
    lines.append(f"prompts of none and noop: {doc['baseline_prompts']}.")
    a, b = c[NONE]["prompt_tokens_median"], c[PII]["prompt_tokens_median"]
    if not doc["baseline_prompts"].startswith("unmasked") and a is not None and b is not None and abs(a - b) > 2:
        lines.append(f"warning: the model read {a} prompt tokens without a plugin but {b} with pii-redact: "
                     "pii-redact masks the prompt differently than this script assumes")
    raw = c[PII]["answers_with_raw_pii"]
    if any(raw.values()):
        lines.append(f"warning: pii-redact answers still held raw personal data: {raw}")
    lines.append("")
    for goal in doc["goals"].values():
        value = goal["value"]
        if value is None:
            shown = "n/a"
        elif goal["unit"] == "fraction":
            shown = f"{100 * value:+.2f}%"
        else:
            shown = f"{value} µs"
        lines.append(f"goal: {goal['goal']}: {shown} → {'PASS' if goal['met'] else 'MISS'}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="Corral's base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--api-key", default=os.environ.get("CORRAL_BENCH_KEY"), help="API key for /v1 (Bearer)")
    p.add_argument("--username", required=True, help="a technician's user name")
    p.add_argument("--model-name", required=True, help="the model's name in Corral's API")
    p.add_argument("--plugins-dir", required=True,
                   help="the folder scripts/build-plugins.sh wrote (holds test-noop/ and pii-redact/)")
    p.add_argument("--rounds", type=int, default=10, help="rounds of the three configurations (default 10)")
    p.add_argument("--per-round", type=int, default=2, help="requests per configuration per round (default 2)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--unmasked-baseline", action="store_true",
                   help="send the raw personal data to none and noop too (the model then reads longer prompts "
                        "there than with pii-redact)")
    p.add_argument("--request-timeout", type=float, default=300)
    p.add_argument("--ready-timeout", type=float, default=120)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    args.password = os.environ.get("CORRAL_BENCH_PASSWORD")
    args.no_ignore_eos = False  # stream_chat's switch; every request here ignores EOS
    if not args.password:
        p.error("set CORRAL_BENCH_PASSWORD to the technician's password")
    if not args.api_key:
        p.error("--api-key (or CORRAL_BENCH_KEY) is needed")
    if args.rounds < 1 or args.per_round < 1:
        p.error("--rounds and --per-round must be at least 1")
    for plugin_id in (PLUGIN_OF[NOOP], PLUGIN_OF[PII]):
        for name in ("plugin.toml", "plugin.wasm"):
            if not os.path.isfile(os.path.join(args.plugins_dir, plugin_id, name)):
                p.error(f"no {plugin_id}/{name} in {args.plugins_dir}: run scripts/build-plugins.sh")

    log("==> benchmarking plugins")
    try:
        doc = run(args)
    except Fail as e:
        raise SystemExit(f"error: {e}")
    except KeyboardInterrupt:
        raise SystemExit("interrupted")
    text = render(doc)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
