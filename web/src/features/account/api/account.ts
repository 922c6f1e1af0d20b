import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { api, unwrap, type Schemas } from "@/lib/api";
import { acceptTokens, publishUser } from "@/lib/session";

export type ApiKey = Schemas["ApiKeyView"];
export type CreatedKey = Schemas["CreatedKey"];
export type MyStats = Schemas["MyStats"];
export type Allowance = Schemas["Allowance"];
export type OptionalPlugin = Schemas["OptionalPlugin"];

export const accountKeys = {
  me: ["me"] as const,
  keys: ["me", "keys"] as const,
  quota: ["me", "quota"] as const,
  stats: (from: string, to: string) => ["me", "stats", from, to] as const,
  models: ["me", "models"] as const,
  plugins: ["me", "plugins"] as const,
};

export function useMe() {
  return useQuery({
    queryKey: accountKeys.me,
    queryFn: async () => unwrap(await api.GET("/api/me")),
  });
}

export function useUpdateMe() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (body: Schemas["UpdateMeRequest"]) =>
      unwrap(await api.PATCH("/api/me", { body })),
    onSuccess: (user) => {
      queryClient.setQueryData(accountKeys.me, user);
      publishUser(user);
    },
  });
}

export function useChangePassword() {
  return useMutation({
    mutationFn: async (passwords: { current_password: string; new_password: string }) => {
      const tokens = unwrap(
        await api.POST("/api/me/password", { body: { ...passwords, refresh_cookie: true } }),
      );
      // The server revoked every other session; this tab goes on with the new pair.
      acceptTokens(tokens);
      return tokens;
    },
  });
}

export function useApiKeys() {
  return useQuery({
    queryKey: accountKeys.keys,
    queryFn: async () => unwrap(await api.GET("/api/me/keys")),
  });
}

export function useCreateKey() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (body: Schemas["CreateKeyRequest"]) =>
      unwrap(await api.POST("/api/me/keys", { body })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: accountKeys.keys }),
  });
}

export function useDeleteKey() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (id: string) => {
      unwrap(await api.DELETE("/api/me/keys/{id}", { params: { path: { id } } }));
      return id;
    },
    onSuccess: () => queryClient.invalidateQueries({ queryKey: accountKeys.keys }),
  });
}

/** The models the account may use, for the example snippets. */
export function useUsableModels(enabled: boolean) {
  return useQuery({
    queryKey: accountKeys.models,
    enabled,
    queryFn: async () => unwrap(await api.GET("/api/models")).items,
  });
}

export function useQuota() {
  return useQuery({
    queryKey: accountKeys.quota,
    queryFn: async () => unwrap(await api.GET("/api/me/quota")),
    refetchInterval: 60_000,
  });
}

export function useMyStats(from: string, to: string) {
  return useQuery({
    queryKey: accountKeys.stats(from, to),
    queryFn: async () => unwrap(await api.GET("/api/me/stats", { params: { query: { from, to } } })),
  });
}

/** Optional plugins the account may turn on for its own chats and API requests. */
export function useMyPlugins() {
  return useQuery({
    queryKey: accountKeys.plugins,
    queryFn: async () => unwrap(await api.GET("/api/me/plugins")),
  });
}

export function useChooseMyPlugin() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async ({ id, enabled }: { id: string; enabled: boolean }) =>
      unwrap(await api.PUT("/api/me/plugins/{id}", { params: { path: { id } }, body: { enabled } })),
    onSuccess: (choice) =>
      queryClient.setQueryData<OptionalPlugin[]>(accountKeys.plugins, (old) =>
        old?.map((p) => (p.id === choice.id ? choice : p)),
      ),
    // A plugin a technician turned off meanwhile is gone from the list.
    onError: () => queryClient.invalidateQueries({ queryKey: accountKeys.plugins }),
  });
}
