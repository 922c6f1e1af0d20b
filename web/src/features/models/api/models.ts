import { useMutation, useQueries, useQuery, useQueryClient } from "@tanstack/react-query";
import { api, unwrap, type Schemas } from "@/lib/api";

export type ModelView = Schemas["ModelView"];
export type NewModel = Schemas["NewModel"];
export type ModelChanges = Schemas["ModelChanges"];
export type ModelAccess = Schemas["ModelAccess"];
export type DownloadProgress = Schemas["DownloadProgress"];
export type RuntimeStatus = Schemas["RuntimeStatus"];
export type ModelList = Schemas["ModelList"];
export type LoadedModelView = Schemas["LoadedModelView"];


export const modelKeys = {
  all: ["models"] as const,
  list: () => ["models", "list"] as const,
  one: (id: string) => ["models", "one", id] as const,
  progress: (id: string) => ["models", "progress", id] as const,
  status: () => ["runtime", "status"] as const,
  users: (q: string) => ["models", "users", q] as const,
};

export function useModels() {
  return useQuery({
    queryKey: modelKeys.list(),
    queryFn: async () => unwrap(await api.GET("/api/models")).items,
  });
}

export function useModel(id: string) {
  return useQuery({
    queryKey: modelKeys.one(id),
    queryFn: async () => unwrap(await api.GET("/api/models/{id}", { params: { path: { id } } })),
  });
}

/** Where a running download stands now; the event stream keeps it current. */
export function useDownloadProgress(id: string, enabled: boolean) {
  return useQuery({
    queryKey: modelKeys.progress(id),
    enabled,
    queryFn: async () => unwrap(await api.GET("/api/models/{id}/progress", { params: { path: { id } } })),
  });
}

export function useRuntimeStatus(options: { enabled?: boolean; refetchInterval?: number } = {}) {
  return useQuery({
    queryKey: modelKeys.status(),
    enabled: options.enabled ?? true,
    refetchInterval: options.refetchInterval,
    queryFn: async () => unwrap(await api.GET("/api/status")),
  });
}

export function useUserSearch(q: string, enabled: boolean) {
  return useQuery({
    queryKey: modelKeys.users(q),
    enabled,
    staleTime: 30_000,
    queryFn: async () =>
      (
        unwrap(
          await api.GET("/api/users", { params: { query: { q: q || undefined, limit: 10 } } }),
        )
      ).items,
  });
}

/** Puts a changed model into the list and detail caches. */
function storeModel(queryClient: ReturnType<typeof useQueryClient>, model: ModelView) {
  queryClient.setQueryData<ModelView>(modelKeys.one(model.id), model);
  queryClient.setQueryData<ModelView[]>(modelKeys.list(), (old) => {
    if (!old) return old;
    const rest = old.filter((m) => m.id !== model.id);
    return [...rest, model].sort((a, b) => a.name.localeCompare(b.name));
  });
}

export function useCreateModel() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (body: NewModel) => unwrap(await api.POST("/api/models", { body: body })),
    onSuccess: (model) => {
      storeModel(queryClient, model);
      void queryClient.invalidateQueries({ queryKey: modelKeys.all });
    },
  });
}

export function useUpdateModel(id: string) {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (body: ModelChanges) =>
      unwrap(await api.PATCH("/api/models/{id}", { params: { path: { id } }, body: body })),
    onSuccess: (model) => {
      storeModel(queryClient, model);
      void queryClient.invalidateQueries({ queryKey: modelKeys.all });
      void queryClient.invalidateQueries({ queryKey: modelKeys.status() });
    },
  });
}

export function useDeleteModel() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (id: string) => {
      unwrap(await api.DELETE("/api/models/{id}", { params: { path: { id } } }));
      return id;
    },
    onSuccess: (id) => {
      removeModel(queryClient, id);
      void queryClient.invalidateQueries({ queryKey: modelKeys.status() });
    },
  });
}

export function removeModel(queryClient: ReturnType<typeof useQueryClient>, id: string) {
  queryClient.setQueryData<ModelView[]>(modelKeys.list(), (old) => old?.filter((m) => m.id !== id));
  queryClient.removeQueries({ queryKey: modelKeys.one(id) });
  queryClient.removeQueries({ queryKey: modelKeys.progress(id) });
}

export function useLoadModel() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (id: string) =>
      unwrap(await api.POST("/api/models/{id}/load", { params: { path: { id } } })),
    // A file the backend cannot load marks the model failed, with the reason.
    onSettled: () =>
      Promise.all([
        queryClient.invalidateQueries({ queryKey: modelKeys.status() }),
        queryClient.invalidateQueries({ queryKey: modelKeys.all }),
      ]),
  });
}

export function useUnloadModel() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (id: string) => {
      unwrap(await api.POST("/api/models/{id}/unload", { params: { path: { id } } }));
      return id;
    },
    onSettled: () => queryClient.invalidateQueries({ queryKey: modelKeys.status() }),
  });
}

export type UserView = Schemas["UserView"];

/** Accounts by id, for showing who a model is granted to. */
export function useUsersById(ids: string[]) {
  return useQueries({
    queries: ids.map((id) => ({
      queryKey: ["models", "user", id] as const,
      staleTime: 60_000,
      retry: false,
      queryFn: async () =>
        unwrap(await api.GET("/api/users/{id}", { params: { path: { id } } })),
    })),
  });
}
