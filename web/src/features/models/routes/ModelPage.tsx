import { useState, type ReactNode } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { useTranslation } from "react-i18next";
import { Spinner } from "@/components/Spinner";
import { ErrorMessage } from "@/components/ErrorMessage";
import { CopyButton } from "@/components/CopyButton";
import { useUser } from "@/lib/auth";
import { can } from "@/lib/roles";
import { formatBytes, formatDateTime, formatDuration, formatNumber } from "@/lib/format";
import {
  useDownloadProgress,
  useModel,
  useRuntimeStatus,
  useUpdateModel,
  type ModelView,
} from "../api/models";
import { useModelEvents } from "../api/events";
import { DownloadBar, StatusBadge, useAccessSummary } from "../components/ModelStatus";
import { FailureReason } from "../components/ModelCard";
import { ModelActions, useLoadControls } from "../components/ModelActions";
import { DeleteModelDialog, EditModelDialog } from "../components/ModelDialogs";
import { REMOTE_BACKEND } from "../components/ModelForm";
import { usePeopleNames } from "../components/AccessEditor";

function Row({ label, children }: { label: string; children: ReactNode }) {
  return (
    <div className="grid gap-1 border-b border-slate-100 py-2 sm:grid-cols-[12rem_1fr] dark:border-slate-800">
      <dt className="text-sm muted">{label}</dt>
      <dd className="min-w-0 break-words text-sm">{children}</dd>
    </div>
  );
}

function AccessDetails({ model }: { model: ModelView }) {
  const { t } = useTranslation("models");
  const summary = useAccessSummary();
  const people = usePeopleNames(model.access?.users ?? []);
  return (
    <section aria-labelledby="model-access" className="card">
      <h2 id="model-access" className="mb-2 font-semibold">
        {t("detail.sectionAccess")}
      </h2>
      <p className="text-sm">{summary(model.access)}</p>
      {!model.access?.everyone && people.length > 0 && (
        <ul className="mt-2 flex flex-wrap gap-2">
          {people.map((p) => (
            <li key={p.id} className="badge">
              {p.name}
            </li>
          ))}
        </ul>
      )}
      <p className="mt-2 text-xs muted">{t("access.technicians")}</p>
    </section>
  );
}

export default function ModelPage() {
  const { modelId = "" } = useParams();
  const { t } = useTranslation("models");
  const navigate = useNavigate();
  const user = useUser();
  const technician = can.technician(user.role);
  const model = useModel(modelId);
  const downloading = technician && model.data?.status === "downloading";
  const progress = useDownloadProgress(modelId, downloading && !model.data?.progress);
  const status = useRuntimeStatus({ enabled: technician, refetchInterval: technician ? 5_000 : undefined });
  useModelEvents(technician);
  const controls = useLoadControls();
  const update = useUpdateModel(modelId);
  const [editing, setEditing] = useState(false);
  const [deleting, setDeleting] = useState(false);
  const [notice, setNoticeText] = useState("");
  const setNotice = (text: string) => {
    controls.clear();
    setNoticeText(text);
  };

  if (model.isPending) return <Spinner />;
  if (model.isError) {
    return (
      <div className="mx-auto max-w-4xl p-4">
        <h1 className="mb-4 text-xl font-semibold">{t("title")}</h1>
        <ErrorMessage error={model.error} onRetry={() => void model.refetch()} />
        <Link to="/models" className="btn-secondary mt-4">
          {t("actions.back")}
        </Link>
      </div>
    );
  }
  const m = model.data;
  const loaded = status.data?.loaded.find((l) => l.model_id === m.id);
  const sampling = Object.entries((m.sampling ?? {}) as Record<string, unknown>);

  return (
    <div className="mx-auto flex max-w-4xl flex-col gap-4 p-4">
      <nav aria-label={t("actions.back")}>
        <Link to="/models" className="text-sm text-brand-700 hover:underline dark:text-brand-100">
          ← {t("actions.back")}
        </Link>
      </nav>
      <div className="flex flex-wrap items-center justify-between gap-3">
        <div className="flex min-w-0 flex-wrap items-center gap-3">
          <h1 className="break-all text-xl font-semibold">{m.name}</h1>
          <StatusBadge status={m.status} />
        </div>
        {technician && (
          <ModelActions
            model={m}
            loaded={loaded !== undefined}
            controls={controls}
            onEdit={() => {
              setNotice("");
              setEditing(true);
            }}
            onDelete={() => {
              setNotice("");
              setDeleting(true);
            }}
          />
        )}
      </div>
      <div role="status" aria-live="polite" className="min-h-5 text-sm">
        {controls.pendingId === m.id ? t("actions.loading", { name: m.name }) : controls.message || notice}
      </div>
      <ErrorMessage error={controls.error ?? update.error} />
      {m.description && <p>{m.description}</p>}
      {downloading && <DownloadBar name={m.name} progress={m.progress ?? progress.data} />}
      <FailureReason model={m} />
      {technician && m.status === "failed" && m.source && (
        <div>
          <button
            type="button"
            className="btn-secondary"
            disabled={update.isPending}
            onClick={() => {
              setNotice("");
              update.mutate(
                { source: m.source ?? undefined },
                { onSuccess: () => setNotice(t("result.retrying", { name: m.name })) },
              );
            }}
          >
            {t("actions.retry")}
          </button>
        </div>
      )}

      <section aria-labelledby="model-details" className="card">
        <h2 id="model-details" className="mb-2 font-semibold">
          {t("detail.sectionDetails")}
        </h2>
        <dl>
          <Row label={t("fields.status")}>{t(`status.${m.status}`)}</Row>
          <Row label={t("fields.usable")}>{m.usable ? t("yes") : t("no")}</Row>
          <Row label={t("fields.backend")}>{m.backend}</Row>
          <Row label={t("fields.kind")}>{t(`kind.${m.kind}`)}</Row>
          {m.backend !== REMOTE_BACKEND && <Row label={t("fields.size")}>{formatBytes(m.size_bytes)}</Row>}
          <Row label={t("fields.contextLength")}>
            {m.context_length > 0 ? formatNumber(m.context_length) : t("contextOwn")}
          </Row>
          {m.source != null && (
            <Row label={m.backend === REMOTE_BACKEND ? t("fields.baseUrl") : t("fields.source")}>
              <span className="font-mono text-xs">{m.source}</span>
            </Row>
          )}
          {m.upstream_model !== undefined && (
            <Row label={t("fields.upstreamModel")}>
              <span className="font-mono text-xs">{m.upstream_model ?? m.name}</span>
            </Row>
          )}
          {m.api_key_set != null && (
            <Row label={t("fields.apiKey")}>{m.api_key_set ? t("detail.keyStored") : t("detail.keyNone")}</Row>
          )}
          {m.tls_fingerprint !== undefined && (
            <Row label={t("detail.certificate")}>
              {m.tls_fingerprint == null ? (
                t("detail.certificatePublic")
              ) : (
                <span className="break-all font-mono text-xs">
                  {t("detail.certificatePinned", { fingerprint: m.tls_fingerprint })}
                </span>
              )}
            </Row>
          )}
          {m.cooldown != null && (
            <Row label={t("detail.cooldown")}>
              <span className="text-amber-700 dark:text-amber-400">
                {t("detail.cooldownLeft", { seconds: m.cooldown.seconds_left, reason: m.cooldown.reason })}
              </span>
            </Row>
          )}
          {m.node !== undefined && m.backend !== REMOTE_BACKEND && (
            <Row label={t("fields.node")}>{m.node ?? t("nodeHere")}</Row>
          )}
          {m.fallbacks != null && (
            <Row label={t("fields.fallbacks")}>{m.fallbacks.length ? m.fallbacks.join(", ") : t("none")}</Row>
          )}
          {m.replicas != null && (
            <Row label={t("fields.replicas")}>{m.replicas.length ? m.replicas.join(", ") : t("none")}</Row>
          )}
          {m.file_path != null && (
            <Row label={t("fields.filePath")}>
              <span className="font-mono text-xs">{m.file_path}</span>
            </Row>
          )}
          {technician && m.backend !== REMOTE_BACKEND && (
            <Row label={t("fields.sha256")}>
              {m.sha256 ? (
                <span className="flex flex-wrap items-center gap-2">
                  <span className="break-all font-mono text-xs">{m.sha256}</span>
                  <CopyButton text={m.sha256} className="btn-ghost" />
                </span>
              ) : (
                t("none")
              )}
            </Row>
          )}
          {m.slots != null && <Row label={t("fields.slots")}>{formatNumber(m.slots)}</Row>}
          {technician && m.backend !== REMOTE_BACKEND && (
            <Row label={t("fields.threads")}>{m.threads ? formatNumber(m.threads) : t("threadsAuto")}</Row>
          )}
          {technician && (
            <Row label={t("fields.sampling")}>
              {sampling.length === 0 ? (
                t("none")
              ) : (
                <span className="font-mono text-xs">
                  {sampling.map(([k, v]) => `${k} = ${JSON.stringify(v)}`).join(", ")}
                </span>
              )}
            </Row>
          )}
          {technician && m.chat_template && (
            <Row label={t("fields.chatTemplate")}>
              <pre className="max-h-48 overflow-auto whitespace-pre-wrap font-mono text-xs">{m.chat_template}</pre>
            </Row>
          )}
          <Row label={t("fields.created")}>{formatDateTime(m.created_at)}</Row>
          <Row label={t("fields.updated")}>{formatDateTime(m.updated_at)}</Row>
          <Row label={t("fields.id")}>
            <span className="font-mono text-xs">{m.id}</span>
          </Row>
        </dl>
      </section>

      {m.access !== undefined && <AccessDetails model={m} />}

      {technician && (
        <section aria-labelledby="model-runtime" className="card">
          <h2 id="model-runtime" className="mb-2 font-semibold">
            {t("detail.sectionRuntime")}
          </h2>
          {!loaded ? (
            <p className="text-sm muted">{t("detail.notLoaded")}</p>
          ) : (
            <dl>
              <Row label={t("detail.memory")}>{formatBytes(loaded.memory_bytes)}</Row>
              <Row label={t("detail.architecture")}>{loaded.architecture}</Row>
              <Row label={t("fields.contextLength")}>{formatNumber(loaded.context_length)}</Row>
              <Row label={t("fields.slots")}>{formatNumber(loaded.slots)}</Row>
              <Row label={t("detail.inFlight")}>{formatNumber(loaded.in_flight)}</Row>
              <Row label={t("detail.loadSecs")}>{formatDuration(loaded.load_secs)}</Row>
              <Row label={t("detail.loadedAt")}>{formatDateTime(loaded.loaded_at)}</Row>
              <Row label={t("detail.lastUsed")}>{formatDateTime(loaded.last_used_at)}</Row>
            </dl>
          )}
        </section>
      )}

      {technician && (
        <>
          <EditModelDialog
            model={editing ? m : null}
            onClose={() => setEditing(false)}
            onSaved={(saved) => {
              setEditing(false);
              setNotice(saved ? t("saved", { name: saved.name }) : t("dialogs.nothingChanged"));
            }}
          />
          <DeleteModelDialog
            model={deleting ? m : null}
            onClose={() => setDeleting(false)}
            onDeleted={() => {
              setDeleting(false);
              void navigate("/models", { replace: true });
            }}
          />
        </>
      )}
    </div>
  );
}
