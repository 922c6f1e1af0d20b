import { Fragment, useEffect, useLayoutEffect, useRef, useState } from "react";
import { useTranslation } from "react-i18next";
import { isAnswering, visibleMessages, type Conversation, type Message } from "../lib/conversation";
import { LiveStatus, MessageItem } from "./MessageItem";

/**
 * Notes plugins stored with an answer (its sources, a warning), each
 * marked with the plugin that wrote it. The words around them live in the
 * `plugins` namespace, next to the rest of the plugin texts.
 */
function AnswerNotes({ message }: { message: Message }) {
  const { t } = useTranslation("plugins");
  return (
    <li className="-mt-4">
      <ul aria-label={t("annotations.label")} className="flex flex-col gap-1">
        {message.annotations.map((note, i) => (
          <li
            key={`${note.plugin}-${i}`}
            className="flex flex-wrap items-baseline gap-x-2 gap-y-0.5 rounded-md border-l-2 border-slate-300 bg-slate-50 px-2 py-1 text-xs text-slate-700 dark:border-slate-600 dark:bg-slate-900 dark:text-slate-300"
          >
            <span className="sr-only">{t("annotations.from", { plugin: note.plugin })}</span>
            <span aria-hidden="true" className="badge font-mono">
              {note.plugin}
            </span>
            <span className="min-w-0 whitespace-pre-wrap break-words">{note.text}</span>
          </li>
        ))}
      </ul>
    </li>
  );
}

type Props = {
  conversation: Conversation;
  onRegenerate: () => void;
};

/**
 * The conversation as a log. Screen readers hear nothing while tokens
 * stream; a status line says when an answer is complete.
 */
export function MessageList({ conversation, onRegenerate }: Props) {
  const { t } = useTranslation("chat");
  const scroller = useRef<HTMLDivElement>(null);
  const pinnedToEnd = useRef(true);
  const messages = visibleMessages(conversation);
  const live = conversation.live;
  const answering = isAnswering(conversation);
  const lastAssistant = [...messages].reverse().find((m) => m.role === "assistant");
  const lastIsAnswer = messages.at(-1)?.role === "assistant";
  const [announcement, setAnnouncement] = useState("");

  useEffect(() => {
    if (conversation.finished) setAnnouncement(t("message.finished"));
  }, [conversation.finished, t]);

  // Follow the answer as it grows, unless the reader scrolled up.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (el && pinnedToEnd.current) el.scrollTop = el.scrollHeight;
  });

  const liveHasMessage = live?.messageId != null && messages.some((m) => m.id === live.messageId);

  return (
    <>
    <div
      ref={scroller}
      role="log"
      aria-label={t("conversation")}
      aria-live={answering ? "off" : "polite"}
      aria-busy={answering}
      tabIndex={0}
      className="min-h-0 flex-1 overflow-y-auto"
      onScroll={(e) => {
        const el = e.currentTarget;
        pinnedToEnd.current = el.scrollHeight - el.scrollTop - el.clientHeight < 48;
      }}
    >
      {messages.length === 0 && !live && conversation.pendingUser === null && (
        <p className="p-6 text-center muted">{t("chat.empty")}</p>
      )}
      <ol className="mx-auto flex w-full max-w-3xl flex-col gap-6 px-3 py-6 sm:px-6">
        {messages.map((message) => (
          <Fragment key={message.id}>
            <MessageItem
              message={message}
              live={live && live.messageId === message.id ? live : null}
              errorBody={conversation.answerErrors[message.id]}
              canRegenerate={
                !answering && lastIsAnswer && message.id === lastAssistant?.id && message.status !== "pending"
              }
              onRegenerate={onRegenerate}
            />
            {message.role === "assistant" && (message.annotations?.length ?? 0) > 0 && live?.messageId !== message.id && (
              <AnswerNotes message={message} />
            )}
          </Fragment>
        ))}
        {conversation.pendingUser !== null && (
          <li className="flex justify-end">
            <div className="max-w-[85%] rounded-2xl rounded-br-sm bg-brand-50 px-4 py-2 text-slate-900 dark:bg-slate-800 dark:text-slate-100">
              <p className="whitespace-pre-wrap break-words">{conversation.pendingUser}</p>
            </div>
          </li>
        )}
        {live && !liveHasMessage && (
          <li>
            <LiveStatus live={live} />
          </li>
        )}
      </ol>
    </div>
    <p role="status" className="sr-only">
      {announcement}
    </p>
    </>
  );
}
