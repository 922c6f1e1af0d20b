// The access token lives only in this module's memory. The refresh token is
// an HttpOnly cookie the page never sees; a page load or an expired access
// token trades it for a new pair at /api/auth/refresh.

import type { components } from "./api-schema";

export type UserView = components["schemas"]["UserView"];
export type TokenResponse = components["schemas"]["TokenResponse"];

/** Why a session ended, shown on the sign-in page. */
export type EndReason = "signed-out" | "expired" | "disabled";

let accessToken: string | null = null;
let refreshTimer: ReturnType<typeof setTimeout> | undefined;
let inFlight: Promise<TokenResponse | null> | null = null;

const endListeners = new Set<(reason: EndReason) => void>();
const userListeners = new Set<(user: UserView) => void>();

// Whether this browser holds a sign-in, so that a visitor who never signed
// in is not sent to /api/auth/refresh just to be told no. It says nothing
// secret: the cookie itself is out of the page's reach.
const HINT = "corral.session";

function setHint(on: boolean): void {
  try {
    if (on) localStorage.setItem(HINT, "1");
    else localStorage.removeItem(HINT);
  } catch {
    // Storage may be disabled; the refresh then simply runs every time.
  }
}

/** Whether a refresh is worth trying at page load. */
export function mayHaveSession(): boolean {
  try {
    return localStorage.getItem(HINT) !== null;
  } catch {
    return true;
  }
}

export function getAccessToken(): string | null {
  return accessToken;
}

/** Stores a fresh pair and schedules the next refresh a minute early. */
export function acceptTokens(tokens: TokenResponse): void {
  accessToken = tokens.access_token;
  setHint(true);
  clearTimeout(refreshTimer);
  const lead = Math.max(10, tokens.expires_in - 60) * 1000;
  refreshTimer = setTimeout(() => void refreshSession(), lead);
  userListeners.forEach((l) => l(tokens.user));
}

/**
 * Keys under this prefix hold what a person typed (chat drafts): kept when a
 * session merely expires, so nothing is lost, and forgotten when they sign
 * out or their account is disabled, so the next person at this browser
 * does not find them.
 */
export const PRIVATE_PREFIX = "corral.private.";

function forgetPrivate(): void {
  try {
    for (const key of Object.keys(localStorage)) {
      if (key.startsWith(PRIVATE_PREFIX)) localStorage.removeItem(key);
    }
  } catch {
    // Storage may be disabled.
  }
}

/** Forgets the session in this tab and tells the listeners why. */
export function endSession(reason: EndReason): void {
  const had = accessToken !== null;
  accessToken = null;
  setHint(false);
  if (reason !== "expired") forgetPrivate();
  clearTimeout(refreshTimer);
  if (had || reason !== "expired") endListeners.forEach((l) => l(reason));
}

export function onSessionEnd(listener: (reason: EndReason) => void): () => void {
  endListeners.add(listener);
  return () => endListeners.delete(listener);
}

/** Tells the app that the signed-in account changed (a new display name). */
export function publishUser(user: UserView): void {
  userListeners.forEach((l) => l(user));
}

export function onUser(listener: (user: UserView) => void): () => void {
  userListeners.add(listener);
  return () => userListeners.delete(listener);
}

/**
 * Trades the refresh cookie for new tokens. Refresh tokens are single-use
 * and a reused one revokes the whole sign-in, so tabs take turns (Web
 * Locks): the second tab sends the cookie the first one received.
 * Resolves to `null` when there is no valid session.
 */
export function refreshSession(): Promise<TokenResponse | null> {
  if (inFlight) return inFlight;
  const run = async (): Promise<TokenResponse | null> => {
    const response = await fetch("/api/auth/refresh", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: "{}",
    });
    if (response.ok) {
      const tokens = (await response.json()) as TokenResponse;
      acceptTokens(tokens);
      return tokens;
    }
    if (response.status === 401 || response.status === 403) {
      const body = (await response.json().catch(() => null)) as { code?: string } | null;
      endSession(body?.code === "account_disabled" ? "disabled" : "expired");
      return null;
    }
    throw new Error(`refresh failed with status ${response.status}`);
  };
  const locks = typeof navigator !== "undefined" ? navigator.locks : undefined;
  const turn = locks
    ? (locks.request("corral-refresh", run) as unknown as Promise<TokenResponse | null>)
    : run();
  inFlight = turn.finally(() => {
    inFlight = null;
  });
  return inFlight;
}

/** Tells the other tabs of this browser that the session ended or began. */
const channel =
  typeof BroadcastChannel !== "undefined" ? new BroadcastChannel("corral-session") : null;

export function broadcast(message: { type: "signed-out" | "signed-in" }): void {
  channel?.postMessage(message);
}

export function onBroadcast(listener: (message: { type: string }) => void): () => void {
  if (!channel) return () => {};
  const handler = (event: MessageEvent) => listener(event.data as { type: string });
  channel.addEventListener("message", handler);
  return () => channel.removeEventListener("message", handler);
}
