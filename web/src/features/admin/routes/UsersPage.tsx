import { useState } from "react";
import { useTranslation } from "react-i18next";
import { Link } from "react-router";
import { PageHeader } from "@/components/PageHeader";
import { Spinner } from "@/components/Spinner";
import { ErrorMessage } from "@/components/ErrorMessage";
import { EmptyState } from "@/components/EmptyState";
import { Pagination } from "@/components/Pagination";
import { useUser } from "@/lib/auth";
import { can } from "@/lib/roles";
import { formatDate, formatDateTime } from "@/lib/format";
import { useUpdateUser, useUsers } from "../api/users";
import type { Role, UserView } from "../api/users";
import { CreateUserDialog, DisableDialog, EditNameDialog, ResetPasswordDialog } from "../components/UserForms";
import { TableScroll } from "../components/TableScroll";
import { useDebounced } from "../utils/useDebounced";
import { MAX_SEARCH_CHARS } from "@/lib/api";

const PAGE = 25;
const ALL_ROLES: Role[] = ["user", "admin", "technician"];

export default function UsersPage() {
  const { t } = useTranslation("admin");
  const me = useUser();
  const [search, setSearch] = useState("");
  const [role, setRole] = useState<Role | "">("");
  const [status, setStatus] = useState<"" | "active" | "disabled">("");
  const [offset, setOffset] = useState(0);
  const q = useDebounced(search.trim(), 300);
  const users = useUsers({
    q,
    role: role || undefined,
    disabled: status === "" ? undefined : status === "disabled",
    limit: PAGE,
    offset,
  });
  const update = useUpdateUser();
  const [notice, setNotice] = useState("");
  const [creating, setCreating] = useState(false);
  const [disabling, setDisabling] = useState<UserView | null>(null);
  const [resetting, setResetting] = useState<UserView | null>(null);
  const [renaming, setRenaming] = useState<UserView | null>(null);

  // Only technicians may hand out the technician role; the server checks it too.
  const grantable = can.technician(me.role) ? ALL_ROLES : ALL_ROLES.filter((r) => r !== "technician");

  const changeRole = (user: UserView, next: Role) => {
    setNotice("");
    update.mutate(
      { id: user.id, role: next },
      { onSuccess: (u) => setNotice(t("users.notice.role", { username: u.username, role: t(`common:roles.${u.role}`) })) },
    );
  };
  const enable = (user: UserView) => {
    setNotice("");
    update.mutate(
      { id: user.id, disabled: false },
      { onSuccess: (u) => setNotice(t("users.notice.enabled", { username: u.username })) },
    );
  };

  const page = users.data;
  return (
    <div className="mx-auto w-full max-w-6xl p-4 sm:p-6">
      <PageHeader
        title={t("users.title")}
        actions={
          <button type="button" className="btn-primary" onClick={() => setCreating(true)}>
            {t("users.create.open")}
          </button>
        }
      />

      <form role="search" className="mb-4 grid gap-3 sm:grid-cols-[1fr_auto_auto]" onSubmit={(e) => e.preventDefault()}>
        <div>
          <label htmlFor="users-search" className="label">
            {t("users.filters.search")}
          </label>
          <input
            id="users-search"
            type="search"
            maxLength={MAX_SEARCH_CHARS}
            className="input"
            value={search}
            placeholder={t("users.filters.searchPlaceholder")}
            onChange={(e) => {
              setSearch(e.target.value);
              setOffset(0);
            }}
          />
        </div>
        <div>
          <label htmlFor="users-role" className="label">
            {t("users.filters.role")}
          </label>
          <select
            id="users-role"
            className="input"
            value={role}
            onChange={(e) => {
              setRole(e.target.value as Role | "");
              setOffset(0);
            }}
          >
            <option value="">{t("users.filters.anyRole")}</option>
            {ALL_ROLES.map((r) => (
              <option key={r} value={r}>
                {t(`common:roles.${r}`)}
              </option>
            ))}
          </select>
        </div>
        <div>
          <label htmlFor="users-status" className="label">
            {t("users.filters.status")}
          </label>
          <select
            id="users-status"
            className="input"
            value={status}
            onChange={(e) => {
              setStatus(e.target.value as typeof status);
              setOffset(0);
            }}
          >
            <option value="">{t("users.filters.anyStatus")}</option>
            <option value="active">{t("users.filters.active")}</option>
            <option value="disabled">{t("users.filters.disabled")}</option>
          </select>
        </div>
      </form>

      <p role="status" aria-live="polite" className="mb-2 min-h-5 text-sm text-emerald-800 dark:text-emerald-300">
        {notice}
      </p>
      {update.error && <div className="mb-3"><ErrorMessage error={update.error} /></div>}

      {users.isPending ? (
        <Spinner />
      ) : users.isError ? (
        <ErrorMessage error={users.error} onRetry={() => void users.refetch()} />
      ) : page && page.items.length === 0 ? (
        <EmptyState title={t("users.empty")}>{q || role || status ? t("users.emptyFiltered") : null}</EmptyState>
      ) : page ? (
        <>
          <TableScroll label={t("users.tableLabel")}>
            <table className="table min-w-[56rem]">
              <caption className="sr-only">{t("users.caption", { total: page.total })}</caption>
              <thead>
                <tr>
                  <th scope="col">{t("users.fields.username")}</th>
                  <th scope="col">{t("users.fields.displayName")}</th>
                  <th scope="col">{t("users.fields.role")}</th>
                  <th scope="col">{t("users.fields.lastLogin")}</th>
                  <th scope="col">{t("users.fields.created")}</th>
                  <th scope="col">
                    <span className="sr-only">{t("users.fields.actions")}</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {page.items.map((user) => {
                  const roles = grantable.includes(user.role) ? grantable : [user.role, ...grantable];
                  return (
                    <tr key={user.id}>
                      <th scope="row" className="font-medium">
                        <span className="mr-2">{user.username}</span>
                        {user.disabled && (
                          <span className="badge bg-red-100 text-red-900 dark:bg-red-950 dark:text-red-200">
                            {t("users.disabledBadge")}
                          </span>
                        )}
                        {user.id === me.id && <span className="badge ml-1">{t("users.you")}</span>}
                      </th>
                      <td>
                        <button
                          type="button"
                          className="text-left underline decoration-dotted underline-offset-4 hover:decoration-solid"
                          aria-label={t("users.rename.open", { username: user.username })}
                          onClick={() => setRenaming(user)}
                        >
                          {user.display_name || <span className="muted">{t("users.noName")}</span>}
                        </button>
                      </td>
                      <td>
                        <select
                          className="input w-auto py-1"
                          aria-label={t("users.roleFor", { username: user.username })}
                          value={user.role}
                          disabled={update.isPending}
                          onChange={(e) => changeRole(user, e.target.value as Role)}
                        >
                          {roles.map((r) => (
                            <option key={r} value={r}>
                              {t(`common:roles.${r}`)}
                            </option>
                          ))}
                        </select>
                      </td>
                      <td>
                        {user.last_login_at ? (
                          <time dateTime={user.last_login_at}>{formatDateTime(user.last_login_at)}</time>
                        ) : (
                          <span className="muted">{t("users.never")}</span>
                        )}
                      </td>
                      <td>
                        <time dateTime={user.created_at}>{formatDate(user.created_at)}</time>
                      </td>
                      <td>
                        <div className="flex flex-wrap justify-end gap-2">
                          {user.id === me.id ? (
                            // One's own password is changed with the current one.
                            <Link to="/account" className="btn-secondary">
                              {t("users.reset.own")}
                            </Link>
                          ) : (
                            <button
                              type="button"
                              className="btn-secondary"
                              aria-label={t("users.reset.open", { username: user.username })}
                              onClick={() => setResetting(user)}
                            >
                              {t("users.reset.button")}
                            </button>
                          )}
                          {user.disabled ? (
                            <button
                              key="enable"
                              type="button"
                              className="btn-secondary"
                              aria-label={t("users.enable", { username: user.username })}
                              disabled={update.isPending}
                              onClick={() => enable(user)}
                            >
                              {t("users.enableButton")}
                            </button>
                          ) : (
                            <button
                              key="disable"
                              type="button"
                              className="btn-danger"
                              aria-label={t("users.disable.open", { username: user.username })}
                              onClick={() => setDisabling(user)}
                            >
                              {t("users.disable.button")}
                            </button>
                          )}
                        </div>
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </TableScroll>
          <Pagination offset={offset} limit={PAGE} total={page.total} onChange={setOffset} />
        </>
      ) : null}

      <CreateUserDialog
        open={creating}
        onClose={() => setCreating(false)}
        roles={grantable}
        onCreated={(u) => setNotice(t("users.notice.created", { username: u.username }))}
      />
      <DisableDialog
        user={disabling}
        onClose={() => setDisabling(null)}
        onDone={(u) => setNotice(t("users.notice.disabled", { username: u.username }))}
      />
      <ResetPasswordDialog
        user={resetting}
        onClose={() => setResetting(null)}
        onDone={(u) => setNotice(t("users.notice.reset", { username: u.username }))}
      />
      <EditNameDialog
        user={renaming}
        onClose={() => setRenaming(null)}
        onDone={(u) => setNotice(t("users.notice.renamed", { username: u.username }))}
      />
    </div>
  );
}
