// Debian's Chromium through playwright-core: one context per actor (own
// cookies), console errors and CSP violations collected per page,
// screenshots in both themes and widths, and axe-core checks.

import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { fileURLToPath } from "node:url";

const WEB_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

export const SCREENSHOTS = path.join(WEB_ROOT, "test-results", "screenshots");

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

export async function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CORRAL_CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** One person's browser: a context of its own, with what its pages logged. */
export class Actor {
  readonly consoleErrors: string[] = [];
  readonly cspViolations: string[] = [];

  private constructor(
    readonly name: string,
    readonly context: BrowserContext,
    readonly base: string,
  ) {}

  /**
   * A new context on `base`; with `trustAnyCertificate`, it accepts a
   * certificate no authority signed (a test server's self-signed one).
   */
  static async open(browser: Browser, name: string, base: string, trustAnyCertificate = false): Promise<Actor> {
    const context = await browser.newContext({
      baseURL: base,
      viewport: DESKTOP,
      colorScheme: "light",
      locale: "en-US",
      acceptDownloads: true,
      ignoreHTTPSErrors: trustAnyCertificate,
    });
    context.setDefaultTimeout(20_000);
    await context.addInitScript(() => {
      try {
        localStorage.setItem("corral.language", "en");
      } catch {
        // about:blank has no storage
      }
    });
    const actor = new Actor(name, context, base);
    context.on("page", (page) => actor.watch(page));
    return actor;
  }

  private watch(page: Page): void {
    page.on("console", (message) => {
      if (message.type() !== "error") return;
      const text = message.text();
      if (/Content[- ]Security[- ]Policy/i.test(text)) this.cspViolations.push(text);
      else this.consoleErrors.push(text);
    });
    page.on("pageerror", (error) => this.consoleErrors.push(`uncaught: ${error.message}`));
  }

  async page(): Promise<Page> {
    return this.context.newPage();
  }

  async close(): Promise<void> {
    await this.context.close();
  }
}

/** Fails when any page of the actors met a CSP violation. */
export function expectNoCspViolation(...actors: Actor[]): void {
  const found = actors.flatMap((a) => a.cspViolations.map((v) => `${a.name}: ${v}`));
  if (found.length) throw new Error(`Content-Security-Policy violations:\n${found.join("\n")}`);
}

async function setTheme(page: Page, theme: "light" | "dark"): Promise<void> {
  await page.emulateMedia({ colorScheme: theme });
  await page.evaluate((value) => {
    localStorage.setItem("corral.theme", value);
    document.documentElement.classList.toggle("dark", value === "dark");
    document.documentElement.style.colorScheme = value;
  }, theme);
}

/**
 * Screenshots of the page as it is, light and dark, desktop and phone:
 * test-results/screenshots/<name>-<theme>-<width>.png. Leaves the page light
 * at desktop width.
 */
export async function shoot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  for (const [width, size] of [["desktop", DESKTOP], ["phone", PHONE]] as const) {
    await page.setViewportSize(size);
    for (const theme of ["light", "dark"] as const) {
      await setTheme(page, theme);
      await page.waitForTimeout(150);
      await page.screenshot({ path: path.join(SCREENSHOTS, `${name}-${theme}-${width}.png`) });
    }
  }
  await page.setViewportSize(DESKTOP);
  await setTheme(page, "light");
}

const axeSource = readFileSync(path.join(WEB_ROOT, "node_modules", "axe-core", "axe.min.js"), "utf8");

interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: { target: unknown[] }[];
}

/** Serious or critical axe-core violations of the page in `theme`, as lines. */
export async function axeViolations(page: Page, theme: "light" | "dark"): Promise<string[]> {
  await setTheme(page, theme);
  await page.waitForTimeout(150);
  // evaluate is not subject to the page's CSP, unlike an injected <script>.
  const loaded = await page.evaluate(() => typeof (window as unknown as { axe?: unknown }).axe);
  if (loaded === "undefined") await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const axe = (window as unknown as { axe: { run: (ctx: unknown, opts: unknown) => Promise<{ violations: unknown[] }> } }).axe;
    const result = await axe.run(document, { resultTypes: ["violations"] });
    return result.violations;
  }) as AxeViolation[];
  return violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map(
      (v) =>
        `[${theme}] ${v.id} (${v.impact}): ${v.help} — ${v.nodes
          .slice(0, 5)
          .map((n) => JSON.stringify(n.target))
          .join(", ")}`,
    );
}

/**
 * Screenshots of the page (see `shoot`) and its axe-core check in both
 * themes; what axe finds is added to `found`, named after the page, so a
 * journey goes on and one test reports every page at the end.
 */
export async function look(page: Page, name: string, found: string[]): Promise<void> {
  await shoot(page, name);
  for (const theme of ["light", "dark"] as const) {
    for (const line of await axeViolations(page, theme)) found.push(`${name}: ${line}`);
  }
  await page.emulateMedia({ colorScheme: "light" });
}
