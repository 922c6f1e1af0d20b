import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen, within } from "@testing-library/react";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { NewKeyDialog } from "./NewKeyDialog";

const fetchMock = vi.hoisted(() => {
  const mock = vi.fn<typeof fetch>();
  globalThis.fetch = mock;
  return mock;
});

const created = {
  id: "k1",
  name: "laptop",
  prefix: "crl_abc",
  created_at: "2026-01-01T00:00:00Z",
  key: "crl_abcSECRET",
};

describe("NewKeyDialog", () => {
  afterEach(() => fetchMock.mockReset());

  it("shows the key once with a copy button and examples that use it", async () => {
    fetchMock.mockResolvedValue(
      new Response(
        JSON.stringify({
          items: [
            { id: "m0", name: "minilm", kind: "embedding", usable: true, status: "ready" },
            { id: "m1", name: "gemma-3-270m", kind: "chat", usable: true, status: "ready" },
          ],
        }),
        { status: 200, headers: { "Content-Type": "application/json" } },
      ),
    );
    render(
      <QueryClientProvider client={new QueryClient()}>
        <NewKeyDialog created={created} onClose={() => {}} />
      </QueryClientProvider>,
    );
    const dialog = screen.getByRole("dialog", { name: "Your new API key" });
    expect(within(dialog).getByRole("textbox", { name: "API key" })).toHaveValue("crl_abcSECRET");
    expect(within(dialog).getByRole("button", { name: "Copy key" })).toBeInTheDocument();
    expect(within(dialog).getByText(/shows it only this once/)).toBeInTheDocument();
    const python = await within(dialog).findByText(/model="gemma-3-270m"/);
    expect(python.textContent).toContain(`OpenAI(base_url="${window.location.origin}/v1", api_key="crl_abcSECRET")`);
    expect(within(dialog).getByText(/curl .*\/v1\/chat\/completions/).textContent).toContain(
      "Authorization: Bearer crl_abcSECRET",
    );
  });
});
