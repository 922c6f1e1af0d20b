import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { api, unwrap, type Schemas } from "@/lib/api";
import { modelKeys } from "./models";

export type NodeView = Schemas["NodeView"];
export type NewNode = Schemas["NewNode"];
export type NodeChanges = Schemas["NodeChanges"];

export const nodeKeys = {
  all: ["nodes"] as const,
};

/** The worker nodes and their health (technicians only). */
export function useNodes(options: { enabled?: boolean; refetchInterval?: number } = {}) {
  return useQuery({
    queryKey: nodeKeys.all,
    enabled: options.enabled ?? true,
    refetchInterval: options.refetchInterval,
    queryFn: async () => unwrap(await api.GET("/api/nodes")).items,
  });
}

export function useCreateNode() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (body: NewNode) => unwrap(await api.POST("/api/nodes", { body })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: nodeKeys.all }),
  });
}

export function useUpdateNode() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async ({ name, changes }: { name: string; changes: NodeChanges }) =>
      unwrap(await api.PATCH("/api/nodes/{name}", { params: { path: { name } }, body: changes })),
    onSuccess: () =>
      Promise.all([
        queryClient.invalidateQueries({ queryKey: nodeKeys.all }),
        queryClient.invalidateQueries({ queryKey: modelKeys.status() }),
      ]),
  });
}

export function useDeleteNode() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (name: string) => {
      unwrap(await api.DELETE("/api/nodes/{name}", { params: { path: { name } } }));
      return name;
    },
    onSuccess: () => queryClient.invalidateQueries({ queryKey: nodeKeys.all }),
  });
}
