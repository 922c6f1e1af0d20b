import { Link } from "react-router";
import { useTranslation } from "react-i18next";
import { formatBytes } from "@/lib/format";
import type { ModelView } from "../api/models";
import { DownloadBar, StatusBadge, useAccessSummary } from "./ModelStatus";
import { ModelActions, type LoadControls } from "./ModelActions";
import { REMOTE_BACKEND } from "./ModelForm";

export function FailureReason({ model }: { model: ModelView }) {
  const { t } = useTranslation("models");
  if (model.unavailable) {
    return (
      <p className="rounded-md border border-amber-300 bg-amber-50 p-2 text-sm text-amber-950 dark:border-amber-800 dark:bg-amber-950 dark:text-amber-100">
        {t("unavailable", { reason: model.unavailable })}
      </p>
    );
  }
  if (model.status !== "failed") return null;
  return (
    <p className="rounded-md border border-red-200 bg-red-50 p-2 text-sm text-red-900 dark:border-red-900 dark:bg-red-950 dark:text-red-100">
      {model.error ? t("failedReason", { reason: model.error }) : t("failedNoReason")}
    </p>
  );
}

/** One model in the list: what it is, where it stands, what may be done with it. */
export function ModelCard({
  model,
  technician,
  loaded,
  controls,
  onEdit,
  onDelete,
}: {
  model: ModelView;
  technician: boolean;
  loaded: boolean | undefined;
  controls: LoadControls;
  onEdit: () => void;
  onDelete: () => void;
}) {
  const { t } = useTranslation("models");
  const accessSummary = useAccessSummary();
  const headingId = `model-${model.id}`;
  return (
    <li className="card flex flex-col gap-3">
      <div className="flex flex-wrap items-start justify-between gap-2">
        <h2 id={headingId} className="min-w-0 break-all text-base font-semibold">
          <Link to={`/models/${model.id}`} className="hover:underline">
            {model.name}
          </Link>
        </h2>
        <div className="flex flex-wrap gap-2">
          <StatusBadge status={model.status} />
          {technician && loaded !== undefined && (
            <span className={`badge ${loaded ? "bg-brand-100 text-brand-800 dark:bg-slate-800 dark:text-brand-100" : ""}`}>
              {loaded ? t("loadedYes") : t("loadedNo")}
            </span>
          )}
        </div>
      </div>
      {model.description && <p className="text-sm">{model.description}</p>}
      {model.status === "downloading" && technician && (
        <DownloadBar name={model.name} progress={model.progress} />
      )}
      <FailureReason model={model} />
      <dl className="grid grid-cols-[auto_1fr] gap-x-4 gap-y-1 text-sm sm:grid-cols-[auto_1fr_auto_1fr]">
        <dt className="muted">{t("fields.backend")}</dt>
        <dd>{model.backend}</dd>
        <dt className="muted">{t("fields.kind")}</dt>
        <dd>{t(`kind.${model.kind}`)}</dd>
        {/* A remote model has no file here. */}
        {model.backend !== REMOTE_BACKEND && (
          <>
            <dt className="muted">{t("fields.size")}</dt>
            <dd>{formatBytes(model.size_bytes)}</dd>
          </>
        )}
        {model.node && (
          <>
            <dt className="muted">{t("fields.node")}</dt>
            <dd>{model.node}</dd>
          </>
        )}
        {model.access !== undefined && (
          <>
            <dt className="muted">{t("fields.access")}</dt>
            <dd>{accessSummary(model.access)}</dd>
          </>
        )}
      </dl>
      {technician && (
        <ModelActions
          model={model}
          loaded={loaded ?? false}
          controls={controls}
          onEdit={onEdit}
          onDelete={onDelete}
        />
      )}
    </li>
  );
}
