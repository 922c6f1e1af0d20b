import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { NodesSection } from "./NodesSection";

const fetchMock = vi.hoisted(() => {
  const mock = vi.fn<typeof fetch>();
  globalThis.fetch = mock;
  return mock;
});

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

const node = (over: Record<string, unknown>) => ({
  name: "gpu-1",
  url: "http://10.0.0.7:7000",
  tls_fingerprint: null,
  status: "up",
  reason: null,
  since: "2026-11-28T10:00:00Z",
  last_seen: "2026-11-28T10:00:05Z",
  last_error: null,
  last_error_at: null,
  version: "0.1.0",
  backends: ["llama", "candle"],
  memory_total_bytes: 64 * 1024 ** 3,
  memory_available_bytes: 48 * 1024 ** 3,
  loaded: [{ id: "m1", name: "gemma", backend: "llama", file: "gemma.gguf", memory_bytes: 300e6 }],
  placed: ["gemma"],
  created_at: "2026-11-28T09:00:00Z",
  updated_at: "2026-11-28T09:00:00Z",
  ...over,
});

function show() {
  render(
    <QueryClientProvider client={new QueryClient({ defaultOptions: { queries: { retry: false }, mutations: { retry: false } } })}>
      <NodesSection />
    </QueryClientProvider>,
  );
}

describe("NodesSection", () => {
  afterEach(() => fetchMock.mockReset());

  it("shows each node's health, and why a node is down", async () => {
    fetchMock.mockImplementation(async () =>
      json({
        items: [
          node({}),
          node({
            name: "gpu-2",
            status: "down",
            reason: "no answer within 2 s",
            last_error: "no answer within 2 s",
            last_error_at: "2026-11-28T10:01:00Z",
            loaded: [],
            placed: [],
          }),
          node({
            name: "gpu-3",
            last_error: "a frame longer than 4194304 bytes",
            last_error_at: "2026-11-28T09:59:00Z",
          }),
        ],
      }),
    );
    show();
    const up = (await screen.findByRole("rowheader", { name: /gpu-1/ })).closest("tr")!;
    expect(within(up).getByText("Up")).toBeInTheDocument();
    expect(within(up).getByText("llama, candle")).toBeInTheDocument();
    expect(within(up).getByText("48 GB free of 64 GB", { exact: false })).toBeInTheDocument();
    expect(within(up).getByText("gemma")).toBeInTheDocument();
    const down = screen.getByRole("rowheader", { name: /gpu-2/ }).closest("tr")!;
    expect(within(down).getByText("Down")).toBeInTheDocument();
    expect(within(down).getByText("no answer within 2 s")).toBeInTheDocument();
    // Down now: the reason is shown once, not repeated as the last error.
    expect(within(down).queryByText(/Last down/)).not.toBeInTheDocument();
    // Up again: why it last went down stays in view.
    const recovered = screen.getByRole("rowheader", { name: /gpu-3/ }).closest("tr")!;
    expect(within(recovered).getByText("Up")).toBeInTheDocument();
    expect(within(recovered).getByText(/Last down .*: a frame longer than 4194304 bytes/)).toBeInTheDocument();
    expect(within(up).queryByText(/Last down/)).not.toBeInTheDocument();
  });

  it("registers a node with its token and shows the server's verdict on a field", async () => {
    fetchMock.mockImplementation(async (input) => {
      const request = input as Request;
      if (request.method === "POST") {
        return json(
          {
            code: "validation_failed",
            message: "invalid field",
            details: [{ field: "url", message: "127.0.0.1 is loopback" }],
          },
          422,
        );
      }
      return json({ items: [] });
    });
    show();
    expect(await screen.findByText("No worker nodes. Every model runs on this host.")).toBeInTheDocument();
    await userEvent.click(screen.getByRole("button", { name: "Register a node" }));
    await userEvent.type(screen.getByLabelText("Name"), "gpu-3");
    await userEvent.type(screen.getByLabelText("URL"), "http://127.0.0.1:7000");
    const token = screen.getByLabelText("Token");
    expect(token).toHaveAttribute("type", "password");
    await userEvent.type(token, "0123456789abcdef0123");
    await userEvent.click(screen.getByRole("button", { name: "Register" }));
    expect(await screen.findByText("127.0.0.1 is loopback")).toBeInTheDocument();
    const post = fetchMock.mock.calls.map((c) => c[0] as Request).find((r) => r.method === "POST")!;
    expect(new URL(post.url).pathname).toBe("/api/nodes");
    expect(await post.json()).toEqual({ name: "gpu-3", url: "http://127.0.0.1:7000", token: "0123456789abcdef0123" });
  });

  it("pins a node's certificate, and asks for the token again when the pin changes", async () => {
    const pin = Array.from({ length: 32 }, (_, i) => (i + 16).toString(16).toUpperCase()).join(":");
    fetchMock.mockImplementation(async (input) => {
      const request = input as Request;
      if (request.method === "PATCH") {
        return json(
          {
            code: "validation_failed",
            message: "invalid field",
            details: [{ field: "token", message: "must be given again when the pinned certificate changes" }],
          },
          422,
        );
      }
      if (request.method === "POST") return json(node({ name: "gpu-9" }), 201);
      return json({ items: [node({ url: "https://10.0.0.7:7000", tls_fingerprint: pin })] });
    });
    show();
    const row = (await screen.findByRole("rowheader", { name: /gpu-1/ })).closest("tr")!;
    // The table shows the start of the pin; the whole one is in the title.
    const shown = within(row).getByText(/^Pinned certificate 10:11:12:13:14:15:16:17…$/);
    expect(shown).toHaveAttribute("title", pin);

    // Registering sends the fingerprint as typed; the server reads it.
    await userEvent.click(screen.getByRole("button", { name: "Register a node" }));
    await userEvent.type(screen.getByLabelText("Name"), "gpu-9");
    await userEvent.type(screen.getByLabelText("URL"), "https://10.0.0.9:7000");
    await userEvent.type(screen.getByLabelText("Token"), "0123456789abcdef0123");
    await userEvent.type(screen.getByLabelText("Certificate fingerprint (SHA-256)"), ` ${pin.toLowerCase()} `);
    await userEvent.click(screen.getByRole("button", { name: "Register" }));
    const post = fetchMock.mock.calls.map((c) => c[0] as Request).find((r) => r.method === "POST")!;
    expect(await post.json()).toEqual({
      name: "gpu-9",
      url: "https://10.0.0.9:7000",
      token: "0123456789abcdef0123",
      tls_fingerprint: pin.toLowerCase(),
    });

    // Clearing the pin sends "" and nothing else; the server wants the token.
    await userEvent.click(within(row).getByRole("button", { name: "Change" }));
    const dialog = await screen.findByRole("dialog");
    const field = within(dialog).getByLabelText("Certificate fingerprint (SHA-256)");
    expect(field).toHaveValue(pin);
    await userEvent.clear(field);
    await userEvent.click(within(dialog).getByRole("button", { name: "Save" }));
    expect(await within(dialog).findByText("must be given again when the pinned certificate changes")).toBeInTheDocument();
    const patch = fetchMock.mock.calls.map((c) => c[0] as Request).find((r) => r.method === "PATCH")!;
    expect(new URL(patch.url).pathname).toBe("/api/nodes/gpu-1");
    expect(await patch.json()).toEqual({ tls_fingerprint: "" });
  });
});
