import { useId } from "react";
import { useTranslation } from "react-i18next";
import { ErrorMessage } from "@/components/ErrorMessage";
import { Spinner } from "@/components/Spinner";
import { formatDateTime, formatNumber } from "@/lib/format";
import { useQuota } from "../api/account";

/** Today's token allowance as a bar and in words. */
export function QuotaMeter() {
  const { t } = useTranslation("account");
  const id = useId();
  const quota = useQuota();
  const q = quota.data;
  const limit = q?.limit ?? null;
  const share = q && limit ? Math.min(1, q.used / Math.max(1, limit)) : 0;
  const tone = share >= 0.9 ? "bg-red-600" : share >= 0.7 ? "bg-amber-500" : "bg-brand-600";

  return (
    <section aria-labelledby={`${id}-heading`} className="card mb-6">
      <h2 id={`${id}-heading`} className="mb-3 text-lg font-semibold">
        {t("usage.quotaHeading")}
      </h2>
      {quota.isPending ? (
        <Spinner />
      ) : quota.isError ? (
        <ErrorMessage error={quota.error} onRetry={() => void quota.refetch()} />
      ) : limit == null ? (
        <>
          <p className="text-sm">{t("usage.usedUnlimited", { used: formatNumber(q!.used) })}</p>
          <p className="mt-1 text-sm muted">{t("usage.unlimited")}</p>
        </>
      ) : (
        <>
          <p id={`${id}-text`} className="mb-2 text-sm">
            {t("usage.usedOf", { used: formatNumber(q!.used), limit: formatNumber(limit) })}
            {" · "}
            {t("usage.remaining", { remaining: formatNumber(q!.remaining ?? Math.max(0, limit - q!.used)) })}
          </p>
          <div
            role="progressbar"
            aria-label={t("usage.meterLabel")}
            aria-valuemin={0}
            aria-valuemax={limit}
            aria-valuenow={Math.min(q!.used, limit)}
            aria-valuetext={t("usage.usedOf", { used: formatNumber(q!.used), limit: formatNumber(limit) })}
            className="h-3 w-full overflow-hidden rounded-full bg-slate-200 dark:bg-slate-700"
          >
            <div className={`h-full rounded-full ${tone}`} style={{ width: `${share * 100}%` }} />
          </div>
          <p className="mt-2 text-sm muted">
            {t("usage.resets", { time: formatDateTime(q!.resets_at) })}
          </p>
        </>
      )}
    </section>
  );
}
