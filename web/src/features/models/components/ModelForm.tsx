import { useForm, Controller, type UseFormRegisterReturn } from "react-hook-form";
import { zodResolver } from "@hookform/resolvers/zod";
import { z } from "zod";
import { useTranslation } from "react-i18next";
import { Field } from "@/components/Field";
import { ErrorMessage } from "@/components/ErrorMessage";
import { ApiError } from "@/lib/api";
import type { ModelAccess, ModelChanges, ModelView, NewModel } from "../api/models";
import { AccessEditor } from "./AccessEditor";

const samplingFields = [
  { key: "temperature", int: false, min: 0, max: 5 },
  { key: "top_p", int: false, min: 0, max: 1 },
  { key: "top_k", int: true, min: 0, max: 1_000_000 },
  { key: "min_p", int: false, min: 0, max: 1 },
  { key: "repeat_penalty", int: false, min: 0, max: 10 },
  { key: "max_tokens", int: true, min: 1, max: 1_048_576 },
  { key: "seed", int: true, min: 0, max: Number.MAX_SAFE_INTEGER },
] as const;
type SamplingKey = (typeof samplingFields)[number]["key"];

// Error messages are translation keys; a range carries its bounds after "|".
const numberText = (min: number, max: number, int: boolean) =>
  z
    .string()
    .trim()
    .refine((v) => v === "" || (int ? /^\d+$/.test(v) : Number.isFinite(Number(v))), {
      message: int ? "validation.integer" : "validation.number",
    })
    .refine((v) => v === "" || (Number(v) >= min && Number(v) <= max), {
      message: `validation.range|${min}|${max}`,
    });

/** The backend of models that another server runs (OpenAI-compatible). */
export const REMOTE_BACKEND = "openai";

const modelName = /^[A-Za-z0-9._:-]{1,100}$/;

/** "a, b ,c" → ["a", "b", "c"] */
export function fallbackList(text: string): string[] {
  return text
    .split(",")
    .map((n) => n.trim())
    .filter(Boolean);
}

const schema = z.object({
  source: z
    .string()
    .trim()
    .min(1, "validation.sourceRequired")
    .max(2048, "validation.tooLong")
    .regex(/^(https?:\/\/|\/)/, "validation.sourceFormat"),
  upstream_model: z.string().trim().max(200, "validation.tooLong"),
  // Visible ASCII only: the key goes into an HTTP header.
  api_key: z.string().max(1024, "validation.tooLong").regex(/^[\x21-\x7e]*$/, "validation.apiKey"),
  tls_fingerprint: z
    .string()
    .trim()
    .max(200, "validation.tooLong")
    .refine((v) => v === "" || /^[0-9A-Fa-f]{64}$/.test(v.replace(/:/g, "")), { message: "validation.fingerprint" }),
  fallbacks: z
    .string()
    .refine((v) => fallbackList(v).every((n) => modelName.test(n)), { message: "validation.fallbacks" })
    .refine((v) => fallbackList(v).length <= 8, { message: "validation.fallbacksCount" }),
  replicas: z
    .string()
    .refine((v) => fallbackList(v).every((n) => modelName.test(n)), { message: "validation.fallbacks" })
    .refine((v) => fallbackList(v).length <= 8, { message: "validation.fallbacksCount" }),
  node: z.string(),
  name: z
    .string()
    .trim()
    .min(1, "validation.nameRequired")
    .regex(/^[A-Za-z0-9._:-]{1,100}$/, "validation.nameFormat"),
  backend: z.string().regex(/^[a-z0-9_]+$/),
  kind: z.enum(["chat", "embedding"]),
  sha256: z
    .string()
    .trim()
    .regex(/^([0-9A-Fa-f]{64})?$/, "validation.sha256"),
  description: z.string().max(2000, "validation.tooLong"),
  context_length: numberText(0, 1_048_576, true),
  slots: numberText(1, 64, true),
  threads: numberText(0, 1024, true),
  chat_template: z.string().max(16384, "validation.tooLong"),
  sampling: z.object(
    Object.fromEntries(samplingFields.map((f) => [f.key, numberText(f.min, f.max, f.int)])) as Record<
      SamplingKey,
      ReturnType<typeof numberText>
    >,
  ),
  access: z.object({
    everyone: z.boolean(),
    roles: z.array(z.enum(["user", "admin", "technician"])).optional(),
    users: z.array(z.string()).optional(),
  }),
});
export type ModelFormValues = z.infer<typeof schema>;

const text = (v: number | null | undefined) => (v == null ? "" : String(v));

function initialValues(model?: ModelView): ModelFormValues {
  const sampling = (model?.sampling ?? {}) as Record<string, unknown>;
  return {
    source: model?.source ?? "",
    upstream_model: model?.upstream_model ?? "",
    // The stored key is never shown; empty keeps it.
    api_key: "",
    tls_fingerprint: model?.tls_fingerprint ?? "",
    fallbacks: (model?.fallbacks ?? []).join(", "),
    replicas: (model?.replicas ?? []).join(", "),
    node: model?.node ?? "",
    name: model?.name ?? "",
    backend: model?.backend ?? "llama",
    kind: model?.kind ?? "chat",
    sha256: model?.sha256 ?? "",
    description: model?.description ?? "",
    context_length: model && model.context_length > 0 ? String(model.context_length) : "",
    slots: text(model?.slots),
    threads: model?.threads ? String(model.threads) : "",
    chat_template: model?.chat_template ?? "",
    sampling: Object.fromEntries(
      samplingFields.map((f) => [f.key, typeof sampling[f.key] === "number" ? String(sampling[f.key]) : ""]),
    ) as Record<SamplingKey, string>,
    access: normalAccess(model?.access),
  };
}

function normalAccess(access: ModelAccess | null | undefined): ModelAccess {
  return {
    everyone: access?.everyone ?? true,
    roles: [...(access?.roles ?? [])].sort(),
    users: [...(access?.users ?? [])].sort(),
  };
}

function samplingObject(values: ModelFormValues["sampling"]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const f of samplingFields) {
    const v = values[f.key].trim();
    if (v !== "") out[f.key] = Number(v);
  }
  return out;
}

const numberOrNull = (v: string) => (v.trim() === "" ? null : Number(v));

export function toNewModel(v: ModelFormValues): NewModel {
  const sampling = samplingObject(v.sampling);
  const remote = v.backend === REMOTE_BACKEND;
  const fallbacks = fallbackList(v.fallbacks);
  const replicas = fallbackList(v.replicas);
  const model: NewModel = {
    source: v.source.trim(),
    name: v.name.trim(),
    backend: v.backend,
    kind: remote ? "chat" : v.kind,
    description: v.description.trim() || null,
    context_length: numberOrNull(v.context_length),
    slots: numberOrNull(v.slots),
    // The document describes sampling as a free-form object.
    sampling: (Object.keys(sampling).length ? sampling : null) as NewModel["sampling"],
    access: normalAccess(v.access),
    fallbacks: fallbacks.length ? fallbacks : null,
    replicas: replicas.length ? replicas : null,
  };
  if (remote) {
    // A remote model has no file, hash, threads or template of its own.
    model.upstream_model = v.upstream_model.trim() || null;
    model.api_key = v.api_key || null;
    model.tls_fingerprint = v.tls_fingerprint.trim() || null;
  } else {
    model.sha256 = v.sha256.trim() || null;
    model.threads = numberOrNull(v.threads);
    model.chat_template = v.chat_template.trim() ? v.chat_template : null;
    model.node = v.node || null;
  }
  return model;
}

/** Only what the form changed, so a save never writes back stale fields. */
export function toChanges(model: ModelView, v: ModelFormValues): ModelChanges {
  const before = initialValues(model);
  const changes: ModelChanges = {};
  if (v.source.trim() !== before.source) changes.source = v.source.trim();
  if (v.name.trim() !== before.name) changes.name = v.name.trim();
  if (v.backend !== before.backend) changes.backend = v.backend;
  if (v.kind !== before.kind) changes.kind = v.kind;
  if (v.sha256.trim().toLowerCase() !== before.sha256.toLowerCase()) changes.sha256 = v.sha256.trim();
  if (v.description.trim() !== before.description.trim()) changes.description = v.description.trim();
  if (v.context_length.trim() !== before.context_length) changes.context_length = Number(v.context_length || 0);
  if (v.slots.trim() !== before.slots && v.slots.trim() !== "") changes.slots = Number(v.slots);
  if (v.threads.trim() !== before.threads) changes.threads = Number(v.threads || 0);
  if (v.chat_template !== before.chat_template) changes.chat_template = v.chat_template.trim() ? v.chat_template : "";
  const sampling = samplingObject(v.sampling);
  if (JSON.stringify(sampling) !== JSON.stringify(samplingObject(before.sampling))) {
    // Settings the form does not show (stop strings, …) stay as they were.
    const merged: Record<string, unknown> = { ...((model.sampling ?? {}) as Record<string, unknown>) };
    for (const f of samplingFields) {
      if (f.key in sampling) merged[f.key] = sampling[f.key];
      else delete merged[f.key];
    }
    changes.sampling = merged as ModelChanges["sampling"];
  }
  const access = normalAccess(v.access);
  if (JSON.stringify(access) !== JSON.stringify(before.access)) changes.access = access;
  if (v.upstream_model.trim() !== before.upstream_model) changes.upstream_model = v.upstream_model.trim();
  // An empty key field keeps the stored key.
  if (v.api_key !== "") changes.api_key = v.api_key;
  // The same fingerprint written another way is no change; "" drops it.
  const pin = (f: string) => f.trim().replace(/:/g, "").toUpperCase();
  if (pin(v.tls_fingerprint) !== pin(before.tls_fingerprint)) changes.tls_fingerprint = v.tls_fingerprint.trim();
  const fallbacks = fallbackList(v.fallbacks);
  if (JSON.stringify(fallbacks) !== JSON.stringify(fallbackList(before.fallbacks))) changes.fallbacks = fallbacks;
  const replicas = fallbackList(v.replicas);
  if (JSON.stringify(replicas) !== JSON.stringify(fallbackList(before.replicas))) changes.replicas = replicas;
  // "" brings the model back to this host.
  if (v.node !== before.node) changes.node = v.node;
  return changes;
}

/** "…/gemma-3-270m-it-Q4_K_M.gguf?download=1" → "gemma-3-270m-it-Q4_K_M" */
export function nameFromSource(source: string): string {
  const path = source.trim().replace(/[?#].*$/, "").replace(/\/+$/, "");
  const base = decodeURIComponent(path.slice(path.lastIndexOf("/") + 1)).replace(/\.gguf$/i, "");
  return base.replace(/[^A-Za-z0-9._:-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 100);
}

function sourceKind(source: string): "url" | "path" | null {
  const s = source.trim();
  if (/^https?:\/\//i.test(s)) return "url";
  if (s.startsWith("/")) return "path";
  return null;
}

export function ModelForm({
  model,
  backends,
  nodes = [],
  submitLabel,
  busyLabel,
  busy,
  error,
  onSubmit,
  onCancel,
}: {
  model?: ModelView;
  backends: string[];
  /** Names of the registered worker nodes. */
  nodes?: string[];
  submitLabel: string;
  busyLabel: string;
  busy: boolean;
  error: unknown;
  onSubmit: (values: ModelFormValues) => void;
  onCancel: () => void;
}) {
  const { t } = useTranslation("models");
  const editing = model !== undefined;
  const {
    register,
    handleSubmit,
    control,
    watch,
    setValue,
    getValues,
    getFieldState,
    formState: { errors },
  } = useForm<ModelFormValues>({ resolver: zodResolver(schema), defaultValues: initialValues(model) });

  const message = (m?: string) => {
    if (!m) return undefined;
    const [key, min, max] = m.split("|");
    return t(key, { min, max });
  };
  const serverField = (name: string) =>
    error instanceof ApiError && error.fields[name] ? error.fields[name] : undefined;
  const err = (name: keyof ModelFormValues) => message(errors[name]?.message as string | undefined) ?? serverField(name);

  const source = watch("source");
  const kind = sourceKind(source);
  const backend = watch("backend");
  const remote = backend === REMOTE_BACKEND;
  const backendChoices = Array.from(new Set([...backends, REMOTE_BACKEND, backend])).filter(Boolean);

  // A new model's name, backend and kind follow its source until edited.
  const sourceField = register("source", {
    onChange: (e: { target: { value: string } }) => {
      if (editing || getValues("backend") === REMOTE_BACKEND) return;
      const value = e.target.value;
      if (!getFieldState("name").isDirty) setValue("name", nameFromSource(value));
      if (!getFieldState("backend").isDirty) {
        const gguf = /\.gguf([?#].*)?$/i.test(value.trim());
        const directory = sourceKind(value) === "path" && !gguf;
        setValue("backend", directory ? "candle" : "llama");
        if (!getFieldState("kind").isDirty) setValue("kind", directory ? "embedding" : "chat");
      }
    },
  });

  const numberInput = (field: UseFormRegisterReturn, placeholder?: string) => (
    <input {...field} className="input" inputMode="numeric" placeholder={placeholder} />
  );

  return (
    <form noValidate onSubmit={handleSubmit(onSubmit)}>
      <Field
        label={remote ? t("fields.baseUrl") : t("fields.source")}
        hint={
          remote
            ? t("hints.baseUrl")
            : kind === "url"
            ? t("hints.sourceUrl")
            : kind === "path"
              ? t("hints.sourcePath")
              : editing
                ? t("hints.sourceChange")
                : t("hints.source")
        }
        error={err("source")}
      >
        <input
          {...sourceField}
          className="input"
          type="text"
          autoComplete="off"
          spellCheck={false}
          placeholder={remote ? "https://api.openai.com/v1" : "https://huggingface.co/…/resolve/main/model.gguf"}
        />
      </Field>
      <Field label={t("fields.name")} hint={t("hints.name")} error={err("name")}>
        <input {...register("name")} className="input" type="text" autoComplete="off" spellCheck={false} />
      </Field>
      <div className="grid gap-x-4 sm:grid-cols-2">
        <Field label={t("fields.backend")} hint={t("hints.backend")} error={err("backend")}>
          <select {...register("backend")} className="input">
            {backendChoices.map((b) => (
              <option key={b} value={b}>
                {b}
              </option>
            ))}
          </select>
        </Field>
        <Field label={t("fields.kind")} error={err("kind")}>
          <select {...register("kind")} className="input">
            <option value="chat">{t("kind.chat")}</option>
            <option value="embedding">{t("kind.embedding")}</option>
          </select>
        </Field>
      </div>
      {remote ? (
        <div className="grid gap-x-4 sm:grid-cols-2">
          <Field label={t("fields.upstreamModel")} hint={t("hints.upstreamModel")} error={err("upstream_model")}>
            <input
              {...register("upstream_model")}
              className="input"
              type="text"
              autoComplete="off"
              spellCheck={false}
              placeholder={watch("name")}
            />
          </Field>
          <Field
            label={t("fields.apiKey")}
            hint={model?.api_key_set ? t("hints.apiKeyStored") : t("hints.apiKey")}
            error={err("api_key")}
          >
            <input
              {...register("api_key")}
              className="input font-mono"
              type="password"
              autoComplete="new-password"
              spellCheck={false}
              placeholder={model?.api_key_set ? "••••••••" : ""}
            />
          </Field>
          <div className="sm:col-span-2">
            <Field label={t("fields.tlsFingerprint")} hint={t("hints.tlsFingerprint")} error={err("tls_fingerprint")}>
              <input
                {...register("tls_fingerprint")}
                className="input font-mono"
                type="text"
                autoComplete="off"
                spellCheck={false}
                placeholder="AB:CD:…"
              />
            </Field>
          </div>
        </div>
      ) : (
        <Field
          label={t("fields.sha256")}
          hint={editing ? t("hints.sha256Edit") : t("hints.sha256")}
          error={err("sha256")}
        >
          <input {...register("sha256")} className="input font-mono" type="text" autoComplete="off" spellCheck={false} />
        </Field>
      )}
      {!remote && (nodes.length > 0 || model?.node) && (
        <Field label={t("fields.node")} hint={t("hints.node")} error={err("node")}>
          <select {...register("node")} className="input">
            <option value="">{t("nodeHere")}</option>
            {Array.from(new Set([...nodes, model?.node ?? ""]))
              .filter(Boolean)
              .map((n) => (
                <option key={n} value={n}>
                  {n}
                </option>
              ))}
          </select>
        </Field>
      )}
      <Field label={t("fields.fallbacks")} hint={t("hints.fallbacks")} error={err("fallbacks")}>
        <input
          {...register("fallbacks")}
          className="input"
          type="text"
          autoComplete="off"
          spellCheck={false}
          placeholder="gemma-3-270m, other-model"
        />
      </Field>
      <Field label={t("fields.replicas")} hint={t("hints.replicas")} error={err("replicas")}>
        <input
          {...register("replicas")}
          className="input"
          type="text"
          autoComplete="off"
          spellCheck={false}
          placeholder="gemma-3-270m-node-b"
        />
      </Field>
      <Field label={t("fields.description")} error={err("description")}>
        <textarea {...register("description")} className="input" rows={2} />
      </Field>
      <div className="grid gap-x-4 sm:grid-cols-3">
        <Field label={t("fields.contextLength")} hint={t("hints.contextLength")} error={err("context_length")}>
          {numberInput(register("context_length"))}
        </Field>
        <Field label={t("fields.slots")} hint={t("hints.slots")} error={err("slots")}>
          {numberInput(register("slots"), "4")}
        </Field>
        {!remote && (
          <Field label={t("fields.threads")} hint={t("hints.threads")} error={err("threads")}>
            {numberInput(register("threads"))}
          </Field>
        )}
      </div>
      <Controller
        control={control}
        name="access"
        render={({ field }) => <AccessEditor value={field.value} onChange={field.onChange} />}
      />
      <details
        className="mb-3 rounded-md border border-slate-200 p-3 dark:border-slate-700"
        open={errors.sampling || errors.chat_template ? true : undefined}
      >
        <summary className="cursor-pointer text-sm font-medium">{t("sampling.legend")}</summary>
        <p className="my-2 text-xs muted">{t("sampling.hint")}</p>
        <div className="grid gap-x-4 sm:grid-cols-2">
          {samplingFields.map((f) => (
            <Field
              key={f.key}
              label={t(`sampling.${f.key}`)}
              error={message(errors.sampling?.[f.key]?.message)}
            >
              <input
                {...register(`sampling.${f.key}`)}
                className="input"
                inputMode={f.int ? "numeric" : "decimal"}
              />
            </Field>
          ))}
        </div>
        {!remote && (
          <Field label={t("fields.chatTemplate")} hint={t("hints.chatTemplate")} error={err("chat_template")}>
            <textarea {...register("chat_template")} className="input font-mono" rows={4} spellCheck={false} />
          </Field>
        )}
      </details>
      <ErrorMessage error={error} />
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
