import { useState } from "react";
import { useTranslation } from "react-i18next";
import { ErrorMessage } from "@/components/ErrorMessage";
import { ApiError } from "@/lib/api";
import { useUpdatePlugin, type PluginChanges, type PluginView } from "../api/plugins";
import { StoppedWarning } from "./PluginState";

function Switch({
  id,
  label,
  hint,
  checked,
  disabled,
  onChange,
}: {
  id: string;
  label: string;
  hint: string;
  checked: boolean;
  disabled: boolean;
  onChange: (checked: boolean) => void;
}) {
  return (
    <div className="flex items-start gap-3">
      <input
        id={id}
        type="checkbox"
        role="switch"
        className="mt-1 size-5 accent-brand-700 dark:scheme-dark"
        checked={checked}
        disabled={disabled}
        aria-describedby={`${id}-hint`}
        onChange={(e) => onChange(e.target.checked)}
      />
      <div>
        <label htmlFor={id} className="font-medium">
          {label}
        </label>
        <p id={`${id}-hint`} className="text-sm muted">
          {hint}
        </p>
      </div>
    </div>
  );
}

/**
 * Turning the plugin on or off, and whether people choose it for
 * themselves. Each switch saves at once and says what happened.
 */
export function PluginSwitches({ plugin }: { plugin: PluginView }) {
  const { t } = useTranslation("plugins");
  const update = useUpdatePlugin(plugin.id);
  const [message, setMessage] = useState("");
  const change = (changes: PluginChanges, done: (p: PluginView) => string) => {
    setMessage("");
    update.mutate(changes, { onSuccess: (p) => setMessage(done(p)) });
  };
  const turnOn = () =>
    change({ enabled: true }, (p) => (p.active ? t("switches.nowOn", { name: p.name }) : t("switches.onNotRunning", { name: p.name })));

  return (
    <div className="flex flex-col gap-4">
      <StoppedWarning plugin={plugin}>
        <div>
          <button type="button" className="btn-secondary" disabled={update.isPending} onClick={turnOn}>
            {t("switches.turnOnAgain")}
          </button>
        </div>
      </StoppedWarning>
      <Switch
        id="plugin-enabled"
        label={t("switches.enabled")}
        hint={t("switches.enabledHint")}
        checked={plugin.enabled}
        disabled={update.isPending}
        onChange={(on) => (on ? turnOn() : change({ enabled: false }, (p) => t("switches.nowOff", { name: p.name })))}
      />
      <Switch
        id="plugin-optional"
        label={t("switches.optional")}
        hint={t("switches.optionalHint")}
        checked={plugin.optional}
        disabled={update.isPending}
        onChange={(optional) =>
          change({ optional }, (p) =>
            p.optional ? t("switches.nowOptional", { name: p.name }) : t("switches.nowEveryone", { name: p.name }),
          )
        }
      />
      {update.error instanceof ApiError && update.error.code === "bad_request" && update.variables?.enabled ? (
        // Usually a required setting is missing; the server names it.
        <p
          role="alert"
          className="rounded-md border border-red-300 bg-red-50 p-3 text-sm text-red-900 dark:border-red-800 dark:bg-red-950 dark:text-red-100"
        >
          {t("switches.cannotTurnOn", { message: update.error.message })}
        </p>
      ) : (
        <ErrorMessage error={update.error} />
      )}
      <p role="status" aria-live="polite" className="min-h-5 text-sm">
        {message}
      </p>
    </div>
  );
}
