import { useMutation, useQuery, useQueryClient, type QueryClient } from "@tanstack/react-query";
import { api, unwrap, type Schemas } from "@/lib/api";
import type { paths } from "@/lib/api-schema";

export type PluginView = Schemas["PluginView"];
export type PluginChanges = Schemas["PluginChanges"];
export type HookStats = Schemas["HookStats"];

/** What a technician picked to install or upgrade: the manifest text and the component file. */
export type PluginUpload = { manifest: string; component: Blob };

export const pluginKeys = {
  all: ["plugins"] as const,
  list: () => ["plugins", "list"] as const,
  one: (id: string) => ["plugins", "one", id] as const,
  modelNames: () => ["plugins", "model-names"] as const,
};

export function usePlugins() {
  return useQuery({
    queryKey: pluginKeys.list(),
    queryFn: async () => unwrap(await api.GET("/api/plugins")),
    // Calls, errors and the host's own switch-offs change while the page is open.
    refetchInterval: 15_000,
  });
}

export function usePlugin(id: string) {
  return useQuery({
    queryKey: pluginKeys.one(id),
    queryFn: async () => unwrap(await api.GET("/api/plugins/{id}", { params: { path: { id } } })),
    refetchInterval: 15_000,
  });
}

/** The names of the models a plugin can be limited to. */
export function useModelNames() {
  return useQuery({
    queryKey: pluginKeys.modelNames(),
    staleTime: 60_000,
    queryFn: async () =>
      unwrap(await api.GET("/api/models"))
        .items.map((m) => m.name)
        .sort((a, b) => a.localeCompare(b)),
  });
}

/** Puts a changed plugin into the list and detail caches. */
export function storePlugin(queryClient: QueryClient, plugin: PluginView) {
  queryClient.setQueryData<PluginView>(pluginKeys.one(plugin.id), plugin);
  queryClient.setQueryData<PluginView[]>(pluginKeys.list(), (old) => {
    if (!old) return old;
    const rest = old.filter((p) => p.id !== plugin.id);
    return [...rest, plugin].sort((a, b) => a.id.localeCompare(b.id));
  });
}

/**
 * The multipart body of an install or an upgrade. The generated type knows
 * the parts only as strings; the browser sends the form as it is, with
 * its boundary.
 */
function uploadBody(upload: PluginUpload): Schemas["PluginUpload"] {
  const form = new FormData();
  // As a file part, so the text arrives byte for byte (a plain text part
  // would have its line ends turned into CRLF).
  form.append("manifest", new Blob([upload.manifest], { type: "text/plain;charset=utf-8" }), "plugin.toml");
  const name = upload.component instanceof File && upload.component.name ? upload.component.name : "plugin.wasm";
  form.append("component", upload.component, name);
  return form as unknown as Schemas["PluginUpload"];
}

export function useInstallPlugin() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (upload: PluginUpload) =>
      unwrap(await api.POST("/api/plugins", { body: uploadBody(upload) })),
    onSuccess: (plugin) => storePlugin(queryClient, plugin),
  });
}

export function useUpgradePlugin(id: string) {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (upload: PluginUpload) =>
      unwrap(
        await api.PUT("/api/plugins/{id}/component", {
          params: { path: { id } },
          body: uploadBody(upload),
        }),
      ),
    onSuccess: (plugin) => storePlugin(queryClient, plugin),
  });
}

export function useUpdatePlugin(id: string) {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (changes: PluginChanges) =>
      unwrap(await api.PATCH("/api/plugins/{id}", { params: { path: { id } }, body: changes })),
    onSuccess: (plugin) => storePlugin(queryClient, plugin),
  });
}

/** The body type the schema gives a configuration (`{"type": "object"}` without properties). */
type ConfigBody = paths["/api/plugins/{id}/config"]["put"]["requestBody"]["content"]["application/json"];

export function useConfigurePlugin(id: string) {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (config: Record<string, unknown>) =>
      unwrap(
        await api.PUT("/api/plugins/{id}/config", {
          params: { path: { id } },
          // Any JSON object: the plugin's own schema, checked by the server.
          body: config as ConfigBody,
        }),
      ),
    onSuccess: (plugin) => storePlugin(queryClient, plugin),
  });
}

export function useDeletePlugin() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (id: string) => {
      unwrap(await api.DELETE("/api/plugins/{id}", { params: { path: { id } } }));
      return id;
    },
    onSuccess: (id) => {
      queryClient.setQueryData<PluginView[]>(pluginKeys.list(), (old) => old?.filter((p) => p.id !== id));
      queryClient.removeQueries({ queryKey: pluginKeys.one(id) });
    },
  });
}
