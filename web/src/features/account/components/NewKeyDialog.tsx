import { useId } from "react";
import { useTranslation } from "react-i18next";
import { CopyButton } from "@/components/CopyButton";
import { Dialog } from "@/components/Dialog";
import { useUsableModels, type CreatedKey } from "../api/account";

function Snippet({ id, title, code, copyLabel }: { id: string; title: string; code: string; copyLabel: string }) {
  return (
    <figure className="mb-3">
      <figcaption id={id} className="mb-1 flex items-center justify-between gap-2 text-sm font-medium">
        {title}
        <CopyButton text={code} label={copyLabel} className="btn-ghost text-xs" />
      </figcaption>
      <pre
        aria-labelledby={id}
        tabIndex={0}
        className="max-h-48 overflow-auto rounded-md bg-slate-900 p-3 text-xs text-slate-100 dark:bg-slate-950 dark:ring-1 dark:ring-slate-700"
      >
        <code>{code}</code>
      </pre>
    </figure>
  );
}

/** Shows a key just created, once, with examples that use it. */
export function NewKeyDialog({ created, onClose }: { created: CreatedKey | null; onClose: () => void }) {
  const { t } = useTranslation("account");
  const id = useId();
  const models = useUsableModels(created !== null);
  const model =
    models.data?.find((m) => m.kind === "chat" && m.usable && m.status === "ready")?.name ??
    models.data?.find((m) => m.kind === "chat")?.name;
  const baseUrl = `${window.location.origin}/v1`;
  const key = created?.key ?? "";
  const name = model ?? "MODEL";

  const python = `from openai import OpenAI

client = OpenAI(base_url="${baseUrl}", api_key="${key}")

reply = client.chat.completions.create(
    model="${name}",
    messages=[{"role": "user", "content": "Hello!"}],
)
print(reply.choices[0].message.content)`;

  const curl = `curl ${baseUrl}/chat/completions \\
  -H "Authorization: Bearer ${key}" \\
  -H "Content-Type: application/json" \\
  -d '{"model": "${name}", "messages": [{"role": "user", "content": "Hello!"}]}'`;

  return (
    <Dialog open={created !== null} onClose={onClose} title={t("newKey.title")}>
      <p
        role="alert"
        className="mb-4 rounded-md border border-amber-400 bg-amber-50 p-3 text-sm text-amber-950 dark:border-amber-600 dark:bg-amber-950 dark:text-amber-50"
      >
        {t("newKey.warning")}
      </p>
      <label htmlFor={`${id}-key`} className="label">
        {t("newKey.keyLabel")}
      </label>
      <div className="mb-5 flex flex-col gap-2 sm:flex-row">
        <input
          id={`${id}-key`}
          className="input font-mono"
          value={key}
          readOnly
          onFocus={(event) => event.currentTarget.select()}
        />
        <CopyButton text={key} label={t("newKey.copy")} className="btn-primary shrink-0" />
      </div>
      <h3 className="mb-2 font-semibold">{t("newKey.snippetsHeading")}</h3>
      {!model && models.isSuccess && <p className="mb-2 text-sm muted">{t("newKey.noModel")}</p>}
      <Snippet id={`${id}-python`} title={t("newKey.python")} code={python} copyLabel={t("newKey.copyPython")} />
      <Snippet id={`${id}-curl`} title={t("newKey.curl")} code={curl} copyLabel={t("newKey.copyCurl")} />
      <div className="mt-4 flex justify-end">
        <button type="button" className="btn-secondary" onClick={onClose}>
          {t("newKey.done")}
        </button>
      </div>
    </Dialog>
  );
}
