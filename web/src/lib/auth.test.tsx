// The app's side of the session: another account signing in empties the
// cache, and a sign-in in another tab is picked up only where tabs can take
// turns with the refresh cookie.

import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { act, render } from "@testing-library/react";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";

import type { TokenResponse, UserView } from "./session";

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

function tokens(access: string, user: UserView): TokenResponse {
  return {
    access_token: access,
    token_type: "Bearer",
    expires_in: 900,
    refresh_expires_at: "2026-02-01T00:00:00Z",
    user,
  };
}

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

async function mount() {
  vi.resetModules();
  const auth = await import("./auth");
  const session = await import("./session");
  const queryClient = new QueryClient();
  render(
    <QueryClientProvider client={queryClient}>
      <auth.AuthProvider>
        <p>app</p>
      </auth.AuthProvider>
    </QueryClientProvider>,
  );
  return { session, queryClient };
}

beforeEach(() => {
  localStorage.clear();
});

afterEach(() => {
  vi.unstubAllGlobals();
  Object.defineProperty(navigator, "locks", { value: undefined, configurable: true });
});

describe("another account signing in", () => {
  it("clears what was cached for the previous one", async () => {
    network(() => new Response("{}", { status: 500 }));
    const { session, queryClient } = await mount();
    act(() => session.acceptTokens(tokens("a", person("u1"))));
    queryClient.setQueryData(["chats"], ["a chat of u1"]);

    act(() => session.acceptTokens(tokens("a2", person("u1"))));
    expect(queryClient.getQueryData(["chats"])).toEqual(["a chat of u1"]);

    act(() => session.acceptTokens(tokens("b", person("u2"))));
    expect(queryClient.getQueryData(["chats"])).toBeUndefined();
    session.endSession("signed-out");
  });
});

describe("a sign-in in another tab", () => {
  async function announce() {
    const other = new BroadcastChannel("corral-session");
    other.postMessage({ type: "signed-in" });
    await new Promise((r) => setTimeout(r, 100));
    other.close();
  }

  it("is not followed by a refresh without Web Locks", async () => {
    Object.defineProperty(navigator, "locks", { value: undefined, configurable: true });
    const urls = network(() => new Response("{}", { status: 401 }));
    const { session } = await mount();
    await announce();
    expect(urls).toEqual([]);
    session.endSession("signed-out");
  });

  it("is followed by a refresh with Web Locks", async () => {
    const locks = { request: (_name: string, run: () => Promise<unknown>) => run() };
    Object.defineProperty(navigator, "locks", { value: locks, configurable: true });
    const urls = network(() => new Response("{}", { status: 401 }));
    const { session } = await mount();
    await announce();
    expect(urls).toEqual(["/api/auth/refresh"]);
    session.endSession("signed-out");
  });
});

describe("a sign-out that never reached the server", () => {
  async function signOutOnce() {
    vi.resetModules();
    const auth = await import("./auth");
    let signOut: (() => Promise<void>) | undefined;
    function Grab() {
      signOut = auth.useAuth().signOut;
      return null;
    }
    render(
      <QueryClientProvider client={new QueryClient()}>
        <auth.AuthProvider>
          <Grab />
        </auth.AuthProvider>
      </QueryClientProvider>,
    );
    await act(async () => {
      await signOut?.();
    });
  }

  it("is sent again first on the next load, and then forgotten", async () => {
    network(() => {
      throw new TypeError("Failed to fetch");
    });
    await signOutOnce();
    expect(localStorage.getItem("corral.logout-pending")).toBe("1");

    // The next load: the sign-out goes out before any refresh.
    const urls = network(() => new Response(null, { status: 204 }));
    await mount();
    await act(async () => {
      await new Promise((r) => setTimeout(r, 50));
    });
    expect(urls).toEqual(["/api/auth/logout"]);
    expect(localStorage.getItem("corral.logout-pending")).toBeNull();
  });

  it("is not left pending when the server answered", async () => {
    const urls = network(() => new Response("{}", { status: 500 }));
    await signOutOnce();
    expect(urls).toContain("/api/auth/logout");
    expect(localStorage.getItem("corral.logout-pending")).toBeNull();
  });

  it("stays pending when a proxy says the server is unreachable", async () => {
    network(() => new Response("bad gateway", { status: 502 }));
    await signOutOnce();
    expect(localStorage.getItem("corral.logout-pending")).toBe("1");
  });
});
