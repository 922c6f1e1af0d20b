import { useState } from "react";
import { useTranslation } from "react-i18next";

/** Copies `text` to the clipboard and says so for two seconds. */
export function CopyButton({ text, label, className }: { text: string; label?: string; className?: string }) {
  const { t } = useTranslation();
  const [copied, setCopied] = useState(false);
  return (
    <button
      type="button"
      className={className ?? "btn-secondary"}
      onClick={() => {
        void navigator.clipboard?.writeText(text).then(() => {
          setCopied(true);
          setTimeout(() => setCopied(false), 2000);
        });
      }}
    >
      {copied ? t("actions.copied") : (label ?? t("actions.copy"))}
      <span className="sr-only" aria-live="polite">
        {copied ? t("actions.copied") : ""}
      </span>
    </button>
  );
}
