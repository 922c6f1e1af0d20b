import { useEffect, useId, useState } from "react";
import type { ReactNode } from "react";
import { useTranslation } from "react-i18next";

export type Palette = {
  series: [string, string, string];
  axis: string;
  grid: string;
  tooltipBg: string;
  tooltipBorder: string;
  text: string;
};

// Each colour keeps at least 4.5:1 against the page background of its theme.
const light: Palette = {
  series: ["#0f766e", "#c2410c", "#4338ca"],
  axis: "#475569",
  grid: "#e2e8f0",
  tooltipBg: "#ffffff",
  tooltipBorder: "#cbd5e1",
  text: "#0f172a",
};
const dark: Palette = {
  series: ["#2dd4bf", "#fb923c", "#a5b4fc"],
  axis: "#94a3b8",
  grid: "#334155",
  tooltipBg: "#0f172a",
  tooltipBorder: "#475569",
  text: "#f1f5f9",
};

const isDark = () => typeof document !== "undefined" && document.documentElement.classList.contains("dark");

/** Chart colours for the theme in use, following changes to it. */
export function usePalette(): Palette {
  const [darkMode, setDarkMode] = useState(isDark);
  useEffect(() => {
    const observer = new MutationObserver(() => setDarkMode(isDark()));
    observer.observe(document.documentElement, { attributes: true, attributeFilter: ["class"] });
    return () => observer.disconnect();
  }, []);
  return darkMode ? dark : light;
}

export type Column<T> = { label: string; value: (row: T) => ReactNode };

/**
 * A chart with its caption, a short description for screen readers, and
 * the same numbers as a table for anyone who cannot read the picture.
 */
export function ChartFigure<T>({
  title,
  description,
  rows,
  columns,
  children,
}: {
  title: string;
  description: string;
  rows: T[];
  columns: Column<T>[];
  children: ReactNode;
}) {
  const { t } = useTranslation("admin");
  const id = useId();
  return (
    <figure className="card flex min-w-0 flex-col gap-2" aria-labelledby={`${id}-title`}>
      <figcaption>
        <h2 id={`${id}-title`} className="text-base font-semibold">
          {title}
        </h2>
        <p className="text-sm muted">{description}</p>
      </figcaption>
      <div role="img" aria-label={`${title}: ${description}`} className="h-64 w-full">
        {children}
      </div>
      <details className="text-sm">
        <summary className="cursor-pointer font-medium">{t("stats.showData")}</summary>
        <div className="relative mt-2 max-h-72 overflow-auto" tabIndex={0} role="region" aria-label={t("stats.dataOf", { title })}>
          <table className="table">
            <caption className="sr-only">{title}</caption>
            <thead>
              <tr>
                {columns.map((c) => (
                  <th key={c.label} scope="col">
                    {c.label}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {rows.map((row, i) => (
                <tr key={i}>
                  {columns.map((c, j) =>
                    j === 0 ? (
                      <th key={c.label} scope="row" className="font-normal">
                        {c.value(row)}
                      </th>
                    ) : (
                      <td key={c.label}>{c.value(row)}</td>
                    ),
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </details>
    </figure>
  );
}
