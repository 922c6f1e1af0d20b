import { useState } from "react";
import { useTranslation } from "react-i18next";
import { PageHeader } from "@/components/PageHeader";
import { Spinner } from "@/components/Spinner";
import { ErrorMessage } from "@/components/ErrorMessage";
import { EmptyState } from "@/components/EmptyState";
import { useUser } from "@/lib/auth";
import { can } from "@/lib/roles";
import { useModels, useRuntimeStatus, type ModelView } from "../api/models";
import { useModelEvents } from "../api/events";
import { ModelCard } from "../components/ModelCard";
import { AddModelDialog, DeleteModelDialog, EditModelDialog } from "../components/ModelDialogs";
import { useLoadControls } from "../components/ModelActions";

export default function ModelsPage() {
  const { t } = useTranslation("models");
  const user = useUser();
  const technician = can.technician(user.role);
  const models = useModels();
  const status = useRuntimeStatus({ enabled: technician, refetchInterval: technician ? 10_000 : undefined });
  useModelEvents(technician);
  const controls = useLoadControls();
  const [adding, setAdding] = useState(false);
  const [editing, setEditing] = useState<ModelView | null>(null);
  const [deleting, setDeleting] = useState<ModelView | null>(null);
  const [notice, setNoticeText] = useState("");
  const setNotice = (text: string) => {
    controls.clear();
    setNoticeText(text);
  };

  const loadedIds = new Set((status.data?.loaded ?? []).map((m) => m.model_id));

  return (
    <div className="mx-auto max-w-5xl p-4">
      <PageHeader
        title={t("title")}
        actions={
          technician && (
            <button
              type="button"
              className="btn-primary"
              onClick={() => {
                setNotice("");
                setAdding(true);
              }}
            >
              {t("addModel")}
            </button>
          )
        }
      />
      <p className="mb-4 text-sm muted">{technician ? t("intro") : t("readOnly")}</p>
      <div role="status" aria-live="polite" className="mb-2 min-h-5 text-sm">
        {controls.pendingId
          ? t("actions.loading", { name: models.data?.find((m) => m.id === controls.pendingId)?.name ?? "" })
          : controls.message || notice}
      </div>
      <ErrorMessage error={controls.error} />
      {models.isPending ? (
        <Spinner />
      ) : models.isError ? (
        <ErrorMessage error={models.error} onRetry={() => void models.refetch()} />
      ) : models.data.length === 0 ? (
        <EmptyState title={t("empty")}>{technician && t("emptyTechnician")}</EmptyState>
      ) : (
        <ul className="grid gap-4 lg:grid-cols-2">
          {models.data.map((model) => (
            <ModelCard
              key={model.id}
              model={model}
              technician={technician}
              loaded={status.data ? loadedIds.has(model.id) : undefined}
              controls={controls}
              onEdit={() => {
                setNotice("");
                setEditing(model);
              }}
              onDelete={() => {
                setNotice("");
                setDeleting(model);
              }}
            />
          ))}
        </ul>
      )}
      {technician && (
        <>
          <AddModelDialog
            open={adding}
            onClose={() => setAdding(false)}
            onAdded={(model) => {
              setAdding(false);
              setNotice(t("added", { name: model.name }));
            }}
          />
          <EditModelDialog
            model={editing}
            onClose={() => setEditing(null)}
            onSaved={(model) => {
              setNotice(model ? t("saved", { name: model.name }) : t("dialogs.nothingChanged"));
              setEditing(null);
            }}
          />
          <DeleteModelDialog
            model={deleting}
            onClose={() => setDeleting(null)}
            onDeleted={(model) => {
              setDeleting(null);
              setNotice(t("deleted", { name: model.name }));
            }}
          />
        </>
      )}
    </div>
  );
}
