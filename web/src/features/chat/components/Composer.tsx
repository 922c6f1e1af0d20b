import { useEffect, useRef, useState } from "react";
import type { FormEvent, KeyboardEvent } from "react";
import { useTranslation } from "react-i18next";
import { loadDraft, saveDraft } from "../lib/sampling";

type Props = {
  /** Where the draft is kept: the chat's id, or "new". */
  draftKey: string;
  answering: boolean;
  /** Resolves true once the message is on its way; false keeps the draft. */
  onSend: (content: string) => Promise<boolean> | boolean;
  onStop?: () => void;
  /** Set when text the server refused is waiting to go back into the box. */
  restore?: string | null;
  /** Hands over that text once (null when it was taken already). */
  takeRestore?: () => string | null;
  disabledReason?: string;
};

/** The message box: Enter sends, Shift+Enter starts a new line. */
export function Composer({ draftKey, answering, onSend, onStop, restore, takeRestore, disabledReason }: Props) {
  const { t } = useTranslation("chat");
  const [text, setText] = useState(() => loadDraft(draftKey));
  const [busy, setBusy] = useState(false);
  const box = useRef<HTMLTextAreaElement>(null);

  useEffect(() => saveDraft(draftKey, text), [draftKey, text]);

  useEffect(() => {
    if (restore == null || !takeRestore) return;
    const back = takeRestore();
    if (back == null) return;
    setText((current) => (current.trim() && current !== back ? `${back}\n\n${current}` : back));
    box.current?.focus();
  }, [restore, takeRestore]);

  const blocked = answering || busy || Boolean(disabledReason);

  const submit = async (event?: FormEvent) => {
    event?.preventDefault();
    const content = text;
    if (blocked || !content.trim()) return;
    setBusy(true);
    try {
      if (await onSend(content)) {
        saveDraft(draftKey, "");
        setText("");
      }
    } finally {
      setBusy(false);
    }
  };

  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      void submit();
    }
  };

  return (
    <form onSubmit={(e) => void submit(e)} className="mx-auto w-full max-w-3xl px-3 pb-3 sm:px-6">
      <div className="flex items-end gap-2 rounded-xl border border-slate-300 bg-white p-2 shadow-sm focus-within:ring-2 focus-within:ring-brand-600 dark:border-slate-600 dark:bg-slate-900">
        <label htmlFor="chat-message" className="sr-only">
          {t("composer.label")}
        </label>
        <textarea
          id="chat-message"
          ref={box}
          rows={1}
          value={text}
          onChange={(e) => setText(e.target.value)}
          onKeyDown={onKeyDown}
          placeholder={t("composer.placeholder")}
          aria-describedby="chat-message-hint"
          className="field-sizing-content max-h-60 min-h-10 flex-1 resize-none bg-transparent px-2 py-2 text-sm text-slate-900 outline-none placeholder:text-slate-500 dark:text-slate-100 dark:placeholder:text-slate-400"
        />
        {answering && onStop && (
          <button type="button" className="btn-secondary" onClick={onStop}>
            {t("composer.stop")}
          </button>
        )}
        <button type="submit" className="btn-primary" disabled={blocked || !text.trim()}>
          {t("composer.send")}
        </button>
      </div>
      <p id="chat-message-hint" className="mt-1 px-1 text-xs muted">
        {disabledReason ?? (answering ? t("composer.answering") : t("composer.hint"))}
      </p>
    </form>
  );
}
