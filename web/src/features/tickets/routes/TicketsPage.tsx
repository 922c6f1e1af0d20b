import { useCallback, useMemo } from "react";
import { useTranslation } from "react-i18next";
import { Link, useSearchParams } from "react-router";
import { useUser } from "@/lib/auth";
import { can } from "@/lib/roles";
import { EmptyState } from "@/components/EmptyState";
import { ErrorMessage } from "@/components/ErrorMessage";
import { PageHeader } from "@/components/PageHeader";
import { Pagination } from "@/components/Pagination";
import { Spinner } from "@/components/Spinner";
import { categories, statuses, useTickets, type TicketQuery } from "../api/tickets";
import { TicketFilters, type Filters } from "../components/TicketFilters";
import { TicketTable } from "../components/TicketTable";
import { isUnread, seenTickets } from "../utils/unread";

const PAGE_SIZE = 25;

function oneOf<T extends string>(value: string | null, allowed: readonly T[]): T | undefined {
  return allowed.includes(value as T) ? (value as T) : undefined;
}

/** A user's own tickets, or for staff the queue of everyone's. */
export default function TicketsPage() {
  const { t } = useTranslation("tickets");
  const user = useUser();
  const staff = can.staff(user.role);
  const [params, setParams] = useSearchParams();

  const filters: Filters = useMemo(
    () => ({
      status: oneOf(params.get("status"), statuses),
      category: staff ? oneOf(params.get("category"), categories) : undefined,
      assignee: staff ? params.get("assignee") || undefined : undefined,
      q: params.get("q") || undefined,
    }),
    [params, staff],
  );
  const offset = Math.max(0, Number(params.get("offset")) || 0);
  const query: TicketQuery = { ...filters, limit: PAGE_SIZE, offset };
  const tickets = useTickets(query);

  const setFilters = useCallback(
    (next: Filters) => {
      const search = new URLSearchParams();
      for (const [key, value] of Object.entries(next)) if (value) search.set(key, String(value));
      setParams(search, { replace: true });
    },
    [setParams],
  );
  const setOffset = (next: number) => {
    const search = new URLSearchParams(params);
    if (next) search.set("offset", String(next));
    else search.delete("offset");
    setParams(search);
  };

  const seen = seenTickets(user.id);
  const filtered = Boolean(filters.status || filters.category || filters.assignee || filters.q);

  return (
    <div className="mx-auto max-w-6xl p-4 sm:p-6">
      <PageHeader
        title={t(staff ? "list.titleStaff" : "list.title")}
        actions={
          <Link to="/tickets/new" className="btn-primary">
            {t("list.new")}
          </Link>
        }
      />
      <TicketFilters filters={filters} staff={staff} onChange={setFilters} />
      {tickets.isPending ? (
        <Spinner />
      ) : tickets.isError ? (
        <ErrorMessage error={tickets.error} onRetry={() => void tickets.refetch()} />
      ) : tickets.data.items.length === 0 ? (
        <EmptyState title={t(filtered ? "list.noMatches" : "list.empty")}>
          {!filtered && !staff && t("list.emptyHint")}
        </EmptyState>
      ) : (
        <>
          <p className="sr-only" role="status">
            {t("list.count", { count: tickets.data.total })}
          </p>
          <div className="card p-0 sm:p-2">
            <TicketTable
              tickets={tickets.data.items}
              staff={staff}
              unread={(ticket) => isUnread(user.id, ticket, seen)}
            />
          </div>
          <Pagination
            offset={offset}
            limit={PAGE_SIZE}
            total={tickets.data.total}
            onChange={setOffset}
          />
        </>
      )}
    </div>
  );
}
