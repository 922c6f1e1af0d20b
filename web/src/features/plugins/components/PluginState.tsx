import type { ReactNode } from "react";
import { useTranslation } from "react-i18next";
import type { PluginView } from "../api/plugins";

/**
 * Where a plugin stands: running; switched off by a technician; turned off
 * by Corral (after failing again and again, or because it no longer
 * loads), which wins over the switch; or switched on but not running.
 */
export type PluginState = "active" | "off" | "stopped" | "idle";

export function pluginState(plugin: Pick<PluginView, "active" | "enabled" | "disabled_reason">): PluginState {
  if (plugin.disabled_reason) return "stopped";
  if (plugin.active) return "active";
  return plugin.enabled ? "idle" : "off";
}

const colours: Record<PluginState, string> = {
  active: "bg-green-100 text-green-900 dark:bg-green-950 dark:text-green-200",
  off: "",
  stopped: "bg-red-100 text-red-900 dark:bg-red-950 dark:text-red-200",
  idle: "bg-amber-100 text-amber-900 dark:bg-amber-950 dark:text-amber-200",
};

const marks: Record<PluginState, string> = { active: "●", off: "○", stopped: "⚠", idle: "◐" };

/** A badge with the state in words (the colour and the mark only repeat it). */
export function StateBadge({ plugin }: { plugin: Pick<PluginView, "active" | "enabled" | "disabled_reason"> }) {
  const { t } = useTranslation("plugins");
  const state = pluginState(plugin);
  return (
    <span className={`badge gap-1 ${colours[state]}`} title={t(`state.${state}Hint`)}>
      <span aria-hidden="true">{marks[state]}</span>
      {t(`state.${state}`)}
    </span>
  );
}

/**
 * The reason Corral turned a plugin off, in a warning that stays on the
 * page until a technician turns the plugin on again.
 */
export function StoppedWarning({ plugin, children }: { plugin: PluginView; children?: ReactNode }) {
  const { t } = useTranslation("plugins");
  if (!plugin.disabled_reason) return null;
  return (
    <div className="flex flex-col gap-2 rounded-md border border-amber-300 bg-amber-50 p-3 text-sm text-amber-950 dark:border-amber-800 dark:bg-amber-950 dark:text-amber-100">
      <p className="font-semibold">
        <span aria-hidden="true">⚠ </span>
        {t("state.stoppedTitle")}
      </p>
      <p className="break-words">{t("state.stoppedReason", { reason: plugin.disabled_reason })}</p>
      <p>{t("state.stoppedHelp")}</p>
      {children}
    </div>
  );
}
