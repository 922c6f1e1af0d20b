// Everything one journey file needs: a corral with the demo model, a local
// file server it may download from, the app's origin, Chromium, and the
// staff accounts. `start()` in beforeAll, `stop()` in afterAll.

import { mkdirSync } from "node:fs";
import path from "node:path";
import type { Browser, Page } from "playwright-core";
import { Actor, SCREENSHOTS, expectNoCspViolation, launch } from "./browser";
import { FileServer } from "./files";
import { Corral, CorralNode, Rest, demoModel, freePort } from "./server";

export interface Account {
  username: string;
  password: string;
}

export class World {
  readonly files = new FileServer();
  readonly corral = new Corral();
  readonly demo = demoModel();
  /** A worker node the journeys may start; its port is allowed at start. */
  node!: CorralNode;
  browser!: Browser;
  admin!: Account;
  technician!: Account;
  private actors: Actor[] = [];

  get base(): string {
    return this.corral.base;
  }

  async start(): Promise<this> {
    await this.files.start();
    // Throttled, so that the progress bar has time to show.
    this.files.add("/models/gemma.gguf", this.demo, 48 * 1024 * 1024);
    this.admin = { username: "boss", password: "" };
    this.technician = { username: "tech", password: "" };
    this.corral.port = await freePort();
    this.node = new CorralNode(await freePort());
    await this.corral.start({
      demoModel: this.demo,
      // The file server is on 127.0.0.1, which downloads may reach only as
      // an allowed origin (a local mirror); the server's own /v1 serves as
      // a remote OpenAI-compatible upstream.
      config: [
        `download_allowed_origins = ["${this.files.base}"]`,
        `upstream_allowed_origins = ["${this.corral.base}"]`,
        `node_allowed_origins = ["${this.node.url}"]`,
      ].join("\n"),
    });
    this.admin.password = this.corral.createAccount("boss", "admin");
    this.technician.password = this.corral.createAccount("tech", "technician");
    await expectServedApp(this.corral.base);
    this.browser = await launch();
    return this;
  }

  /** A person with a browser context of their own. */
  async actor(name: string): Promise<Actor> {
    const actor = await Actor.open(this.browser, name, this.base);
    this.actors.push(actor);
    return actor;
  }

  rest(account: Account): Promise<Rest> {
    return Rest.login(this.corral.base, account.username, account.password);
  }

  /** The pages still open, by actor. */
  openPages(): { actor: string; index: number; page: Page }[] {
    return this.actors.flatMap((actor) =>
      actor.context.pages().map((page, index) => ({ actor: actor.name, index, page })),
    );
  }

  /**
   * What each open page showed when a journey failed: a screenshot in
   * test-results/failures and the page's text in the test's output.
   */
  async recordFailure(journey: string): Promise<void> {
    const folder = path.join(SCREENSHOTS, "..", "failures");
    mkdirSync(folder, { recursive: true });
    const slug = journey.replace(/[^a-z0-9]+/gi, "-").slice(0, 60);
    for (const page of this.openPages()) {
      const name = `${slug}-${page.actor}-${page.index}`;
      await page.page.screenshot({ path: path.join(folder, `${name}.png`) }).catch(() => {});
      console.log(`--- ${name}: ${await describePage(page.page)}`);
    }
  }

  /** Fails on any CSP violation seen so far by any actor. */
  checkCsp(): void {
    expectNoCspViolation(...this.actors);
  }

  async stop(): Promise<void> {
    const errors = this.actors.flatMap((a) => a.consoleErrors.map((e) => `${a.name}: ${e}`));
    if (errors.length) console.log(`console errors seen:\n${errors.join("\n")}`);
    for (const actor of this.actors) await actor.close().catch(() => {});
    await this.browser?.close().catch(() => {});
    await this.corral.stop();
    await this.node.stop();
    await this.files.close();
  }
}

/** Signs in on /sign-in and waits for the signed-in frame. */
export async function signIn(page: Page, account: Account, path = "/"): Promise<void> {
  await page.goto(`/sign-in?next=${encodeURIComponent(path)}`);
  await page.getByLabel("Username").fill(account.username);
  await page.getByLabel("Password", { exact: true }).fill(account.password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  const menu = page.getByRole("button", { name: /^Account menu/ });
  const alert = page.getByRole("alert").filter({ hasText: /\S/ });
  await menu.or(alert).first().waitFor();
  if (!(await menu.isVisible())) {
    throw new Error(`${account.username} could not sign in: ${(await alert.allInnerTexts()).join(" | ")}`);
  }
}

/** What a page showed: its URL and the start of its text (for failure reports). */
export async function describePage(page: Page): Promise<string> {
  const text = await page.locator("body").innerText({ timeout: 2000 }).catch(() => "(no text)");
  return `${page.url()}\n${text.slice(0, 1500)}`;
}

/** Signs out through the account menu. */
export async function signOut(page: Page): Promise<void> {
  await page.getByRole("button", { name: /^Account menu/ }).click();
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in to Corral" }).waitFor();
}

/** Polls `condition` until it returns a truthy value. */
export async function eventually<T>(
  condition: () => Promise<T> | T,
  what: string,
  within = 30_000,
  every = 200,
): Promise<T> {
  const deadline = Date.now() + within;
  let last: unknown;
  for (;;) {
    try {
      const value = await condition();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${within / 1000} s${last ? ` (${String(last)})` : ""}`);
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

/** The journeys test the app as corral itself serves it, embedded in the binary. */
async function expectServedApp(base: string): Promise<void> {
  const response = await fetch(`${base}/chat`);
  const html = await response.text();
  if (!response.ok || !html.includes('src="/assets/')) {
    throw new Error(
      `${base}/chat did not answer with the web UI (status ${response.status}); ` +
        "build web/ (npm run build) before the corral binary, which embeds web/dist",
    );
  }
}
