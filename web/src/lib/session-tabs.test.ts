// The session across time and tabs: new tokens and a changed account are
// announced, a failing background refresh tries again with backoff, and
// tabs without Web Locks still take turns with the refresh cookie.

import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import type { TokenResponse, UserView } from "./session";

type Session = typeof import("./session");

function person(id: string): UserView {
  return {
    id,
    username: id,
    display_name: id,
    role: "user",
    disabled: false,
    created_at: "2026-01-01T00:00:00Z",
  };
}

function tokens(access: string, user: UserView = person("u1")): TokenResponse {
  return {
    access_token: access,
    token_type: "Bearer",
    expires_in: 900,
    refresh_expires_at: "2026-02-01T00:00:00Z",
    user,
  };
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

/** Stubs fetch; returns the paths asked for, in order. */
function network(handler: (url: string) => Response | Promise<Response>): string[] {
  const urls: string[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (input: RequestInfo | URL) => {
      const url = new URL(input instanceof Request ? input.url : String(input), "http://localhost").pathname;
      urls.push(url);
      return handler(url);
    }),
  );
  return urls;
}

async function load(): Promise<Session> {
  vi.resetModules();
  return import("./session");
}

beforeEach(() => {
  vi.useRealTimers();
  localStorage.clear();
});

afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

describe("listeners", () => {
  it("hear every new access token", async () => {
    network(() => json(500, {}));
    const session = await load();
    const seen: string[] = [];
    session.onTokens((token) => seen.push(token));
    session.acceptTokens(tokens("a"));
    session.acceptTokens(tokens("b"));
    expect(seen).toEqual(["a", "b"]);
  });

  it("hear of another account only when the account differs", async () => {
    network(() => json(500, {}));
    const session = await load();
    const changes: string[] = [];
    session.onAccountChange((user) => changes.push(user.id));
    session.acceptTokens(tokens("a", person("u1")));
    session.acceptTokens(tokens("b", person("u1")));
    session.publishUser(person("u1"));
    expect(changes).toEqual([]);
    session.acceptTokens(tokens("c", person("u2")));
    expect(changes).toEqual(["u2"]);
  });
});

describe("the background refresh", () => {
  it("tries again with growing delays when the server cannot answer", async () => {
    vi.useFakeTimers();
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    try {
      const times: number[] = [];
      network(() => {
        times.push(Date.now());
        return json(503, { code: "unavailable", message: "down" });
      });
      const session = await load();
      session.acceptTokens(tokens("a"));

      await vi.advanceTimersByTimeAsync(840_000 + 500);
      expect(times).toHaveLength(1);
      await vi.advanceTimersByTimeAsync(400_000);
      const gaps = times.slice(1).map((t, i) => Math.round((t - times[i]) / 1000));
      expect(gaps.slice(0, 7)).toEqual([5, 10, 20, 40, 60, 60, 60]);
      // Still signed in: the token is kept while the server is away.
      expect(session.getAccessToken()).toBe("a");
      expect(unhandled).toEqual([]);
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  });

  it("stops trying once the session has ended", async () => {
    vi.useFakeTimers();
    const urls = network(() => json(503, {}));
    const session = await load();
    session.acceptTokens(tokens("a"));
    await vi.advanceTimersByTimeAsync(840_500);
    session.endSession("signed-out");
    await vi.advanceTimersByTimeAsync(600_000);
    expect(urls.filter((u) => u === "/api/auth/refresh")).toHaveLength(1);
  });
});

describe("tabs without Web Locks", () => {
  it("send the refresh cookie one after the other, never together", async () => {
    Object.defineProperty(navigator, "locks", { value: undefined, configurable: true });
    let active = 0;
    let overlapped = false;
    let issued = 0;
    const urls = network(async () => {
      active += 1;
      if (active > 1) overlapped = true;
      await new Promise((r) => setTimeout(r, 60));
      active -= 1;
      issued += 1;
      return json(200, tokens(`t${issued}`));
    });
    const first = await load();
    const second = await load();
    expect(first).not.toBe(second);

    const results = await Promise.all([first.refreshSession(), second.refreshSession()]);

    expect(urls).toEqual(["/api/auth/refresh", "/api/auth/refresh"]);
    expect(overlapped).toBe(false);
    expect(results.map((r) => r?.access_token).sort()).toEqual(["t1", "t2"]);
    // The lock is given back.
    expect(localStorage.getItem("corral.refresh-lock")).toBeNull();
    first.endSession("signed-out");
    second.endSession("signed-out");
  });

  it("give the lock back when the refresh fails", async () => {
    network(() => Promise.reject(new TypeError("network down")));
    const session = await load();
    await expect(session.refreshSession()).rejects.toThrow("network down");
    expect(localStorage.getItem("corral.refresh-lock")).toBeNull();
  });

  it("take over a lock left behind by a closed tab once it expires", async () => {
    localStorage.setItem("corral.refresh-lock", JSON.stringify({ owner: "gone", expires: Date.now() - 1 }));
    const urls = network(() => json(200, tokens("a")));
    const session = await load();
    await session.refreshSession();
    expect(urls).toEqual(["/api/auth/refresh"]);
    session.endSession("signed-out");
  });
});

describe("a request that gets no answer", () => {
  it("leaves nothing behind for a retry", async () => {
    network(() => Promise.reject(new TypeError("network down")));
    vi.resetModules();
    const session = await import("./session");
    const client = await import("./api");
    session.acceptTokens(tokens("a"));
    await expect(client.api.GET("/api/me")).rejects.toThrow("network down");
    expect(client.retries.size).toBe(0);
    session.endSession("signed-out");
  });
});
