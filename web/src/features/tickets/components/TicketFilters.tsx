import { useEffect, useId, useState } from "react";
import { useTranslation } from "react-i18next";
import { categories, statuses, useStaffMembers, type TicketQuery } from "../api/tickets";
import { MAX_SEARCH_CHARS } from "@/lib/api";

export type Filters = Pick<TicketQuery, "status" | "category" | "assignee" | "q">;

/** Status and search for everyone; category and assignee for staff. */
export function TicketFilters({
  filters,
  staff,
  onChange,
}: {
  filters: Filters;
  staff: boolean;
  onChange: (next: Filters) => void;
}) {
  const { t } = useTranslation("tickets");
  const id = useId();
  const staffMembers = useStaffMembers(staff);
  const [text, setText] = useState(filters.q ?? "");

  // Searching waits for a pause in typing rather than asking on every key.
  useEffect(() => {
    const trimmed = text.trim();
    if (trimmed === (filters.q ?? "")) return;
    const timer = setTimeout(() => onChange({ ...filters, q: trimmed || undefined }), 300);
    return () => clearTimeout(timer);
  }, [text, filters, onChange]);

  const set = (patch: Filters) => onChange({ ...filters, ...patch });
  const active = Boolean(filters.status || filters.category || filters.assignee || filters.q);

  return (
    <form
      role="search"
      aria-label={t("filters.label")}
      className="mb-4 grid grid-cols-1 gap-3 sm:grid-cols-2 lg:flex lg:flex-wrap lg:items-end"
      onSubmit={(event) => {
        event.preventDefault();
        set({ q: text.trim() || undefined });
      }}
    >
      <div className="lg:w-64">
        <label htmlFor={`${id}-q`} className="label">
          {t("filters.search")}
        </label>
        <input
          id={`${id}-q`}
          type="search"
          maxLength={MAX_SEARCH_CHARS}
          className="input"
          value={text}
          placeholder={t("filters.searchPlaceholder")}
          onChange={(event) => setText(event.target.value)}
        />
      </div>
      <div className="lg:w-44">
        <label htmlFor={`${id}-status`} className="label">
          {t("filters.status")}
        </label>
        <select
          id={`${id}-status`}
          className="input"
          value={filters.status ?? ""}
          onChange={(event) => set({ status: (event.target.value || undefined) as Filters["status"] })}
        >
          <option value="">{t("filters.anyStatus")}</option>
          {statuses.map((s) => (
            <option key={s} value={s}>
              {t(`status.${s}`)}
            </option>
          ))}
        </select>
      </div>
      {staff && (
        <>
          <div className="lg:w-44">
            <label htmlFor={`${id}-category`} className="label">
              {t("filters.category")}
            </label>
            <select
              id={`${id}-category`}
              className="input"
              value={filters.category ?? ""}
              onChange={(event) =>
                set({ category: (event.target.value || undefined) as Filters["category"] })
              }
            >
              <option value="">{t("filters.anyCategory")}</option>
              {categories.map((c) => (
                <option key={c} value={c}>
                  {t(`category.${c}`)}
                </option>
              ))}
            </select>
          </div>
          <div className="lg:w-48">
            <label htmlFor={`${id}-assignee`} className="label">
              {t("filters.assignee")}
            </label>
            <select
              id={`${id}-assignee`}
              className="input"
              value={filters.assignee ?? ""}
              onChange={(event) => set({ assignee: event.target.value || undefined })}
            >
              <option value="">{t("filters.anyone")}</option>
              <option value="me">{t("filters.me")}</option>
              <option value="none">{t("filters.unassigned")}</option>
              {staffMembers.data?.map((u) => (
                <option key={u.id} value={u.id}>
                  {u.display_name && u.display_name !== u.username ? `${u.display_name} (${u.username})` : u.username}
                </option>
              ))}
            </select>
          </div>
        </>
      )}
      {active && (
        <div>
          <button
            type="button"
            className="btn-ghost"
            onClick={() => {
              setText("");
              onChange({});
            }}
          >
            {t("filters.clear")}
          </button>
        </div>
      )}
    </form>
  );
}
