import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { api, unwrap } from "@/lib/api";
import type { Schemas } from "@/lib/api";

export type AuditEntry = Schemas["AuditEntry"];
export type Quotas = Schemas["Quotas"];
export type Settings = Schemas["Settings"];
export type PlatformStats = Schemas["PlatformStats"];

export function useAudit(filters: { actor?: string; action?: string; limit: number; offset: number }) {
  return useQuery({
    queryKey: ["admin", "audit", filters],
    queryFn: async () =>
      unwrap(
        await api.GET("/api/audit", {
          params: {
            query: {
              actor: filters.actor || undefined,
              action: filters.action || undefined,
              limit: filters.limit,
              offset: filters.offset,
            },
          },
        }),
      ),
    placeholderData: keepPreviousData,
  });
}

const settingsKey = ["admin", "settings"] as const;

export function useSettings() {
  return useQuery({
    queryKey: settingsKey,
    queryFn: async () => unwrap(await api.GET("/api/settings")),
  });
}

export function useUpdateSettings() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: async (body: Schemas["UpdateSettingsRequest"]) => unwrap(await api.PATCH("/api/settings", { body })),
    onSuccess: (settings) => {
      client.setQueryData(settingsKey, settings);
      void client.invalidateQueries({ queryKey: ["admin", "audit"] });
    },
  });
}

const quotasKey = ["admin", "quotas"] as const;

export function useQuotas() {
  return useQuery({
    queryKey: quotasKey,
    queryFn: async () => unwrap(await api.GET("/api/quotas")),
  });
}

export function useSaveQuotas() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: async (body: Quotas) => unwrap(await api.PUT("/api/quotas", { body })),
    onSuccess: (quotas) => client.setQueryData(quotasKey, quotas),
  });
}

export function usePlatformStats(range: { from: string; to: string }) {
  return useQuery({
    queryKey: ["admin", "stats", range],
    queryFn: async () => unwrap(await api.GET("/api/stats", { params: { query: range } })),
    placeholderData: keepPreviousData,
  });
}
