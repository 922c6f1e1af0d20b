// The one API client: types and paths come from openapi/openapi.json, so a
// changed API breaks `npm run build`, not the person using the page.

import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./api-schema";
import { endSession, getAccessToken, refreshSession } from "./session";

export type Schemas = components["schemas"];
export type ErrorBody = Schemas["ErrorBody"];

/** An answer that was not a success, with the server's error body. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly fields: Record<string, string>;
  readonly retryAfter: number | null;

  constructor(status: number, body: Partial<ErrorBody> | null, retryAfter: number | null = null) {
    super(body?.message ?? `request failed with status ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = body?.code ?? (status === 0 ? "network" : "unknown");
    this.fields = {};
    for (const f of body?.details ?? []) this.fields[f.field] = f.message;
    this.retryAfter = retryAfter;
  }
}

/** Copies of requests in flight, by request id, kept to retry once after a 401. */
export const retries = new Map<string, Request>();

/** The longest search text (`q`) the server's lists accept. */
export const MAX_SEARCH_CHARS = 200;

/**
 * A disabled account's still-valid access token is answered 403
 * `account_disabled`: the session is over in this tab (and the server has
 * revoked its refresh token), so the app goes to the sign-in page.
 */
async function disabledAccount(response: Response): Promise<boolean> {
  if (response.status !== 403) return false;
  const body = (await response
    .clone()
    .json()
    .catch(() => null)) as { code?: string } | null;
  if (body?.code !== "account_disabled") return false;
  endSession("disabled");
  return true;
}

const auth: Middleware = {
  onRequest({ request, id }) {
    const token = getAccessToken();
    if (token) request.headers.set("Authorization", `Bearer ${token}`);
    if (!request.url.includes("/api/auth/")) retries.set(id, request.clone());
    return request;
  },
  async onResponse({ response, id }) {
    const copy = retries.get(id);
    retries.delete(id);
    if (await disabledAccount(response)) return response;
    if (response.status !== 401 || !copy) return response;
    // The access token expired or was revoked: one refresh, one retry.
    const tokens = await refreshSession().catch(() => null);
    if (!tokens) return response;
    copy.headers.set("Authorization", `Bearer ${tokens.access_token}`);
    const again = await fetch(copy);
    if (again.status === 401) endSession("expired");
    return again;
  },
  onError({ id }) {
    // No answer came (network down): the copy kept for a retry goes too.
    retries.delete(id);
  },
};

export const api = createClient<paths>({
  baseUrl: typeof window === "undefined" ? "http://localhost" : window.location.origin,
  credentials: "same-origin",
});
api.use(auth);

/**
 * The data of an openapi-fetch result, or an `ApiError`. Use inside query
 * and mutation functions: `unwrap(await api.GET("/api/me"))`.
 */
export function unwrap<T>(result: { data?: T; error?: unknown; response: Response }): T {
  if (result.response.ok) return result.data as T;
  const retry = Number(result.response.headers.get("Retry-After"));
  throw new ApiError(
    result.response.status,
    (result.error ?? null) as Partial<ErrorBody> | null,
    Number.isFinite(retry) && retry > 0 ? retry : null,
  );
}

/** Fetches with the current access token, refreshing it once on 401. */
export async function authorizedFetch(input: string, init: RequestInit = {}): Promise<Response> {
  const send = (token: string | null) => {
    const headers = new Headers(init.headers);
    if (token) headers.set("Authorization", `Bearer ${token}`);
    return fetch(input, { ...init, headers, credentials: "same-origin" });
  };
  const response = await send(getAccessToken());
  if (await disabledAccount(response)) return response;
  if (response.status !== 401) return response;
  const tokens = await refreshSession().catch(() => null);
  return tokens ? send(tokens.access_token) : response;
}
