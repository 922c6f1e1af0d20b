import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { MyPlugins } from "./MyPlugins";

const fetchMock = vi.hoisted(() => {
  const mock = vi.fn<typeof fetch>();
  globalThis.fetch = mock;
  return mock;
});

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

function show() {
  render(
    <QueryClientProvider client={new QueryClient({ defaultOptions: { queries: { retry: false }, mutations: { retry: false } } })}>
      <MyPlugins />
    </QueryClientProvider>,
  );
}

describe("MyPlugins", () => {
  afterEach(() => fetchMock.mockReset());

  it("turns an optional plugin on for the signed-in person", async () => {
    fetchMock.mockImplementation(async (input) => {
      const request = input as Request;
      if (request.method === "PUT") {
        return json({ id: "code-mentor", name: "Code mentor", description: "Explains code", enabled: true });
      }
      return json([
        { id: "code-mentor", name: "Code mentor", description: "Explains code", enabled: false },
        { id: "rag-docs", name: "Document collections", description: "", enabled: true },
      ]);
    });
    show();
    const mentor = await screen.findByRole("switch", { name: "Code mentor" });
    expect(mentor).not.toBeChecked();
    expect(mentor).toHaveAccessibleDescription("Explains code");
    expect(screen.getByRole("switch", { name: "Document collections" })).toBeChecked();

    await userEvent.click(mentor);
    expect(await screen.findByText("Code mentor is on for you.")).toBeInTheDocument();
    expect(mentor).toBeChecked();
    const request = fetchMock.mock.calls[1][0] as Request;
    expect(request.method).toBe("PUT");
    expect(new URL(request.url).pathname).toBe("/api/me/plugins/code-mentor");
    expect(await request.json()).toEqual({ enabled: true });
  });

  it("says when nothing is offered", async () => {
    fetchMock.mockImplementation(async () => json([]));
    show();
    expect(await screen.findByText("No optional plugins are offered.")).toBeInTheDocument();
  });
});
