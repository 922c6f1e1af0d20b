import { useEffect, useRef, useState } from "react";
import { NavLink } from "react-router";
import { useTranslation } from "react-i18next";
import type { Chat } from "../api/chats";
import { PinIcon } from "./Icons";

export type ChatAction = "rename" | "pin" | "export-markdown" | "export-json" | "delete";

type Props = {
  chat: Chat;
  onAction: (chat: Chat, action: ChatAction) => void;
  onNavigate: () => void;
};

/** A chat in the history: a link, and its actions behind a small menu. */
export function ChatListItem({ chat, onAction, onNavigate }: Props) {
  const { t } = useTranslation("chat");
  const [open, setOpen] = useState(false);
  const root = useRef<HTMLLIElement>(null);
  const toggle = useRef<HTMLButtonElement>(null);

  useEffect(() => {
    if (!open) return;
    const onPointer = (event: PointerEvent) => {
      if (!root.current?.contains(event.target as Node)) setOpen(false);
    };
    document.addEventListener("pointerdown", onPointer);
    return () => document.removeEventListener("pointerdown", onPointer);
  }, [open]);

  const act = (action: ChatAction) => {
    setOpen(false);
    onAction(chat, action);
  };

  const itemClass =
    "block w-full rounded px-3 py-1.5 text-left text-sm text-slate-800 hover:bg-slate-100 dark:text-slate-100 dark:hover:bg-slate-700";

  return (
    <li
      ref={root}
      className="group relative"
      onKeyDown={(e) => {
        if (e.key === "Escape" && open) {
          e.stopPropagation();
          setOpen(false);
          toggle.current?.focus();
        }
      }}
    >
      <NavLink
        to={`/chat/${chat.id}`}
        onClick={onNavigate}
        className={({ isActive }) =>
          `flex min-w-0 items-center gap-2 rounded-md py-2 pl-3 pr-10 text-sm ${
            isActive
              ? "bg-slate-200 font-medium text-slate-900 dark:bg-slate-800 dark:text-white"
              : "text-slate-700 hover:bg-slate-100 dark:text-slate-300 dark:hover:bg-slate-800/60"
          }`
        }
      >
        {chat.pinned && (
          <span className="shrink-0 text-brand-700 dark:text-brand-100" title={t("sidebar.pinned")}>
            <PinIcon />
          </span>
        )}
        <span className="truncate">{chat.title}</span>
        {chat.temporary && <span className="badge shrink-0">{t("temporary.badge")}</span>}
      </NavLink>
      <button
        ref={toggle}
        type="button"
        aria-expanded={open}
        aria-haspopup="true"
        aria-label={t("sidebar.actionsFor", { title: chat.title })}
        onClick={() => setOpen((v) => !v)}
        className="btn-ghost absolute right-1 top-1 px-2 py-1"
      >
        <span aria-hidden="true">⋯</span>
      </button>
      {open && (
        <div className="absolute right-1 top-9 z-30 w-52 rounded-md border border-slate-200 bg-white p-1 shadow-lg dark:border-slate-700 dark:bg-slate-800">
          <ul>
            <li>
              <button type="button" className={itemClass} onClick={() => act("rename")}>
                {t("actions.rename")}
              </button>
            </li>
            <li>
              <button type="button" className={itemClass} onClick={() => act("pin")}>
                {chat.pinned ? t("actions.unpin") : t("actions.pin")}
              </button>
            </li>
            <li>
              <button type="button" className={itemClass} onClick={() => act("export-markdown")}>
                {t("actions.exportMarkdown")}
              </button>
            </li>
            <li>
              <button type="button" className={itemClass} onClick={() => act("export-json")}>
                {t("actions.exportJson")}
              </button>
            </li>
            <li>
              <button
                type="button"
                className={`${itemClass} text-red-700 dark:text-red-300`}
                onClick={() => act("delete")}
              >
                {t("actions.delete")}
              </button>
            </li>
          </ul>
        </div>
      )}
    </li>
  );
}
