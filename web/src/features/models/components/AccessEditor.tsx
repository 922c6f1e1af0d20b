import { useEffect, useId, useState } from "react";
import { useTranslation } from "react-i18next";
import { useUserSearch, useUsersById, type ModelAccess, type UserView } from "../api/models";
import { MAX_SEARCH_CHARS } from "@/lib/api";

type Role = NonNullable<ModelAccess["roles"]>[number];
const grantableRoles: Role[] = ["user", "admin"];

/** "Ada Lovelace (ada)" */
const personName = (u: UserView) =>
  u.display_name && u.display_name !== u.username ? `${u.display_name} (${u.username})` : u.username;

/** Names for the picked accounts, looked up once each. */
export function usePeopleNames(ids: string[]) {
  const { t } = useTranslation("models");
  const results = useUsersById(ids);
  return ids.map((id, i) => {
    const user = results[i]?.data;
    return { id, name: user ? personName(user) : t("detail.unknownUser", { id }) };
  });
}

/**
 * Who may use a model: everyone, or some roles and some people picked by
 * searching the accounts.
 */
export function AccessEditor({ value, onChange }: { value: ModelAccess; onChange: (next: ModelAccess) => void }) {
  const { t } = useTranslation("models");
  const id = useId();
  const [query, setQuery] = useState("");
  const [debounced, setDebounced] = useState("");
  useEffect(() => {
    const timer = setTimeout(() => setDebounced(query.trim()), 250);
    return () => clearTimeout(timer);
  }, [query]);
  const users = value.users ?? [];
  const roles = value.roles ?? [];
  const search = useUserSearch(debounced, !value.everyone && debounced.length > 0);
  const picked = usePeopleNames(users);
  const matches = (search.data ?? []).filter((u) => !users.includes(u.id) && u.role !== "technician");

  return (
    <fieldset className="mb-3 rounded-md border border-slate-200 p-3 dark:border-slate-700">
      <legend className="px-1 text-sm font-medium">{t("access.legend")}</legend>
      <p className="mb-2 text-xs muted">{t("access.technicians")}</p>
      <label className="mb-2 flex items-center gap-2 text-sm">
        <input
          type="checkbox"
          checked={value.everyone}
          onChange={(e) => onChange({ ...value, everyone: e.target.checked })}
        />
        {t("access.everyone")}
      </label>
      {!value.everyone && (
        <div className="flex flex-col gap-3">
          <fieldset>
            <legend className="label">{t("access.roles")}</legend>
            <div className="flex flex-wrap gap-4">
              {grantableRoles.map((role) => (
                <label key={role} className="flex items-center gap-2 text-sm">
                  <input
                    type="checkbox"
                    checked={roles.includes(role)}
                    onChange={(e) =>
                      onChange({
                        ...value,
                        roles: e.target.checked ? [...roles, role] : roles.filter((r) => r !== role),
                      })
                    }
                  />
                  {t(`common:roles.${role}`)}
                </label>
              ))}
            </div>
          </fieldset>
          <div>
            <p className="label" id={`${id}-chosen`}>
              {t("access.chosen")}
            </p>
            {picked.length === 0 ? (
              <p className="text-sm muted">{t("access.noUsers")}</p>
            ) : (
              <ul aria-labelledby={`${id}-chosen`} className="flex flex-wrap gap-2">
                {picked.map((p) => (
                  <li key={p.id} className="badge gap-1">
                    {p.name}
                    <button
                      type="button"
                      className="rounded px-1 hover:bg-slate-200 dark:hover:bg-slate-700"
                      aria-label={t("access.removeUser", { name: p.name })}
                      onClick={() => onChange({ ...value, users: users.filter((u) => u !== p.id) })}
                    >
                      <span aria-hidden="true">✕</span>
                    </button>
                  </li>
                ))}
              </ul>
            )}
          </div>
          <div>
            <label htmlFor={`${id}-search`} className="label">
              {t("access.searchUsers")}
            </label>
            <input
              id={`${id}-search`}
              type="search"
              maxLength={MAX_SEARCH_CHARS}
              className="input"
              value={query}
              autoComplete="off"
              aria-describedby={`${id}-search-hint`}
              onChange={(e) => setQuery(e.target.value)}
              onKeyDown={(e) => {
                // Enter here searches; it must not submit the model form.
                if (e.key === "Enter") e.preventDefault();
              }}
            />
            <p id={`${id}-search-hint`} className="mt-1 text-xs muted">
              {t("access.searchHint")}
            </p>
            {debounced && (
              <div aria-live="polite" className="mt-2">
                {search.isFetching && !search.data ? null : matches.length === 0 ? (
                  <p className="text-sm muted">{t("access.noMatches")}</p>
                ) : (
                  <ul className="flex flex-col gap-1">
                    {matches.map((u) => (
                      <li key={u.id} className="flex items-center justify-between gap-2 text-sm">
                        <span>
                          {personName(u)} <span className="muted">· {t(`common:roles.${u.role}`)}</span>
                        </span>
                        <button
                          type="button"
                          className="btn-secondary"
                          aria-label={t("access.addUser", { name: personName(u) })}
                          onClick={() => onChange({ ...value, users: [...users, u.id] })}
                        >
                          {t("actions.add")}
                        </button>
                      </li>
                    ))}
                  </ul>
                )}
              </div>
            )}
          </div>
        </div>
      )}
    </fieldset>
  );
}
