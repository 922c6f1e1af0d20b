import { useTranslation } from "react-i18next";
import { useErrorText } from "@/lib/errors";

/** An error in words, with an optional retry button. */
export function ErrorMessage({ error, onRetry }: { error: unknown; onRetry?: () => void }) {
  const { t } = useTranslation();
  const text = useErrorText();
  if (!error) return null;
  return (
    <div
      role="alert"
      className="flex flex-wrap items-center gap-3 rounded-md border border-red-300 bg-red-50 p-3 text-sm text-red-900 dark:border-red-800 dark:bg-red-950 dark:text-red-100"
    >
      <span>{text(error)}</span>
      {onRetry && (
        <button type="button" className="btn-secondary" onClick={onRetry}>
          {t("actions.retry")}
        </button>
      )}
    </div>
  );
}
