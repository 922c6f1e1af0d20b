import { useMemo, useState } from "react";
import { useTranslation } from "react-i18next";
import {
  Bar,
  BarChart,
  CartesianGrid,
  Legend,
  Line,
  LineChart,
  ResponsiveContainer,
  Tooltip,
  XAxis,
  YAxis,
} from "recharts";
import { PageHeader } from "@/components/PageHeader";
import { Spinner } from "@/components/Spinner";
import { ErrorMessage } from "@/components/ErrorMessage";
import { EmptyState } from "@/components/EmptyState";
import i18n from "@/i18n";
import { formatNumber } from "@/lib/format";
import { usePlatformStats } from "../api/admin";
import { ChartFigure, usePalette } from "../components/ChartFigure";
import type { Palette } from "../components/ChartFigure";
import { cachedPrompt, daysBetween, lastDays, speedPerDay, tokensPerDay, usageByModel } from "../utils/stats";
import type { DateRange } from "../utils/stats";

type Preset = "7" | "30" | "90" | "custom";
const MAX_DAYS = 366;

function shortDay(day: string): string {
  return new Intl.DateTimeFormat(i18n.language, { month: "short", day: "numeric", timeZone: "UTC" }).format(
    new Date(`${day}T00:00:00Z`),
  );
}

function longDay(day: string): string {
  return new Intl.DateTimeFormat(i18n.language, { dateStyle: "medium", timeZone: "UTC" }).format(
    new Date(`${day}T00:00:00Z`),
  );
}

const num = (value: number | null | undefined, digits = 0) => formatNumber(value, digits);

const percent = (share: number) =>
  new Intl.NumberFormat(i18n.language, { style: "percent", maximumFractionDigits: 1 }).format(share);

function chartParts(palette: Palette) {
  return {
    grid: <CartesianGrid stroke={palette.grid} strokeDasharray="3 3" />,
    tooltip: (
      <Tooltip
        contentStyle={{ background: palette.tooltipBg, borderColor: palette.tooltipBorder, color: palette.text }}
        labelStyle={{ color: palette.text }}
        cursor={{ fill: palette.grid, fillOpacity: 0.4 }}
        formatter={(value) => (typeof value === "number" ? num(value, 1) : String(value ?? "–"))}
      />
    ),
    legend: <Legend wrapperStyle={{ color: palette.text, fontSize: 12 }} />,
    dayAxis: (
      <XAxis dataKey="day" tickFormatter={shortDay} stroke={palette.axis} tick={{ fill: palette.axis, fontSize: 12 }} minTickGap={16} />
    ),
  };
}

function Total({ label, value, detail }: { label: string; value: string; detail?: string }) {
  return (
    <div className="card p-3">
      <dt className="text-sm muted">{label}</dt>
      <dd className="text-2xl font-semibold tabular-nums">{value}</dd>
      {detail && <dd className="text-xs muted tabular-nums">{detail}</dd>}
    </div>
  );
}

export default function StatsPage() {
  const { t } = useTranslation("admin");
  const palette = usePalette();
  const parts = chartParts(palette);
  const [preset, setPreset] = useState<Preset>("30");
  const [custom, setCustom] = useState<DateRange>(() => lastDays(30));

  const rangeError = useMemo(() => {
    if (preset !== "custom") return "";
    if (!custom.from || !custom.to) return t("stats.range.missing");
    if (custom.from > custom.to) return t("stats.range.order");
    if (daysBetween(custom.from, custom.to).length > MAX_DAYS) return t("stats.range.tooLong", { days: MAX_DAYS });
    return "";
  }, [preset, custom, t]);

  const [fallback] = useState(() => lastDays(30));
  const range: DateRange = preset === "custom" ? (rangeError ? fallback : custom) : lastDays(Number(preset));
  const stats = usePlatformStats(range);
  const data = stats.data;

  const derived = useMemo(() => {
    if (!data) return null;
    const r = { from: data.from, to: data.to };
    const tokens = tokensPerDay(r, data.model_days);
    const speed = speedPerDay(r, data.model_days);
    const models = usageByModel(data.models);
    const tokenTotal = tokens.reduce((s, d) => s + d.total, 0);
    const generations = models.reduce((s, m) => s + m.generations, 0);
    const activity =
      data.totals.messages +
      data.totals.chats +
      data.totals.new_users +
      data.totals.tickets_opened +
      data.totals.tickets_resolved +
      generations +
      data.days.reduce((s, d) => s + d.active_users, 0);
    return { tokens, speed, models, tokenTotal, generations, cached: cachedPrompt(data.models), empty: activity === 0 };
  }, [data]);

  const dayColumn = { label: t("stats.columns.day"), value: (row: { day: string }) => longDay(row.day) };

  return (
    <div className="mx-auto w-full max-w-7xl p-4 sm:p-6">
      <PageHeader title={t("stats.title")} />

      <form className="mb-4 flex flex-wrap items-end gap-3" onSubmit={(e) => e.preventDefault()}>
        <div>
          <label htmlFor="stats-range" className="label">
            {t("stats.range.label")}
          </label>
          <select id="stats-range" className="input w-auto" value={preset} onChange={(e) => setPreset(e.target.value as Preset)}>
            <option value="7">{t("stats.range.last", { count: 7 })}</option>
            <option value="30">{t("stats.range.last", { count: 30 })}</option>
            <option value="90">{t("stats.range.last", { count: 90 })}</option>
            <option value="custom">{t("stats.range.custom")}</option>
          </select>
        </div>
        {preset === "custom" && (
          <>
            <div>
              <label htmlFor="stats-from" className="label">
                {t("stats.range.from")}
              </label>
              <input
                id="stats-from"
                type="date"
                className="input w-auto"
                value={custom.from}
                max={custom.to || undefined}
                aria-invalid={rangeError ? true : undefined}
                aria-describedby={rangeError ? "stats-range-error" : undefined}
                onChange={(e) => setCustom((c) => ({ ...c, from: e.target.value }))}
              />
            </div>
            <div>
              <label htmlFor="stats-to" className="label">
                {t("stats.range.to")}
              </label>
              <input
                id="stats-to"
                type="date"
                className="input w-auto"
                value={custom.to}
                min={custom.from || undefined}
                aria-invalid={rangeError ? true : undefined}
                aria-describedby={rangeError ? "stats-range-error" : undefined}
                onChange={(e) => setCustom((c) => ({ ...c, to: e.target.value }))}
              />
            </div>
          </>
        )}
        {data && (
          <p className="pb-2 text-sm muted" aria-live="polite">
            {t("stats.range.showing", { from: longDay(data.from), to: longDay(data.to) })}
            {stats.isFetching && <span className="ml-2">{t("common:state.loading")}</span>}
          </p>
        )}
      </form>
      {rangeError && (
        <p id="stats-range-error" role="alert" className="mb-4 text-sm text-red-700 dark:text-red-400">
          {rangeError}
        </p>
      )}

      {stats.isPending ? (
        <Spinner />
      ) : stats.isError ? (
        <ErrorMessage error={stats.error} onRetry={() => void stats.refetch()} />
      ) : data && derived ? (
        <>
          <section aria-labelledby="stats-totals" className="mb-6">
            <h2 id="stats-totals" className="sr-only">
              {t("stats.totals.title")}
            </h2>
            <dl className="grid grid-cols-2 gap-3 sm:grid-cols-3 lg:grid-cols-9">
              <Total label={t("stats.totals.users")} value={num(data.users_total)} />
              <Total label={t("stats.totals.newUsers")} value={num(data.totals.new_users)} />
              <Total label={t("stats.totals.chats")} value={num(data.totals.chats)} />
              <Total label={t("stats.totals.messages")} value={num(data.totals.messages)} />
              <Total label={t("stats.totals.generations")} value={num(derived.generations)} />
              <Total label={t("stats.totals.tokens")} value={num(derived.tokenTotal)} />
              <Total
                label={t("stats.totals.cachedPrompt")}
                value={num(derived.cached.cached)}
                detail={
                  derived.cached.share == null
                    ? undefined
                    : t("stats.totals.cachedShare", { share: percent(derived.cached.share) })
                }
              />
              <Total label={t("stats.totals.ticketsOpened")} value={num(data.totals.tickets_opened)} />
              <Total label={t("stats.totals.ticketsResolved")} value={num(data.totals.tickets_resolved)} />
            </dl>
          </section>

          {derived.empty ? (
            <EmptyState title={t("stats.empty")}>{t("stats.emptyHint")}</EmptyState>
          ) : (
            <div className="grid gap-4 lg:grid-cols-2">
              <ChartFigure
                title={t("stats.charts.messages")}
                description={t("stats.charts.messagesHint")}
                rows={data.days}
                columns={[
                  dayColumn,
                  { label: t("stats.columns.messages"), value: (d) => num(d.messages) },
                  { label: t("stats.columns.chats"), value: (d) => num(d.chats) },
                ]}
              >
                <ResponsiveContainer width="100%" height="100%">
                  <LineChart data={data.days} accessibilityLayer={false}>
                    {parts.grid}
                    {parts.dayAxis}
                    <YAxis allowDecimals={false} stroke={palette.axis} tick={{ fill: palette.axis, fontSize: 12 }} width={48} />
                    {parts.tooltip}
                    {parts.legend}
                    <Line isAnimationActive={false} type="linear" dataKey="messages" name={t("stats.columns.messages")} stroke={palette.series[0]} strokeWidth={2} dot={false} />
                    <Line isAnimationActive={false} type="linear" dataKey="chats" name={t("stats.columns.chats")} stroke={palette.series[1]} strokeWidth={2} dot={false} />
                  </LineChart>
                </ResponsiveContainer>
              </ChartFigure>

              <ChartFigure
                title={t("stats.charts.tokens")}
                description={t("stats.charts.tokensHint")}
                rows={derived.tokens}
                columns={[
                  dayColumn,
                  { label: t("stats.columns.prompt"), value: (d) => num(d.prompt) },
                  { label: t("stats.columns.completion"), value: (d) => num(d.completion) },
                  { label: t("stats.columns.total"), value: (d) => num(d.total) },
                ]}
              >
                <ResponsiveContainer width="100%" height="100%">
                  <BarChart data={derived.tokens} accessibilityLayer={false}>
                    {parts.grid}
                    {parts.dayAxis}
                    <YAxis allowDecimals={false} stroke={palette.axis} tick={{ fill: palette.axis, fontSize: 12 }} width={56} tickFormatter={(v: number) => num(v)} />
                    {parts.tooltip}
                    {parts.legend}
                    <Bar isAnimationActive={false} dataKey="prompt" stackId="tokens" name={t("stats.columns.prompt")} fill={palette.series[0]} />
                    <Bar isAnimationActive={false} dataKey="completion" stackId="tokens" name={t("stats.columns.completion")} fill={palette.series[1]} />
                  </BarChart>
                </ResponsiveContainer>
              </ChartFigure>

              <ChartFigure
                title={t("stats.charts.models")}
                description={t("stats.charts.modelsHint")}
                rows={derived.models}
                columns={[
                  { label: t("stats.columns.model"), value: (m) => m.model },
                  { label: t("stats.columns.tokens"), value: (m) => num(m.tokens) },
                  { label: t("stats.columns.generations"), value: (m) => num(m.generations) },
                  { label: t("stats.columns.failed"), value: (m) => num(m.failed) },
                  {
                    label: t("stats.columns.ttft"),
                    value: (m) => num(data.models.find((x) => x.model === m.model)?.avg_time_to_first_token_ms, 0),
                  },
                  {
                    label: t("stats.columns.tps"),
                    value: (m) => num(data.models.find((x) => x.model === m.model)?.tokens_per_second, 1),
                  },
                ]}
              >
                {derived.models.length === 0 ? (
                  <p className="p-4 text-sm muted">{t("stats.noGenerations")}</p>
                ) : (
                  <ResponsiveContainer width="100%" height="100%">
                    <BarChart data={derived.models} accessibilityLayer={false}>
                      {parts.grid}
                      <XAxis dataKey="model" stroke={palette.axis} tick={{ fill: palette.axis, fontSize: 12 }} />
                      <YAxis yAxisId="tokens" allowDecimals={false} stroke={palette.axis} tick={{ fill: palette.axis, fontSize: 12 }} width={56} tickFormatter={(v: number) => num(v)} />
                      <YAxis yAxisId="generations" orientation="right" allowDecimals={false} stroke={palette.axis} tick={{ fill: palette.axis, fontSize: 12 }} width={40} />
                      {parts.tooltip}
                      {parts.legend}
                      <Bar isAnimationActive={false} yAxisId="tokens" dataKey="tokens" name={t("stats.columns.tokens")} fill={palette.series[0]} />
                      <Bar isAnimationActive={false} yAxisId="generations" dataKey="generations" name={t("stats.columns.generations")} fill={palette.series[2]} />
                    </BarChart>
                  </ResponsiveContainer>
                )}
              </ChartFigure>

              <ChartFigure
                title={t("stats.charts.speed")}
                description={t("stats.charts.speedHint")}
                rows={derived.speed}
                columns={[
                  dayColumn,
                  { label: t("stats.columns.ttft"), value: (d) => num(d.ttft, 0) },
                  { label: t("stats.columns.tps"), value: (d) => num(d.tps, 1) },
                ]}
              >
                <ResponsiveContainer width="100%" height="100%">
                  <LineChart data={derived.speed} accessibilityLayer={false}>
                    {parts.grid}
                    {parts.dayAxis}
                    <YAxis yAxisId="ttft" stroke={palette.axis} tick={{ fill: palette.axis, fontSize: 12 }} width={56} tickFormatter={(v: number) => num(v)} />
                    <YAxis yAxisId="tps" orientation="right" stroke={palette.axis} tick={{ fill: palette.axis, fontSize: 12 }} width={40} tickFormatter={(v: number) => num(v)} />
                    {parts.tooltip}
                    {parts.legend}
                    <Line isAnimationActive={false} yAxisId="ttft" type="linear" dataKey="ttft" name={t("stats.columns.ttft")} stroke={palette.series[1]} strokeWidth={2} connectNulls />
                    <Line isAnimationActive={false} yAxisId="tps" type="linear" dataKey="tps" name={t("stats.columns.tps")} stroke={palette.series[2]} strokeWidth={2} connectNulls />
                  </LineChart>
                </ResponsiveContainer>
              </ChartFigure>

              <ChartFigure
                title={t("stats.charts.active")}
                description={t("stats.charts.activeHint")}
                rows={data.days}
                columns={[
                  dayColumn,
                  { label: t("stats.columns.active"), value: (d) => num(d.active_users) },
                  { label: t("stats.columns.newUsers"), value: (d) => num(d.new_users) },
                ]}
              >
                <ResponsiveContainer width="100%" height="100%">
                  <LineChart data={data.days} accessibilityLayer={false}>
                    {parts.grid}
                    {parts.dayAxis}
                    <YAxis allowDecimals={false} stroke={palette.axis} tick={{ fill: palette.axis, fontSize: 12 }} width={48} />
                    {parts.tooltip}
                    {parts.legend}
                    <Line isAnimationActive={false} type="linear" dataKey="active_users" name={t("stats.columns.active")} stroke={palette.series[0]} strokeWidth={2} dot={false} />
                    <Line isAnimationActive={false} type="linear" dataKey="new_users" name={t("stats.columns.newUsers")} stroke={palette.series[2]} strokeWidth={2} dot={false} />
                  </LineChart>
                </ResponsiveContainer>
              </ChartFigure>

              <ChartFigure
                title={t("stats.charts.tickets")}
                description={t("stats.charts.ticketsHint")}
                rows={data.days}
                columns={[
                  dayColumn,
                  { label: t("stats.columns.opened"), value: (d) => num(d.tickets_opened) },
                  { label: t("stats.columns.resolved"), value: (d) => num(d.tickets_resolved) },
                ]}
              >
                <ResponsiveContainer width="100%" height="100%">
                  <BarChart data={data.days} accessibilityLayer={false}>
                    {parts.grid}
                    {parts.dayAxis}
                    <YAxis allowDecimals={false} stroke={palette.axis} tick={{ fill: palette.axis, fontSize: 12 }} width={40} />
                    {parts.tooltip}
                    {parts.legend}
                    <Bar isAnimationActive={false} dataKey="tickets_opened" name={t("stats.columns.opened")} fill={palette.series[1]} />
                    <Bar isAnimationActive={false} dataKey="tickets_resolved" name={t("stats.columns.resolved")} fill={palette.series[0]} />
                  </BarChart>
                </ResponsiveContainer>
              </ChartFigure>
            </div>
          )}
        </>
      ) : null}
    </div>
  );
}
