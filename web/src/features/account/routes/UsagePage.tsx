import { useId, useState } from "react";
import { useTranslation } from "react-i18next";
import { EmptyState } from "@/components/EmptyState";
import { ErrorMessage } from "@/components/ErrorMessage";
import { Spinner } from "@/components/Spinner";
import { formatNumber } from "@/lib/format";
import { useMyStats } from "../api/account";
import { AccountFrame } from "../components/AccountFrame";
import { ActivityChart } from "../components/ActivityChart";
import { QuotaMeter } from "../components/QuotaMeter";

const ranges = [7, 30, 90] as const;

/** `YYYY-MM-DD` in UTC, as the statistics count days. */
function utcDay(date: Date): string {
  return date.toISOString().slice(0, 10);
}

function Figure({ label, value }: { label: string; value: number }) {
  return (
    <div className="card">
      <dt className="text-sm muted">{label}</dt>
      <dd className="mt-1 text-2xl font-semibold tabular-nums">{formatNumber(value)}</dd>
    </div>
  );
}

export default function UsagePage() {
  const { t } = useTranslation("account");
  const id = useId();
  const [range, setRange] = useState<(typeof ranges)[number]>(30);
  const now = new Date();
  const to = utcDay(now);
  const from = utcDay(new Date(now.getTime() - (range - 1) * 86_400_000));
  const stats = useMyStats(from, to);
  const s = stats.data;
  const tokens = s?.models.reduce((sum, m) => sum + m.prompt_tokens + m.completion_tokens, 0) ?? 0;

  return (
    <AccountFrame title={t("usage.title")}>
      <QuotaMeter />
      <section aria-labelledby={`${id}-heading`}>
        <div className="mb-3 flex flex-wrap items-end justify-between gap-3">
          <h2 id={`${id}-heading`} className="text-lg font-semibold">
            {t("usage.statsHeading")}
          </h2>
          <div>
            <label htmlFor={`${id}-range`} className="label">
              {t("usage.range")}
            </label>
            <select
              id={`${id}-range`}
              className="input w-44"
              value={range}
              onChange={(event) => setRange(Number(event.target.value) as (typeof ranges)[number])}
            >
              {ranges.map((r) => (
                <option key={r} value={r}>
                  {t(`usage.last${r}`)}
                </option>
              ))}
            </select>
          </div>
        </div>
        {stats.isPending ? (
          <Spinner />
        ) : stats.isError ? (
          <ErrorMessage error={stats.error} onRetry={() => void stats.refetch()} />
        ) : (
          <>
            <dl className="mb-6 grid grid-cols-2 gap-3 md:grid-cols-4">
              <Figure label={t("usage.messages")} value={s!.messages} />
              <Figure label={t("usage.chats")} value={s!.chats} />
              <Figure label={t("usage.tickets")} value={s!.tickets_opened} />
              <Figure label={t("usage.tokens")} value={tokens} />
            </dl>
            <h3 className="mb-2 font-semibold">{t("usage.perDayHeading")}</h3>
            {s!.messages === 0 && s!.chats === 0 && s!.tickets_opened === 0 ? (
              <EmptyState title={t("usage.noActivity")} />
            ) : (
              <div className="card mb-6">
                <ActivityChart stats={s!} />
              </div>
            )}
            <h3 className="mb-2 mt-6 font-semibold">{t("usage.perModelHeading")}</h3>
            {s!.models.length === 0 ? (
              <EmptyState title={t("usage.noModels")} />
            ) : (
              <div className="card p-0 sm:p-2">
                <table className="table">
                  <caption className="sr-only">{t("usage.perModelCaption")}</caption>
                  <thead>
                    <tr>
                      <th scope="col">{t("usage.model")}</th>
                      <th scope="col" className="text-right">{t("usage.promptTokens")}</th>
                      <th scope="col" className="hidden text-right sm:table-cell">{t("usage.cachedTokens")}</th>
                      <th scope="col" className="text-right">{t("usage.completionTokens")}</th>
                      <th scope="col" className="hidden text-right sm:table-cell">{t("usage.generations")}</th>
                      <th scope="col" className="hidden text-right md:table-cell">{t("usage.speed")}</th>
                      <th scope="col" className="hidden text-right md:table-cell">{t("usage.ttft")}</th>
                    </tr>
                  </thead>
                  <tbody>
                    {s!.models.map((m) => (
                      <tr key={m.model}>
                        <th scope="row" className="break-all font-medium">{m.model}</th>
                        <td className="text-right tabular-nums">{formatNumber(m.prompt_tokens)}</td>
                        <td className="hidden text-right tabular-nums sm:table-cell">
                          {formatNumber(m.cached_prompt_tokens)}
                        </td>
                        <td className="text-right tabular-nums">{formatNumber(m.completion_tokens)}</td>
                        <td className="hidden text-right tabular-nums sm:table-cell">
                          {formatNumber(m.generations)}
                          {m.failed > 0 && <span className="muted"> ({t("usage.failed")}: {formatNumber(m.failed)})</span>}
                        </td>
                        <td className="hidden text-right tabular-nums md:table-cell">
                          {formatNumber(m.tokens_per_second, 1)}
                        </td>
                        <td className="hidden text-right tabular-nums md:table-cell">
                          {m.avg_time_to_first_token_ms == null
                            ? "–"
                            : t("usage.ms", { value: formatNumber(m.avg_time_to_first_token_ms) })}
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            )}
          </>
        )}
      </section>
    </AccountFrame>
  );
}
