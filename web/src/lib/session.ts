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
const tokenListeners = new Set<(accessToken: string) => void>();
const accountListeners = new Set<(user: UserView) => void>();
// The account this tab last saw: a different one means another person
// signed in (perhaps in another tab, sharing the cookie).
let lastUserId: string | null = null;

// A proactive refresh that fails for a passing reason (network, 5xx) tries
// again after this long, doubling up to a minute.
const RETRY_FIRST_MS = 5_000;
const RETRY_MAX_MS = 60_000;
let retryDelay = RETRY_FIRST_MS;

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

// A sign-out whose request never reached the server (the network was
// down): the refresh cookie may still work for whoever uses this browser
// next, so the next page load sends the sign-out again first.
const LOGOUT_PENDING = "corral.logout-pending";

export function setLogoutPending(on: boolean): void {
  try {
    if (on) localStorage.setItem(LOGOUT_PENDING, "1");
    else localStorage.removeItem(LOGOUT_PENDING);
  } catch {
    // Without storage there is nothing to carry to the next load.
  }
}

/** Whether a sign-out is still to be sent to the server. */
export function logoutPending(): boolean {
  try {
    return localStorage.getItem(LOGOUT_PENDING) !== null;
  } catch {
    return false;
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

function scheduleRefresh(delay: number): void {
  clearTimeout(refreshTimer);
  const timer = setTimeout(() => {
    refreshSession().catch(() => {
      // Still signed in as far as anyone knows, and no newer refresh is
      // scheduled: try again a little later.
      if (refreshTimer !== timer || accessToken === null) return;
      const next = retryDelay;
      retryDelay = Math.min(RETRY_MAX_MS, retryDelay * 2);
      scheduleRefresh(next);
    });
  }, delay);
  refreshTimer = timer;
}

function noteUser(user: UserView): void {
  const previous = lastUserId;
  lastUserId = user.id;
  if (previous !== null && previous !== user.id) accountListeners.forEach((l) => l(user));
}

/** Stores a fresh pair and schedules the next refresh a minute early. */
export function acceptTokens(tokens: TokenResponse): void {
  accessToken = tokens.access_token;
  setHint(true);
  retryDelay = RETRY_FIRST_MS;
  scheduleRefresh(Math.max(10, tokens.expires_in - 60) * 1000);
  claimPrivate(tokens.user.id);
  noteUser(tokens.user);
  tokenListeners.forEach((l) => l(tokens.access_token));
  userListeners.forEach((l) => l(tokens.user));
}

/** Called with every new access token this tab receives. */
export function onTokens(listener: (accessToken: string) => void): () => void {
  tokenListeners.add(listener);
  return () => tokenListeners.delete(listener);
}

/**
 * Called when the signed-in account becomes a different one, before the
 * user listeners hear of it: whatever belonged to the previous account
 * (cached data, open conversations, sockets) must go.
 */
export function onAccountChange(listener: (user: UserView) => void): () => void {
  accountListeners.add(listener);
  return () => accountListeners.delete(listener);
}

/**
 * Keys under this prefix hold what a person typed (chat drafts): kept when a
 * session merely expires, so nothing is lost, and forgotten when they sign
 * out or their account is disabled, so the next person at this browser
 * does not find them.
 */
export const PRIVATE_PREFIX = "corral.private.";

/** Whose private keys these are: another account signing in here finds none. */
const OWNER_KEY = `${PRIVATE_PREFIX}owner`;

function claimPrivate(userId: string): void {
  try {
    const owner = localStorage.getItem(OWNER_KEY);
    if (owner === userId) return;
    if (owner !== null) forgetPrivate();
    localStorage.setItem(OWNER_KEY, userId);
  } catch {
    // Storage may be disabled.
  }
}

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
  noteUser(user);
  userListeners.forEach((l) => l(user));
}

export function onUser(listener: (user: UserView) => void): () => void {
  userListeners.add(listener);
  return () => userListeners.delete(listener);
}

/** Whether this browser coordinates tabs with Web Locks (HTTPS or localhost only). */
export function hasWebLocks(): boolean {
  return typeof navigator !== "undefined" && navigator.locks != null;
}

const LOCK_KEY = "corral.refresh-lock";
const LOCK_TTL_MS = 10_000;
const tabId = Math.random().toString(36).slice(2) + Date.now().toString(36);

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function readLock(): { owner: string; expires: number } | null {
  try {
    const raw = localStorage.getItem(LOCK_KEY);
    return raw ? (JSON.parse(raw) as { owner: string; expires: number }) : null;
  } catch {
    return null;
  }
}

/**
 * Without Web Locks, tabs take turns through a best-effort lock in
 * localStorage: claim it when free or expired, wait a moment, and proceed
 * only if the claim is still ours (another tab may have claimed it at the
 * same time). An expiry keeps a closed tab from holding it forever.
 */
async function withStorageLock<T>(run: () => Promise<T>): Promise<T> {
  let usable = true;
  try {
    localStorage.getItem(LOCK_KEY);
  } catch {
    usable = false;
  }
  if (!usable) return run();
  for (;;) {
    const held = readLock();
    if (!held || held.expires < Date.now() || held.owner === tabId) {
      try {
        localStorage.setItem(LOCK_KEY, JSON.stringify({ owner: tabId, expires: Date.now() + LOCK_TTL_MS }));
      } catch {
        return run();
      }
      await sleep(30);
      if (readLock()?.owner === tabId) break;
    }
    await sleep(50 + Math.random() * 100);
  }
  try {
    return await run();
  } finally {
    if (readLock()?.owner === tabId) {
      try {
        localStorage.removeItem(LOCK_KEY);
      } catch {
        // Storage went away; the expiry frees the lock.
      }
    }
  }
}

/**
 * Trades the refresh cookie for new tokens. Refresh tokens are single-use
 * and a reused one revokes the whole sign-in, so tabs take turns (Web
 * Locks, or a localStorage lock where those are missing): the second tab
 * sends the cookie the first one received.
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
  const turn = hasWebLocks()
    ? (navigator.locks.request("corral-refresh", run) as unknown as Promise<TokenResponse | null>)
    : withStorageLock(run);
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
