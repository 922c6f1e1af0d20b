import { useEffect, useSyncExternalStore } from "react";
import type { Schemas } from "@/lib/api";
import {
  getAccessToken,
  onAccountChange,
  onSessionEnd,
  onTokens,
  refreshSession,
} from "@/lib/session";
import { dispatch, liveChats, receive, resetConversations } from "../lib/store";
import type { ChatEvent } from "../lib/conversation";

export type ClientFrame = Schemas["ClientFrame"];
export type SocketStatus = "connecting" | "open" | "reconnecting" | "closed";

const POLICY_VIOLATION = 1008;
const BEARER_PROTOCOL = "corral.bearer";
const MAX_BACKOFF_MS = 15_000;
/**
 * A refused handshake renews the token at most this often: a refusal a new
 * token cannot cure (too many open sockets, a proxy that drops the upgrade)
 * then waits out the backoff instead of signing in again in a tight loop.
 */
const RENEW_EVERY_MS = 60_000;

type Listener = (event: ChatEvent) => void;

/**
 * The page's one chat WebSocket, shared by all chats. It reconnects with
 * backoff, and after a 1008 close (expired token, changed password, disabled
 * account) or a refused handshake with a fresh token (at most once a
 * minute), or not at all when the session is over. An open socket moves onto
 * each new access token.
 */
class ChatSocket {
  private socket: WebSocket | null = null;
  private users = 0;
  private closeTimer: ReturnType<typeof setTimeout> | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private attempts = 0;
  private renewedAt = -Infinity;
  private wanted = false;
  private statusValue: SocketStatus = "closed";
  private statusListeners = new Set<() => void>();
  private eventListeners = new Set<Listener>();
  private openListeners = new Set<() => void>();

  get status(): SocketStatus {
    return this.statusValue;
  }

  private setStatus(status: SocketStatus) {
    if (status === this.statusValue) return;
    this.statusValue = status;
    this.statusListeners.forEach((l) => l());
  }

  onStatus(listener: () => void): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  onEvent(listener: Listener): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  /** Called after every (re)connection: what was missed is in the store. */
  onOpen(listener: () => void): () => void {
    this.openListeners.add(listener);
    return () => this.openListeners.delete(listener);
  }

  acquire(): void {
    this.users += 1;
    clearTimeout(this.closeTimer);
    if (!this.wanted) {
      this.wanted = true;
      this.connect();
    }
  }

  release(): void {
    this.users -= 1;
    if (this.users > 0) return;
    // A page that unmounts and mounts again at once keeps its socket.
    this.closeTimer = setTimeout(() => this.shutdown(), 1000);
  }

  /** Closes the socket and, if still wanted, opens one with the current token. */
  restart(): void {
    const socket = this.socket;
    this.socket = null;
    clearTimeout(this.retryTimer);
    socket?.close(1000);
    this.attempts = 0;
    if (this.wanted) this.connect();
    else this.setStatus("closed");
  }

  private shutdown() {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000);
    this.setStatus("closed");
  }

  private connect(): void {
    if (!this.wanted) return;
    const token = getAccessToken();
    if (!token) {
      void this.renew();
      return;
    }
    this.setStatus(this.attempts === 0 ? "connecting" : "reconnecting");
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    // The token rides as a subprotocol, after the one the server answers
    // with: it stays out of the URL, and so out of proxies' logs.
    const socket = new WebSocket(`${scheme}//${window.location.host}/api/chats/ws`, [BEARER_PROTOCOL, token]);
    this.socket = socket;
    let opened = false;
    socket.onopen = () => {
      if (this.socket !== socket) return;
      opened = true;
      this.attempts = 0;
      this.setStatus("open");
      this.openListeners.forEach((l) => l());
    };
    socket.onmessage = (message) => {
      if (this.socket !== socket || typeof message.data !== "string") return;
      let event: ChatEvent;
      try {
        event = JSON.parse(message.data) as ChatEvent;
      } catch {
        return;
      }
      receive(event);
      this.eventListeners.forEach((l) => l(event));
    };
    socket.onclose = (close) => {
      if (this.socket !== socket) return;
      this.socket = null;
      for (const chatId of liveChats()) dispatch(chatId, { type: "disconnected" });
      if (!this.wanted) return;
      this.setStatus("reconnecting");
      // A handshake the server refused (401, seen as 1006) needs a new token
      // just as a 1008 close does, unless one was just fetched.
      // A 1008 always gets one: the session may be over.
      const renewDue = Date.now() - this.renewedAt >= RENEW_EVERY_MS;
      if (close.code === POLICY_VIOLATION || (!opened && renewDue)) void this.renew();
      else this.retryLater();
    };
  }

  private retryLater() {
    const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** this.attempts) * (0.75 + Math.random() / 2);
    this.attempts += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** A fresh access token, then a new socket; none when the session is over. */
  private async renew() {
    this.attempts += 1;
    this.renewedAt = Date.now();
    try {
      const tokens = await refreshSession();
      if (!tokens) {
        this.shutdown();
        return;
      }
      this.connect();
    } catch {
      this.retryLater();
    }
  }

  /** Sends a frame; false when the socket is not open (nothing was sent). */
  send(frame: ClientFrame): boolean {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }
}

export const chatSocket = new ChatSocket();

/** Keeps the socket open while the calling component is mounted. */
export function useChatSocket(): SocketStatus {
  useEffect(() => {
    chatSocket.acquire();
    return () => chatSocket.release();
  }, []);
  return useSyncExternalStore(
    (l) => chatSocket.onStatus(l),
    () => chatSocket.status,
  );
}

// What one account saw is not kept for the next one to sign in here.
onSessionEnd(() => resetConversations());
onAccountChange(() => {
  resetConversations();
  chatSocket.restart();
});
onTokens((accessToken) => {
  chatSocket.send({ type: "auth", access_token: accessToken });
});
