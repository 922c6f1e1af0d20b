import { beforeEach, describe, expect, it } from "vitest";
import { isUnread, markSeen, seenTickets } from "./unread";

const ticket = (over: Partial<{ owner_id: string; created_at: string; updated_at: string }> = {}) => ({
  id: "t1",
  owner_id: "someone",
  created_at: "2026-01-01T10:00:00Z",
  updated_at: "2026-01-01T10:00:00Z",
  ...over,
});

describe("unread tickets", () => {
  beforeEach(() => localStorage.clear());

  it("counts a ticket never opened by this account as unread", () => {
    expect(isUnread("staff1", ticket())).toBe(true);
  });

  it("does not count the account's own untouched ticket as unread", () => {
    expect(isUnread("owner", ticket({ owner_id: "owner" }))).toBe(false);
    expect(isUnread("owner", ticket({ owner_id: "owner", updated_at: "2026-01-01T11:00:00Z" }))).toBe(true);
  });

  it("is read once opened, and unread again after a later change", () => {
    markSeen("u1", "t1", "2026-01-01T10:00:00Z");
    expect(isUnread("u1", ticket())).toBe(false);
    expect(isUnread("u1", ticket({ updated_at: "2026-01-01T10:05:00Z" }))).toBe(true);
  });

  it("keeps each account's marks apart and never moves a mark back", () => {
    markSeen("u1", "t1", "2026-01-02T00:00:00Z");
    markSeen("u1", "t1", "2026-01-01T00:00:00Z");
    expect(seenTickets("u1").t1).toBe("2026-01-02T00:00:00Z");
    expect(seenTickets("u2")).toEqual({});
  });

  it("survives broken storage", () => {
    localStorage.setItem("corral.tickets.seen.u1", "not json");
    expect(isUnread("u1", ticket())).toBe(true);
  });
});
