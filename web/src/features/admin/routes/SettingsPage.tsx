import { useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { PageHeader } from "@/components/PageHeader";
import { Spinner } from "@/components/Spinner";
import { ErrorMessage } from "@/components/ErrorMessage";
import { useSettings, useUpdateSettings } from "../api/admin";

export default function SettingsPage() {
  const { t } = useTranslation("admin");
  const settings = useSettings();
  const update = useUpdateSettings();
  const [open, setOpen] = useState(false);
  const [saved, setSaved] = useState(false);

  const current = settings.data?.registration_open;
  useEffect(() => {
    if (current !== undefined) setOpen(current);
  }, [current]);

  const dirty = current !== undefined && open !== current;

  return (
    <div className="mx-auto w-full max-w-3xl p-4 sm:p-6">
      <PageHeader title={t("settings.title")} />
      {settings.isPending ? (
        <Spinner />
      ) : settings.isError ? (
        <ErrorMessage error={settings.error} onRetry={() => void settings.refetch()} />
      ) : (
        <form
          className="flex flex-col gap-4"
          onSubmit={(e) => {
            e.preventDefault();
            setSaved(false);
            update.mutate({ registration_open: open }, { onSuccess: () => setSaved(true) });
          }}
        >
          <section className="card" aria-labelledby="settings-accounts">
            <h2 id="settings-accounts" className="mb-3 text-lg font-semibold">
              {t("settings.accounts")}
            </h2>
            <div className="flex items-start gap-3">
              <input
                id="registration-open"
                type="checkbox"
                role="switch"
                className="mt-1 size-5 accent-brand-700 dark:scheme-dark"
                checked={open}
                aria-describedby="registration-open-hint"
                onChange={(e) => {
                  setOpen(e.target.checked);
                  setSaved(false);
                }}
              />
              <div>
                <label htmlFor="registration-open" className="font-medium">
                  {t("settings.registration")}
                </label>
                <p id="registration-open-hint" className="text-sm muted">
                  {t("settings.registrationHint")}
                </p>
                <p className="mt-2 text-sm">
                  {current ? t("settings.registrationIsOpen") : t("settings.registrationIsClosed")}
                  {dirty && <span className="ml-1 font-medium">{t("settings.unsaved")}</span>}
                </p>
              </div>
            </div>
          </section>
          <ErrorMessage error={update.error} />
          <div className="flex flex-wrap items-center gap-3">
            <button type="submit" className="btn-primary" disabled={update.isPending}>
              {t("settings.save")}
            </button>
            <p role="status" aria-live="polite" className="text-sm text-emerald-800 dark:text-emerald-300">
              {saved && !dirty ? t("common:state.saved") : ""}
            </p>
          </div>
        </form>
      )}
    </div>
  );
}
