import { describe, expect, it } from "vitest";
import { safeNext } from "./SignInPage";

describe("safeNext", () => {
  it("keeps paths inside Corral", () => {
    expect(safeNext("/chat/42")).toBe("/chat/42");
    expect(safeNext("/admin/users?page=2#top")).toBe("/admin/users?page=2#top");
    expect(safeNext("/")).toBe("/");
  });

  it("falls back to the chat for anything else", () => {
    for (const next of [
      null,
      "",
      "chat",
      "//evil.example",
      "/\\evil.example",
      "\\/evil.example",
      "/chat\\..\\x",
      "https://evil.example/",
      "javascript:alert(1)",
      "/\t/evil.example",
      "/\n/evil.example",
      " /chat",
    ]) {
      expect(safeNext(next)).toBe("/chat");
    }
  });
});
