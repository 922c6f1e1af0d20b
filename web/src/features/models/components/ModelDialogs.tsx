import { useTranslation } from "react-i18next";
import { Dialog } from "@/components/Dialog";
import { ErrorMessage } from "@/components/ErrorMessage";
import {
  useCreateModel,
  useDeleteModel,
  useRuntimeStatus,
  useUpdateModel,
  type ModelView,
} from "../api/models";
import { useNodes } from "../api/nodes";
import { ModelForm, toChanges, toNewModel } from "./ModelForm";

const knownBackends = ["llama", "candle"];

/** The installed backends a model may name (both known ones until the status answers). */
function useBackendNames() {
  const status = useRuntimeStatus();
  const installed = (status.data?.backends ?? []).map((b) => b.name).filter((n) => knownBackends.includes(n));
  return installed.length ? installed : knownBackends;
}

/** The worker nodes a model may be placed on. */
function useNodeNames() {
  const nodes = useNodes();
  return (nodes.data ?? []).map((n) => n.name);
}

export function AddModelDialog({
  open,
  onClose,
  onAdded,
}: {
  open: boolean;
  onClose: () => void;
  onAdded: (model: ModelView) => void;
}) {
  const { t } = useTranslation("models");
  const backends = useBackendNames();
  const nodes = useNodeNames();
  const create = useCreateModel();
  const close = () => {
    create.reset();
    onClose();
  };
  return (
    <Dialog open={open} onClose={close} title={t("dialogs.addTitle")}>
      <ModelForm
        backends={backends}
        nodes={nodes}
        submitLabel={t("actions.add")}
        busyLabel={t("actions.adding")}
        busy={create.isPending}
        error={create.error}
        onCancel={close}
        onSubmit={(values) =>
          create.mutate(toNewModel(values), {
            onSuccess: (model) => {
              create.reset();
              onAdded(model);
            },
          })
        }
      />
    </Dialog>
  );
}

export function EditModelDialog({
  model,
  onClose,
  onSaved,
}: {
  model: ModelView | null;
  onClose: () => void;
  onSaved: (model: ModelView | null) => void;
}) {
  const { t } = useTranslation("models");
  const backends = useBackendNames();
  const nodes = useNodeNames();
  const update = useUpdateModel(model?.id ?? "");
  const close = () => {
    update.reset();
    onClose();
  };
  return (
    <Dialog open={model !== null} onClose={close} title={t("dialogs.editTitle", { name: model?.name ?? "" })}>
      {model && (
        <ModelForm
          key={model.id}
          model={model}
          backends={backends}
          nodes={nodes}
          submitLabel={t("actions.save")}
          busyLabel={t("actions.saving")}
          busy={update.isPending}
          error={update.error}
          onCancel={close}
          onSubmit={(values) => {
            const changes = toChanges(model, values);
            if (Object.keys(changes).length === 0) {
              onSaved(null);
              return;
            }
            update.mutate(changes, {
              onSuccess: (saved) => {
                update.reset();
                onSaved(saved);
              },
            });
          }}
        />
      )}
    </Dialog>
  );
}

export function DeleteModelDialog({
  model,
  onClose,
  onDeleted,
}: {
  model: ModelView | null;
  onClose: () => void;
  onDeleted: (model: ModelView) => void;
}) {
  const { t } = useTranslation("models");
  const remove = useDeleteModel();
  const close = () => {
    remove.reset();
    onClose();
  };
  return (
    <Dialog open={model !== null} onClose={close} title={t("dialogs.deleteTitle", { name: model?.name ?? "" })}>
      {model && (
        <>
          <p className="mb-4 text-sm">{t("dialogs.deleteBody", { name: model.name })}</p>
          <ErrorMessage error={remove.error} />
          <div className="mt-4 flex flex-wrap justify-end gap-2">
            <button type="button" className="btn-secondary" onClick={close}>
              {t("common:actions.cancel")}
            </button>
            <button
              type="button"
              className="btn-danger"
              disabled={remove.isPending}
              onClick={() =>
                remove.mutate(model.id, {
                  onSuccess: () => {
                    remove.reset();
                    onDeleted(model);
                  },
                })
              }
            >
              {t("actions.confirmDelete")}
            </button>
          </div>
        </>
      )}
    </Dialog>
  );
}
