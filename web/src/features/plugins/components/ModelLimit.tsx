import { useId, useState } from "react";
import { useTranslation } from "react-i18next";
import { ErrorMessage } from "@/components/ErrorMessage";
import { Spinner } from "@/components/Spinner";
import { useModelNames, useUpdatePlugin, type PluginView } from "../api/plugins";

const sameList = (a: string[] | null | undefined, b: string[] | null | undefined) =>
  a == null || b == null ? a == b : a.length === b.length && a.every((x) => b.includes(x));

/** Which models the plugin runs for: every one, or the ones picked here. */
export function ModelLimit({ plugin }: { plugin: PluginView }) {
  const { t } = useTranslation("plugins");
  const id = useId();
  const names = useModelNames();
  const update = useUpdatePlugin(plugin.id);
  const savedModels = plugin.models ?? null;
  const [seen, setSeen] = useState(savedModels);
  const [limited, setLimited] = useState(savedModels !== null);
  const [picked, setPicked] = useState<string[]>(savedModels ?? []);
  const [problem, setProblem] = useState("");
  const [saved, setSaved] = useState(false);
  if (!sameList(seen, savedModels)) {
    setSeen(savedModels);
    setLimited(savedModels !== null);
    setPicked(savedModels ?? []);
  }
  const choice = limited ? picked : null;
  const dirty = !sameList(choice, savedModels);
  // Names saved earlier whose model is gone stay listed, so they can be unticked.
  const all = [...(names.data ?? [])];
  for (const name of savedModels ?? []) if (!all.includes(name)) all.push(name);

  return (
    <form
      onSubmit={(e) => {
        e.preventDefault();
        setSaved(false);
        if (limited && picked.length === 0) {
          setProblem(t("models.pickOne"));
          return;
        }
        setProblem("");
        update.mutate({ models: choice }, { onSuccess: () => setSaved(true) });
      }}
    >
      <fieldset>
        <legend className="sr-only">{t("models.legend")}</legend>
        <div className="flex flex-col gap-2">
          <label className="flex items-center gap-2 text-sm">
            <input
              type="radio"
              name={`${id}-scope`}
              className="accent-brand-700"
              checked={!limited}
              onChange={() => {
                setLimited(false);
                setSaved(false);
                setProblem("");
              }}
            />
            {t("models.every")}
          </label>
          <label className="flex items-center gap-2 text-sm">
            <input
              type="radio"
              name={`${id}-scope`}
              className="accent-brand-700"
              checked={limited}
              onChange={() => {
                setLimited(true);
                setSaved(false);
              }}
            />
            {t("models.only")}
          </label>
        </div>
        {limited && (
          <fieldset className="mt-3 ml-6" aria-describedby={problem ? `${id}-problem` : undefined}>
            <legend className="label">{t("models.pick")}</legend>
            {names.isPending ? (
              <Spinner />
            ) : names.isError ? (
              <ErrorMessage error={names.error} onRetry={() => void names.refetch()} />
            ) : all.length === 0 ? (
              <p className="text-sm muted">{t("models.noModels")}</p>
            ) : (
              <ul className="grid gap-1 sm:grid-cols-2">
                {all.map((name) => (
                  <li key={name}>
                    <label className="flex items-center gap-2 text-sm">
                      <input
                        type="checkbox"
                        className="size-4 accent-brand-700"
                        checked={picked.includes(name)}
                        onChange={(e) => {
                          setSaved(false);
                          setProblem("");
                          setPicked((old) => (e.target.checked ? [...old, name] : old.filter((n) => n !== name)));
                        }}
                      />
                      <span className="break-all">{name}</span>
                      {!names.data?.includes(name) && <span className="muted">{t("models.gone")}</span>}
                    </label>
                  </li>
                ))}
              </ul>
            )}
            {problem && (
              <p id={`${id}-problem`} className="mt-1 text-sm text-red-700 dark:text-red-400">
                {problem}
              </p>
            )}
          </fieldset>
        )}
      </fieldset>
      <div className="mt-3">
        <ErrorMessage error={update.error} />
      </div>
      <div className="mt-3 flex flex-wrap items-center gap-3">
        <button type="submit" className="btn-primary" disabled={!dirty || update.isPending}>
          {update.isPending ? t("actions.saving") : t("models.save")}
        </button>
        <p role="status" aria-live="polite" className="text-sm">
          {dirty ? t("unsaved") : saved ? t("models.saved") : ""}
        </p>
      </div>
    </form>
  );
}
