// Plugins in a real Chromium against a real corral with the demo model: a
// technician installs pii-redact through the Plugins page, approves what it
// asks for and turns it on; a user's chat answer then holds no e-mail
// address, though the prompt did, and the technician sees the calls
// counted. A second plugin, test-net-http, has its hosts for outgoing HTTP
// approved on its page. The built plugins come from CORRAL_PLUGINS_DIST
// (scripts/build-plugins.sh: <dist>/<id>/plugin.toml and plugin.wasm).

import { existsSync } from "node:fs";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Page } from "playwright-core";
import { look as lookAt } from "./support/browser";
import { World, eventually, signIn, type Account } from "./support/world";

const PLUGINS = ["pii-redact", "test-net-http"];
// The demo model copies a "Repeat exactly" message when it picks the
// likeliest words, so without the plugin the address would come back.
const PROMPT = "Repeat exactly: my address is ada@example.com";
// Enough of an answer for the model's copy of the prompt.
const COPY_TOKENS = 24;
// An e-mail address anywhere in a text, as pii-redact finds them.
const ANY_ADDRESS = /[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}/;

/**
 * The folder of the built plugins. Without it the journeys fail, unless
 * CORRAL_ALLOW_SKIP=1, when they report themselves skipped.
 */
function pluginsDist(): string | null {
  const dist = process.env.CORRAL_PLUGINS_DIST;
  const missing = dist
    ? PLUGINS.flatMap((id) => ["plugin.toml", "plugin.wasm"].map((f) => path.join(dist, id, f))).filter(
        (file) => !existsSync(file),
      )
    : [];
  const why = !dist
    ? "CORRAL_PLUGINS_DIST is not set: point it at the folder scripts/build-plugins.sh filled"
    : missing.length
      ? `CORRAL_PLUGINS_DIST=${dist} lacks ${missing.join(", ")}: run scripts/build-plugins.sh ${dist}`
      : null;
  if (!why) return dist!;
  if (process.env.CORRAL_ALLOW_SKIP === "1") {
    console.error(`SKIPPED web/e2e/plugins.test.ts: ${why}`);
    return null;
  }
  throw new Error(why);
}

const dist = pluginsDist();
// Made in beforeAll, so that a skipped file starts nothing.
let world: World;
const user: Account = { username: "grace", password: "grace-hopper-1906" };
const violations: string[] = [];
let techPage: Page;

const look = (page: Page, name: string) => lookAt(page, name, violations);
const conversation = (page: Page) => page.getByRole("log", { name: "Conversation" });

/**
 * Installs a built plugin through the Plugins page's form, checking the
 * preview of what its manifest asks for; ends on the plugin's own page.
 */
async function installThroughPage(page: Page, id: string, preview: string[]): Promise<void> {
  await page.goto("/plugins");
  await page.getByRole("heading", { name: "Plugins", exact: true }).waitFor();
  await page.getByRole("button", { name: "Install plugin" }).click();
  const dialog = page.getByRole("dialog", { name: "Install a plugin" });
  await dialog.getByLabel("Component (.wasm)", { exact: true }).setInputFiles(path.join(dist!, id, "plugin.wasm"));
  await dialog.getByLabel("plugin.toml file", { exact: true }).setInputFiles(path.join(dist!, id, "plugin.toml"));
  for (const line of preview) await dialog.getByText(line, { exact: true }).waitFor();
  if (id === "pii-redact") await look(page, "plugin-install");
  await dialog.getByRole("button", { name: "Install", exact: true }).click();
  await page.waitForURL((url) => url.pathname === `/plugins/${id}`);
  await page.getByText("Installed and turned off.", { exact: false }).waitFor();
}

/**
 * The last answer's text once it is written (it can be regenerated) and is
 * not `before`, the answer it replaces; a failed answer fails the journey
 * with its reason.
 */
async function writtenAnswer(page: Page, before?: string): Promise<string> {
  // Messages only: an answer's own Markdown lists are list items too.
  const last = conversation(page).locator(":scope > ol > li").last();
  const written = last.getByRole("button", { name: "Regenerate" });
  const failed = last.getByRole("alert").filter({ hasText: /\S/ });
  // `eventually` retries what throws, so a failure comes back as a value.
  const seen = await eventually(
    async () => {
      if (await failed.count()) return { failed: (await failed.allInnerTexts()).join(" | ") };
      if (!(await written.isVisible())) return null;
      const shown = (await last.innerText()).trim();
      return shown !== before ? { text: shown } : null;
    },
    "a written answer",
    150_000,
  );
  if (!seen) throw new Error("no answer");
  if ("failed" in seen) throw new Error(`the answer failed: ${seen.failed}`);
  return seen.text;
}

/** The calls counted for one hook in the plugin's table on the page. */
async function callsOf(page: Page, hook: string): Promise<number> {
  const table = page.getByRole("table", { name: "Calls per hook of PII redaction" });
  const row = table.getByRole("row").filter({ has: page.getByRole("rowheader", { name: hook, exact: true }) });
  if ((await row.count()) === 0) return 0;
  return Number((await row.getByRole("cell").first().innerText()).replace(/[^\d]/g, ""));
}

describe.skipIf(dist === null)("plugins", () => {
  beforeAll(async () => {
    world = new World();
    await world.start();
    user.password = world.corral.createAccount(user.username, "user", user.password);
  });

  afterEach(async (context) => {
    if (context.task.result?.state === "fail") await world.recordFailure(context.task.name);
  });

  afterAll(async () => {
    await world?.stop();
  });

  it("lets a technician install pii-redact from its files, approve what it asks for and turn it on", async () => {
    const tech = await world.actor("tech");
    techPage = await tech.page();
    const page = techPage;
    await signIn(page, world.technician, "/plugins");
    await page.getByText("No plugin is installed.").waitFor();
    await installThroughPage(page, "pii-redact", [
      "PII redaction (pii-redact), version 0.1.0, built for plugin interface 0.1.0.",
      "Asks for: config.",
    ]);

    // Installed turned off, with nothing approved.
    await page.getByRole("heading", { name: "PII redaction", level: 1 }).waitFor();
    const enabled = page.getByRole("switch", { name: "Turned on" });
    expect(await enabled.isChecked()).toBe(false);
    const config = page.getByRole("checkbox", { name: "config", exact: true });
    expect(await config.isChecked()).toBe(false);

    await config.check();
    await page.getByRole("button", { name: "Save approvals" }).click();
    await page.getByText("Approvals saved.").waitFor();
    // The switch follows the server: it turns on once the change is saved.
    await enabled.click();
    await page.getByText("PII redaction is on.").waitFor();
    expect(await enabled.isChecked()).toBe(true);
    await look(page, "plugin");
    world.checkCsp();
  });

  it("lets a technician approve the hosts a plugin declares for outgoing HTTP, and the private network", async () => {
    const page = techPage;
    await installThroughPage(page, "test-net-http", [
      "Asks for: http.",
      "Sends HTTP requests to: example.com, 127.0.0.1:*, localhost:* (you approve each host after installing).",
    ]);
    const hosts = page.getByRole("group", { name: "Hosts it may send HTTP requests to" });
    const privateNetwork = page.getByRole("checkbox", { name: "Allow private network addresses" });
    for (const host of ["example.com", "127.0.0.1:*", "localhost:*"]) {
      expect(await hosts.getByRole("checkbox", { name: host, exact: true }).isChecked()).toBe(false);
    }
    expect(await privateNetwork.isChecked()).toBe(false);

    // http without a host lets nothing through; the page says so.
    await page.getByRole("checkbox", { name: "http", exact: true }).check();
    await page.getByText("http is approved but no host is: every request the plugin makes is refused.").waitFor();
    await hosts.getByRole("checkbox", { name: "example.com", exact: true }).check();
    await privateNetwork.check();
    await page.getByRole("button", { name: "Save approvals" }).click();
    await page.getByText("Approvals saved.").waitFor();

    const rest = await world.rest(world.technician);
    const saved = await rest.ok<{ approved: string[]; approved_hosts: string[]; private_network: boolean; enabled: boolean }>(
      "GET",
      "/api/plugins/test-net-http",
    );
    expect(saved).toMatchObject({
      approved: ["http"],
      approved_hosts: ["example.com"],
      private_network: true,
      enabled: false,
    });
    await look(page, "plugin-http");
    world.checkCsp();
  });

  it("masks the e-mail address in a user's prompt: the model reads the mask and the answer holds no address", async () => {
    const grace = await world.actor("grace");
    const page = await grace.page();
    await signIn(page, user, "/chat");
    await page.getByRole("heading", { name: "New chat" }).waitFor();
    const picker = page.getByLabel("Model", { exact: true });
    const demo = picker.locator("option", { hasText: "gemma-3-270m" });
    await eventually(async () => (await demo.count()) > 0, "the demo model in the picker");
    await picker.selectOption({ label: (await demo.first().innerText()).trim() });
    await page.getByRole("textbox", { name: "Message" }).fill(PROMPT);
    await page.getByRole("button", { name: "Send", exact: true }).click();
    await page.waitForURL(/\/chat\/[^/]+$/);
    const chatId = decodeURIComponent(new URL(page.url()).pathname.split("/").pop()!);
    // The user's own message shows as typed.
    await conversation(page).getByText(PROMPT, { exact: true }).first().waitFor();
    const first = await writtenAnswer(page);
    expect(first).not.toMatch(ANY_ADDRESS);

    // The model's default sampling is random, and a random answer may not
    // copy the prompt at all; the likeliest words copy it, so the answer
    // shows the mask the model read.
    await page.getByRole("button", { name: "Chat settings" }).click();
    const settings = page.getByRole("dialog", { name: "Chat settings" });
    await settings.getByRole("textbox", { name: "Temperature" }).fill("0");
    await settings.getByRole("textbox", { name: "Seed" }).fill("1");
    await settings.getByRole("textbox", { name: "Max tokens" }).fill(String(COPY_TOKENS));
    await settings.getByRole("button", { name: "Save", exact: true }).click();
    await settings.waitFor({ state: "hidden" });
    await page.getByRole("button", { name: "Regenerate" }).last().click();
    const copy = await writtenAnswer(page, first);
    expect(copy).toContain("[email]");
    expect(copy).not.toMatch(ANY_ADDRESS);

    // As stored: the prompt as the user typed it (the plugin masks what the
    // model reads, not the chat's history), the answers without an address.
    const rest = await world.rest(user);
    const chat = await rest.ok<{ messages: { role: string; content: string }[] }>(
      "GET",
      `/api/chats/${encodeURIComponent(chatId)}`,
    );
    expect(chat.messages.find((m) => m.role === "user")?.content).toBe(PROMPT);
    const answers = chat.messages.filter((m) => m.role === "assistant");
    expect(answers.length).toBeGreaterThan(0);
    for (const stored of answers) expect(stored.content).not.toMatch(ANY_ADDRESS);
    expect(answers.at(-1)?.content).toContain("[email]");
    world.checkCsp();
  });

  it("shows the technician the plugin's calls counted", async () => {
    const page = techPage;
    await page.goto("/plugins");
    const card = page.getByRole("listitem").filter({ has: page.getByRole("heading", { name: /PII redaction/ }) });
    // The state's mark is only decoration next to the word.
    await card.getByText(/^\W*Active$/).waitFor();
    await card.getByRole("table", { name: "Calls per hook of PII redaction" }).waitFor();
    // Two answers: each prompt, and at least one piece of each answer
    // through the stream filter.
    expect(await callsOf(page, "before-prompt")).toBeGreaterThanOrEqual(2);
    expect(await callsOf(page, "on-chunk")).toBeGreaterThanOrEqual(2);
    await look(page, "plugins");
    world.checkCsp();
  });

  it("has no serious or critical accessibility violation on the plugin pages, light or dark", () => {
    expect(violations, violations.join("\n")).toEqual([]);
  });
});
