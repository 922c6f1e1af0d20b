// The chat socket against a fake WebSocket: it moves onto new access tokens,
// renews a token the handshake refused, forgets everything when another
// account signs in, and leaves no half-delivered text after a disconnect.

import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { TokenResponse, UserView } from "@/lib/session";

class FakeSocket {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  static instances: FakeSocket[] = [];

  readyState = FakeSocket.CONNECTING;
  sent: unknown[] = [];
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number }) => void) | null = null;

  constructor(
    readonly url: string,
    readonly protocols: string[] = [],
  ) {
    FakeSocket.instances.push(this);
  }

  /** The access token, offered after the bearer subprotocol. */
  get token(): string | null {
    expect(new URL(this.url).search, "a token in the URL").toBe("");
    expect(this.protocols[0]).toBe("corral.bearer");
    return this.protocols[1] ?? null;
  }

  send(data: string) {
    this.sent.push(JSON.parse(data));
  }

  close() {
    this.readyState = FakeSocket.CLOSED;
  }

  /** The server accepts the handshake. */
  open() {
    this.readyState = FakeSocket.OPEN;
    this.onopen?.({});
  }

  /** The connection ends, from the server's side or the network's. */
  drop(code: number) {
    this.readyState = FakeSocket.CLOSED;
    this.onclose?.({ code });
  }

  message(event: unknown) {
    this.onmessage?.({ data: JSON.stringify(event) });
  }
}

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

let refreshes = 0;

/** The longest backoff, with its jitter. */
const MAX_WAIT_MS = 15_000 * 1.25;

async function load() {
  vi.resetModules();
  const session = await import("@/lib/session");
  const store = await import("../lib/store");
  const { chatSocket } = await import("./socket");
  return { session, store, chatSocket };
}

beforeEach(() => {
  FakeSocket.instances = [];
  refreshes = 0;
  localStorage.clear();
  vi.stubGlobal("WebSocket", FakeSocket);
  vi.stubGlobal(
    "fetch",
    vi.fn(async () => {
      refreshes += 1;
      return new Response(JSON.stringify(tokens(`renewed${refreshes}`)), {
        status: 200,
        headers: { "Content-Type": "application/json" },
      });
    }),
  );
});

afterEach(() => {
  vi.unstubAllGlobals();
});

describe("the chat socket", () => {
  it("sends an auth frame with each new access token while open", async () => {
    const { session, chatSocket } = await load();
    session.acceptTokens(tokens("first"));
    chatSocket.acquire();
    const socket = FakeSocket.instances[0];
    expect(socket.token).toBe("first");
    socket.open();

    session.acceptTokens(tokens("second"));

    expect(socket.sent).toEqual([{ type: "auth", access_token: "second" }]);
    expect(FakeSocket.instances).toHaveLength(1);
    session.endSession("signed-out");
  });

  it("renews the token when the handshake is refused, then connects with the new one", async () => {
    const { session, chatSocket } = await load();
    session.acceptTokens(tokens("stale"));
    chatSocket.acquire();
    // A 401 at the handshake reaches the page as a bare 1006 close.
    FakeSocket.instances[0].drop(1006);

    await vi.waitFor(() => expect(FakeSocket.instances).toHaveLength(2));
    expect(refreshes).toBe(1);
    expect(FakeSocket.instances[1].token).toBe("renewed1");
    session.endSession("signed-out");
  });

  it("renews at most once a minute when handshakes keep being refused, and backs off", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
    try {
      const { session, chatSocket } = await load();
      session.acceptTokens(tokens("stale"));
      chatSocket.acquire();
      // A refusal a new token does not cure (too many open sockets).
      FakeSocket.instances[0].drop(1006);
      await vi.waitFor(() => expect(FakeSocket.instances).toHaveLength(2));
      expect(refreshes).toBe(1);

      for (let i = 1; i < 5; i++) {
        FakeSocket.instances[i].drop(1006);
        // Nothing at once: the next try waits for its backoff.
        await Promise.resolve();
        expect(FakeSocket.instances).toHaveLength(i + 1);
        await vi.advanceTimersByTimeAsync(MAX_WAIT_MS);
        expect(FakeSocket.instances).toHaveLength(i + 2);
      }
      expect(refreshes).toBe(1);

      // A 1008 (the session may be over) always asks at once.
      FakeSocket.instances.at(-1)!.open();
      FakeSocket.instances.at(-1)!.drop(1008);
      await vi.waitFor(() => expect(refreshes).toBe(2));

      // A minute on, a refused handshake is worth a new token again.
      await vi.advanceTimersByTimeAsync(60_000);
      FakeSocket.instances.at(-1)!.drop(1006);
      await vi.waitFor(() => expect(refreshes).toBe(3));
      session.endSession("signed-out");
    } finally {
      vi.useRealTimers();
    }
  });

  it("keeps its token when an open connection is lost", async () => {
    const { session, chatSocket } = await load();
    session.acceptTokens(tokens("good"));
    chatSocket.acquire();
    FakeSocket.instances[0].open();
    FakeSocket.instances[0].drop(1006);

    await vi.waitFor(() => expect(FakeSocket.instances).toHaveLength(2), { timeout: 2_000 });
    expect(refreshes).toBe(0);
    expect(FakeSocket.instances[1].token).toBe("good");
    session.endSession("signed-out");
  });

  it("forgets the conversations and reconnects when another account signs in", async () => {
    const { session, store, chatSocket } = await load();
    session.acceptTokens(tokens("ada", person("u1")));
    chatSocket.acquire();
    const first = FakeSocket.instances[0];
    first.open();
    store.dispatch("c1", { type: "event", event: { type: "delta", chat_id: "c1", text: "secret" } });
    expect(store.getConversation("c1").live?.text).toBe("secret");

    session.acceptTokens(tokens("bob", person("u2")));

    expect(store.getConversation("c1").live).toBeNull();
    expect(first.readyState).toBe(FakeSocket.CLOSED);
    expect(FakeSocket.instances).toHaveLength(2);
    expect(FakeSocket.instances[1].token).toBe("bob");
    session.endSession("signed-out");
  });

  it("drops text still waiting for the screen when the connection is lost", async () => {
    const { session, store, chatSocket } = await load();
    session.acceptTokens(tokens("good"));
    chatSocket.acquire();
    const socket = FakeSocket.instances[0];
    socket.open();
    socket.message({ type: "delta", chat_id: "c1", text: "Hel" });
    await new Promise((r) => setTimeout(r, 50));
    expect(store.getConversation("c1").live?.text).toBe("Hel");

    socket.message({ type: "delta", chat_id: "c1", text: "lo" });
    socket.drop(1006);
    await new Promise((r) => setTimeout(r, 50));

    expect(store.getConversation("c1").live).toBeNull();
    session.endSession("signed-out");
  });
});

describe("the conversation store", () => {
  it("does not start an answer from deltas pending at a disconnect", async () => {
    const { store } = await load();
    store.receive({ type: "delta", chat_id: "c2", text: "half" });
    expect(store.liveChats()).toEqual(["c2"]);
    store.dispatch("c2", { type: "disconnected" });
    await new Promise((r) => setTimeout(r, 50));
    expect(store.getConversation("c2").live).toBeNull();
    expect(store.liveChats()).toEqual([]);
  });
});
