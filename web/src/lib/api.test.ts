// What the pages rely on when a request fails: `unwrap` gives an ApiError
// with the server's code, message, field errors and Retry-After, and
// `errorText` turns any error into a sentence.

import { describe, expect, it } from "vitest";
import i18n from "i18next";
import { ApiError, unwrap } from "./api";
import { errorText } from "./errors";

function failure(status: number, body: unknown, headers: Record<string, string> = {}) {
  return {
    error: body,
    response: new Response(JSON.stringify(body), {
      status,
      headers: { "Content-Type": "application/json", ...headers },
    }),
  };
}

const t = (key: string, options?: object) => String(i18n.getFixedT("en")(key, options as never));

describe("unwrap", () => {
  it("returns the data of a success", () => {
    const data = { id: "c1" };
    expect(unwrap({ data, response: new Response("{}", { status: 200 }) })).toBe(data);
  });

  it("throws an ApiError with the code, message and field errors of the body", () => {
    const result = failure(422, {
      code: "validation_failed",
      message: "username is taken",
      details: [
        { field: "username", message: "already taken" },
        { field: "password", message: "too short" },
      ],
    });
    let caught: unknown;
    try {
      unwrap(result);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ApiError);
    const error = caught as ApiError;
    expect(error.status).toBe(422);
    expect(error.code).toBe("validation_failed");
    expect(error.message).toBe("username is taken");
    expect(error.fields).toEqual({ username: "already taken", password: "too short" });
    expect(error.retryAfter).toBeNull();
  });

  it("reads Retry-After into retryAfter", () => {
    const result = failure(429, { code: "rate_limited", message: "slow down" }, { "Retry-After": "17" });
    expect(() => unwrap(result)).toThrow(expect.objectContaining({ code: "rate_limited", retryAfter: 17 }));
  });

  it("names an error without a body by its status", () => {
    const result = { error: undefined, response: new Response("", { status: 502 }) };
    expect(() => unwrap(result)).toThrow(
      expect.objectContaining({ status: 502, code: "unknown", fields: {} }),
    );
  });
});

describe("errorText", () => {
  it("says how many seconds to wait when rate limited", () => {
    const error = new ApiError(429, { code: "rate_limited", message: "slow down" }, 30);
    const text = errorText(error, t);
    expect(text).toContain("30");
    expect(text).toBe("Too many attempts. Wait 30 seconds and try again.");
  });

  it("asks to wait a moment when the server gave no Retry-After", () => {
    const error = new ApiError(429, { code: "rate_limited", message: "slow down" });
    expect(errorText(error, t)).toBe("Too many attempts. Wait a moment and try again.");
  });

  it("speaks of the connection for a network failure", () => {
    expect(errorText(new TypeError("Failed to fetch"), t)).toBe(
      "Corral cannot be reached. Check your connection and try again.",
    );
  });

  it("explains a known code in its own words", () => {
    const error = new ApiError(403, { code: "account_disabled", message: "account disabled" });
    expect(errorText(error, t)).toBe("This account is disabled. Ask an admin to enable it.");
  });

  it("falls back to the server's message for a code it does not know", () => {
    const error = new ApiError(418, { code: "teapot_overflow", message: "the pot is full" });
    const text = errorText(error, t);
    expect(text).toContain("the pot is full");
  });

  it("gives the message of any other error", () => {
    expect(errorText(new Error("boom"), t)).toContain("boom");
  });
});
