import { useState } from "react";
import type { FormEvent } from "react";
import { useTranslation } from "react-i18next";
import { Dialog } from "@/components/Dialog";
import { EmptyState } from "@/components/EmptyState";
import { ErrorMessage } from "@/components/ErrorMessage";
import { Field } from "@/components/Field";
import { ApiError } from "@/lib/api";
import { formatBytes, formatDateTime } from "@/lib/format";
import { useCreateNode, useDeleteNode, useNodes, useUpdateNode, type NodeView } from "../api/nodes";

const statusStyle: Record<NodeView["status"], string> = {
  up: "bg-emerald-100 text-emerald-900 dark:bg-emerald-900 dark:text-emerald-100",
  down: "bg-red-100 text-red-900 dark:bg-red-900 dark:text-red-100",
  unknown: "bg-slate-100 text-slate-800 dark:bg-slate-800 dark:text-slate-100",
};

function fieldError(error: unknown, name: string): string | undefined {
  return error instanceof ApiError ? error.fields[name] : undefined;
}

/** What the node form gives: `tls_fingerprint` is "" for none. */
export interface NodeFormValues {
  name: string;
  url: string;
  token: string;
  tls_fingerprint: string;
}

/** A fingerprint shortened for a table: its first eight pairs. */
function shortFingerprint(fingerprint: string): string {
  const pairs = fingerprint.split(":");
  return pairs.length > 8 ? `${pairs.slice(0, 8).join(":")}…` : fingerprint;
}

/** Register a node: its name, URL, the token it was started with and,
 * for a node serving its own certificate, that certificate's fingerprint. */
export function NodeForm({
  node,
  busy,
  error,
  onSubmit,
  onCancel,
}: {
  /** Set when changing an existing node: its URL, token and fingerprint. */
  node?: NodeView;
  busy: boolean;
  error: unknown;
  onSubmit: (values: NodeFormValues) => void;
  onCancel?: () => void;
}) {
  const { t } = useTranslation("models");
  const [name, setName] = useState(node?.name ?? "");
  const [url, setUrl] = useState(node?.url ?? "");
  const [token, setToken] = useState("");
  const [fingerprint, setFingerprint] = useState(node?.tls_fingerprint ?? "");
  const submit = (e: FormEvent) => {
    e.preventDefault();
    onSubmit({ name: name.trim(), url: url.trim(), token, tls_fingerprint: fingerprint.trim() });
  };
  return (
    <form noValidate onSubmit={submit}>
      <div className="grid gap-x-4 md:grid-cols-3">
        {!node && (
          <Field label={t("nodes.name")} hint={t("nodes.nameHint")} error={fieldError(error, "name")}>
            <input className="input" value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" />
          </Field>
        )}
        <Field label={t("nodes.url")} hint={t("nodes.urlHint")} error={fieldError(error, "url")}>
          <input
            className="input"
            value={url}
            onChange={(e) => setUrl(e.target.value)}
            placeholder="http://10.0.0.7:7000"
            autoComplete="off"
            spellCheck={false}
          />
        </Field>
        <Field
          label={t("nodes.token")}
          hint={node ? t("nodes.tokenKeep") : t("nodes.tokenHint")}
          error={fieldError(error, "token")}
        >
          <input
            className="input"
            type="password"
            value={token}
            onChange={(e) => setToken(e.target.value)}
            autoComplete="new-password"
            placeholder={node ? "••••••••" : ""}
          />
        </Field>
        <div className="md:col-span-3">
          <Field
            label={t("nodes.fingerprint")}
            hint={t("nodes.fingerprintHint")}
            error={fieldError(error, "tls_fingerprint")}
          >
            <input
              className="input font-mono"
              value={fingerprint}
              onChange={(e) => setFingerprint(e.target.value)}
              placeholder="3F:0A:…"
              autoComplete="off"
              spellCheck={false}
            />
          </Field>
        </div>
      </div>
      {!(error instanceof ApiError && Object.keys(error.fields).length > 0) && <ErrorMessage error={error} />}
      <div className="mt-2 flex flex-wrap justify-end gap-2">
        {onCancel && (
          <button type="button" className="btn-secondary" onClick={onCancel}>
            {t("common:actions.cancel")}
          </button>
        )}
        <button type="submit" className="btn-primary" disabled={busy}>
          {node ? t("nodes.save") : t("nodes.register")}
        </button>
      </div>
    </form>
  );
}

function NodeRow({ node, onEdit, onRemove }: { node: NodeView; onEdit: () => void; onRemove: () => void }) {
  const { t } = useTranslation("models");
  const memory =
    node.memory_total_bytes != null && node.memory_available_bytes != null
      ? t("nodes.memoryFree", {
          free: formatBytes(node.memory_available_bytes),
          total: formatBytes(node.memory_total_bytes),
        })
      : "–";
  return (
    <tr>
      <th scope="row" className="font-medium">
        {node.name}
        <span className="block break-all font-mono text-xs font-normal muted">{node.url}</span>
        {node.tls_fingerprint && (
          <span className="block text-xs font-normal muted" title={node.tls_fingerprint}>
            {t("nodes.pinned", { fingerprint: shortFingerprint(node.tls_fingerprint) })}
          </span>
        )}
      </th>
      <td>
        <span className={`rounded px-2 py-0.5 text-xs font-medium ${statusStyle[node.status]}`}>
          {t(`nodes.status.${node.status}`)}
        </span>
        {node.reason && <span className="mt-1 block text-xs">{node.reason}</span>}
        {node.status !== "down" && node.last_error && node.last_error_at && (
          <span className="mt-1 block text-xs muted">
            {t("nodes.lastError", { time: formatDateTime(node.last_error_at), reason: node.last_error })}
          </span>
        )}
        <span className="mt-1 block text-xs muted">
          {node.last_seen ? t("nodes.lastSeen", { time: formatDateTime(node.last_seen) }) : t("nodes.neverSeen")}
        </span>
      </td>
      <td>{node.backends.length ? node.backends.join(", ") : "–"}</td>
      <td className="tabular-nums">{memory}</td>
      <td>
        {node.loaded.length
          ? node.loaded.map((m) => m.name ?? m.id).join(", ")
          : t("nodes.nothingLoaded")}
        {node.placed.length > 0 && (
          <span className="mt-1 block text-xs muted">{t("nodes.placed", { names: node.placed.join(", ") })}</span>
        )}
      </td>
      <td>
        <div className="flex flex-wrap gap-2">
          <button type="button" className="btn-secondary" onClick={onEdit}>
            {t("nodes.edit")}
          </button>
          <button type="button" className="btn-danger" onClick={onRemove}>
            {t("nodes.remove")}
          </button>
        </div>
      </td>
    </tr>
  );
}

/** The worker nodes: their health, and registering, changing and removing them. */
export function NodesSection() {
  const { t } = useTranslation("models");
  const nodes = useNodes({ refetchInterval: 2_000 });
  const create = useCreateNode();
  const update = useUpdateNode();
  const remove = useDeleteNode();
  const [adding, setAdding] = useState(false);
  const [editing, setEditing] = useState<NodeView | null>(null);
  const [removing, setRemoving] = useState<NodeView | null>(null);
  const items = nodes.data ?? [];

  return (
    <section aria-labelledby="inference-nodes" className="card">
      <div className="mb-3 flex flex-wrap items-center justify-between gap-2">
        <h2 id="inference-nodes" className="font-semibold">
          {t("nodes.title")}
        </h2>
        {!adding && (
          <button type="button" className="btn-secondary" onClick={() => setAdding(true)}>
            {t("nodes.add")}
          </button>
        )}
      </div>
      <p className="mb-3 text-sm muted">{t("nodes.intro")}</p>
      {adding && (
        <div className="mb-4 rounded-md border border-slate-200 p-3 dark:border-slate-700">
          <NodeForm
            busy={create.isPending}
            error={create.error}
            onCancel={() => {
              create.reset();
              setAdding(false);
            }}
            onSubmit={({ tls_fingerprint, ...v }) =>
              create.mutate(tls_fingerprint ? { ...v, tls_fingerprint } : v, {
                onSuccess: () => {
                  create.reset();
                  setAdding(false);
                },
              })
            }
          />
        </div>
      )}
      <ErrorMessage error={nodes.error} />
      {items.length === 0 ? (
        !nodes.isPending && <EmptyState title={t("nodes.empty")} />
      ) : (
        <div className="overflow-x-auto">
          <table className="table min-w-[48rem]">
            <caption className="sr-only">{t("nodes.title")}</caption>
            <thead>
              <tr>
                <th scope="col">{t("nodes.name")}</th>
                <th scope="col">{t("nodes.statusCol")}</th>
                <th scope="col">{t("nodes.backends")}</th>
                <th scope="col">{t("nodes.memory")}</th>
                <th scope="col">{t("nodes.models")}</th>
                <th scope="col">
                  <span className="sr-only">{t("nodes.actions")}</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {items.map((node) => (
                <NodeRow
                  key={node.name}
                  node={node}
                  onEdit={() => setEditing(node)}
                  onRemove={() => setRemoving(node)}
                />
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Dialog
        open={editing !== null}
        onClose={() => {
          update.reset();
          setEditing(null);
        }}
        title={t("nodes.editTitle", { name: editing?.name ?? "" })}
      >
        {editing && (
          <NodeForm
            node={editing}
            busy={update.isPending}
            error={update.error}
            onCancel={() => {
              update.reset();
              setEditing(null);
            }}
            onSubmit={(v) => {
              const changes: { url?: string; token?: string; tls_fingerprint?: string } = {};
              if (v.url !== editing.url) changes.url = v.url;
              if (v.token) changes.token = v.token;
              if (v.tls_fingerprint !== (editing.tls_fingerprint ?? "")) changes.tls_fingerprint = v.tls_fingerprint;
              update.mutate(
                { name: editing.name, changes },
                {
                  onSuccess: () => {
                    update.reset();
                    setEditing(null);
                  },
                },
              );
            }}
          />
        )}
      </Dialog>
      <Dialog
        open={removing !== null}
        onClose={() => {
          remove.reset();
          setRemoving(null);
        }}
        title={t("nodes.removeTitle", { name: removing?.name ?? "" })}
      >
        {removing && (
          <>
            <p className="mb-4 text-sm">{t("nodes.removeBody", { name: removing.name })}</p>
            <ErrorMessage error={remove.error} />
            <div className="mt-4 flex flex-wrap justify-end gap-2">
              <button
                type="button"
                className="btn-secondary"
                onClick={() => {
                  remove.reset();
                  setRemoving(null);
                }}
              >
                {t("common:actions.cancel")}
              </button>
              <button
                type="button"
                className="btn-danger"
                disabled={remove.isPending}
                onClick={() =>
                  remove.mutate(removing.name, {
                    onSuccess: () => {
                      remove.reset();
                      setRemoving(null);
                    },
                  })
                }
              >
                {t("nodes.remove")}
              </button>
            </div>
          </>
        )}
      </Dialog>
    </section>
  );
}
