import { useState } from "react";
import { useTranslation } from "react-i18next";
import { Dialog } from "@/components/Dialog";
import { ErrorMessage } from "@/components/ErrorMessage";
import { useDeletePlugin, useInstallPlugin, useUpgradePlugin, type PluginView } from "../api/plugins";
import { UploadForm } from "./UploadForm";

export function InstallDialog({
  open,
  onClose,
  onInstalled,
}: {
  open: boolean;
  onClose: () => void;
  onInstalled: (plugin: PluginView) => void;
}) {
  const { t } = useTranslation("plugins");
  const install = useInstallPlugin();
  const close = () => {
    install.reset();
    onClose();
  };
  return (
    <Dialog open={open} onClose={close} title={t("install.title")}>
      <p className="mb-4 text-sm muted">{t("install.intro")}</p>
      <UploadForm
        submitLabel={t("install.submit")}
        busyLabel={t("install.busy")}
        busy={install.isPending}
        error={install.error}
        onCancel={close}
        onSubmit={(upload) =>
          install.mutate(upload, {
            onSuccess: (plugin) => {
              install.reset();
              onInstalled(plugin);
            },
          })
        }
      />
    </Dialog>
  );
}

export function UpgradeDialog({
  plugin,
  open,
  onClose,
  onUpgraded,
}: {
  plugin: PluginView;
  open: boolean;
  onClose: () => void;
  onUpgraded: (plugin: PluginView) => void;
}) {
  const { t } = useTranslation("plugins");
  const upgrade = useUpgradePlugin(plugin.id);
  const close = () => {
    upgrade.reset();
    onClose();
  };
  return (
    <Dialog open={open} onClose={close} title={t("upgrade.title", { name: plugin.name })}>
      <p className="mb-4 text-sm muted">{t("upgrade.intro", { version: plugin.version, id: plugin.id })}</p>
      <UploadForm
        expectedId={plugin.id}
        submitLabel={t("upgrade.submit")}
        busyLabel={t("upgrade.busy")}
        busy={upgrade.isPending}
        error={upgrade.error}
        onCancel={close}
        onSubmit={(upload) =>
          upgrade.mutate(upload, {
            onSuccess: (upgraded) => {
              upgrade.reset();
              onUpgraded(upgraded);
            },
          })
        }
      />
    </Dialog>
  );
}

/** Deleting asks for the plugin's id to be typed: its data goes with it. */
export function DeleteDialog({
  plugin,
  open,
  onClose,
  onDeleted,
}: {
  plugin: PluginView;
  open: boolean;
  onClose: () => void;
  onDeleted: () => void;
}) {
  const { t } = useTranslation("plugins");
  const remove = useDeletePlugin();
  const [typed, setTyped] = useState("");
  const close = () => {
    remove.reset();
    setTyped("");
    onClose();
  };
  return (
    <Dialog open={open} onClose={close} title={t("delete.title", { name: plugin.name })}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          if (typed.trim() !== plugin.id) return;
          remove.mutate(plugin.id, {
            onSuccess: () => {
              remove.reset();
              setTyped("");
              onDeleted();
            },
          });
        }}
      >
        <p className="mb-3 text-sm">{t("delete.body", { name: plugin.name })}</p>
        <label htmlFor="plugin-delete-confirm" className="label">
          {t("delete.typeId", { id: plugin.id })}
        </label>
        <input
          id="plugin-delete-confirm"
          className="input font-mono"
          autoComplete="off"
          spellCheck={false}
          value={typed}
          onChange={(e) => setTyped(e.target.value)}
        />
        <div className="mt-3">
          <ErrorMessage error={remove.error} />
        </div>
        <div className="mt-4 flex flex-wrap justify-end gap-2">
          <button type="button" className="btn-secondary" onClick={close}>
            {t("common:actions.cancel")}
          </button>
          <button type="submit" className="btn-danger" disabled={typed.trim() !== plugin.id || remove.isPending}>
            {t("delete.confirm")}
          </button>
        </div>
      </form>
    </Dialog>
  );
}
