import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter } from "react-router";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { InstallDialog, UpgradeDialog } from "./PluginDialogs";
import { json, makePlugin } from "../utils/fixtures";

const fetchMock = vi.hoisted(() => {
  const mock = vi.fn<typeof fetch>();
  globalThis.fetch = mock;
  return mock;
});

const manifest = `id = "web-search"
name = "Web search"
version = "0.2.0"
api = "0.9.0"
hooks = ["before-prompt"]
capabilities = ["log", "kv"]
`;

function wrap(ui: React.ReactNode) {
  return render(
    <MemoryRouter>
      <QueryClientProvider client={new QueryClient({ defaultOptions: { mutations: { retry: false } } })}>{ui}</QueryClientProvider>
    </MemoryRouter>,
  );
}

async function pickFiles() {
  const wasm = new File([new Uint8Array([0, 0x61, 0x73, 0x6d, 0x0d, 0, 1, 0])], "web_search.wasm", { type: "application/wasm" });
  await userEvent.upload(screen.getByLabelText("Component (.wasm)"), wasm);
  await userEvent.upload(screen.getByLabelText("plugin.toml file"), new File([manifest], "plugin.toml", { type: "text/plain" }));
  // The picked manifest shows in the text box, with what it asks for.
  await vi.waitFor(() => expect(screen.getByLabelText("plugin.toml")).toHaveValue(manifest));
  expect(screen.getByText("Web search (web-search), version 0.2.0, built for plugin interface 0.9.0.")).toBeInTheDocument();
  expect(screen.getByText("Asks for: log, kv.")).toBeInTheDocument();
}

describe("installing and upgrading", () => {
  afterEach(() => fetchMock.mockReset());

  it("sends the component and the manifest as a multipart upload", async () => {
    fetchMock.mockImplementation(async () => json(makePlugin(), 201));
    const onInstalled = vi.fn();
    wrap(<InstallDialog open onClose={() => undefined} onInstalled={onInstalled} />);
    await pickFiles();
    await userEvent.click(screen.getByRole("button", { name: "Install" }));
    await vi.waitFor(() => expect(onInstalled).toHaveBeenCalledWith(expect.objectContaining({ id: "web-search" })));

    const request = fetchMock.mock.calls[0][0] as Request;
    expect(request.method).toBe("POST");
    expect(new URL(request.url).pathname).toBe("/api/plugins");
    expect(request.headers.get("Content-Type")).toMatch(/^multipart\/form-data; boundary=/);
    const form = await request.formData();
    expect(await (form.get("manifest") as File).text()).toBe(manifest);
    const component = form.get("component") as File;
    expect(component.name).toBe("web_search.wasm");
    expect(new Uint8Array(await component.arrayBuffer())).toEqual(new Uint8Array([0, 0x61, 0x73, 0x6d, 0x0d, 0, 1, 0]));
  });

  it("says plainly when the plugin was built for another interface version", async () => {
    const message =
      "the plugin was built against corral:plugin@0.9.0 (plugin.toml api 0.9.0), which this Corral does not run; it runs 0.1.0";
    fetchMock.mockImplementation(async () => json({ code: "unsupported_api", message }, 422));
    wrap(<InstallDialog open onClose={() => undefined} onInstalled={() => undefined} />);
    await pickFiles();
    await userEvent.click(screen.getByRole("button", { name: "Install" }));
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("Built for another plugin interface");
    expect(alert).toHaveTextContent(message);
  });

  it("points at the installed plugin when the id is taken", async () => {
    fetchMock.mockImplementation(async () =>
      json({ code: "conflict", message: "plugin `web-search` is already installed; upgrade it with PUT /api/plugins/web-search/component" }, 409),
    );
    wrap(<InstallDialog open onClose={() => undefined} onInstalled={() => undefined} />);
    await pickFiles();
    await userEvent.click(screen.getByRole("button", { name: "Install" }));
    expect(await screen.findByRole("link", { name: "Open web-search to upgrade it" })).toHaveAttribute("href", "/plugins/web-search");
  });

  it("asks for both parts before sending anything", async () => {
    wrap(<InstallDialog open onClose={() => undefined} onInstalled={() => undefined} />);
    await userEvent.click(screen.getByRole("button", { name: "Install" }));
    expect(screen.getByText("Choose the component (.wasm) file.")).toBeInTheDocument();
    expect(screen.getByText("Choose plugin.toml or paste its text.")).toBeInTheDocument();
    expect(screen.getByLabelText("Component (.wasm)")).toHaveAttribute("aria-invalid", "true");
    expect(fetchMock).not.toHaveBeenCalled();
  });

  it("shows the hosts a plugin declares before it is installed", async () => {
    wrap(<InstallDialog open onClose={() => undefined} onInstalled={() => undefined} />);
    const text = 'id = "fetcher"\ncapabilities = ["http"]\n\n[http]\nhosts = ["api.example.com", "*.wiki.example:*"]\n';
    await userEvent.upload(screen.getByLabelText("plugin.toml file"), new File([text], "plugin.toml", { type: "text/plain" }));
    expect(await screen.findByText("Asks for: http.")).toBeInTheDocument();
    expect(
      screen.getByText("Sends HTTP requests to: api.example.com, *.wiki.example:* (you approve each host after installing)."),
    ).toBeInTheDocument();
  });

  it("warns before an upgrade whose manifest names another plugin", async () => {
    wrap(<UpgradeDialog plugin={makePlugin({ id: "other-plugin" })} open onClose={() => undefined} onUpgraded={() => undefined} />);
    await userEvent.type(screen.getByLabelText("plugin.toml"), 'id = "web-search"');
    expect(screen.getByText(/This manifest is for “web-search”, not “other-plugin”/)).toBeInTheDocument();
  });
});
