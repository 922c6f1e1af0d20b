import i18n from "@/i18n";

const units = ["B", "KB", "MB", "GB", "TB"];

export function formatBytes(bytes: number | null | undefined): string {
  if (bytes == null) return "–";
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${new Intl.NumberFormat(i18n.language, { maximumFractionDigits: unit ? 1 : 0 }).format(value)} ${units[unit]}`;
}

export function formatNumber(value: number | null | undefined, digits = 0): string {
  if (value == null) return "–";
  return new Intl.NumberFormat(i18n.language, { maximumFractionDigits: digits }).format(value);
}

export function formatDateTime(value: string | null | undefined): string {
  if (!value) return "–";
  return new Intl.DateTimeFormat(i18n.language, { dateStyle: "medium", timeStyle: "short" }).format(
    new Date(value),
  );
}

export function formatDate(value: string | null | undefined): string {
  if (!value) return "–";
  return new Intl.DateTimeFormat(i18n.language, { dateStyle: "medium" }).format(new Date(value));
}

/** "3 min", "1 h 5 min": for ETAs and durations in seconds. */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds == null) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 && m < 10 ? `${m} min ${s % 60} s` : `${m} min`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}
