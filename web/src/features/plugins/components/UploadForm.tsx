import { useId, useState } from "react";
import { Link } from "react-router";
import { useTranslation } from "react-i18next";
import { ErrorMessage } from "@/components/ErrorMessage";
import { ApiError } from "@/lib/api";
import type { PluginUpload } from "../api/plugins";
import { peekManifest } from "../utils/manifest";

/** Errors of an upload that get a title of their own above the server's words. */
const uploadCodes = [
  "unsupported_api",
  "refused_import",
  "invalid_manifest",
  "invalid_component",
  "conflict",
  "payload_too_large",
] as const;

/**
 * Why the server refused an upload: what kind of problem in a title, then
 * its own message (which names versions, imports and fields exactly).
 */
export function UploadError({ error, manifestId }: { error: unknown; manifestId?: string }) {
  const { t } = useTranslation("plugins");
  if (!error) return null;
  const code = error instanceof ApiError ? error.code : "";
  if (!(uploadCodes as readonly string[]).includes(code)) {
    // Field problems show under the fields; anything else in the usual words.
    if (code === "validation_failed" && Object.keys((error as ApiError).fields).length) return null;
    return <ErrorMessage error={error} />;
  }
  return (
    <div
      role="alert"
      className="flex flex-col gap-1 rounded-md border border-red-300 bg-red-50 p-3 text-sm text-red-900 dark:border-red-800 dark:bg-red-950 dark:text-red-100"
    >
      <p className="font-semibold">{t(`upload.errors.${code}`)}</p>
      <p className="break-words">{(error as ApiError).message}</p>
      {code === "unsupported_api" && <p>{t("upload.errors.unsupported_apiHelp")}</p>}
      {code === "refused_import" && <p>{t("upload.errors.refused_importHelp")}</p>}
      {code === "conflict" && manifestId && (
        <p>
          <Link to={`/plugins/${encodeURIComponent(manifestId)}`} className="font-medium underline">
            {t("upload.errors.openInstalled", { id: manifestId })}
          </Link>
        </p>
      )}
    </div>
  );
}

/**
 * The two parts of a plugin: its component (.wasm) and its plugin.toml,
 * picked as a file or pasted. A picked manifest shows in the text box, so
 * what it asks for can be read before it is sent.
 */
export function UploadForm({
  expectedId,
  submitLabel,
  busyLabel,
  busy,
  error,
  onCancel,
  onSubmit,
}: {
  /** For an upgrade: the id the new manifest must keep. */
  expectedId?: string;
  submitLabel: string;
  busyLabel: string;
  busy: boolean;
  error: unknown;
  onCancel: () => void;
  onSubmit: (upload: PluginUpload) => void;
}) {
  const { t } = useTranslation("plugins");
  const id = useId();
  const [component, setComponent] = useState<File | null>(null);
  const [manifest, setManifest] = useState("");
  const [readError, setReadError] = useState("");
  const [problems, setProblems] = useState<{ component?: string; manifest?: string }>({});
  const peek = peekManifest(manifest);
  const serverFields = error instanceof ApiError && error.code === "validation_failed" ? error.fields : {};
  const componentError = problems.component ?? serverFields.component;
  const manifestError = problems.manifest ?? serverFields.manifest;
  const wrongId = expectedId !== undefined && peek.id !== undefined && peek.id !== expectedId;

  return (
    <form
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        const found: typeof problems = {};
        if (!component) found.component = t("upload.needComponent");
        if (!manifest.trim()) found.manifest = t("upload.needManifest");
        setProblems(found);
        if (found.component) document.getElementById(`${id}-component`)?.focus();
        else if (found.manifest) document.getElementById(`${id}-manifest`)?.focus();
        if (component && manifest.trim()) onSubmit({ component, manifest });
      }}
    >
      <div className="mb-4">
        <label htmlFor={`${id}-component`} className="label">
          {t("upload.component")}
        </label>
        <input
          id={`${id}-component`}
          type="file"
          accept=".wasm,application/wasm"
          className="block w-full text-sm file:mr-3 file:rounded-md file:border file:border-slate-300 file:bg-white file:px-3 file:py-1.5 file:text-sm dark:file:border-slate-600 dark:file:bg-slate-800 dark:file:text-slate-100"
          aria-describedby={`${id}-component-hint${componentError ? ` ${id}-component-error` : ""}`}
          aria-invalid={componentError ? true : undefined}
          onChange={(e) => {
            setComponent(e.target.files?.[0] ?? null);
            setProblems((p) => ({ ...p, component: undefined }));
          }}
        />
        <p id={`${id}-component-hint`} className="mt-1 text-xs muted">
          {t("upload.componentHint")}
        </p>
        {componentError && (
          <p id={`${id}-component-error`} className="mt-1 text-sm text-red-700 dark:text-red-400">
            {componentError}
          </p>
        )}
      </div>

      <div className="mb-2">
        <label htmlFor={`${id}-manifest-file`} className="label">
          {t("upload.manifestFile")}
        </label>
        <input
          id={`${id}-manifest-file`}
          type="file"
          accept=".toml,text/plain,application/toml"
          className="block w-full text-sm file:mr-3 file:rounded-md file:border file:border-slate-300 file:bg-white file:px-3 file:py-1.5 file:text-sm dark:file:border-slate-600 dark:file:bg-slate-800 dark:file:text-slate-100"
          aria-describedby={`${id}-manifest-file-hint`}
          onChange={(e) => {
            const file = e.target.files?.[0];
            setReadError("");
            if (!file) return;
            file.text().then(
              (text) => {
                setManifest(text);
                setProblems((p) => ({ ...p, manifest: undefined }));
              },
              () => setReadError(t("upload.readFailed", { name: file.name })),
            );
          }}
        />
        <p id={`${id}-manifest-file-hint`} className="mt-1 text-xs muted">
          {t("upload.manifestFileHint")}
        </p>
        {readError && <p className="mt-1 text-sm text-red-700 dark:text-red-400">{readError}</p>}
      </div>

      <div className="mb-4">
        <label htmlFor={`${id}-manifest`} className="label">
          {t("upload.manifest")}
        </label>
        <textarea
          id={`${id}-manifest`}
          className="input min-h-40 font-mono text-xs"
          rows={10}
          spellCheck={false}
          value={manifest}
          placeholder={'id = "my-plugin"\nname = "My plugin"\nversion = "0.1.0"\napi = "0.1.0"\nhooks = ["before-prompt"]\ncapabilities = ["log"]'}
          aria-describedby={`${id}-manifest-hint${manifestError ? ` ${id}-manifest-error` : ""}`}
          aria-invalid={manifestError ? true : undefined}
          onChange={(e) => {
            setManifest(e.target.value);
            setProblems((p) => ({ ...p, manifest: undefined }));
          }}
        />
        <p id={`${id}-manifest-hint`} className="mt-1 text-xs muted">
          {t("upload.manifestHint")}
        </p>
        {manifestError && (
          <p id={`${id}-manifest-error`} className="mt-1 text-sm text-red-700 dark:text-red-400">
            {manifestError}
          </p>
        )}
      </div>

      {(peek.id || peek.name) && (
        <div className="mb-4 rounded-md border border-slate-200 p-3 text-sm dark:border-slate-700" aria-live="polite">
          <p>
            {t("upload.preview", {
              name: peek.name ?? peek.id,
              id: peek.id ?? "?",
              version: peek.version ?? "?",
              api: peek.api ?? "?",
            })}
          </p>
          {peek.capabilities && (
            <p className="muted">
              {peek.capabilities.length
                ? t("upload.previewCapabilities", { list: peek.capabilities.join(", ") })
                : t("upload.previewNoCapabilities")}
            </p>
          )}
          {peek.httpHosts && peek.httpHosts.length > 0 && (
            <p className="muted break-words">{t("upload.previewHosts", { list: peek.httpHosts.join(", ") })}</p>
          )}
          {wrongId && (
            <p className="mt-1 font-medium text-red-700 dark:text-red-400">
              {t("upload.wrongId", { found: peek.id, expected: expectedId })}
            </p>
          )}
        </div>
      )}

      <UploadError error={error} manifestId={peek.id} />

      <div className="mt-4 flex flex-wrap justify-end gap-2">
        <button type="button" className="btn-secondary" onClick={onCancel}>
          {t("common:actions.cancel")}
        </button>
        <button type="submit" className="btn-primary" disabled={busy}>
          {busy ? busyLabel : submitLabel}
        </button>
      </div>
    </form>
  );
}
