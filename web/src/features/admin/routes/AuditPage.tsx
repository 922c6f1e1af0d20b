import { useState } from "react";
import { useTranslation } from "react-i18next";
import { PageHeader } from "@/components/PageHeader";
import { Spinner } from "@/components/Spinner";
import { ErrorMessage } from "@/components/ErrorMessage";
import { EmptyState } from "@/components/EmptyState";
import { Pagination } from "@/components/Pagination";
import { formatDateTime } from "@/lib/format";
import { useAudit } from "../api/admin";
import type { AuditEntry } from "../api/admin";
import { TableScroll } from "../components/TableScroll";
import { UserPicker } from "../components/UserPicker";

const PAGE = 50;
const ACTIONS = [
  "user.create",
  "user.registered",
  "user.role",
  "user.display_name",
  "user.disable",
  "user.enable",
  "user.password_reset",
  "settings.update",
  "quotas.update",
];

function Value({ value }: { value: unknown }) {
  if (value !== null && typeof value === "object") {
    const line = JSON.stringify(value);
    if (line.length <= 60) return <code className="break-all">{line}</code>;
    return (
      <details>
        <summary className="cursor-pointer break-all">
          <code>{line.slice(0, 48)}…</code>
        </summary>
        <pre className="whitespace-pre-wrap break-all">{JSON.stringify(value, null, 2)}</pre>
      </details>
    );
  }
  return <span className="break-all">{value === null ? "–" : String(value)}</span>;
}

function Details({ details }: { details: Record<string, unknown> }) {
  const entries = Object.entries(details ?? {});
  if (entries.length === 0) return <span className="muted">–</span>;
  return (
    <dl className="grid grid-cols-[auto_1fr] gap-x-3 gap-y-1 text-xs">
      {entries.map(([key, value]) => (
        <div key={key} className="contents">
          <dt className="font-semibold">{key}</dt>
          <dd className="min-w-0">
            <Value value={value} />
          </dd>
        </div>
      ))}
    </dl>
  );
}

export default function AuditPage() {
  const { t } = useTranslation("admin");
  const [actor, setActor] = useState<{ id: string; name: string } | null>(null);
  const [action, setAction] = useState("");
  const [offset, setOffset] = useState(0);
  const audit = useAudit({ actor: actor?.id, action, limit: PAGE, offset });
  const actionName = (a: string) => t(`audit.actions.${a}`, { defaultValue: a });

  const targetOf = (entry: AuditEntry) => {
    const details = entry.details as Record<string, unknown>;
    return typeof details?.username === "string" ? details.username : entry.target;
  };

  return (
    <div className="mx-auto w-full max-w-6xl p-4 sm:p-6">
      <PageHeader title={t("audit.title")} />
      <form role="search" className="mb-4 grid gap-3 sm:grid-cols-2" onSubmit={(e) => e.preventDefault()}>
        <div>
          {actor ? (
            <div>
              <span className="label">{t("audit.filters.actor")}</span>
              <div className="flex items-center gap-2">
                <span className="badge">{actor.name}</span>
                <button
                  type="button"
                  className="btn-ghost"
                  aria-label={t("audit.filters.clearActor", { username: actor.name })}
                  onClick={() => {
                    setActor(null);
                    setOffset(0);
                  }}
                >
                  {t("audit.filters.clear")}
                </button>
              </div>
            </div>
          ) : (
            <UserPicker
              label={t("audit.filters.actor")}
              onPick={(u) => {
                setActor({ id: u.id, name: u.username });
                setOffset(0);
              }}
            />
          )}
        </div>
        <div>
          <label htmlFor="audit-action" className="label">
            {t("audit.filters.action")}
          </label>
          <select
            id="audit-action"
            className="input"
            value={action}
            onChange={(e) => {
              setAction(e.target.value);
              setOffset(0);
            }}
          >
            <option value="">{t("audit.filters.anyAction")}</option>
            {ACTIONS.map((a) => (
              <option key={a} value={a}>
                {actionName(a)}
              </option>
            ))}
          </select>
        </div>
      </form>

      {audit.isPending ? (
        <Spinner />
      ) : audit.isError ? (
        <ErrorMessage error={audit.error} onRetry={() => void audit.refetch()} />
      ) : audit.data.items.length === 0 ? (
        <EmptyState title={t("audit.empty")} />
      ) : (
        <>
          <TableScroll label={t("audit.tableLabel")}>
            <table className="table min-w-[48rem]">
              <caption className="sr-only">{t("audit.caption", { total: audit.data.total })}</caption>
              <thead>
                <tr>
                  <th scope="col">{t("audit.fields.time")}</th>
                  <th scope="col">{t("audit.fields.actor")}</th>
                  <th scope="col">{t("audit.fields.action")}</th>
                  <th scope="col">{t("audit.fields.target")}</th>
                  <th scope="col">{t("audit.fields.details")}</th>
                </tr>
              </thead>
              <tbody>
                {audit.data.items.map((entry) => (
                  <tr key={entry.id}>
                    <td className="whitespace-nowrap">
                      <time dateTime={entry.at}>{formatDateTime(entry.at)}</time>
                    </td>
                    <td>
                      <button
                        type="button"
                        className="underline decoration-dotted underline-offset-4 hover:decoration-solid"
                        aria-label={t("audit.filters.byActor", { username: entry.actor_username })}
                        onClick={() => {
                          setActor({ id: entry.actor_id, name: entry.actor_username });
                          setOffset(0);
                        }}
                      >
                        {entry.actor_username}
                      </button>
                    </td>
                    <td>
                      <span className="badge">{actionName(entry.action)}</span>
                      <span className="sr-only"> ({entry.action})</span>
                    </td>
                    <td className="break-all">
                      {targetOf(entry)}
                      {targetOf(entry) !== entry.target && <div className="text-xs muted">{entry.target}</div>}
                    </td>
                    <td className="max-w-md">
                      <Details details={entry.details as Record<string, unknown>} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </TableScroll>
          <Pagination offset={offset} limit={PAGE} total={audit.data.total} onChange={setOffset} />
        </>
      )}
    </div>
  );
}
