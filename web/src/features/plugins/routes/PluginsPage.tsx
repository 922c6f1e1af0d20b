import { useState } from "react";
import { useNavigate } from "react-router";
import { useTranslation } from "react-i18next";
import { PageHeader } from "@/components/PageHeader";
import { Spinner } from "@/components/Spinner";
import { ErrorMessage } from "@/components/ErrorMessage";
import { EmptyState } from "@/components/EmptyState";
import { usePlugins } from "../api/plugins";
import { pluginState } from "../components/PluginState";
import { PluginCard } from "../components/PluginCard";
import { InstallDialog } from "../components/PluginDialogs";

export default function PluginsPage() {
  const { t } = useTranslation("plugins");
  const navigate = useNavigate();
  const plugins = usePlugins();
  const [installing, setInstalling] = useState(false);
  const stopped = plugins.data?.filter((p) => pluginState(p) === "stopped") ?? [];

  return (
    <div className="mx-auto max-w-5xl p-4 sm:p-6">
      <PageHeader
        title={t("title")}
        actions={
          <button type="button" className="btn-primary" onClick={() => setInstalling(true)}>
            {t("install.open")}
          </button>
        }
      />
      <p className="mb-4 text-sm muted">{t("intro")}</p>
      {stopped.length > 0 && (
        <p className="mb-4 rounded-md border border-amber-300 bg-amber-50 p-3 text-sm font-medium text-amber-950 dark:border-amber-800 dark:bg-amber-950 dark:text-amber-100">
          <span aria-hidden="true">⚠ </span>
          {t("stoppedCount", { count: stopped.length, names: stopped.map((p) => p.name).join(", ") })}
        </p>
      )}
      {plugins.isPending ? (
        <Spinner />
      ) : plugins.isError ? (
        <ErrorMessage error={plugins.error} onRetry={() => void plugins.refetch()} />
      ) : plugins.data.length === 0 ? (
        <EmptyState title={t("empty")}>{t("emptyHint")}</EmptyState>
      ) : (
        <ul className="flex flex-col gap-4">
          {plugins.data.map((plugin) => (
            <PluginCard key={plugin.id} plugin={plugin} />
          ))}
        </ul>
      )}
      <InstallDialog
        open={installing}
        onClose={() => setInstalling(false)}
        onInstalled={(plugin) => {
          setInstalling(false);
          void navigate(`/plugins/${encodeURIComponent(plugin.id)}`, { state: { installed: true } });
        }}
      />
    </div>
  );
}
