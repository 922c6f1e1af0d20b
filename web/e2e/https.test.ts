// The studio over HTTPS that corral serves itself (--tls-cert, --tls-key,
// a self-signed certificate made with openssl): in a real Chromium the page
// is a secure context, so tabs take turns refreshing with Web Locks; a chat
// answer streams over wss://; the refresh cookie is Secure and HttpOnly and
// brings the session back after a reload.

import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, Page } from "playwright-core";
import { Actor, expectNoCspViolation, launch } from "./support/browser";
import { Corral, demoModel } from "./support/server";
import { eventually, signIn, type Account } from "./support/world";

const corral = new Corral();
const folder = mkdtempSync(path.join(tmpdir(), "corral-web-e2e-tls-"));
const tls = { cert: path.join(folder, "cert.pem"), key: path.join(folder, "key.pem") };
const user: Account = { username: "linus", password: "" };
let browser: Browser;
let actor: Actor;

/** A self-signed certificate for 127.0.0.1, as `openssl` makes one. */
function makeCertificate(): void {
  const out = spawnSync(
    "openssl",
    [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", tls.key, "-out", tls.cert, "-days", "2", "-subj", "/CN=corral-e2e",
      "-addext", "subjectAltName=IP:127.0.0.1",
    ],
    { encoding: "utf8" },
  );
  if (out.status !== 0) throw new Error(`openssl could not make a certificate: ${out.error ?? out.stderr}`);
}

beforeAll(async () => {
  makeCertificate();
  await corral.start({ demoModel: demoModel(), tls });
  user.password = corral.createAccount(user.username, "user");
  browser = await launch();
  actor = await Actor.open(browser, "linus", corral.base, true);
});

afterAll(async () => {
  await actor?.close().catch(() => {});
  await browser?.close().catch(() => {});
  await corral.stop();
  rmSync(folder, { recursive: true, force: true });
});

const conversation = (page: Page) => page.getByRole("log", { name: "Conversation" });

describe("the studio over HTTPS", () => {
  it("signs in, streams an answer over wss:// and keeps the session across a reload with a Secure cookie", async () => {
    expect(corral.base.startsWith("https://")).toBe(true);
    const page = await actor.page();
    await signIn(page, user, "/chat");
    expect(new URL(page.url()).protocol).toBe("https:");
    // A secure context: the tabs' refresh lock is the real Web Lock.
    expect(await page.evaluate(() => window.isSecureContext && "locks" in navigator)).toBe(true);

    const sockets: string[] = [];
    page.on("websocket", (socket) => sockets.push(socket.url()));
    await page.getByRole("heading", { name: "New chat" }).waitFor();
    const picker = page.getByLabel("Model", { exact: true });
    await eventually(
      async () => (await picker.locator("option", { hasText: "gemma-3-270m" }).count()) > 0,
      "the demo model in the picker",
      60_000,
    );
    await picker.selectOption({ label: (await picker.locator("option", { hasText: "gemma-3-270m" }).first().innerText()).trim() });
    await page.getByRole("textbox", { name: "Message" }).fill("Name a colour of the sea.");
    await page.getByRole("button", { name: "Send", exact: true }).click();
    await page.waitForURL(/\/chat\/[^/]+$/);
    const stop = page.getByRole("button", { name: "Stop", exact: true });
    await page.getByRole("button", { name: "Regenerate" }).first().waitFor({ timeout: 150_000 });
    await stop.waitFor({ state: "hidden" });
    const answer = (await conversation(page).locator(":scope > ol > li").last().innerText()).trim();
    expect(answer.length).toBeGreaterThan(0);
    expect(sockets.some((url) => url.startsWith("wss://127.0.0.1:"))).toBe(true);

    // The refresh token lives in a cookie that only travels over HTTPS.
    const cookie = (await actor.context.cookies()).find((c) => c.name === "corral_refresh");
    expect(cookie, "the refresh cookie").toBeDefined();
    expect(cookie!.secure && cookie!.httpOnly).toBe(true);
    expect(cookie!.sameSite).toBe("Strict");

    // A reload keeps the session: the cookie is sent back and renewed.
    const chatUrl = page.url();
    await page.waitForLoadState("networkidle");
    await page.reload();
    await page.getByRole("button", { name: /^Account menu/ }).waitFor();
    expect(page.url()).toBe(chatUrl);
    await conversation(page).getByText("Name a colour of the sea.", { exact: true }).first().waitFor();
    expect(actor.consoleErrors).toEqual([]);
    expectNoCspViolation(actor);
  });
});
