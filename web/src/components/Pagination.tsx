import { useTranslation } from "react-i18next";

export function Pagination({
  offset,
  limit,
  total,
  onChange,
}: {
  offset: number;
  limit: number;
  total: number;
  onChange: (offset: number) => void;
}) {
  const { t } = useTranslation();
  if (total <= limit && offset === 0) return null;
  return (
    <nav aria-label="pagination" className="mt-3 flex items-center justify-between gap-2 text-sm">
      <span className="muted">
        {t("pagination", { from: Math.min(offset + 1, total), to: Math.min(offset + limit, total), total })}
      </span>
      <span className="flex gap-2">
        <button type="button" className="btn-secondary" disabled={offset === 0} onClick={() => onChange(Math.max(0, offset - limit))}>
          {t("actions.previous")}
        </button>
        <button type="button" className="btn-secondary" disabled={offset + limit >= total} onClick={() => onChange(offset + limit)}>
          {t("actions.next")}
        </button>
      </span>
    </nav>
  );
}
