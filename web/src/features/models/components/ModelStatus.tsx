import { useTranslation } from "react-i18next";
import type { DownloadProgress, ModelAccess, ModelView } from "../api/models";
import { progressPercent, progressText } from "../api/progress";

const badgeColours: Record<ModelView["status"], string> = {
  ready: "bg-green-100 text-green-900 dark:bg-green-950 dark:text-green-200",
  downloading: "bg-sky-100 text-sky-900 dark:bg-sky-950 dark:text-sky-200",
  failed: "bg-red-100 text-red-900 dark:bg-red-950 dark:text-red-200",
};

export function StatusBadge({ status }: { status: ModelView["status"] }) {
  const { t } = useTranslation("models");
  return <span className={`badge ${badgeColours[status]}`}>{t(`status.${status}`)}</span>;
}

/** The bar and "1.2 GB of 3.4 GB · 12 MB/s · 3 min left" under it. */
export function DownloadBar({ name, progress }: { name: string; progress: DownloadProgress | null | undefined }) {
  const { t } = useTranslation("models");
  const percent = progress ? progressPercent(progress) : null;
  const label = t("progress.label", { name });
  return (
    <div className="flex flex-col gap-1">
      {percent == null ? (
        <progress aria-label={label} className="h-2 w-full accent-brand-700" />
      ) : (
        <progress aria-label={label} className="h-2 w-full accent-brand-700" max={100} value={percent} />
      )}
      <p className="text-xs muted tabular-nums">
        {progress ? progressText(progress, t as never) : t("progress.starting")}
        {percent != null && ` · ${percent} %`}
      </p>
    </div>
  );
}

/** "Everyone", "Roles: Admin · 2 people", "Technicians only". */
export function useAccessSummary() {
  const { t } = useTranslation("models");
  return (access: ModelAccess | null | undefined): string => {
    if (!access || access.everyone) return t("access.summaryEveryone");
    const parts: string[] = [];
    if (access.roles?.length) {
      parts.push(t("access.summaryRoles", { roles: access.roles.map((r) => t(`common:roles.${r}`)).join(", ") }));
    }
    if (access.users?.length) parts.push(t("access.summaryUsers", { count: access.users.length }));
    return parts.length ? parts.join(" · ") : t("access.summaryNobody");
  };
}
