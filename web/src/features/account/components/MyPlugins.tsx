import { useId, useState } from "react";
import { useTranslation } from "react-i18next";
import { ErrorMessage } from "@/components/ErrorMessage";
import { Spinner } from "@/components/Spinner";
import { useChooseMyPlugin, useMyPlugins } from "../api/account";

/**
 * The optional plugins technicians offer; each person turns them on for
 * their own chats and API requests. Each switch saves at once.
 */
export function MyPlugins() {
  const { t } = useTranslation("account");
  const id = useId();
  const plugins = useMyPlugins();
  const choose = useChooseMyPlugin();
  const [message, setMessage] = useState("");

  return (
    <section aria-labelledby={`${id}-heading`} className="card mb-6">
      <h2 id={`${id}-heading`} className="mb-1 text-lg font-semibold">
        {t("plugins.heading")}
      </h2>
      <p className="mb-4 text-sm muted">{t("plugins.intro")}</p>
      {plugins.isPending ? (
        <Spinner />
      ) : plugins.isError ? (
        <ErrorMessage error={plugins.error} onRetry={() => void plugins.refetch()} />
      ) : plugins.data.length === 0 ? (
        <p className="text-sm muted">{t("plugins.none")}</p>
      ) : (
        <ul className="flex flex-col gap-4">
          {plugins.data.map((plugin) => {
            const switchId = `${id}-${plugin.id}`;
            const busy = choose.isPending && choose.variables?.id === plugin.id;
            return (
              <li key={plugin.id} className="flex items-start gap-3">
                <input
                  id={switchId}
                  type="checkbox"
                  role="switch"
                  className="mt-1 size-5 shrink-0 accent-brand-700 dark:scheme-dark"
                  checked={busy ? Boolean(choose.variables?.enabled) : plugin.enabled}
                  disabled={busy}
                  aria-describedby={plugin.description ? `${switchId}-hint` : undefined}
                  onChange={(e) => {
                    const enabled = e.target.checked;
                    setMessage("");
                    choose.mutate(
                      { id: plugin.id, enabled },
                      {
                        onSuccess: (saved) =>
                          setMessage(
                            t(saved.enabled ? "plugins.turnedOn" : "plugins.turnedOff", { name: saved.name }),
                          ),
                      },
                    );
                  }}
                />
                <div className="min-w-0">
                  <label htmlFor={switchId} className="font-medium">
                    {plugin.name}
                  </label>
                  {plugin.description && (
                    <p id={`${switchId}-hint`} className="text-sm muted">
                      {plugin.description}
                    </p>
                  )}
                </div>
              </li>
            );
          })}
        </ul>
      )}
      <div className="mt-3">
        <ErrorMessage error={choose.error} />
      </div>
      <p role="status" aria-live="polite" className="mt-2 text-sm">
        {message}
      </p>
    </section>
  );
}
