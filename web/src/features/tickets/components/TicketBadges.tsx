import { useTranslation } from "react-i18next";
import type { TicketPriority, TicketStatus } from "../api/tickets";

const statusLook: Record<TicketStatus, string> = {
  open: "bg-sky-100 text-sky-900 dark:bg-sky-900 dark:text-sky-100",
  in_progress: "bg-amber-100 text-amber-900 dark:bg-amber-900 dark:text-amber-100",
  resolved: "bg-emerald-100 text-emerald-900 dark:bg-emerald-900 dark:text-emerald-100",
  closed: "bg-slate-200 text-slate-800 dark:bg-slate-700 dark:text-slate-100",
};

export function StatusBadge({ status }: { status: TicketStatus }) {
  const { t } = useTranslation("tickets");
  return <span className={`badge ${statusLook[status]}`}>{t(`status.${status}`)}</span>;
}

const priorityLook: Record<TicketPriority, string> = {
  low: "text-slate-600 dark:text-slate-400",
  normal: "",
  high: "font-semibold text-orange-800 dark:text-orange-300",
  urgent: "font-semibold text-red-700 dark:text-red-300",
};

export function PriorityText({ priority }: { priority: TicketPriority }) {
  const { t } = useTranslation("tickets");
  return <span className={priorityLook[priority]}>{t(`priority.${priority}`)}</span>;
}

export function UnreadBadge() {
  const { t } = useTranslation("tickets");
  return (
    <span className="badge bg-brand-700 text-white dark:bg-brand-500 dark:text-slate-950">
      {t("list.unread")}
    </span>
  );
}
