import { Bar, BarChart, CartesianGrid, Legend, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { useTranslation } from "react-i18next";
import { formatDate, formatNumber } from "@/lib/format";
import type { MyStats } from "../api/account";

const shortDay = (day: string) => day.slice(5);

/**
 * Messages, chats and tickets per day as bars. The picture is hidden from screen readers,
 * which get a sentence and the same numbers as a table instead.
 */
export function ActivityChart({ stats }: { stats: MyStats }) {
  const { t } = useTranslation("account");
  const days = stats.days;
  const busiest = days.reduce<(typeof days)[number] | null>(
    (best, d) => (best === null || d.messages > best.messages ? d : best),
    null,
  );
  return (
    <>
      <p className="mb-2 text-sm muted">
        {busiest && busiest.messages > 0
          ? t("usage.chartSummary", {
              messages: formatNumber(stats.messages),
              busiest: formatDate(`${busiest.day}T12:00:00Z`),
              max: formatNumber(busiest.messages),
            })
          : t("usage.chartSummaryQuiet")}
      </p>
      <div aria-hidden="true" className="h-64 w-full text-slate-600 dark:text-slate-300">
        <ResponsiveContainer width="100%" height="100%">
          <BarChart data={days} accessibilityLayer={false} margin={{ top: 8, right: 8, left: -16, bottom: 0 }}>
            <CartesianGrid strokeDasharray="3 3" stroke="currentColor" strokeOpacity={0.2} vertical={false} />
            <XAxis dataKey="day" tickFormatter={shortDay} tick={{ fill: "currentColor", fontSize: 12 }} stroke="currentColor" />
            <YAxis allowDecimals={false} tick={{ fill: "currentColor", fontSize: 12 }} stroke="currentColor" />
            <Tooltip
              cursor={{ fillOpacity: 0.1 }}
              contentStyle={{ background: "#0f172a", border: "none", borderRadius: 6, color: "#f1f5f9" }}
              labelStyle={{ color: "#f1f5f9" }}
              itemStyle={{ color: "#f1f5f9" }}
            />
            <Legend wrapperStyle={{ fontSize: 12 }} />
            <Bar isAnimationActive={false} dataKey="messages" name={t("usage.messages")} fill="#0d9488" radius={[3, 3, 0, 0]} />
            <Bar isAnimationActive={false} dataKey="chats" name={t("usage.chats")} fill="#6366f1" radius={[3, 3, 0, 0]} />
            <Bar isAnimationActive={false} dataKey="tickets_opened" name={t("usage.tickets")} fill="#f59e0b" radius={[3, 3, 0, 0]} />
          </BarChart>
        </ResponsiveContainer>
      </div>
      <table className="sr-only">
        <caption>{t("usage.perDayCaption")}</caption>
        <thead>
          <tr>
            <th scope="col">{t("usage.day")}</th>
            <th scope="col">{t("usage.messages")}</th>
            <th scope="col">{t("usage.chats")}</th>
            <th scope="col">{t("usage.tickets")}</th>
          </tr>
        </thead>
        <tbody>
          {days.map((d) => (
            <tr key={d.day}>
              <th scope="row">{formatDate(`${d.day}T12:00:00Z`)}</th>
              <td>{d.messages}</td>
              <td>{d.chats}</td>
              <td>{d.tickets_opened}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}
