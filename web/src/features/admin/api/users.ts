import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { api, unwrap } from "@/lib/api";
import type { Schemas } from "@/lib/api";

export type UserView = Schemas["UserView"];
export type Role = Schemas["Role"];

export type UserFilters = {
  q?: string;
  role?: Role;
  disabled?: boolean;
  limit: number;
  offset: number;
};

const usersKey = ["admin", "users"] as const;

export function useUsers(filters: UserFilters) {
  return useQuery({
    queryKey: [...usersKey, filters],
    queryFn: async () =>
      unwrap(
        await api.GET("/api/users", {
          params: {
            query: {
              q: filters.q || undefined,
              role: filters.role,
              disabled: filters.disabled,
              limit: filters.limit,
              offset: filters.offset,
            },
          },
        }),
      ),
    placeholderData: keepPreviousData,
  });
}

/** Accounts whose username or display name matches `q`, for pickers. */
export function useUserSearch(q: string) {
  return useQuery({
    queryKey: [...usersKey, "search", q],
    queryFn: async () =>
      unwrap(await api.GET("/api/users", { params: { query: { q: q || undefined, limit: 10, offset: 0 } } })),
    placeholderData: keepPreviousData,
  });
}

/** One account by id (for names in the quota overrides). */
export function useUser(id: string) {
  return useQuery({
    queryKey: [...usersKey, "one", id],
    queryFn: async () => unwrap(await api.GET("/api/users/{id}", { params: { path: { id } } })),
    retry: false,
    staleTime: 60_000,
  });
}

export function useCreateUser() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: async (body: Schemas["CreateUserRequest"]) => unwrap(await api.POST("/api/users", { body })),
    onSuccess: () => client.invalidateQueries({ queryKey: usersKey }),
  });
}

export function useUpdateUser() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: async ({ id, ...body }: { id: string } & Schemas["UpdateUserRequest"]) =>
      unwrap(await api.PATCH("/api/users/{id}", { params: { path: { id } }, body })),
    onSuccess: () => client.invalidateQueries({ queryKey: usersKey }),
  });
}

export function useResetPassword() {
  return useMutation({
    mutationFn: async ({ id, new_password }: { id: string; new_password: string }) =>
      unwrap(await api.POST("/api/users/{id}/password", { params: { path: { id } }, body: { new_password } })),
  });
}
