import type { ReactNode } from "react";
import { Link } from "react-router";
import { useTranslation } from "react-i18next";
import { PageHeader } from "@/components/PageHeader";
import { Spinner } from "@/components/Spinner";
import { ErrorMessage } from "@/components/ErrorMessage";
import { EmptyState } from "@/components/EmptyState";
import { formatBytes, formatDateTime, formatDuration, formatNumber } from "@/lib/format";
import { useRuntimeStatus, type RuntimeStatus } from "../api/models";
import { NodesSection } from "../components/NodesSection";

function Section({ id, title, children }: { id: string; title: string; children: ReactNode }) {
  return (
    <section aria-labelledby={id} className="card">
      <h2 id={id} className="mb-3 font-semibold">
        {title}
      </h2>
      {children}
    </section>
  );
}

function MemoryMeter({ limits }: { limits: RuntimeStatus["limits"] }) {
  const { t } = useTranslation("models");
  const used = limits.memory_used_bytes;
  const budget = limits.memory_budget_bytes;
  return (
    <div className="flex flex-col gap-2">
      {budget > 0 && (
        <meter
          aria-label={t("inference.memoryLabel")}
          className="h-3 w-full"
          min={0}
          max={budget}
          low={budget * 0.75}
          high={budget * 0.9}
          optimum={0}
          value={used}
        />
      )}
      <p className="text-sm tabular-nums">
        {budget > 0
          ? t("inference.memoryOf", { used: formatBytes(used), budget: formatBytes(budget) })
          : t("inference.memoryNoBudget", { used: formatBytes(used) })}
      </p>
    </div>
  );
}

function Limits({ limits }: { limits: RuntimeStatus["limits"] }) {
  const { t } = useTranslation("models");
  const orNone = (v: number) => (v > 0 ? formatNumber(v) : t("inference.noLimit"));
  const rows: [string, string][] = [
    [t("inference.maxLoaded"), orNone(limits.max_loaded_models)],
    [t("inference.idleUnload"), limits.idle_unload_secs > 0 ? formatDuration(limits.idle_unload_secs) : t("inference.noLimit")],
    [t("inference.queueMax"), formatNumber(limits.queue_max_waiting)],
    [t("inference.perUser"), formatNumber(limits.per_user_generations)],
  ];
  return (
    <dl className="grid grid-cols-[1fr_auto] gap-x-4 gap-y-1 text-sm">
      {rows.map(([label, value]) => (
        <div key={label} className="contents">
          <dt className="muted">{label}</dt>
          <dd className="text-right tabular-nums">{value}</dd>
        </div>
      ))}
    </dl>
  );
}

export default function InferencePage() {
  const { t } = useTranslation("models");
  const status = useRuntimeStatus({ refetchInterval: 2_000 });

  return (
    <div className="mx-auto flex max-w-6xl flex-col gap-4 p-4">
      <PageHeader
        title={t("inference.title")}
        actions={
          <Link to="/models" className="btn-secondary">
            {t("actions.back")}
          </Link>
        }
      />
      <p className="-mt-2 text-sm muted">
        {t("inference.intro")}
        {status.dataUpdatedAt > 0 && (
          <span className="ml-1">
            {t("inference.updatedAt", {
              time: new Date(status.dataUpdatedAt).toLocaleTimeString(),
            })}
          </span>
        )}
      </p>
      {status.isPending ? (
        <Spinner />
      ) : status.isError && !status.data ? (
        <ErrorMessage error={status.error} onRetry={() => void status.refetch()} />
      ) : (
        <InferenceDetails data={status.data} error={status.error} />
      )}
    </div>
  );
}

function InferenceDetails({ data, error }: { data: RuntimeStatus; error: unknown }) {
  const { t } = useTranslation("models");
  const cap = (c: { chat: boolean; completion: boolean; embeddings: boolean }) =>
    (["chat", "completion", "embeddings"] as const)
      .filter((k) => c[k])
      .map((k) => t(`inference.cap.${k}`))
      .join(", ");
  return (
    <>
      {/* A failed refresh keeps the last answer on screen and says why. */}
      <ErrorMessage error={error} />
      {data.backend_problems.length > 0 && (
        <section
          aria-labelledby="backend-problems"
          className="rounded-md border border-amber-300 bg-amber-50 p-3 text-sm text-amber-950 dark:border-amber-800 dark:bg-amber-950 dark:text-amber-100"
        >
          <h2 id="backend-problems" className="mb-1 font-semibold">
            {t("inference.problems")}
          </h2>
          <ul className="list-disc pl-5">
            {data.backend_problems.map((p) => (
              <li key={p} className="break-words">
                {p}
              </li>
            ))}
          </ul>
        </section>
      )}
      <div className="grid gap-4 md:grid-cols-2">
        <Section id="inference-memory" title={t("inference.memory")}>
          <MemoryMeter limits={data.limits} />
        </Section>
        <Section id="inference-limits" title={t("inference.limits")}>
          <Limits limits={data.limits} />
        </Section>
      </div>
      <Section id="inference-loaded" title={t("inference.loaded")}>
        {data.loaded.length === 0 ? (
          <EmptyState title={t("inference.noLoaded")} />
        ) : (
          <div className="overflow-x-auto">
            <table className="table min-w-[48rem]">
              <caption className="sr-only">{t("inference.loaded")}</caption>
              <thead>
                <tr>
                  <th scope="col">{t("inference.model")}</th>
                  <th scope="col">{t("inference.backend")}</th>
                  <th scope="col">{t("inference.memoryCol")}</th>
                  <th scope="col">{t("inference.slots")}</th>
                  <th scope="col">{t("inference.inFlight")}</th>
                  <th scope="col">{t("inference.context")}</th>
                  <th scope="col">{t("inference.loadedAt")}</th>
                  <th scope="col">{t("inference.lastUsed")}</th>
                </tr>
              </thead>
              <tbody>
                {data.loaded.map((m) => (
                  <tr key={m.model_id}>
                    <th scope="row" className="font-medium">
                      <Link to={`/models/${m.model_id}`} className="text-brand-700 hover:underline dark:text-brand-100">
                        {m.name}
                      </Link>
                      <span className="block text-xs font-normal muted">
                        {m.node ? `${m.architecture} · ${t("inference.onNode", { node: m.node })}` : m.architecture}
                      </span>
                    </th>
                    <td>{m.backend}</td>
                    <td className="tabular-nums">{formatBytes(m.memory_bytes)}</td>
                    <td className="tabular-nums">{formatNumber(m.slots)}</td>
                    <td className="tabular-nums">{formatNumber(m.in_flight)}</td>
                    <td className="tabular-nums">{formatNumber(m.context_length)}</td>
                    <td>{formatDateTime(m.loaded_at)}</td>
                    <td>{formatDateTime(m.last_used_at)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Section>
      <Section id="inference-queues" title={t("inference.queues")}>
        {data.queues.length === 0 ? (
          <EmptyState title={t("inference.noQueues")} />
        ) : (
          <div className="overflow-x-auto">
            <table className="table">
              <caption className="sr-only">{t("inference.queues")}</caption>
              <thead>
                <tr>
                  <th scope="col">{t("inference.model")}</th>
                  <th scope="col">{t("inference.running")}</th>
                  <th scope="col">{t("inference.waiting")}</th>
                </tr>
              </thead>
              <tbody>
                {data.queues.map((q) => (
                  <tr key={q.model_id}>
                    <th scope="row" className="font-medium">
                      {q.name ?? t("inference.removedModel", { id: q.model_id })}
                    </th>
                    <td className="tabular-nums">{formatNumber(q.running)}</td>
                    <td className="tabular-nums">{formatNumber(q.waiting)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Section>
      <NodesSection />
      <Section id="inference-backends" title={t("inference.backends")}>
        {data.backends.length === 0 ? (
          <EmptyState title={t("inference.noBackends")} />
        ) : (
          <ul className="grid gap-3 md:grid-cols-2">
            {data.backends.map((b) => (
              <li key={b.path} className="rounded-md border border-slate-200 p-3 dark:border-slate-700">
                <h3 className="font-medium">
                  {b.name} <span className="text-sm font-normal muted">{b.version}</span>
                </h3>
                {b.description && <p className="mb-2 text-sm">{b.description}</p>}
                <dl className="grid grid-cols-[auto_1fr] gap-x-3 gap-y-1 text-sm">
                  <dt className="muted">{t("inference.formats")}</dt>
                  <dd>{b.formats.join(", ")}</dd>
                  <dt className="muted">{t("inference.capabilities")}</dt>
                  <dd>{cap(b.capabilities)}</dd>
                  <dt className="muted">{t("inference.library")}</dt>
                  <dd className="break-all font-mono text-xs">{b.path}</dd>
                </dl>
              </li>
            ))}
          </ul>
        )}
        <p className="mt-3 break-all text-xs muted">{t("inference.backendsDir", { dir: data.backends_dir })}</p>
      </Section>
    </>
  );
}
