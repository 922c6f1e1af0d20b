import { useTranslation } from "react-i18next";
import { formatNumber } from "@/lib/format";
import type { PluginView } from "../api/plugins";

/** "850 µs", "12.4 ms", "1.2 s": a call's time, read at a glance. */
export function formatMicros(us: number): string {
  if (us < 1000) return `${formatNumber(us)} µs`;
  if (us < 1_000_000) return `${formatNumber(us / 1000, us < 10_000 ? 1 : 0)} ms`;
  return `${formatNumber(us / 1_000_000, 1)} s`;
}

/** Calls, errors and times per hook (and per route handler) since Corral started. */
export function HookStatsTable({ plugin }: { plugin: PluginView }) {
  const { t } = useTranslation("plugins");
  if (plugin.stats.length === 0) return <p className="text-sm muted">{t("stats.none")}</p>;
  return (
    <div role="region" aria-label={t("stats.caption", { name: plugin.name })} tabIndex={0} className="relative overflow-x-auto">
      <table className="table min-w-[28rem] tabular-nums">
        <caption className="sr-only">{t("stats.caption", { name: plugin.name })}</caption>
        <thead>
          <tr>
            <th scope="col">{t("stats.hook")}</th>
            <th scope="col" className="text-right">
              {t("stats.calls")}
            </th>
            <th scope="col" className="text-right">
              {t("stats.errors")}
            </th>
            <th scope="col" className="text-right">
              <abbr title={t("stats.p50Long")}>{t("stats.p50")}</abbr>
            </th>
            <th scope="col" className="text-right">
              <abbr title={t("stats.p99Long")}>{t("stats.p99")}</abbr>
            </th>
          </tr>
        </thead>
        <tbody>
          {plugin.stats.map((s) => (
            <tr key={s.hook}>
              <th scope="row" className="font-mono text-xs font-normal">
                {s.hook}
              </th>
              <td className="text-right">{formatNumber(s.calls)}</td>
              <td className={`text-right ${s.errors > 0 ? "font-semibold text-red-700 dark:text-red-300" : ""}`}>
                {formatNumber(s.errors)}
              </td>
              <td className="text-right">{s.calls > 0 ? formatMicros(s.p50_us) : "–"}</td>
              <td className="text-right">{s.calls > 0 ? formatMicros(s.p99_us) : "–"}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
