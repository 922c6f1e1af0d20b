import { useId } from "react";
import type { ReactNode } from "react";
import { useTranslation } from "react-i18next";
import { Link } from "react-router";
import { useUser } from "@/lib/auth";
import { can } from "@/lib/roles";
import { ErrorMessage } from "@/components/ErrorMessage";
import { formatDateTime } from "@/lib/format";
import {
  categories,
  priorities,
  statuses,
  useStaffMembers,
  useUpdateTicket,
  type TicketWithComments,
} from "../api/tickets";
import { PriorityText, StatusBadge } from "./TicketBadges";

function Row({ term, children }: { term: string; children: ReactNode }) {
  return (
    <div className="flex flex-col gap-1">
      <dt className="text-xs font-medium uppercase tracking-wide muted">{term}</dt>
      <dd className="text-sm">{children}</dd>
    </div>
  );
}

/**
 * The ticket's facts. Staff change status, priority, category and assignee
 * here; the owner may reopen or close a resolved ticket.
 */
export function TicketDetails({ ticket, routeId }: { ticket: TicketWithComments; routeId: string }) {
  const { t } = useTranslation("tickets");
  const id = useId();
  const user = useUser();
  const staff = can.staff(user.role);
  const owner = ticket.owner_id === user.id;
  const update = useUpdateTicket(routeId);
  const staffMembers = useStaffMembers(staff);
  const closed = ticket.status === "closed";

  const assignees = [...(staffMembers.data ?? [])];
  if (ticket.assignee_id && !assignees.some((u) => u.id === ticket.assignee_id)) {
    assignees.push({
      id: ticket.assignee_id,
      username: ticket.assignee_username ?? ticket.assignee_id,
      display_name: "",
      role: "admin",
      disabled: false,
      created_at: "",
    });
  }

  const select = (
    label: string,
    field: "status" | "priority" | "category",
    options: readonly string[],
    labels: string,
  ) => (
    <div>
      <label htmlFor={`${id}-${field}`} className="label">
        {label}
      </label>
      <select
        id={`${id}-${field}`}
        className="input"
        value={ticket[field]}
        disabled={update.isPending || (closed && field === "status")}
        onChange={(event) => update.mutate({ [field]: event.target.value })}
      >
        {options.map((o) => (
          <option key={o} value={o}>
            {t(`${labels}.${o}`)}
          </option>
        ))}
      </select>
    </div>
  );

  return (
    <section aria-labelledby={`${id}-heading`} className="card">
      <h2 id={`${id}-heading`} className="mb-3 text-base font-semibold">
        {t("ticket.details")}
      </h2>
      {staff ? (
        <div className="mb-4 flex flex-col gap-3">
          {select(t("ticket.status"), "status", statuses, "status")}
          {select(t("ticket.priority"), "priority", priorities, "priority")}
          {select(t("ticket.category"), "category", categories, "category")}
          <div>
            <label htmlFor={`${id}-assignee`} className="label">
              {t("ticket.assignee")}
            </label>
            <select
              id={`${id}-assignee`}
              className="input"
              value={ticket.assignee_id ?? ""}
              disabled={update.isPending}
              onChange={(event) => update.mutate({ assignee_id: event.target.value })}
            >
              <option value="">{t("ticket.unassigned")}</option>
              {assignees.map((u) => (
                <option key={u.id} value={u.id}>
                  {u.display_name && u.display_name !== u.username ? `${u.display_name} (${u.username})` : u.username}
                </option>
              ))}
            </select>
            {ticket.assignee_id !== user.id && (
              <button
                type="button"
                className="btn-secondary mt-2 w-full"
                disabled={update.isPending}
                onClick={() => update.mutate({ assignee_id: user.id })}
              >
                {t("ticket.assignToMe")}
              </button>
            )}
          </div>
        </div>
      ) : null}
      <dl className="flex flex-col gap-3">
        {!staff && (
          <>
            <Row term={t("ticket.status")}>
              <StatusBadge status={ticket.status} />
            </Row>
            <Row term={t("ticket.priority")}>
              <PriorityText priority={ticket.priority} />
            </Row>
            <Row term={t("ticket.category")}>{t(`category.${ticket.category}`)}</Row>
            <Row term={t("ticket.assignee")}>
              {ticket.assignee_username ?? <span className="muted">{t("ticket.unassigned")}</span>}
            </Row>
          </>
        )}
        <Row term={t("ticket.owner")}>{ticket.owner_username}</Row>
        <Row term={t("ticket.created")}>
          <time dateTime={ticket.created_at}>{formatDateTime(ticket.created_at)}</time>
        </Row>
        <Row term={t("ticket.updated")}>
          <time dateTime={ticket.updated_at}>{formatDateTime(ticket.updated_at)}</time>
        </Row>
        {ticket.resolved_at && (
          <Row term={t("ticket.resolved")}>
            <time dateTime={ticket.resolved_at}>{formatDateTime(ticket.resolved_at)}</time>
          </Row>
        )}
        {ticket.chat_id && (
          <Row term={t("ticket.chat")}>
            {owner ? (
              <Link
                to={`/chat/${ticket.chat_id}`}
                className="text-brand-800 underline dark:text-brand-100"
              >
                {t("ticket.openChat")}
              </Link>
            ) : (
              <span className="break-all font-mono text-xs">{ticket.chat_id}</span>
            )}
          </Row>
        )}
      </dl>
      {!staff && owner && ticket.status === "resolved" && (
        <div className="mt-4 flex flex-col gap-2">
          <p className="text-sm muted">{t("ticket.resolvedHint")}</p>
          <button
            type="button"
            className="btn-secondary"
            disabled={update.isPending}
            onClick={() => update.mutate({ status: "open" })}
          >
            {t("ticket.reopen")}
          </button>
          <button
            type="button"
            className="btn-secondary"
            disabled={update.isPending}
            onClick={() => update.mutate({ status: "closed" })}
          >
            {t("ticket.close")}
          </button>
        </div>
      )}
      {update.isError && (
        <div className="mt-3">
          <ErrorMessage error={update.error} />
        </div>
      )}
      <p role="status" className="mt-2 text-sm muted">
        {update.isPending ? t("ticket.saving") : update.isSuccess ? t("common:state.saved") : ""}
      </p>
    </section>
  );
}
