import { useId, useState } from "react";
import { useTranslation } from "react-i18next";
import { ErrorMessage } from "@/components/ErrorMessage";
import { useUpdatePlugin, type PluginView } from "../api/plugins";

/** The host imports Corral lends plugins; each needs a technician's approval. */
export const knownCapabilities = ["log", "kv", "config", "generate", "embed"] as const;

const sameSet = (a: string[], b: string[]) => a.length === b.length && a.every((x) => b.includes(x));

/** One line on what approving a capability lets the plugin do. */
export function useCapabilityText() {
  const { t } = useTranslation("plugins");
  return (capability: string, plugin?: PluginView) =>
    (knownCapabilities as readonly string[]).includes(capability)
      ? t(`capabilities.explain.${capability}`, { kb: plugin?.limits?.kv_kb ?? "?" })
      : t("capabilities.explain.unknown");
}

/**
 * What the plugin asks for, each with a checkbox: a capability that is not
 * approved fails when the plugin calls it, and nothing else changes.
 */
export function CapabilityApproval({ plugin }: { plugin: PluginView }) {
  const { t } = useTranslation("plugins");
  const id = useId();
  const explain = useCapabilityText();
  const update = useUpdatePlugin(plugin.id);
  const [picked, setPicked] = useState<string[]>(plugin.approved);
  const [saved, setSaved] = useState(false);
  const [lastApproved, setLastApproved] = useState(plugin.approved);
  // Approvals saved elsewhere (or cut by an upgrade) replace what was ticked here.
  if (!sameSet(lastApproved, plugin.approved)) {
    setLastApproved(plugin.approved);
    setPicked(plugin.approved);
  }
  const dirty = !sameSet(picked, plugin.approved);
  const missing = plugin.capabilities.filter((c) => !plugin.approved.includes(c));

  if (plugin.capabilities.length === 0) {
    return <p className="text-sm muted">{t("capabilities.none")}</p>;
  }

  return (
    <form
      onSubmit={(e) => {
        e.preventDefault();
        setSaved(false);
        // In the manifest's order, so the saved list reads like the request.
        const approved = plugin.capabilities.filter((c) => picked.includes(c));
        update.mutate({ approved }, { onSuccess: () => setSaved(true) });
      }}
    >
      <fieldset>
        <legend className="sr-only">{t("capabilities.legend", { name: plugin.name })}</legend>
        <ul className="flex flex-col gap-3">
          {plugin.capabilities.map((capability) => (
            <li key={capability} className="flex items-start gap-3">
              <input
                id={`${id}-${capability}`}
                type="checkbox"
                className="mt-1 size-4 accent-brand-700"
                checked={picked.includes(capability)}
                aria-describedby={`${id}-${capability}-hint`}
                onChange={(e) => {
                  setSaved(false);
                  setPicked((old) =>
                    e.target.checked ? [...old, capability] : old.filter((c) => c !== capability),
                  );
                }}
              />
              <div className="min-w-0">
                <label htmlFor={`${id}-${capability}`} className="font-mono text-sm font-medium">
                  {capability}
                </label>
                <p id={`${id}-${capability}-hint`} className="text-sm muted">
                  {explain(capability, plugin)}
                </p>
              </div>
            </li>
          ))}
        </ul>
      </fieldset>
      {missing.length > 0 && plugin.enabled && (
        <p className="mt-3 text-sm text-amber-900 dark:text-amber-200">
          {t("capabilities.missing", { list: missing.join(", ") })}
        </p>
      )}
      <div className="mt-3">
        <ErrorMessage error={update.error} />
      </div>
      <div className="mt-3 flex flex-wrap items-center gap-3">
        <button type="submit" className="btn-primary" disabled={!dirty || update.isPending}>
          {update.isPending ? t("actions.saving") : t("capabilities.save")}
        </button>
        <button
          type="button"
          className="btn-secondary"
          disabled={!dirty || update.isPending}
          onClick={() => setPicked(plugin.approved)}
        >
          {t("actions.undo")}
        </button>
        <p role="status" aria-live="polite" className="text-sm">
          {dirty ? t("unsaved") : saved ? t("capabilities.saved") : ""}
        </p>
      </div>
    </form>
  );
}
