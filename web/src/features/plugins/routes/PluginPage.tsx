import { useEffect, useState, type ReactNode } from "react";
import { Link, useLocation, useNavigate, useParams } from "react-router";
import { useTranslation } from "react-i18next";
import { Spinner } from "@/components/Spinner";
import { ErrorMessage } from "@/components/ErrorMessage";
import { CopyButton } from "@/components/CopyButton";
import { formatDateTime, formatNumber } from "@/lib/format";
import { usePlugin } from "../api/plugins";
import { StateBadge } from "../components/PluginState";
import { PluginSwitches } from "../components/PluginSwitches";
import { CapabilityApproval } from "../components/CapabilityApproval";
import { ConfigForm } from "../components/ConfigForm";
import { ModelLimit } from "../components/ModelLimit";
import { HookStatsTable } from "../components/HookStatsTable";
import { DeleteDialog, UpgradeDialog } from "../components/PluginDialogs";

function Row({ label, children }: { label: string; children: ReactNode }) {
  return (
    <div className="grid gap-1 border-b border-slate-100 py-2 sm:grid-cols-[12rem_1fr] dark:border-slate-800">
      <dt className="text-sm muted">{label}</dt>
      <dd className="min-w-0 break-words text-sm">{children}</dd>
    </div>
  );
}

function Section({ id, title, intro, children }: { id: string; title: string; intro?: string; children: ReactNode }) {
  return (
    <section aria-labelledby={id} className="card">
      <h2 id={id} className="mb-1 font-semibold">
        {title}
      </h2>
      {intro && <p className="mb-3 text-sm muted">{intro}</p>}
      {children}
    </section>
  );
}

export default function PluginPage() {
  const { pluginId = "" } = useParams();
  const { t } = useTranslation("plugins");
  const navigate = useNavigate();
  const location = useLocation();
  const plugin = usePlugin(pluginId);
  const [upgrading, setUpgrading] = useState(false);
  const [deleting, setDeleting] = useState(false);
  const installed = (location.state as { installed?: boolean } | null)?.installed === true;
  const [notice, setNotice] = useState(installed ? t("install.done") : "");
  // Said once: a reload or a step back does not announce the install again.
  useEffect(() => {
    if (installed) void navigate(location.pathname, { replace: true, state: null });
  }, [installed, navigate, location.pathname]);

  if (plugin.isPending) return <Spinner />;
  if (plugin.isError) {
    return (
      <div className="mx-auto max-w-4xl p-4 sm:p-6">
        <h1 className="mb-4 text-xl font-semibold">{t("title")}</h1>
        <ErrorMessage error={plugin.error} onRetry={() => void plugin.refetch()} />
        <Link to="/plugins" className="btn-secondary mt-4">
          {t("actions.back")}
        </Link>
      </div>
    );
  }
  const p = plugin.data;
  const limits = p.limits;

  return (
    <div className="mx-auto flex max-w-4xl flex-col gap-4 p-4 sm:p-6">
      <nav aria-label={t("actions.back")}>
        <Link to="/plugins" className="text-sm text-brand-700 hover:underline dark:text-brand-100">
          ← {t("actions.back")}
        </Link>
      </nav>
      <div className="flex flex-wrap items-center justify-between gap-3">
        <div className="flex min-w-0 flex-wrap items-center gap-3">
          <h1 className="break-words text-xl font-semibold">{p.name}</h1>
          <span className="text-sm muted">{p.version}</span>
          <StateBadge plugin={p} />
          {p.optional && <span className="badge">{t("optionalBadge")}</span>}
        </div>
        <div className="flex flex-wrap gap-2">
          <button type="button" className="btn-secondary" onClick={() => setUpgrading(true)}>
            {t("upgrade.open")}
          </button>
          <button type="button" className="btn-ghost text-red-700 dark:text-red-300" onClick={() => setDeleting(true)}>
            {t("delete.open")}
          </button>
        </div>
      </div>
      <p role="status" aria-live="polite" className="min-h-5 text-sm">
        {notice}
      </p>
      {p.description && <p>{p.description}</p>}

      <Section id="plugin-running" title={t("sections.running")}>
        <PluginSwitches plugin={p} />
      </Section>

      <Section id="plugin-capabilities" title={t("sections.capabilities")} intro={t("capabilities.intro")}>
        <CapabilityApproval plugin={p} />
      </Section>

      <Section id="plugin-config" title={t("sections.config")} intro={t("config.intro")}>
        <ConfigForm plugin={p} />
      </Section>

      <Section id="plugin-models" title={t("sections.models")} intro={t("models.intro")}>
        <ModelLimit plugin={p} />
      </Section>

      <Section id="plugin-health" title={t("sections.health")}>
        <dl className="mb-3">
          <Row label={t("fields.consecutiveFailures")}>{formatNumber(p.consecutive_failures)}</Row>
          <Row label={t("fields.lastError")}>
            {p.last_error ? <span className="font-mono text-xs">{p.last_error}</span> : t("none")}
          </Row>
        </dl>
        <HookStatsTable plugin={p} />
        <p className="mt-2 text-xs muted">{t("stats.note")}</p>
      </Section>

      <Section id="plugin-details" title={t("sections.details")}>
        <dl>
          <Row label={t("fields.id")}>
            <span className="font-mono text-xs">{p.id}</span>
          </Row>
          <Row label={t("fields.version")}>{p.version}</Row>
          <Row label={t("fields.api")}>
            <span className="font-mono text-xs">corral:plugin@{p.api}</span>
          </Row>
          <Row label={t("fields.hooks")}>{p.hooks.length ? p.hooks.join(", ") : t("none")}</Row>
          <Row label={t("fields.priority")}>{t("priorityValue", { value: p.priority })}</Row>
          <Row label={t("fields.failure")}>
            {p.failure === "fail-closed" ? t("failure.failClosed") : t("failure.skip")}
          </Row>
          <Row label={t("fields.routes")}>
            {p.routes.length === 0 ? (
              t("none")
            ) : (
              <ul className="flex flex-col gap-0.5 font-mono text-xs">
                {p.routes.map((r) => {
                  const [method, ...path] = r.split(" ");
                  return (
                    <li key={r}>
                      {method} /api/plugins/{p.id}/{path.join(" ")}
                    </li>
                  );
                })}
              </ul>
            )}
          </Row>
          {limits && (
            <Row label={t("fields.limits")}>
              {t("limitsValue", { memory: limits.memory_mb, time: limits.time_ms, kv: limits.kv_kb })}
            </Row>
          )}
          <Row label={t("fields.sha256")}>
            <span className="flex flex-wrap items-center gap-2">
              <span className="break-all font-mono text-xs">{p.component_sha256}</span>
              <CopyButton text={p.component_sha256} className="btn-ghost" />
            </span>
          </Row>
          <Row label={t("fields.installed")}>{formatDateTime(p.installed_at)}</Row>
          <Row label={t("fields.updated")}>{formatDateTime(p.updated_at)}</Row>
        </dl>
      </Section>

      <UpgradeDialog
        plugin={p}
        open={upgrading}
        onClose={() => setUpgrading(false)}
        onUpgraded={(upgraded) => {
          setUpgrading(false);
          setNotice(t("upgrade.done", { name: upgraded.name, version: upgraded.version }));
        }}
      />
      <DeleteDialog
        plugin={p}
        open={deleting}
        onClose={() => setDeleting(false)}
        onDeleted={() => {
          setDeleting(false);
          void navigate("/plugins", { replace: true });
        }}
      />
    </div>
  );
}
