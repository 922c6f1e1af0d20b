import { useEffect, useId, useState } from "react";
import { useNavigate } from "react-router";
import { useTranslation } from "react-i18next";
import { EmptyState } from "@/components/EmptyState";
import { ErrorMessage } from "@/components/ErrorMessage";
import { Spinner } from "@/components/Spinner";
import { useCreateChat, useModels, type ModelView } from "../api/chats";
import { chatSocket } from "../api/socket";
import { dispatch } from "../lib/store";
import { Composer } from "./Composer";

const LAST_MODEL = "corral.chat.model";

const choosable = (m: ModelView) => m.usable && m.status === "ready" && m.kind !== "embedding";

/** A chat that does not exist yet: it is created with its first message. */
export function NewChat({ header }: { header: React.ReactNode }) {
  const { t } = useTranslation("chat");
  const navigate = useNavigate();
  const models = useModels();
  const create = useCreateChat();
  const [model, setModel] = useState("");
  const [temporary, setTemporary] = useState(false);
  const [systemPrompt, setSystemPrompt] = useState("");
  const ids = { temporary: useId(), prompt: useId(), model: useId() };

  const list = (models.data ?? []).filter((m) => m.kind !== "embedding");
  const available = list.filter(choosable);

  useEffect(() => {
    if (model && available.some((m) => m.name === model)) return;
    const saved = localStorage.getItem(LAST_MODEL);
    const pick = available.find((m) => m.name === saved) ?? available[0];
    if (pick) setModel(pick.name);
  }, [available, model]);

  const onSend = async (content: string) => {
    if (!model) return false;
    const chat = await create
      .mutateAsync({
        model,
        temporary: temporary || undefined,
        system_prompt: systemPrompt.trim() || undefined,
      })
      .catch(() => null);
    if (!chat) return false;
    localStorage.setItem(LAST_MODEL, model);
    dispatch(chat.id, { type: "sending", content });
    if (!chatSocket.send({ type: "send", chat_id: chat.id, content })) {
      // Not connected: the chat page puts the text back in its box.
      dispatch(chat.id, { type: "event", event: { type: "error", chat_id: chat.id, error: { code: "network", message: "" } } });
    }
    void navigate(`/chat/${chat.id}`);
    return true;
  };

  const statusText = (m: ModelView) =>
    m.status === "ready" && !m.usable ? t("models.unusable") : t(`models.status.${m.status}`);

  return (
    <div className="flex h-full flex-col">
      {header}
      <div className="min-h-0 flex-1 overflow-y-auto px-3 py-6 sm:px-6">
        <div className="mx-auto flex max-w-xl flex-col gap-4">
          <h1 className="text-2xl font-semibold">{t("newChat.title")}</h1>
          {models.isPending ? (
            <Spinner />
          ) : models.isError ? (
            <ErrorMessage error={models.error} onRetry={() => void models.refetch()} />
          ) : list.length === 0 ? (
            <EmptyState title={t("newChat.noModels")}>{t("newChat.noModelsHint")}</EmptyState>
          ) : (
            <div className="card flex flex-col gap-4">
              <div>
                <label htmlFor={ids.model} className="label">
                  {t("newChat.model")}
                </label>
                <select
                  id={ids.model}
                  className="input"
                  value={model}
                  onChange={(e) => setModel(e.target.value)}
                  aria-describedby={`${ids.model}-hint`}
                >
                  {available.length === 0 && <option value="">{t("newChat.noneReady")}</option>}
                  {list.map((m) => (
                    <option key={m.id} value={m.name} disabled={!choosable(m)}>
                      {`${m.name} — ${statusText(m)}`}
                    </option>
                  ))}
                </select>
                <p id={`${ids.model}-hint`} className="mt-1 text-xs muted">
                  {list.find((m) => m.name === model)?.description || t("newChat.modelHint")}
                </p>
              </div>
              <div className="flex items-start gap-2">
                <input
                  id={ids.temporary}
                  type="checkbox"
                  className="mt-1 size-4 accent-brand-700"
                  checked={temporary}
                  onChange={(e) => setTemporary(e.target.checked)}
                  aria-describedby={`${ids.temporary}-hint`}
                />
                <div>
                  <label htmlFor={ids.temporary} className="text-sm font-medium">
                    {t("newChat.temporary")}
                  </label>
                  <p id={`${ids.temporary}-hint`} className="text-xs muted">
                    {t("newChat.temporaryHint")}
                  </p>
                </div>
              </div>
              <details>
                <summary className="cursor-pointer text-sm font-medium">{t("newChat.options")}</summary>
                <div className="mt-3">
                  <label htmlFor={ids.prompt} className="label">
                    {t("settings.systemPrompt")}
                  </label>
                  <textarea
                    id={ids.prompt}
                    className="input min-h-20"
                    rows={3}
                    value={systemPrompt}
                    maxLength={20000}
                    onChange={(e) => setSystemPrompt(e.target.value)}
                    placeholder={t("newChat.systemPromptPlaceholder")}
                  />
                </div>
              </details>
              <ErrorMessage error={create.error} />
            </div>
          )}
        </div>
      </div>
      <Composer
        key="new"
        draftKey="new"
        answering={false}
        onSend={onSend}
        disabledReason={model ? undefined : t("newChat.pickModel")}
      />
    </div>
  );
}
