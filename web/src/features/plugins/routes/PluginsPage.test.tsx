import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen, within } from "@testing-library/react";
import { MemoryRouter } from "react-router";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import PluginsPage from "./PluginsPage";
import { json, makePlugin } from "../utils/fixtures";

const fetchMock = vi.hoisted(() => {
  const mock = vi.fn<typeof fetch>();
  globalThis.fetch = mock;
  return mock;
});

function show() {
  render(
    <MemoryRouter>
      <QueryClientProvider client={new QueryClient({ defaultOptions: { queries: { retry: false } } })}>
        <PluginsPage />
      </QueryClientProvider>
    </MemoryRouter>,
  );
}

describe("the plugins page", () => {
  afterEach(() => fetchMock.mockReset());

  it("shows each plugin's state, hooks, approvals and calls", async () => {
    fetchMock.mockImplementation(async () =>
      json([
        makePlugin({
          id: "pii-redact",
          name: "PII redaction",
          version: "0.1.0",
          hooks: ["before-prompt", "stream"],
          capabilities: ["config"],
          approved: ["config"],
          enabled: true,
          active: true,
          stats: [
            { hook: "before-prompt", calls: 1234, errors: 0, p50_us: 180, p99_us: 2400 },
            { hook: "on-chunk", calls: 98765, errors: 3, p50_us: 40, p99_us: 1_500_000 },
          ],
        }),
        makePlugin({
          id: "web-search",
          name: "Web search",
          capabilities: ["log", "kv"],
          approved: ["log"],
          enabled: true,
          optional: true,
          disabled_reason: "failed 5 times in a row: out of time after 100 ms",
        }),
      ]),
    );
    show();

    const pii = await screen.findByRole("listitem", { name: /PII redaction/ });
    expect(within(pii).getByText("Active")).toBeInTheDocument();
    expect(within(pii).getByText("pii-redact")).toBeInTheDocument();
    expect(within(pii).getByText("stream")).toBeInTheDocument();
    expect(within(pii).getByText("1 of 1 approved")).toBeInTheDocument();
    const table = within(pii).getByRole("table", { name: "Calls per hook of PII redaction" });
    const rows = within(table).getAllByRole("row");
    expect(rows[1]).toHaveTextContent(/before-prompt\s*1,234\s*0\s*180 µs\s*2.4 ms/);
    expect(rows[2]).toHaveTextContent(/on-chunk\s*98,765\s*3\s*40 µs\s*1.5 s/);

    const search = screen.getByRole("listitem", { name: /Web search/ });
    expect(within(search).getByText("Turned off by Corral")).toBeInTheDocument();
    expect(within(search).getByText("Reason: failed 5 times in a row: out of time after 100 ms")).toBeInTheDocument();
    expect(within(search).getByText("Optional")).toBeInTheDocument();
    expect(within(search).getByText("1 of 2 approved")).toBeInTheDocument();
    expect(within(search).getByText("(not approved)").parentElement).toHaveTextContent("kv");
    expect(within(search).getByText("Not called since Corral started.")).toBeInTheDocument();
    expect(screen.getByText("Corral turned off 1 plugin after repeated failures: Web search.")).toBeInTheDocument();
  });

  it("shows the hosts a plugin may send HTTP requests to, and whether it may reach the private network", async () => {
    fetchMock.mockImplementation(async () =>
      json([
        makePlugin({
          id: "fetcher",
          name: "Fetcher",
          capabilities: ["http"],
          approved: ["http"],
          http_hosts: ["api.example.com", "*.wiki.example:*"],
          approved_hosts: ["api.example.com"],
          private_network: true,
        }),
        makePlugin({ id: "quiet", name: "Quiet" }),
      ]),
    );
    show();

    const fetcher = await screen.findByRole("listitem", { name: /Fetcher/ });
    const hosts = within(fetcher).getByRole("list", { name: "Hosts for outgoing HTTP" });
    const [api, wiki] = within(hosts).getAllByRole("listitem");
    expect(api).toHaveTextContent("api.example.com(approved)");
    expect(wiki).toHaveTextContent("*.wiki.example:*(not approved)");
    expect(within(fetcher).getByText("May reach private network addresses")).toBeInTheDocument();

    const quiet = screen.getByRole("listitem", { name: /Quiet/ });
    expect(within(quiet).queryByText("HTTP hosts")).not.toBeInTheDocument();
    expect(within(quiet).queryByText("May reach private network addresses")).not.toBeInTheDocument();
  });

  it("invites an install when there is none", async () => {
    fetchMock.mockImplementation(async () => json([]));
    show();
    expect(await screen.findByText("No plugin is installed.")).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Install plugin" })).toBeInTheDocument();
  });
});
