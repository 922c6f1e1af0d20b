import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { ApiError, api, authorizedFetch, unwrap, type Schemas } from "@/lib/api";

export type Chat = Schemas["Chat"];
export type ChatWithMessages = Schemas["ChatWithMessages"];
export type ModelView = Schemas["ModelView"];
export type CreateChatRequest = Schemas["CreateChatRequest"];
export type UpdateChatRequest = Schemas["UpdateChatRequest"];

export const chatsKey = ["chats"] as const;
export const chatKey = (id: string) => ["chat", id] as const;

export function useChats(q: string) {
  return useQuery({
    queryKey: [...chatsKey, q],
    queryFn: async () =>
      unwrap(await api.GET("/api/chats", { params: { query: { q: q || undefined, limit: 100 } } })),
    placeholderData: keepPreviousData,
  });
}

/** One chat; `poll` while an answer is written by another page or tab. */
export function useChat(id: string | undefined, poll = false) {
  return useQuery({
    queryKey: chatKey(id ?? ""),
    queryFn: async () => unwrap(await api.GET("/api/chats/{id}", { params: { path: { id: id! } } })),
    enabled: Boolean(id),
    // The socket keeps an open chat current; a refetch on focus would only
    // repeat what it said.
    refetchOnWindowFocus: false,
    refetchInterval: poll ? 2000 : false,
  });
}

export function useModels() {
  return useQuery({
    queryKey: ["models", "usable"],
    queryFn: async () => unwrap(await api.GET("/api/models")).items,
    staleTime: 10_000,
  });
}

export function useQuota(enabled: boolean) {
  return useQuery({
    queryKey: ["me", "quota"],
    queryFn: async () => unwrap(await api.GET("/api/me/quota")),
    enabled,
  });
}

export function useCreateChat() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: async (body: CreateChatRequest) => unwrap(await api.POST("/api/chats", { body })),
    onSuccess: (chat) => {
      client.setQueryData<ChatWithMessages>(chatKey(chat.id), { ...chat, messages: [] });
      void client.invalidateQueries({ queryKey: chatsKey });
    },
  });
}

export function useUpdateChat() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: async ({ id, changes }: { id: string; changes: UpdateChatRequest }) =>
      unwrap(await api.PATCH("/api/chats/{id}", { params: { path: { id } }, body: changes })),
    onSuccess: (chat) => {
      client.setQueryData<ChatWithMessages>(chatKey(chat.id), (old) => (old ? { ...old, ...chat } : old));
      void client.invalidateQueries({ queryKey: chatsKey });
    },
  });
}

export function useDeleteChat() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: async (id: string) => {
      unwrap(await api.DELETE("/api/chats/{id}", { params: { path: { id } } }));
      return id;
    },
    onSuccess: (id) => {
      client.removeQueries({ queryKey: chatKey(id) });
      void client.invalidateQueries({ queryKey: chatsKey });
    },
  });
}

export type ExportFormat = Schemas["ExportFormat"];

/** Downloads a chat as a file named by the server. */
export async function exportChat(id: string, format: ExportFormat): Promise<void> {
  const response = await authorizedFetch(`/api/chats/${encodeURIComponent(id)}/export?format=${format}`);
  if (!response.ok) {
    const body = (await response.json().catch(() => null)) as Partial<Schemas["ErrorBody"]> | null;
    throw new ApiError(response.status, body);
  }
  const blob = await response.blob();
  const disposition = response.headers.get("Content-Disposition") ?? "";
  const named = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
  const fallback = `chat.${format === "markdown" ? "md" : "json"}`;
  const name = named ? decodeURIComponent(named[1]) : fallback;
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
