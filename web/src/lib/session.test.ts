// The session layer as callers rely on it: an expired access token costs
// one refresh and one retry, concurrent requests share that refresh, and a
// disabled account ends the session with its reason.

import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import type { TokenResponse, UserView } from "./session";

type Session = typeof import("./session");
type Api = typeof import("./api");

const user: UserView = {
  id: "u1",
  username: "ada",
  display_name: "Ada",
  role: "user",
  disabled: false,
  created_at: "2026-01-01T00:00:00Z",
};

function tokens(access: string): TokenResponse {
  return {
    access_token: access,
    token_type: "Bearer",
    expires_in: 900,
    refresh_expires_at: "2026-02-01T00:00:00Z",
    user,
  };
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });
}

interface Call {
  url: string;
  method: string;
  authorization: string | null;
  body: string | null;
}

/** A fake network: records every call and answers with `handler`. */
function network(handler: (call: Call) => Response | Promise<Response>) {
  const calls: Call[] = [];
  const fetchMock = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const request = input instanceof Request ? input : null;
    const url = request ? request.url : String(input);
    const headers = new Headers(init?.headers ?? request?.headers);
    const body =
      init?.body != null
        ? String(init.body)
        : request && request.body
          ? await request.clone().text()
          : null;
    const call: Call = {
      url: new URL(url, "http://localhost").pathname,
      method: (init?.method ?? request?.method ?? "GET").toUpperCase(),
      authorization: headers.get("Authorization"),
      body,
    };
    calls.push(call);
    return handler(call);
  });
  vi.stubGlobal("fetch", fetchMock);
  return calls;
}

async function load(): Promise<{ session: Session; api: Api }> {
  // Fresh modules per test: the session keeps its token in module state and
  // the client takes `fetch` when it is created.
  vi.resetModules();
  const session = await import("./session");
  const api = await import("./api");
  return { session, api };
}

beforeEach(() => {
  vi.useRealTimers();
});

afterEach(() => {
  vi.unstubAllGlobals();
});

describe("an expired access token", () => {
  it("is refreshed once with an empty body and the request retried with the new token", async () => {
    const calls = network((call) => {
      if (call.url === "/api/auth/refresh") return json(200, tokens("fresh"));
      if (call.authorization === "Bearer fresh") return json(200, user);
      return json(401, { code: "unauthorized", message: "token expired" });
    });
    const { session, api } = await load();
    session.acceptTokens(tokens("stale"));

    const me = api.unwrap(await api.api.GET("/api/me"));

    expect(me).toEqual(user);
    const refreshes = calls.filter((c) => c.url === "/api/auth/refresh");
    expect(refreshes).toHaveLength(1);
    expect(refreshes[0].method).toBe("POST");
    expect(JSON.parse(refreshes[0].body ?? "null")).toEqual({});
    const mine = calls.filter((c) => c.url === "/api/me");
    expect(mine.map((c) => c.authorization)).toEqual(["Bearer stale", "Bearer fresh"]);
    expect(session.getAccessToken()).toBe("fresh");
  });

  it("is refreshed only once for three requests that fail together", async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const calls = network(async (call) => {
      if (call.url === "/api/auth/refresh") {
        await held;
        return json(200, tokens("fresh"));
      }
      if (call.authorization === "Bearer fresh") return json(200, user);
      return json(401, { code: "unauthorized", message: "token expired" });
    });
    const { session, api } = await load();
    session.acceptTokens(tokens("stale"));

    const all = Promise.all([
      api.api.GET("/api/me"),
      api.api.GET("/api/me"),
      api.api.GET("/api/me"),
    ]);
    await vi.waitFor(() =>
      expect(calls.filter((c) => c.url === "/api/auth/refresh").length).toBe(1),
    );
    // Give the other two failures time to ask for a refresh of their own.
    await new Promise((r) => setTimeout(r, 20));
    release();
    const results = await all;

    expect(results.map((r) => r.response.status)).toEqual([200, 200, 200]);
    expect(calls.filter((c) => c.url === "/api/auth/refresh")).toHaveLength(1);
    const retried = calls.filter((c) => c.url === "/api/me" && c.authorization === "Bearer fresh");
    expect(retried).toHaveLength(3);
  });

  it("ends the session as disabled when the refresh is refused with account_disabled", async () => {
    const calls = network((call) => {
      if (call.url === "/api/auth/refresh") {
        return json(403, { code: "account_disabled", message: "account disabled" });
      }
      return json(401, { code: "unauthorized", message: "token expired" });
    });
    const { session, api } = await load();
    session.acceptTokens(tokens("stale"));
    const reasons: string[] = [];
    session.onSessionEnd((reason) => reasons.push(reason));

    const result = await api.api.GET("/api/me");

    expect(result.response.status).toBe(401);
    expect(() => api.unwrap(result)).toThrow(api.ApiError);
    expect(reasons).toEqual(["disabled"]);
    expect(session.getAccessToken()).toBeNull();
    // No retry without a token.
    expect(calls.filter((c) => c.url === "/api/me")).toHaveLength(1);
  });

  it("ends the session as expired when the refresh cookie is no longer valid", async () => {
    network((call) =>
      call.url === "/api/auth/refresh"
        ? json(401, { code: "unauthorized", message: "no session" })
        : json(401, { code: "unauthorized", message: "token expired" }),
    );
    const { session, api } = await load();
    session.acceptTokens(tokens("stale"));
    const reasons: string[] = [];
    session.onSessionEnd((reason) => reasons.push(reason));

    await api.api.GET("/api/me");

    expect(reasons).toEqual(["expired"]);
  });

  it("is refreshed for a raw authorizedFetch too", async () => {
    const calls = network((call) => {
      if (call.url === "/api/auth/refresh") return json(200, tokens("fresh"));
      if (call.authorization === "Bearer fresh") return json(200, { ok: true });
      return json(401, { code: "unauthorized", message: "token expired" });
    });
    const { session, api } = await load();
    session.acceptTokens(tokens("stale"));

    const response = await api.authorizedFetch("/api/chats/c1/export");

    expect(response.status).toBe(200);
    expect(calls.filter((c) => c.url === "/api/auth/refresh")).toHaveLength(1);
  });
});

describe("an account disabled while its tab is open", () => {
  it("ends the session as disabled at its next request, without a refresh", async () => {
    const calls = network(() => json(403, { code: "account_disabled", message: "account disabled" }));
    const { session, api } = await load();
    session.acceptTokens(tokens("valid"));
    const reasons: string[] = [];
    session.onSessionEnd((reason) => reasons.push(reason));

    const result = await api.api.GET("/api/chats");

    expect(result.response.status).toBe(403);
    expect(reasons).toEqual(["disabled"]);
    expect(session.getAccessToken()).toBeNull();
    expect(calls.filter((c) => c.url === "/api/auth/refresh")).toHaveLength(0);
  });

  it("keeps the session on an ordinary 403", async () => {
    network(() => json(403, { code: "forbidden", message: "staff only" }));
    const { session, api } = await load();
    session.acceptTokens(tokens("valid"));
    const reasons: string[] = [];
    session.onSessionEnd((reason) => reasons.push(reason));

    await api.api.GET("/api/users");

    expect(reasons).toEqual([]);
    expect(session.getAccessToken()).toBe("valid");
  });
});

describe("signing out", () => {
  it("forgets drafts, while an expired session keeps them", async () => {
    network(() => json(401, { code: "unauthorized", message: "no session" }));
    const { session } = await load();
    localStorage.setItem(`${session.PRIVATE_PREFIX}chat.draft.c1`, "half a question");
    localStorage.setItem("corral.theme", "dark");

    session.acceptTokens(tokens("valid"));
    session.endSession("expired");
    expect(localStorage.getItem(`${session.PRIVATE_PREFIX}chat.draft.c1`)).toBe("half a question");

    session.acceptTokens(tokens("valid"));
    session.endSession("signed-out");
    expect(localStorage.getItem(`${session.PRIVATE_PREFIX}chat.draft.c1`)).toBeNull();
    expect(localStorage.getItem("corral.theme")).toBe("dark");
  });

  it("keeps an expired session's drafts for its owner only", async () => {
    network(() => json(401, { code: "unauthorized", message: "no session" }));
    const draft = "corral.private.chat.draft.new";
    let { session } = await load();
    session.acceptTokens(tokens("valid"));
    localStorage.setItem(draft, "ada's half question");
    session.endSession("expired");

    // The page is loaded again and the same person signs in.
    ({ session } = await load());
    session.acceptTokens(tokens("again"));
    expect(localStorage.getItem(draft)).toBe("ada's half question");
    session.endSession("expired");

    // Someone else signs in at this browser.
    ({ session } = await load());
    session.acceptTokens({ ...tokens("other"), user: { ...user, id: "u-other", username: "bob" } });
    expect(localStorage.getItem(draft)).toBeNull();
    localStorage.clear();
  });
});

describe("a request that succeeds", () => {
  it("carries the bearer token and asks for no refresh", async () => {
    const calls = network(() => json(200, user));
    const { session, api } = await load();
    session.acceptTokens(tokens("good"));

    await api.api.GET("/api/me");

    expect(calls).toHaveLength(1);
    expect(calls[0].authorization).toBe("Bearer good");
  });
});
