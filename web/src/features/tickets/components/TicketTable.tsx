import { useTranslation } from "react-i18next";
import { Link } from "react-router";
import { formatDateTime } from "@/lib/format";
import type { Ticket } from "../api/tickets";
import { PriorityText, StatusBadge, UnreadBadge } from "./TicketBadges";

/** Tickets as a table; on a phone the less important columns fold under the subject. */
export function TicketTable({
  tickets,
  staff,
  unread,
}: {
  tickets: Ticket[];
  staff: boolean;
  unread: (ticket: Ticket) => boolean;
}) {
  const { t } = useTranslation("tickets");
  const wide = "hidden md:table-cell";
  return (
    <table className="table">
      <caption className="sr-only">{t(staff ? "list.captionStaff" : "list.caption")}</caption>
      <thead>
        <tr>
          <th scope="col" className="w-16">
            {t("list.number")}
          </th>
          <th scope="col">{t("list.subject")}</th>
          <th scope="col" className={wide}>
            {t("list.status")}
          </th>
          <th scope="col" className={wide}>
            {t("list.priority")}
          </th>
          <th scope="col" className="hidden lg:table-cell">
            {t("list.category")}
          </th>
          {staff && (
            <th scope="col" className="hidden lg:table-cell">
              {t("list.owner")}
            </th>
          )}
          <th scope="col" className="hidden lg:table-cell">
            {t("list.assignee")}
          </th>
          <th scope="col" className={wide}>
            {t("list.updated")}
          </th>
        </tr>
      </thead>
      <tbody>
        {tickets.map((ticket) => {
          const isUnread = unread(ticket);
          return (
            <tr key={ticket.id} className={isUnread ? "bg-brand-50/60 dark:bg-slate-900" : undefined}>
              <td className="tabular-nums muted">#{ticket.number}</td>
              <td>
                <div className="flex flex-wrap items-center gap-2">
                  <Link
                    to={`/tickets/${ticket.number}`}
                    className={`text-brand-800 underline-offset-2 hover:underline dark:text-brand-100 ${isUnread ? "font-semibold" : ""}`}
                  >
                    {ticket.subject}
                  </Link>
                  {isUnread && <UnreadBadge />}
                </div>
                <div className="mt-1 flex flex-wrap items-center gap-2 text-xs muted md:hidden">
                  <StatusBadge status={ticket.status} />
                  <span>
                    {t("list.updatedAt", { date: formatDateTime(ticket.updated_at) })}
                  </span>
                  {staff && <span>{t("list.by", { user: ticket.owner_username })}</span>}
                </div>
              </td>
              <td className={wide}>
                <StatusBadge status={ticket.status} />
              </td>
              <td className={wide}>
                <PriorityText priority={ticket.priority} />
              </td>
              <td className="hidden lg:table-cell">{t(`category.${ticket.category}`)}</td>
              {staff && <td className="hidden lg:table-cell">{ticket.owner_username}</td>}
              <td className="hidden lg:table-cell">
                {ticket.assignee_username ?? <span className="muted">{t("list.nobody")}</span>}
              </td>
              <td className={`${wide} whitespace-nowrap`}>
                <time dateTime={ticket.updated_at}>{formatDateTime(ticket.updated_at)}</time>
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}
