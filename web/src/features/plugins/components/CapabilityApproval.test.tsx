import { afterEach, describe, expect, it, vi } from "vitest";
import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { CapabilityApproval } from "./CapabilityApproval";
import { json, makePlugin, renderWithPlugin } from "../utils/fixtures";
import type { PluginView } from "../api/plugins";

const fetchMock = vi.hoisted(() => {
  const mock = vi.fn<typeof fetch>();
  globalThis.fetch = mock;
  return mock;
});

function setup(plugin: PluginView) {
  const view = renderWithPlugin(plugin, (p) => <CapabilityApproval plugin={p} />);
  return { ...view, save: () => screen.getByRole("button", { name: "Save approvals" }) };
}

describe("CapabilityApproval", () => {
  afterEach(() => fetchMock.mockReset());

  it("lists what the plugin asks for, each with what approving it grants", () => {
    setup(makePlugin({ capabilities: ["log", "kv", "generate"], approved: ["log"], limits: { memory_mb: 32, time_ms: 100, kv_kb: 256 } }));
    const log = screen.getByRole("checkbox", { name: "log" });
    const kv = screen.getByRole("checkbox", { name: "kv" });
    const generate = screen.getByRole("checkbox", { name: "generate" });
    expect(log).toBeChecked();
    expect(kv).not.toBeChecked();
    expect(generate).not.toBeChecked();
    expect(log).toHaveAccessibleDescription("Write lines to Corral's log, marked with the plugin's id.");
    expect(kv).toHaveAccessibleDescription(/up to 256 KB together/);
    expect(generate).toHaveAccessibleDescription(/counted against the allowance/);
    expect(screen.queryByRole("checkbox", { name: "embed" })).not.toBeInTheDocument();
    // Nothing changed yet: nothing to save.
    expect(screen.getByRole("button", { name: "Save approvals" })).toBeDisabled();
  });

  it("saves the ticked capabilities in the manifest's order", async () => {
    const plugin = makePlugin({ capabilities: ["log", "kv", "config"], approved: ["log"] });
    fetchMock.mockImplementation(async () => json({ ...plugin, approved: ["kv", "config"] }));
    const view = setup(plugin);
    await userEvent.click(screen.getByRole("checkbox", { name: "config" }));
    await userEvent.click(screen.getByRole("checkbox", { name: "kv" }));
    await userEvent.click(screen.getByRole("checkbox", { name: "log" }));
    expect(screen.getByRole("status")).toHaveTextContent("Unsaved changes.");
    await userEvent.click(view.save());

    expect(await screen.findByText("Approvals saved.")).toBeInTheDocument();
    const request = fetchMock.mock.calls[0][0] as Request;
    expect(request.method).toBe("PATCH");
    expect(new URL(request.url).pathname).toBe("/api/plugins/web-search");
    expect(await request.json()).toEqual({ approved: ["kv", "config"] });

    expect(screen.getByRole("checkbox", { name: "log" })).not.toBeChecked();
    expect(screen.getByRole("checkbox", { name: "kv" })).toBeChecked();
    expect(view.save()).toBeDisabled();
  });

  it("follows approvals saved elsewhere, such as dropped by an upgrade", async () => {
    const plugin = makePlugin({ capabilities: ["log", "kv", "config"], approved: ["log", "kv"] });
    const view = setup(plugin);
    expect(screen.getByRole("checkbox", { name: "kv" })).toBeChecked();
    await view.replace({ ...plugin, capabilities: ["log", "config"], approved: ["log"] });
    expect(screen.queryByRole("checkbox", { name: "kv" })).not.toBeInTheDocument();
    expect(screen.getByRole("checkbox", { name: "log" })).toBeChecked();
    expect(screen.getByRole("checkbox", { name: "config" })).not.toBeChecked();
    expect(view.save()).toBeDisabled();
  });

  it("warns that unapproved capabilities fail while the plugin is on", () => {
    setup(makePlugin({ capabilities: ["log", "kv", "config"], approved: ["log"], enabled: true }));
    expect(screen.getByText(/Not approved: kv, config\./)).toBeInTheDocument();
  });

  it("shows the server's refusal", async () => {
    fetchMock.mockImplementation(async () =>
      json(
        {
          code: "validation_failed",
          message: "the request is not valid",
          details: [{ field: "approved", message: "plugin `web-search` does not ask for capability `embed`" }],
        },
        422,
      ),
    );
    const view = setup(makePlugin());
    await userEvent.click(screen.getByRole("checkbox", { name: "kv" }));
    await userEvent.click(view.save());
    expect(await screen.findByRole("alert")).toHaveTextContent("Some fields need attention");
  });

  it("says when the plugin asks for nothing", () => {
    setup(makePlugin({ capabilities: [], approved: [] }));
    expect(screen.getByText(/It asks for no capabilities/)).toBeInTheDocument();
    expect(screen.queryByRole("checkbox")).not.toBeInTheDocument();
  });
});
