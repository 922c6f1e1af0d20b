import { memo } from "react";
import { useTranslation } from "react-i18next";
import type { ErrorBody } from "@/lib/api";
import { CopyButton } from "@/components/CopyButton";
import { formatNumber } from "@/lib/format";
import type { LiveAnswer, Message } from "../lib/conversation";
import { StreamingMarkdown } from "./StreamingMarkdown";
import { AnswerError } from "./AnswerError";

function formatMs(ms: number): string {
  return ms < 1000 ? `${formatNumber(ms)} ms` : `${formatNumber(ms / 1000, 1)} s`;
}

export function LiveStatus({ live }: { live: LiveAnswer }) {
  const { t } = useTranslation("chat");
  let text: string | null = null;
  if (live.phase === "queued" && live.queuePosition != null) {
    text =
      live.queuePosition <= 1
        ? t("message.queuedNext")
        : t("message.queued", { count: live.queuePosition - 1 });
  } else if (live.phase !== "streaming" || live.text === "") {
    text = t("message.thinking");
  }
  if (!text) return null;
  return (
    <p className="flex items-center gap-2 text-sm muted">
      <span aria-hidden="true" className="size-2 animate-pulse rounded-full bg-brand-600" />
      {text}
    </p>
  );
}

type Props = {
  message: Message;
  live: LiveAnswer | null;
  errorBody?: ErrorBody;
  canRegenerate: boolean;
  onRegenerate: () => void;
};

/** One message: the user's in a bubble, an answer as Markdown with its usage. */
export const MessageItem = memo(function MessageItem({ message, live, errorBody, canRegenerate, onRegenerate }: Props) {
  const { t } = useTranslation("chat");
  if (message.role === "user") {
    return (
      <li className="flex justify-end">
        <div className="max-w-[85%] rounded-2xl rounded-br-sm bg-brand-50 px-4 py-2 text-slate-900 dark:bg-slate-800 dark:text-slate-100">
          <h2 className="sr-only">{t("message.you")}</h2>
          <p className="whitespace-pre-wrap break-words">{message.content}</p>
        </div>
      </li>
    );
  }
  if (message.role === "system") return null;
  const usage = message.usage;
  return (
    <li className="flex flex-col gap-2">
      <h2 className="sr-only">{t("message.assistant", { model: message.model ?? "" })}</h2>
      {message.content && (
        <StreamingMarkdown
          text={message.content}
          streaming={live !== null || message.status === "pending"}
        />
      )}
      {live ? (
        <LiveStatus live={live} />
      ) : (
        message.status === "pending" && <p className="text-sm muted">{t("message.pending")}</p>
      )}
      {message.status === "failed" && <AnswerError body={errorBody} stored={message.error} />}
      {message.status === "interrupted" && (
        <p className="text-sm muted">{t("message.interrupted")}</p>
      )}
      {!live && (
        <div className="flex flex-wrap items-center gap-x-3 gap-y-1 text-xs muted">
          {message.status === "cancelled" && <span className="badge">{t("message.stopped")}</span>}
          {message.model && <span>{message.model}</span>}
          {usage && (
            <>
              <span>{t("usage.tokens", { count: usage.completion_tokens, formatted: formatNumber(usage.completion_tokens) })}</span>
              {usage.cached_tokens > 0 && (
                <span>
                  {t("usage.cached", {
                    count: usage.prompt_tokens,
                    cached: formatNumber(usage.cached_tokens),
                    prompt: formatNumber(usage.prompt_tokens),
                  })}
                </span>
              )}
              <span>{t("usage.speed", { value: formatNumber(usage.tokens_per_second, 1) })}</span>
              <span>{t("usage.firstToken", { value: formatMs(usage.time_to_first_token_ms) })}</span>
            </>
          )}
          <span className="flex gap-1">
            {message.content && (
              <CopyButton text={message.content} label={t("message.copy")} className="btn-ghost px-2 py-0.5 text-xs" />
            )}
            {canRegenerate && (
              <button type="button" className="btn-ghost px-2 py-0.5 text-xs" onClick={onRegenerate}>
                {t("message.regenerate")}
              </button>
            )}
          </span>
        </div>
      )}
    </li>
  );
});
