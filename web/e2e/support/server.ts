// A real `corral serve` for the journeys: its own data directory and TOML
// configuration, a free port of 127.0.0.1, accounts made with
// `corral admin create`, stopped with SIGTERM (then SIGKILL).

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { accessSync, constants, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { request as httpsRequest } from "node:https";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address ? address.port : 0;
      probe.close(() => resolve(port));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The corral binary of CORRAL_BIN; fails with what to do when it is not there. */
export function corralBinary(): string {
  const bin = process.env.CORRAL_BIN;
  if (!bin) {
    throw new Error(
      "CORRAL_BIN is not set: point it at a built corral binary (e.g. $CARGO_TARGET_DIR/debug/corral)",
    );
  }
  try {
    accessSync(bin, constants.X_OK);
  } catch {
    throw new Error(`CORRAL_BIN=${bin} is not an executable file`);
  }
  return path.resolve(bin);
}

const DEMO_FILE = "gemma-3-270m-q4_k_m.gguf";
const DEMO_SIZE = 253_113_024;

/** The demo model: CORRAL_DEMO_MODEL, else where scripts/fetch-demo-model.sh keeps it. */
export function demoModel(): string {
  const candidates = [
    process.env.CORRAL_DEMO_MODEL,
    process.env.XDG_CACHE_HOME && path.join(process.env.XDG_CACHE_HOME, "corral/models", DEMO_FILE),
    process.env.HOME && path.join(process.env.HOME, ".cache/corral/models", DEMO_FILE),
  ].filter((c): c is string => Boolean(c));
  for (const candidate of candidates) {
    try {
      if (statSync(candidate).size === DEMO_SIZE) return path.resolve(candidate);
    } catch {
      // not there; try the next one
    }
  }
  throw new Error(
    `the demo model ${DEMO_FILE} was not found (tried ${candidates.join(", ")}): ` +
      "set CORRAL_DEMO_MODEL (scripts/fetch-demo-model.sh | tail -1)",
  );
}

/** The environment without CORRAL_* settings, so only our flags count. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("CORRAL_")) env[key] = value;
  }
  env.RUST_LOG ??= "info";
  return env;
}

export interface CorralOptions {
  /** Extra lines of the TOML configuration. */
  config?: string;
  demoModel?: string;
  /** Serve HTTPS with this PEM certificate and key. */
  tls?: { cert: string; key: string };
}

/** The status of a GET of `url`, trusting only the PEM certificate `ca`. */
function httpsStatus(url: string, ca: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca, timeout: 2000 }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
    req.end();
  });
}

export class Corral {
  readonly bin = corralBinary();
  readonly work = mkdtempSync(path.join(tmpdir(), "corral-web-e2e-"));
  readonly data = path.join(this.work, "data");
  readonly configPath = path.join(this.work, "corral.toml");
  readonly logPath = path.join(this.work, "server.log");
  port = 0;
  private proc: ChildProcess | null = null;
  private tls: CorralOptions["tls"];

  get base(): string {
    return `${this.tls ? "https" : "http"}://127.0.0.1:${this.port}`;
  }

  async start(options: CorralOptions = {}): Promise<this> {
    this.tls = options.tls;
    writeFileSync(
      this.configPath,
      [
        "# Written by the web end-to-end tests.",
        "access_token_ttl_secs = 7200",
        "idle_unload_secs = 3600",
        "queue_max_waiting = 64",
        "per_user_generations = 16",
        options.config ?? "",
      ].join("\n") + "\n",
    );
    // A port chosen before the start (for a configuration that names it) stays.
    if (!this.port) this.port = await freePort();
    const args = [
      "serve",
      "--config", this.configPath,
      "--data-dir", this.data,
      "--bind", `127.0.0.1:${this.port}`,
    ];
    if (options.demoModel) args.push("--demo-model", options.demoModel);
    if (options.tls) args.push("--tls-cert", options.tls.cert, "--tls-key", options.tls.key);
    if (process.env.CORRAL_BACKENDS_DIR) args.push("--backends-dir", process.env.CORRAL_BACKENDS_DIR);
    const log = openSync(this.logPath, "a");
    this.proc = spawn(this.bin, args, { stdio: ["ignore", log, log], env: cleanEnv() });
    const ca = options.tls && readFileSync(options.tls.cert, "utf8");
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      this.checkAlive();
      try {
        const status = ca
          ? await httpsStatus(`${this.base}/readyz`, ca)
          : (await fetch(`${this.base}/readyz`, { signal: AbortSignal.timeout(2000) })).status;
        if (status === 200) return this;
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    throw new Error(`corral was not ready within 60 s\n${this.logTail()}`);
  }

  checkAlive(): void {
    if (this.proc && this.proc.exitCode !== null) {
      throw new Error(`corral exited early with status ${this.proc.exitCode}\n${this.logTail()}`);
    }
  }

  logTail(lines = 60): string {
    try {
      const text = readFileSync(this.logPath, "utf8").split("\n");
      return `--- last ${lines} lines of ${this.logPath} ---\n${text.slice(-lines).join("\n")}`;
    } catch {
      return "(no server log)";
    }
  }

  /** Creates an account with `corral admin create`; returns its password. */
  createAccount(username: string, role: "admin" | "technician" | "user", password?: string): string {
    const secret = password ?? `e2e-${Math.random().toString(36).slice(2)}-${Date.now()}`;
    const out = spawnSync(
      this.bin,
      [
        "admin", "create",
        "--config", this.configPath,
        "--data-dir", this.data,
        "--username", username,
        "--role", role,
        "--password-stdin",
      ],
      { input: `${secret}\n`, encoding: "utf8", env: cleanEnv(), timeout: 60_000 },
    );
    if (out.status !== 0) throw new Error(`admin create failed: ${out.stdout}\n${out.stderr}`);
    return secret;
  }

  /** SIGTERM, then SIGKILL after 15 s; removes the data directory. */
  async stop(): Promise<void> {
    const proc = this.proc;
    this.proc = null;
    if (proc && proc.exitCode === null) {
      const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    }
    if (!process.env.CORRAL_E2E_KEEP) rmSync(this.work, { recursive: true, force: true });
  }
}

/**
 * A real `corral node` on 127.0.0.1: a token of its own, and a models
 * folder holding a link to each file it is given.
 */
export class CorralNode {
  readonly bin = corralBinary();
  readonly work = mkdtempSync(path.join(tmpdir(), "corral-web-e2e-node-"));
  readonly models = path.join(this.work, "models");
  readonly token = randomBytes(24).toString("hex");
  private proc: ChildProcess | null = null;

  constructor(readonly port: number) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(files: string[]): Promise<this> {
    mkdirSync(this.models);
    for (const file of files) symlinkSync(file, path.join(this.models, path.basename(file)));
    const tokenFile = path.join(this.work, "token");
    writeFileSync(tokenFile, `${this.token}\n`, { mode: 0o600 });
    const args = [
      "node",
      "--listen", `127.0.0.1:${this.port}`,
      "--token-file", tokenFile,
      "--models-dir", this.models,
      "--data-dir", path.join(this.work, "data"),
    ];
    if (process.env.CORRAL_BACKENDS_DIR) args.push("--backends-dir", process.env.CORRAL_BACKENDS_DIR);
    const log = openSync(path.join(this.work, "node.log"), "a");
    this.proc = spawn(this.bin, args, { stdio: ["ignore", log, log], env: cleanEnv() });
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null) throw new Error(`corral node exited with status ${this.proc.exitCode}`);
      try {
        // Without the token it answers 401: it is listening.
        const response = await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(2000) });
        if (response.status === 401) return this;
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    throw new Error("corral node was not listening within 30 s");
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    this.proc = null;
    if (proc && proc.exitCode === null) {
      const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
      proc.kill("SIGKILL");
      await exited;
    }
    if (!process.env.CORRAL_E2E_KEEP) rmSync(this.work, { recursive: true, force: true });
  }
}

/** REST calls as one account (setup and checks that need no page). */
export class Rest {
  constructor(
    readonly base: string,
    readonly token: string,
  ) {}

  static async login(base: string, username: string, password: string): Promise<Rest> {
    const response = await fetch(`${base}/api/auth/login`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
    if (!response.ok) throw new Error(`login of ${username}: ${response.status} ${await response.text()}`);
    const body = (await response.json()) as { access_token: string };
    return new Rest(base, body.access_token);
  }

  async call<T = unknown>(method: string, url: string, body?: unknown): Promise<{ status: number; body: T }> {
    const response = await fetch(`${this.base}${url}`, {
      method,
      headers: {
        Authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // not JSON; keep the text
    }
    return { status: response.status, body: parsed as T };
  }

  async ok<T = unknown>(method: string, url: string, body?: unknown): Promise<T> {
    const result = await this.call<T>(method, url, body);
    if (result.status >= 300) {
      throw new Error(`${method} ${url}: ${result.status} ${JSON.stringify(result.body)}`);
    }
    return result.body;
  }
}
