import { useEffect, useId } from "react";
import { useTranslation } from "react-i18next";
import { Link, useParams } from "react-router";
import { useUser } from "@/lib/auth";
import { can } from "@/lib/roles";
import { ErrorMessage } from "@/components/ErrorMessage";
import { Spinner } from "@/components/Spinner";
import { useTicket } from "../api/tickets";
import { ReplyForm } from "../components/ReplyForm";
import { StatusBadge } from "../components/TicketBadges";
import { TicketDetails } from "../components/TicketDetails";
import { TicketThread } from "../components/TicketThread";
import { markSeen } from "../utils/unread";

export default function TicketPage() {
  const { t } = useTranslation("tickets");
  const { ticketId = "" } = useParams();
  const user = useUser();
  const staff = can.staff(user.role);
  const ticket = useTicket(ticketId);
  const threadId = useId();
  const data = ticket.data;

  // Whatever is on screen has been read, the account's own changes included.
  useEffect(() => {
    if (data) markSeen(user.id, data.id, data.updated_at);
  }, [user.id, data]);

  const back = (
    <p className="mb-2 text-sm">
      <Link to="/tickets" className="text-brand-800 hover:underline dark:text-brand-100">
        ← {t("ticket.back")}
      </Link>
    </p>
  );

  if (ticket.isPending) {
    return (
      <div className="mx-auto max-w-6xl p-4 sm:p-6">
        {back}
        <Spinner />
      </div>
    );
  }
  if (ticket.isError || !data) {
    return (
      <div className="mx-auto max-w-6xl p-4 sm:p-6">
        {back}
        <h1 className="mb-4 text-xl font-semibold">{t("ticket.missing")}</h1>
        <ErrorMessage error={ticket.error} onRetry={() => void ticket.refetch()} />
      </div>
    );
  }

  return (
    <div className="mx-auto max-w-6xl p-4 sm:p-6">
      {back}
      <div className="mb-4 flex flex-wrap items-baseline gap-x-3 gap-y-1">
        <span className="font-mono text-sm muted">#{data.number}</span>
        <h1 className="min-w-0 break-words text-xl font-semibold">{data.subject}</h1>
        <StatusBadge status={data.status} />
      </div>
      <div className="grid gap-6 lg:grid-cols-[minmax(0,1fr)_18rem]">
        <div className="min-w-0">
          <h2 id={threadId} className="sr-only">
            {t("thread.heading")}
          </h2>
          <TicketThread ticket={data} headingId={threadId} />
          {data.status === "closed" ? (
            <p className="mt-4 rounded-md border border-slate-200 p-3 text-sm muted dark:border-slate-700">
              {t("reply.closed")}{" "}
              <Link to="/tickets/new" className="text-brand-800 underline dark:text-brand-100">
                {t("list.new")}
              </Link>
            </p>
          ) : (
            <ReplyForm ticketId={ticketId} staff={staff} />
          )}
        </div>
        <div>
          <TicketDetails ticket={data} routeId={ticketId} />
        </div>
      </div>
    </div>
  );
}
