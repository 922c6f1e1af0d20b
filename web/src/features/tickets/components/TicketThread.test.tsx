import { describe, expect, it } from "vitest";
import { render, screen, within } from "@testing-library/react";
import { TicketThread } from "./TicketThread";
import type { TicketWithComments } from "../api/tickets";

const ticket: TicketWithComments = {
  id: "t1",
  number: 7,
  owner_id: "u1",
  owner_username: "bob",
  subject: "Answers stop",
  body: "Every answer ends early.",
  category: "bug",
  priority: "normal",
  status: "open",
  created_at: "2026-01-01T10:00:00Z",
  updated_at: "2026-01-01T12:00:00Z",
  comments: [
    {
      id: "c2",
      ticket_id: "t1",
      author_id: "a1",
      author_username: "ada",
      author_is_staff: true,
      body: "Looks like the context length.",
      internal: true,
      created_at: "2026-01-01T12:00:00Z",
    },
    {
      id: "c1",
      ticket_id: "t1",
      author_id: "a1",
      author_username: "ada",
      author_is_staff: true,
      body: "We are on it.",
      internal: false,
      created_at: "2026-01-01T11:00:00Z",
    },
  ],
};

describe("TicketThread", () => {
  it("shows the description and replies oldest first, marking staff and staff-only notes", () => {
    render(
      <>
        <h2 id="h">Conversation</h2>
        <TicketThread ticket={ticket} headingId="h" />
      </>,
    );
    const posts = within(screen.getByRole("list", { name: "Conversation" })).getAllByRole("article");
    expect(posts.map((p) => p.getAttribute("aria-label"))).toEqual([
      "Message from bob",
      "Message from ada",
      "Staff-only note from ada",
    ]);
    expect(within(posts[0]).getByText("Every answer ends early.")).toBeInTheDocument();
    expect(within(posts[0]).queryByText("Staff")).toBeNull();
    expect(within(posts[1]).getByText("Staff")).toBeInTheDocument();
    expect(within(posts[1]).queryByText("Staff-only note")).toBeNull();
    expect(within(posts[2]).getByText("Staff-only note")).toBeInTheDocument();
  });
});
