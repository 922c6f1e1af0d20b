import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { api, unwrap, type Schemas } from "@/lib/api";
import type { paths } from "@/lib/api-schema";

export type Ticket = Schemas["Ticket"];
export type TicketWithComments = Schemas["TicketWithComments"];
export type TicketComment = Schemas["Comment"];
export type TicketStatus = Schemas["TicketStatus"];
export type TicketCategory = Schemas["TicketCategory"];
export type TicketPriority = Schemas["TicketPriority"];
export type TicketQuery = NonNullable<paths["/api/tickets"]["get"]["parameters"]["query"]>;
export type TicketChanges = Schemas["UpdateTicketRequest"];
export type NewTicket = Schemas["CreateTicketRequest"];

// The enums in the order a person expects them; `satisfies` keeps them in
// step with the schema.
export const statuses = ["open", "in_progress", "resolved", "closed"] as const satisfies readonly TicketStatus[];
export const categories = [
  "question",
  "bug",
  "account",
  "model",
  "feature_request",
  "other",
] as const satisfies readonly TicketCategory[];
export const priorities = ["low", "normal", "high", "urgent"] as const satisfies readonly TicketPriority[];

export const ticketKeys = {
  all: ["tickets"] as const,
  list: (query: TicketQuery) => ["tickets", "list", query] as const,
  one: (id: string) => ["tickets", "one", id] as const,
  staff: ["tickets", "staff"] as const,
};

export function useTickets(query: TicketQuery) {
  return useQuery({
    queryKey: ticketKeys.list(query),
    queryFn: async () => unwrap(await api.GET("/api/tickets", { params: { query } })),
    placeholderData: keepPreviousData,
    refetchInterval: 30_000,
  });
}

export function useTicket(id: string) {
  return useQuery({
    queryKey: ticketKeys.one(id),
    queryFn: async () =>
      unwrap(await api.GET("/api/tickets/{id}", { params: { path: { id } } })),
    // New replies appear without a reload.
    refetchInterval: 10_000,
  });
}

export function useCreateTicket() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (body: NewTicket) => unwrap(await api.POST("/api/tickets", { body })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: ticketKeys.all }),
  });
}

export function useUpdateTicket(id: string) {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (body: TicketChanges) =>
      unwrap(await api.PATCH("/api/tickets/{id}", { params: { path: { id } }, body })),
    onSuccess: (ticket) => {
      queryClient.setQueryData<TicketWithComments>(ticketKeys.one(id), (old) =>
        old ? { ...old, ...ticket } : old,
      );
      return queryClient.invalidateQueries({ queryKey: ticketKeys.all });
    },
  });
}

export function useAddComment(id: string) {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (body: Schemas["NewCommentRequest"]) =>
      unwrap(await api.POST("/api/tickets/{id}/comments", { params: { path: { id } }, body })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: ticketKeys.all }),
  });
}

/** Admins and technicians, who can be assigned a ticket. */
export function useStaffMembers(enabled: boolean) {
  return useQuery({
    queryKey: ticketKeys.staff,
    enabled,
    staleTime: 5 * 60_000,
    queryFn: async () => {
      const [admins, technicians] = await Promise.all(
        (["admin", "technician"] as const).map(async (role) =>
          unwrap(
            await api.GET("/api/users", { params: { query: { role, disabled: false, limit: 200 } } }),
          ),
        ),
      );
      return [...admins.items, ...technicians.items].sort((a, b) =>
        a.username.localeCompare(b.username),
      );
    },
  });
}
