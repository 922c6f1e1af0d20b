import { afterEach, describe, expect, it, vi } from "vitest";
import { screen, within } from "@testing-library/react";
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
    // It declares no host: nothing about outgoing HTTP to approve.
    expect(screen.queryByRole("group", { name: "Hosts it may send HTTP requests to" })).not.toBeInTheDocument();
    expect(screen.queryByRole("checkbox", { name: "Allow private network addresses" })).not.toBeInTheDocument();
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

  describe("outgoing HTTP", () => {
    const fetcher = (overrides: Parameters<typeof makePlugin>[0] = {}) =>
      makePlugin({
        id: "fetcher",
        name: "Fetcher",
        capabilities: ["log", "http"],
        approved: ["log", "http"],
        http_hosts: ["api.example.com", "*.wiki.example:*", "[2001:db8::1]:8080"],
        approved_hosts: ["api.example.com"],
        ...overrides,
      });
    const hosts = () => screen.getByRole("group", { name: "Hosts it may send HTTP requests to" });
    const privateNetwork = () => screen.getByRole("checkbox", { name: "Allow private network addresses" });

    it("lists each declared host with its approval and where it lets requests go", () => {
      setup(fetcher());
      expect(screen.getByRole("checkbox", { name: "http" })).toHaveAccessibleDescription(
        /only to the hosts approved below and, unless you allow the private network, only to public addresses/,
      );
      const group = within(hosts());
      const api = group.getByRole("checkbox", { name: "api.example.com" });
      const wiki = group.getByRole("checkbox", { name: "*.wiki.example:*" });
      const v6 = group.getByRole("checkbox", { name: "[2001:db8::1]:8080" });
      expect(api).toBeChecked();
      expect(wiki).not.toBeChecked();
      expect(v6).not.toBeChecked();
      expect(api).toHaveAccessibleDescription("Only api.example.com, on ports 80 and 443 (HTTP and HTTPS).");
      expect(wiki).toHaveAccessibleDescription("Any subdomain of wiki.example (not wiki.example itself), on any port.");
      expect(v6).toHaveAccessibleDescription("Only [2001:db8::1], on port 8080.");

      // Off by default, with what turning it on would expose.
      expect(privateNetwork()).not.toBeChecked();
      expect(privateNetwork()).toHaveAccessibleDescription(/^Lets its requests reach this machine \(loopback/);
      for (const part of ["169.254.169.254", "credentials", "192.168.0.0/16", "only public addresses"]) {
        expect(privateNetwork()).toHaveAccessibleDescription(expect.stringContaining(part));
      }
      expect(screen.getByRole("button", { name: "Save approvals" })).toBeDisabled();
    });

    it("saves capabilities, hosts and the private network in one request", async () => {
      const plugin = fetcher();
      const saved = { ...plugin, approved_hosts: ["[2001:db8::1]:8080", "api.example.com"], private_network: true };
      fetchMock.mockImplementation(async () => json(saved));
      const view = setup(plugin);
      await userEvent.click(screen.getByRole("checkbox", { name: "[2001:db8::1]:8080" }));
      await userEvent.click(privateNetwork());
      expect(screen.getByRole("status")).toHaveTextContent("Unsaved changes.");
      await userEvent.click(view.save());

      expect(await screen.findByText("Approvals saved.")).toBeInTheDocument();
      expect(fetchMock).toHaveBeenCalledTimes(1);
      const request = fetchMock.mock.calls[0][0] as Request;
      expect(request.method).toBe("PATCH");
      expect(new URL(request.url).pathname).toBe("/api/plugins/fetcher");
      // Hosts in the manifest's order, like the capabilities.
      expect(await request.json()).toEqual({
        approved: ["log", "http"],
        approved_hosts: ["api.example.com", "[2001:db8::1]:8080"],
        private_network: true,
      });
      // The server's answer (its hosts sorted) reads as nothing left to save.
      expect(screen.getByRole("checkbox", { name: "[2001:db8::1]:8080" })).toBeChecked();
      expect(privateNetwork()).toBeChecked();
      expect(view.save()).toBeDisabled();
    });

    it("undoes ticked hosts and the private network", async () => {
      setup(fetcher());
      await userEvent.click(screen.getByRole("checkbox", { name: "api.example.com" }));
      await userEvent.click(privateNetwork());
      await userEvent.click(screen.getByRole("button", { name: "Undo changes" }));
      expect(screen.getByRole("checkbox", { name: "api.example.com" })).toBeChecked();
      expect(privateNetwork()).not.toBeChecked();
      expect(screen.getByRole("button", { name: "Save approvals" })).toBeDisabled();
    });

    it("shows the server's refusal of a host under the hosts", async () => {
      const message = "plugin `fetcher` does not declare host `*.wiki.example:*` under `[http] hosts`";
      fetchMock.mockImplementation(async () =>
        json(
          {
            code: "validation_failed",
            message: "the request is not valid",
            details: [{ field: "approved_hosts", message }],
          },
          422,
        ),
      );
      const view = setup(fetcher());
      await userEvent.click(screen.getByRole("checkbox", { name: "*.wiki.example:*" }));
      await userEvent.click(view.save());
      expect(await screen.findByRole("alert")).toHaveTextContent("Some fields need attention");
      expect(screen.getByText(message)).toBeInTheDocument();
      expect(hosts()).toHaveAccessibleDescription(expect.stringContaining(message));
      // Nothing was saved: what was ticked stays, still to save.
      expect(screen.getByRole("checkbox", { name: "*.wiki.example:*" })).toBeChecked();
      expect(screen.getByRole("status")).toHaveTextContent("Unsaved changes.");
    });

    it("says when approved hosts do nothing and when every request is refused", async () => {
      setup(fetcher({ approved: ["log"], approved_hosts: ["api.example.com"] }));
      const idle = "Hosts are approved but http is not: they do nothing until you approve http.";
      const refused = "http is approved but no host is: every request the plugin makes is refused.";
      expect(screen.getByText(idle)).toBeInTheDocument();
      expect(screen.queryByText(refused)).not.toBeInTheDocument();

      // The hints follow what is ticked, before it is saved.
      await userEvent.click(screen.getByRole("checkbox", { name: "http" }));
      expect(screen.queryByText(idle)).not.toBeInTheDocument();
      expect(screen.queryByText(refused)).not.toBeInTheDocument();
      await userEvent.click(screen.getByRole("checkbox", { name: "api.example.com" }));
      expect(screen.getByText(refused)).toBeInTheDocument();
      expect(screen.queryByText(idle)).not.toBeInTheDocument();
    });

    it("follows hosts approved elsewhere", async () => {
      const plugin = fetcher();
      const view = setup(plugin);
      await view.replace({ ...plugin, approved_hosts: ["*.wiki.example:*"], private_network: true });
      expect(screen.getByRole("checkbox", { name: "api.example.com" })).not.toBeChecked();
      expect(screen.getByRole("checkbox", { name: "*.wiki.example:*" })).toBeChecked();
      expect(privateNetwork()).toBeChecked();
      expect(view.save()).toBeDisabled();
    });
  });
});
