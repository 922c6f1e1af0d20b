import { useCallback, useEffect, useState } from "react";
import type { ReactNode } from "react";
import { Link } from "react-router";
import { useTranslation } from "react-i18next";
import { ApiError } from "@/lib/api";
import { ErrorMessage } from "@/components/ErrorMessage";
import { Spinner } from "@/components/Spinner";
import { formatDateTime } from "@/lib/format";
import { useChat } from "../api/chats";
import { chatSocket } from "../api/socket";
import { isAnswering } from "../lib/conversation";
import { dispatch, getConversation, useConversation } from "../lib/store";
import { AnswerError } from "./AnswerError";
import { ChatSettingsDialog } from "./ChatSettingsDialog";
import { Composer } from "./Composer";
import { MessageList } from "./MessageList";
import { FlagIcon, SettingsIcon } from "./Icons";

/** One chat: its header, the conversation and the message box. */
export function ChatView({ chatId, sidebarToggle }: { chatId: string; sidebarToggle: ReactNode }) {
  const { t } = useTranslation("chat");
  const conversation = useConversation(chatId);
  const elsewhere = !conversation.live && conversation.messages.some((m) => m.status === "pending");
  const chat = useChat(chatId, elsewhere);
  const [settingsOpen, setSettingsOpen] = useState(false);
  const answering = isAnswering(conversation);

  useEffect(() => {
    if (chat.data) dispatch(chatId, { type: "loaded", messages: chat.data.messages });
  }, [chatId, chat.data]);

  const notConnected = useCallback(() => {
    dispatch(chatId, {
      type: "event",
      event: { type: "error", chat_id: chatId, error: { code: "network", message: "" } },
    });
  }, [chatId]);

  const onSend = (content: string) => {
    dispatch(chatId, { type: "sending", content });
    if (!chatSocket.send({ type: "send", chat_id: chatId, content })) {
      notConnected();
    }
    // The box empties now; a refusal puts the text back.
    return true;
  };

  const onRegenerate = () => {
    dispatch(chatId, { type: "regenerating" });
    if (!chatSocket.send({ type: "regenerate", chat_id: chatId })) notConnected();
  };

  const onStop = () => {
    chatSocket.send({ type: "stop", chat_id: chatId });
  };

  const takeRestore = useCallback(() => {
    const text = getConversation(chatId).restoreDraft;
    if (text !== null) dispatch(chatId, { type: "draft-restored" });
    return text;
  }, [chatId]);

  if (chat.isPending) {
    return (
      <div className="flex h-full flex-col">
        <div className="flex items-center gap-2 border-b border-slate-200 px-3 py-2 dark:border-slate-800">{sidebarToggle}</div>
        <Spinner />
      </div>
    );
  }
  if (chat.isError) {
    const gone = chat.error instanceof ApiError && chat.error.status === 404;
    return (
      <div className="flex h-full flex-col">
        <div className="flex items-center gap-2 border-b border-slate-200 px-3 py-2 dark:border-slate-800">{sidebarToggle}</div>
        <div className="mx-auto flex max-w-xl flex-col gap-3 p-6">
          <h1 className="text-xl font-semibold">{gone ? t("chat.goneTitle") : t("chat.errorTitle")}</h1>
          {gone ? <p className="muted">{t("chat.gone")}</p> : <ErrorMessage error={chat.error} onRetry={() => void chat.refetch()} />}
          <Link to="/chat" className="btn-primary self-start">
            {t("sidebar.newChat")}
          </Link>
        </div>
      </div>
    );
  }

  const data = chat.data;
  return (
    <div className="flex h-full flex-col">
      <header className="flex items-center gap-1 sm:gap-2 border-b border-slate-200 px-3 py-2 dark:border-slate-800">
        {sidebarToggle}
        <div className="min-w-0 flex-1">
          <h1 className="truncate text-base font-semibold">{data.title}</h1>
          <p className="flex flex-wrap items-center gap-2 text-xs muted">
            <span>{t("chat.model", { model: data.model })}</span>
            {data.temporary && (
              <span className="badge">
                {data.expires_at
                  ? t("temporary.until", { time: formatDateTime(data.expires_at) })
                  : t("temporary.badge")}
              </span>
            )}
          </p>
        </div>
        <button type="button" className="btn-ghost" onClick={() => setSettingsOpen(true)} title={t("actions.settings")}>
          <SettingsIcon />
          <span className="sr-only sm:not-sr-only">{t("actions.settings")}</span>
        </button>
        <Link
          to={`/tickets/new?chat=${encodeURIComponent(chatId)}`}
          className="btn-ghost"
          title={t("actions.report")}
        >
          <FlagIcon />
          <span className="sr-only sm:not-sr-only">{t("actions.report")}</span>
        </Link>
      </header>
      <MessageList conversation={conversation} onRegenerate={onRegenerate} />
      {conversation.failure && (
        <div className="mx-auto w-full max-w-3xl px-3 pb-2 sm:px-6">
          <AnswerError body={conversation.failure} />
        </div>
      )}
      <Composer
        key={chatId}
        draftKey={chatId}
        answering={answering}
        onSend={onSend}
        onStop={onStop}
        restore={conversation.restoreDraft}
        takeRestore={takeRestore}
      />
      <ChatSettingsDialog chat={data} open={settingsOpen} onClose={() => setSettingsOpen(false)} onSaved={() => undefined} />
    </div>
  );
}
