import { useId, useMemo, useState } from "react";
import { useTranslation } from "react-i18next";
import { ErrorMessage } from "@/components/ErrorMessage";
import { ApiError } from "@/lib/api";
import { useConfigurePlugin, type PluginView } from "../api/plugins";
import {
  configFields,
  initialValues,
  problemsByField,
  schemaDescription,
  toConfig,
  type ConfigField,
  type FieldValue,
  type FormValues,
} from "../utils/configSchema";

/** What the server said about the saved configuration, by field. */
function serverProblems(error: unknown, names: string[]) {
  if (!(error instanceof ApiError) || error.code !== "validation_failed" || !error.fields.config) return null;
  return problemsByField(error.fields.config, names);
}

const show = (v: unknown) => (typeof v === "string" ? v : JSON.stringify(v));

/** The hint under a field: its description, then its limits and default. */
function useHint() {
  const { t } = useTranslation("plugins");
  return (field: ConfigField, secretSet: boolean): string[] => {
    const lines: string[] = [];
    if (field.description) lines.push(field.description);
    const rules: string[] = [];
    if (field.minimum !== undefined && field.maximum !== undefined) {
      rules.push(t("config.range", { min: field.minimum, max: field.maximum }));
    } else if (field.minimum !== undefined) {
      rules.push(t("config.atLeast", { min: field.minimum }));
    } else if (field.maximum !== undefined) {
      rules.push(t("config.atMost", { max: field.maximum }));
    }
    if (field.maxLength !== undefined) rules.push(t("config.maxLength", { count: field.maxLength }));
    if (field.kind === "integer") rules.push(t("config.wholeNumber"));
    if (field.kind === "strings" && !field.options && !field.secret) rules.push(t("config.onePerLine"));
    if (field.default !== undefined && !field.secret && field.kind !== "boolean") {
      const value = Array.isArray(field.default) ? field.default.join(", ") : show(field.default);
      rules.push(value === "" ? t("config.defaultEmpty") : t("config.default", { value }));
    }
    if (rules.length) lines.push(rules.join(" · "));
    if (field.secret) lines.push(secretSet ? t("config.secretSaved") : t("config.secretUnset"));
    return lines;
  };
}

function FieldControl({
  field,
  id,
  value,
  describedBy,
  invalid,
  secretSet,
  onChange,
}: {
  field: ConfigField;
  id: string;
  value: FieldValue;
  describedBy: string | undefined;
  invalid: boolean;
  secretSet: boolean;
  onChange: (value: FieldValue) => void;
}) {
  const { t } = useTranslation("plugins");
  const common = {
    id,
    "aria-describedby": describedBy,
    "aria-invalid": invalid || undefined,
    "aria-required": field.required || undefined,
  };
  if (field.secret) {
    return (
      <input
        {...common}
        type="password"
        className="input"
        // A new value for the plugin, never the technician's own password.
        autoComplete="new-password"
        spellCheck={false}
        placeholder={secretSet ? t("config.secretPlaceholder") : ""}
        value={String(value)}
        onChange={(e) => onChange(e.target.value)}
      />
    );
  }
  if (field.options && field.kind !== "strings") {
    return (
      <select {...common} className="input" value={String(value)} onChange={(e) => onChange(e.target.value)}>
        {(!field.required || value === "") && (
          <option value="">
            {field.default !== undefined ? t("config.useDefault", { value: show(field.default) }) : t("config.notSet")}
          </option>
        )}
        {field.options.map((o) => (
          <option key={String(o)} value={String(o)}>
            {String(o)}
          </option>
        ))}
      </select>
    );
  }
  if (field.kind === "strings") {
    return (
      <textarea
        {...common}
        className="input font-mono"
        rows={Math.min(8, Math.max(3, String(value).split("\n").length + 1))}
        spellCheck={false}
        value={String(value)}
        onChange={(e) => onChange(e.target.value)}
      />
    );
  }
  if (field.kind === "number" || field.kind === "integer") {
    return (
      <input
        {...common}
        type="number"
        className="input max-w-60"
        inputMode={field.kind === "integer" ? "numeric" : "decimal"}
        min={field.minimum}
        max={field.maximum}
        step={field.kind === "integer" ? 1 : "any"}
        value={String(value)}
        onChange={(e) => onChange(e.target.value)}
      />
    );
  }
  return (
    <input
      {...common}
      type="text"
      className="input"
      maxLength={field.maxLength}
      spellCheck={false}
      value={String(value)}
      onChange={(e) => onChange(e.target.value)}
    />
  );
}

/**
 * The plugin's settings as a form built from its `config_schema`. Secret
 * fields are password boxes that start empty: left empty, the saved value
 * stays; typed into, it is replaced. The server checks everything again
 * and its problems show under the fields they are about.
 */
export function ConfigForm({ plugin }: { plugin: PluginView }) {
  const { t } = useTranslation("plugins");
  const formId = useId();
  const hint = useHint();
  const configure = useConfigurePlugin(plugin.id);
  const fields = useMemo(() => configFields(plugin.config_schema), [plugin.config_schema]);
  const secretsSet = useMemo(
    () => new Set(plugin.secrets.filter((s) => s.set).map((s) => s.name)),
    [plugin.secrets],
  );
  const snapshot = JSON.stringify([plugin.config, plugin.secrets]);
  const [seen, setSeen] = useState(snapshot);
  const [values, setValues] = useState<FormValues>(() => initialValues(fields, plugin.config));
  const [clientErrors, setClientErrors] = useState<ReturnType<typeof toConfig>["errors"]>({});
  const [saved, setSaved] = useState(false);
  // A saved configuration (here or by someone else) starts the form again.
  if (seen !== snapshot) {
    setSeen(snapshot);
    setValues(initialValues(fields, plugin.config));
    setClientErrors({});
  }

  const names = fields.map((f) => f.name);
  const problems = serverProblems(configure.error, names);
  const dirty = JSON.stringify(values) !== JSON.stringify(initialValues(fields, plugin.config));
  const fieldId = (name: string) => `${formId}-${name}`;

  if (fields.length === 0) return <p className="text-sm muted">{t("config.noSettings")}</p>;

  const errorFor = (field: ConfigField): string | undefined => {
    const local = clientErrors[field.name];
    if (local) return t(local.key, local.values);
    return problems?.fields[field.name];
  };

  const focusFirstProblem = (bad: string[]) => {
    const first = fields.find((f) => bad.includes(f.name));
    if (first) requestAnimationFrame(() => document.getElementById(fieldId(first.name))?.focus());
  };

  const description = schemaDescription(plugin.config_schema);

  return (
    <form
      noValidate
      aria-describedby={description ? `${formId}-about` : undefined}
      onSubmit={(e) => {
        e.preventDefault();
        setSaved(false);
        const { config, errors } = toConfig(fields, values);
        setClientErrors(errors);
        if (Object.keys(errors).length) {
          configure.reset();
          focusFirstProblem(Object.keys(errors));
          return;
        }
        configure.mutate(config, {
          onSuccess: (updated) => {
            // Typed secrets are saved now; their boxes start empty again.
            setValues(initialValues(fields, updated.config));
            setSaved(true);
          },
          onError: (error) => {
            const found = serverProblems(error, names);
            if (found) focusFirstProblem(Object.keys(found.fields));
          },
        });
      }}
    >
      {description && (
        <p id={`${formId}-about`} className="mb-3 text-sm muted">
          {description}
        </p>
      )}
      {fields.map((field) => {
        const id = fieldId(field.name);
        const secretSet = secretsSet.has(field.name);
        const hints = hint(field, secretSet);
        const error = errorFor(field);
        const hintId = hints.length ? `${id}-hint` : undefined;
        const errorId = error ? `${id}-error` : undefined;
        const describedBy = [hintId, errorId].filter(Boolean).join(" ") || undefined;
        const set = (value: FieldValue) => {
          setSaved(false);
          setValues((old) => ({ ...old, [field.name]: value }));
        };
        const labelText = (
          <>
            <span className="font-mono">{field.name}</span>
            {field.required && <span className="ml-1 text-red-700 dark:text-red-400">{t("config.required")}</span>}
            {field.secret && secretSet && (
              <span className="badge ml-2 bg-green-100 text-green-900 dark:bg-green-950 dark:text-green-200">
                {t("config.saved")}
              </span>
            )}
          </>
        );
        const below = (
          <>
            {hints.length > 0 && (
              <div id={hintId} className="mt-1 flex flex-col gap-0.5 text-xs muted">
                {hints.map((line) => (
                  <p key={line}>{line}</p>
                ))}
              </div>
            )}
            {error && (
              <p id={errorId} className="mt-1 text-sm text-red-700 dark:text-red-400">
                {error}
              </p>
            )}
          </>
        );

        if (field.kind === "boolean" && !field.secret) {
          return (
            <div key={field.name} className="mb-4">
              <div className="flex items-center gap-2">
                <input
                  id={id}
                  type="checkbox"
                  className="size-4 accent-brand-700"
                  checked={values[field.name] === true}
                  aria-describedby={describedBy}
                  aria-invalid={error ? true : undefined}
                  onChange={(e) => set(e.target.checked)}
                />
                <label htmlFor={id} className="text-sm font-medium">
                  {labelText}
                </label>
              </div>
              {below}
            </div>
          );
        }
        if (field.kind === "strings" && field.options && !field.secret) {
          const picked = Array.isArray(values[field.name]) ? (values[field.name] as string[]) : [];
          return (
            <fieldset key={field.name} className="mb-4" aria-describedby={describedBy} id={id} tabIndex={-1}>
              <legend className="label">{labelText}</legend>
              <div className="flex flex-wrap gap-x-4 gap-y-1">
                {field.options.map((o) => {
                  const option = String(o);
                  return (
                    <label key={option} className="flex items-center gap-2 text-sm">
                      <input
                        type="checkbox"
                        className="size-4 accent-brand-700"
                        checked={picked.includes(option)}
                        onChange={(e) =>
                          set(e.target.checked ? [...picked, option] : picked.filter((p) => p !== option))
                        }
                      />
                      {option}
                    </label>
                  );
                })}
              </div>
              {below}
            </fieldset>
          );
        }
        return (
          <div key={field.name} className="mb-4">
            <label htmlFor={id} className="label">
              {labelText}
            </label>
            <FieldControl
              field={field}
              id={id}
              value={values[field.name] ?? ""}
              describedBy={describedBy}
              invalid={Boolean(error)}
              secretSet={secretSet}
              onChange={set}
            />
            {below}
          </div>
        );
      })}
      {problems ? (
        problems.other.length > 0 && (
          <div role="alert" className="mb-3 rounded-md border border-red-300 bg-red-50 p-3 text-sm text-red-900 dark:border-red-800 dark:bg-red-950 dark:text-red-100">
            {problems.other.join("; ")}
          </div>
        )
      ) : (
        <div className="mb-3">
          <ErrorMessage error={configure.error} />
        </div>
      )}
      {problems && Object.keys(problems.fields).length > 0 && (
        <p role="alert" className="mb-3 text-sm text-red-700 dark:text-red-400">
          {t("config.fixFields", { count: Object.keys(problems.fields).length })}
        </p>
      )}
      <div className="flex flex-wrap items-center gap-3">
        <button type="submit" className="btn-primary" disabled={configure.isPending}>
          {configure.isPending ? t("actions.saving") : t("config.save")}
        </button>
        <button
          type="button"
          className="btn-secondary"
          disabled={!dirty || configure.isPending}
          onClick={() => {
            setValues(initialValues(fields, plugin.config));
            setClientErrors({});
            configure.reset();
          }}
        >
          {t("actions.undo")}
        </button>
        <p role="status" aria-live="polite" className="text-sm">
          {dirty ? t("unsaved") : saved ? t("config.savedAll") : ""}
        </p>
      </div>
    </form>
  );
}
