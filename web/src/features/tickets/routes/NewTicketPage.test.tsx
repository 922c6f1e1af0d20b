import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { createMemoryRouter, RouterProvider } from "react-router";
import NewTicketPage from "./NewTicketPage";

// The API client keeps the `fetch` it finds when it is created, so the
// stand-in goes in before any import.
const fetchMock = vi.hoisted(() => {
  const mock = vi.fn<typeof fetch>();
  globalThis.fetch = mock;
  return mock;
});

function renderAt(url: string) {
  const router = createMemoryRouter(
    [
      { path: "/tickets/new", element: <NewTicketPage /> },
      { path: "/tickets/:id", element: <h1>ticket page</h1> },
    ],
    { initialEntries: [url] },
  );
  render(
    <QueryClientProvider client={new QueryClient({ defaultOptions: { mutations: { retry: false } } })}>
      <RouterProvider router={router} />
    </QueryClientProvider>,
  );
  return router;
}

describe("NewTicketPage", () => {
  afterEach(() => fetchMock.mockReset());

  it("explains what is missing instead of sending an empty ticket", async () => {
    renderAt("/tickets/new");
    await userEvent.click(screen.getByRole("button", { name: "Open ticket" }));
    expect(await screen.findByText("The subject needs at least 3 characters.")).toBeInTheDocument();
    expect(screen.getByText("Describe the problem.")).toBeInTheDocument();
    expect(screen.getByRole("textbox", { name: "Subject" })).toHaveAttribute("aria-invalid", "true");
    expect(fetchMock).not.toHaveBeenCalled();
  });

  it("opens a ticket linked to the chat it came from and goes to it", async () => {
    fetchMock.mockResolvedValue(
      new Response(JSON.stringify({ id: "t9", number: 9 }), {
        status: 201,
        headers: { "Content-Type": "application/json" },
      }),
    );
    const router = renderAt("/tickets/new?chat=chat-42");
    expect(screen.getByText("Linked to chat")).toBeInTheDocument();
    await userEvent.type(screen.getByRole("textbox", { name: "Subject" }), "Answers stop");
    await userEvent.type(screen.getByRole("textbox", { name: "Description" }), "Every answer ends early.");
    await userEvent.selectOptions(screen.getByRole("combobox", { name: "Priority" }), "high");
    await userEvent.click(screen.getByRole("button", { name: "Open ticket" }));
    expect(await screen.findByRole("heading", { name: "ticket page" })).toBeInTheDocument();
    expect(router.state.location.pathname).toBe("/tickets/9");
    const request = fetchMock.mock.calls[0][0] as Request;
    expect(await request.json()).toEqual({
      subject: "Answers stop",
      body: "Every answer ends early.",
      category: "question",
      priority: "high",
      chat_id: "chat-42",
    });
  });
});
