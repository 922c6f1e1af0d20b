import { formatBytes, formatDuration } from "@/lib/format";

type Translate = (key: string, options?: Record<string, unknown>) => string;

/** What the progress text needs: bytes so far, the total if known, rate, ETA. */
export type ProgressNumbers = {
  bytes: number;
  total?: number | null;
  rate?: number | null;
  eta_secs?: number | null;
};

/** An ETA to the minute: "45 s", "3 min", "1 h 5 min". */
function etaText(seconds: number): string {
  if (seconds >= 60 && seconds < 3600) return formatDuration(Math.round(seconds / 60) * 60).replace(/ 0 s$/, "");
  return formatDuration(seconds);
}

/**
 * "1.2 GB of 3.4 GB · 12 MB/s · 3 min left"; parts that are not known
 * (no total, no rate yet, no ETA) are left out.
 */
export function progressText(p: ProgressNumbers, t: Translate): string {
  const parts: string[] = [];
  parts.push(
    p.total != null && p.total > 0
      ? t("models:progress.bytesOfTotal", { bytes: formatBytes(p.bytes), total: formatBytes(p.total) })
      : t("models:progress.bytes", { bytes: formatBytes(p.bytes) }),
  );
  if (p.rate != null && p.rate > 0) parts.push(t("models:progress.rate", { rate: formatBytes(p.rate) }));
  if (p.eta_secs != null && p.rate != null && p.rate > 0) {
    parts.push(t("models:progress.eta", { duration: etaText(p.eta_secs) }));
  }
  return parts.join(" · ");
}

/** The share done, 0–100, or `null` when the total is not known. */
export function progressPercent(p: ProgressNumbers): number | null {
  if (p.total == null || p.total <= 0) return null;
  return Math.min(100, Math.max(0, Math.round((p.bytes / p.total) * 100)));
}
