// Plugins as the server describes them, for the feature's tests.

import type { ReactElement } from "react";
import { act, render } from "@testing-library/react";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { pluginKeys, usePlugin, type PluginView } from "../api/plugins";

/**
 * The schema types `config` and `config_schema` as objects without
 * properties; tests fill them with what a plugin would have.
 */
type PluginFields = Omit<Partial<PluginView>, "config" | "config_schema"> & {
  config?: Record<string, unknown>;
  config_schema?: Record<string, unknown>;
};

export function makePlugin(overrides: PluginFields = {}): PluginView {
  const plugin = {
    id: "web-search",
    name: "Web search",
    version: "0.2.0",
    api: "0.1.0",
    description: "Adds search results to prompts",
    priority: 100,
    failure: "skip",
    hooks: ["before-prompt", "after-answer"],
    routes: [],
    capabilities: ["log", "kv", "config"],
    approved: ["log"],
    http_hosts: [],
    approved_hosts: [],
    private_network: false,
    enabled: false,
    optional: false,
    models: null,
    active: false,
    disabled_reason: null,
    config: {},
    secrets: [],
    config_schema: { type: "object", properties: {}, required: [] },
    limits: { memory_mb: 32, time_ms: 100, kv_kb: 1024 },
    consecutive_failures: 0,
    last_error: null,
    stats: [],
    component_sha256: "ab".repeat(32),
    installed_at: "2026-01-01T10:00:00.000Z",
    updated_at: "2026-01-01T10:00:00.000Z",
    ...overrides,
  };
  return plugin as PluginView;
}

/** A JSON answer the way the server sends one. */
export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

/**
 * Renders `view` for a plugin the way the pages do: from the query cache,
 * so what a save answers is what the component shows next.
 */
export function renderWithPlugin(plugin: PluginView, view: (plugin: PluginView) => ReactElement) {
  const client = new QueryClient({
    defaultOptions: { queries: { staleTime: Infinity, retry: false }, mutations: { retry: false } },
  });
  client.setQueryData(pluginKeys.one(plugin.id), plugin);
  function FromCache() {
    const current = usePlugin(plugin.id);
    return current.data ? view(current.data) : null;
  }
  render(
    <QueryClientProvider client={client}>
      <FromCache />
    </QueryClientProvider>,
  );
  return {
    client,
    /** Someone else changed the plugin: the cache gets the new version. */
    replace: (next: PluginView) =>
      act(async () => {
        client.setQueryData(pluginKeys.one(plugin.id), next);
        // The query cache tells its observers on the next tick.
        await new Promise((resolve) => setTimeout(resolve, 0));
      }),
  };
}
