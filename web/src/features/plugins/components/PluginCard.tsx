import { Link } from "react-router";
import { useTranslation } from "react-i18next";
import type { PluginView } from "../api/plugins";
import { StateBadge, StoppedWarning } from "./PluginState";
import { HookStatsTable } from "./HookStatsTable";

/** Requested capabilities, each marked approved or not (in words, not only colour). */
export function CapabilityList({ plugin }: { plugin: PluginView }) {
  const { t } = useTranslation("plugins");
  if (plugin.capabilities.length === 0) return <span className="muted">{t("capabilities.noneShort")}</span>;
  return (
    <ul className="flex flex-wrap gap-1.5">
      {plugin.capabilities.map((c) => {
        const approved = plugin.approved.includes(c);
        return (
          <li
            key={c}
            className={`badge gap-1 font-mono ${
              approved
                ? "bg-green-100 text-green-900 dark:bg-green-950 dark:text-green-200"
                : "border border-dashed border-amber-500 bg-transparent text-amber-900 dark:text-amber-200"
            }`}
          >
            <span aria-hidden="true">{approved ? "✓" : "?"}</span>
            {c}
            <span className="sr-only">{approved ? t("capabilities.isApproved") : t("capabilities.notApproved")}</span>
          </li>
        );
      })}
    </ul>
  );
}

/**
 * The hosts it declares for outgoing HTTP, each marked approved or not,
 * and whether it may reach the private network.
 */
export function HostList({ plugin }: { plugin: PluginView }) {
  const { t } = useTranslation("plugins");
  return (
    <>
      <ul className="flex flex-wrap gap-1.5" aria-label={t("hosts.listLabel")}>
        {plugin.http_hosts.map((host) => {
          const approved = plugin.approved_hosts.includes(host);
          return (
            <li
              key={host}
              className={`badge gap-1 break-all font-mono ${
                approved
                  ? "bg-green-100 text-green-900 dark:bg-green-950 dark:text-green-200"
                  : "border border-dashed border-amber-500 bg-transparent text-amber-900 dark:text-amber-200"
              }`}
            >
              <span aria-hidden="true">{approved ? "✓" : "?"}</span>
              {host}
              <span className="sr-only">{approved ? t("capabilities.isApproved") : t("capabilities.notApproved")}</span>
            </li>
          );
        })}
      </ul>
      {plugin.private_network && (
        <span className="text-xs font-medium text-amber-900 dark:text-amber-200">
          <span aria-hidden="true">⚠ </span>
          {t("hosts.privateAllowed")}
        </span>
      )}
    </>
  );
}

/** One plugin in the list: what it is, where it stands, how its hooks are doing. */
export function PluginCard({ plugin }: { plugin: PluginView }) {
  const { t } = useTranslation("plugins");
  const headingId = `plugin-${plugin.id}`;
  const approvedCount = plugin.capabilities.filter((c) => plugin.approved.includes(c)).length;
  return (
    <li className="card flex flex-col gap-3" aria-labelledby={headingId}>
      <div className="flex flex-wrap items-start justify-between gap-2">
        <div className="min-w-0">
          <h2 id={headingId} className="break-words text-base font-semibold">
            <Link to={`/plugins/${encodeURIComponent(plugin.id)}`} className="hover:underline">
              {plugin.name}
            </Link>{" "}
            <span className="text-sm font-normal muted">{plugin.version}</span>
          </h2>
          <p className="font-mono text-xs muted">{plugin.id}</p>
        </div>
        <div className="flex flex-wrap gap-2">
          <StateBadge plugin={plugin} />
          {plugin.optional && <span className="badge">{t("optionalBadge")}</span>}
        </div>
      </div>
      <StoppedWarning plugin={plugin} />
      {plugin.description && <p className="text-sm">{plugin.description}</p>}
      <dl className="grid grid-cols-1 gap-x-4 gap-y-2 text-sm sm:grid-cols-[10rem_1fr]">
        <dt className="muted">{t("fields.hooks")}</dt>
        <dd>
          {plugin.hooks.length ? (
            <ul className="flex flex-wrap gap-1.5">
              {plugin.hooks.map((h) => (
                <li key={h} className="badge font-mono">
                  {h}
                </li>
              ))}
            </ul>
          ) : (
            <span className="muted">{t("none")}</span>
          )}
        </dd>
        <dt className="muted">{t("fields.capabilities")}</dt>
        <dd className="flex flex-col gap-1">
          <CapabilityList plugin={plugin} />
          {plugin.capabilities.length > 0 && (
            <span className="text-xs muted">
              {t("capabilities.summary", { approved: approvedCount, requested: plugin.capabilities.length })}
            </span>
          )}
        </dd>
        {plugin.http_hosts.length > 0 && (
          <>
            <dt className="muted">{t("fields.hosts")}</dt>
            <dd className="flex flex-col gap-1">
              <HostList plugin={plugin} />
            </dd>
          </>
        )}
        <dt className="muted">{t("fields.models")}</dt>
        <dd className="break-words">{plugin.models == null ? t("models.everyShort") : plugin.models.join(", ") || t("none")}</dd>
        <dt className="muted">{t("fields.whoFor")}</dt>
        <dd>{plugin.optional ? t("whoFor.optional") : t("whoFor.everyone")}</dd>
      </dl>
      <HookStatsTable plugin={plugin} />
      <div>
        <Link to={`/plugins/${encodeURIComponent(plugin.id)}`} className="btn-secondary" aria-label={t("actions.manage", { name: plugin.name })}>
          {t("actions.manageShort")}
        </Link>
      </div>
    </li>
  );
}
