import { useState } from "react";
import { useTranslation } from "react-i18next";
import { formatBytes, formatNumber } from "@/lib/format";
import { useLoadModel, useUnloadModel, type ModelView } from "../api/models";

/** Load and unload with their outcome, for one page's status line. */
export function useLoadControls() {
  const { t } = useTranslation("models");
  const load = useLoadModel();
  const unload = useUnloadModel();
  const [message, setMessage] = useState("");
  const [error, setError] = useState<unknown>(null);
  const start = () => {
    setMessage("");
    setError(null);
  };
  return {
    pendingId: load.isPending ? load.variables : unload.isPending ? unload.variables : undefined,
    message,
    error,
    clear: start,
    load: (model: ModelView) => {
      start();
      load.mutate(model.id, {
        onSuccess: (loaded) =>
          setMessage(
            t("result.loaded", {
              name: model.name,
              memory: formatBytes(loaded.memory_bytes),
              seconds: formatNumber(loaded.load_secs, 1),
            }),
          ),
        onError: setError,
      });
    },
    unload: (model: ModelView) => {
      start();
      unload.mutate(model.id, {
        onSuccess: () => setMessage(t("result.unloaded", { name: model.name })),
        onError: setError,
      });
    },
  };
}

export type LoadControls = ReturnType<typeof useLoadControls>;

/** A technician's buttons for one model. */
export function ModelActions({
  model,
  loaded,
  controls,
  onEdit,
  onDelete,
}: {
  model: ModelView;
  loaded: boolean;
  controls: LoadControls;
  onEdit: () => void;
  onDelete: () => void;
}) {
  const { t } = useTranslation("models");
  const busy = controls.pendingId === model.id;
  const name = model.name;
  return (
    <div className="flex flex-wrap gap-2">
      {loaded ? (
        <button
          type="button"
          className="btn-secondary"
          disabled={busy}
          aria-label={t("actions.unload", { name })}
          onClick={() => controls.unload(model)}
        >
          {t("actions.unloadShort")}
        </button>
      ) : (
        <button
          type="button"
          className="btn-secondary"
          disabled={busy || (!model.usable && model.status !== "ready")}
          aria-label={busy ? t("actions.loading", { name }) : t("actions.load", { name })}
          onClick={() => controls.load(model)}
        >
          {busy && (
            <span
              aria-hidden="true"
              className="size-3 animate-spin rounded-full border-2 border-slate-300 border-t-brand-700"
            />
          )}
          {t("actions.loadShort")}
        </button>
      )}
      <button type="button" className="btn-secondary" aria-label={t("actions.edit", { name })} onClick={onEdit}>
        {t("actions.editShort")}
      </button>
      <button type="button" className="btn-ghost text-red-700 dark:text-red-300" aria-label={t("actions.delete", { name })} onClick={onDelete}>
        {t("actions.deleteShort")}
      </button>
    </div>
  );
}
