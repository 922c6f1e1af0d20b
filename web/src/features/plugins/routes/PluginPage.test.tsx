import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter, Route, Routes } from "react-router";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import PluginPage from "./PluginPage";
import { json, makePlugin } from "../utils/fixtures";
import type { PluginView } from "../api/plugins";

const fetchMock = vi.hoisted(() => {
  const mock = vi.fn<typeof fetch>();
  globalThis.fetch = mock;
  return mock;
});

/** A server holding one plugin; `patch` answers PATCH requests. */
function serve(plugin: PluginView, patch: (body: Record<string, unknown>) => Response) {
  fetchMock.mockImplementation(async (input) => {
    const request = input as Request;
    const path = new URL(request.url).pathname;
    if (path === "/api/models") return json({ items: [{ name: "gemma-3-270m" }, { name: "qwen" }] });
    if (request.method === "PATCH") return patch((await request.json()) as Record<string, unknown>);
    if (request.method === "DELETE") return new Response(null, { status: 204 });
    return json(plugin);
  });
}

function show() {
  render(
    <MemoryRouter initialEntries={["/plugins/web-search"]}>
      <QueryClientProvider client={new QueryClient({ defaultOptions: { queries: { retry: false }, mutations: { retry: false } } })}>
        <Routes>
          <Route path="/plugins/:pluginId" element={<PluginPage />} />
          <Route path="/plugins" element={<p>All plugins page</p>} />
        </Routes>
      </QueryClientProvider>
    </MemoryRouter>,
  );
}

const sent = () =>
  fetchMock.mock.calls.map((c) => c[0] as Request).filter((r) => r.method !== "GET").map((r) => `${r.method} ${new URL(r.url).pathname}`);

describe("a plugin's page", () => {
  afterEach(() => fetchMock.mockReset());

  it("says why the plugin could not be turned on", async () => {
    serve(makePlugin(), () =>
      json({ code: "bad_request", message: "configure plugin `web-search` before turning it on: api-key: is required" }, 400),
    );
    show();
    await userEvent.click(await screen.findByRole("switch", { name: "Turned on" }));
    expect(await screen.findByRole("alert")).toHaveTextContent(
      "It was not turned on: configure plugin `web-search` before turning it on: api-key: is required",
    );
    expect(screen.getByRole("switch", { name: "Turned on" })).not.toBeChecked();
  });

  it("turns a plugin Corral stopped on again from its warning", async () => {
    const stopped = makePlugin({ enabled: true, disabled_reason: "failed 5 times in a row" });
    serve(stopped, (body) => json({ ...stopped, ...body, active: true, disabled_reason: null }));
    show();
    expect(await screen.findByText("Reason: failed 5 times in a row")).toBeInTheDocument();
    await userEvent.click(screen.getByRole("button", { name: "Turn on again" }));
    expect(await screen.findByText("Web search is on.")).toBeInTheDocument();
    expect(screen.queryByText("Corral turned this plugin off")).not.toBeInTheDocument();
    expect(screen.getAllByText("Active").length).toBeGreaterThan(0);
  });

  it("limits the plugin to the models picked", async () => {
    const plugin = makePlugin();
    serve(plugin, (body) => json({ ...plugin, ...body }));
    show();
    const models = await screen.findByRole("region", { name: "Models" });
    await userEvent.click(within(models).getByRole("radio", { name: "Only the models picked here" }));
    await userEvent.click(within(models).getByRole("button", { name: "Save models" }));
    expect(within(models).getByText("Pick at least one model, or choose every model.")).toBeInTheDocument();
    await userEvent.click(await within(models).findByRole("checkbox", { name: "qwen" }));
    await userEvent.click(within(models).getByRole("button", { name: "Save models" }));
    expect(await within(models).findByText("Models saved.")).toBeInTheDocument();
    const patch = fetchMock.mock.calls.map((c) => c[0] as Request).find((r) => r.method === "PATCH")!;
    expect(await patch.clone().json()).toEqual({ models: ["qwen"] });
  });

  it("deletes only after the id is typed", async () => {
    serve(makePlugin(), () => json({}));
    show();
    await userEvent.click(await screen.findByRole("button", { name: "Delete" }));
    const confirm = screen.getByRole("button", { name: "Delete plugin" });
    expect(confirm).toBeDisabled();
    await userEvent.type(screen.getByLabelText("Type web-search to confirm"), "web-searc");
    expect(confirm).toBeDisabled();
    await userEvent.type(screen.getByLabelText("Type web-search to confirm"), "h");
    await userEvent.click(confirm);
    expect(await screen.findByText("All plugins page")).toBeInTheDocument();
    expect(sent()).toEqual(["DELETE /api/plugins/web-search"]);
  });
});
