import { useEffect, useState } from "react";
import { useNavigate } from "react-router";
import { useTranslation } from "react-i18next";
import { useForm } from "react-hook-form";
import { zodResolver } from "@hookform/resolvers/zod";
import { z } from "zod";
import { Dialog } from "@/components/Dialog";
import { ErrorMessage } from "@/components/ErrorMessage";
import { Field } from "@/components/Field";
import { Spinner } from "@/components/Spinner";
import { exportChat, useChats, useDeleteChat, useUpdateChat, type Chat } from "../api/chats";
import { ChatListItem, type ChatAction } from "./ChatListItem";
import { MAX_SEARCH_CHARS } from "@/lib/api";

function useDebounced<T>(value: T, ms: number): T {
  const [debounced, setDebounced] = useState(value);
  useEffect(() => {
    const timer = setTimeout(() => setDebounced(value), ms);
    return () => clearTimeout(timer);
  }, [value, ms]);
  return debounced;
}

type Props = {
  activeId?: string;
  open: boolean;
  onClose: () => void;
};

/** The chat history: new chat, search, pinned chats first, actions per chat. */
export function Sidebar({ activeId, open, onClose }: Props) {
  const { t } = useTranslation("chat");
  const navigate = useNavigate();
  const [search, setSearch] = useState("");
  const q = useDebounced(search.trim(), 300);
  const chats = useChats(q);
  const update = useUpdateChat();
  const remove = useDeleteChat();
  const [renaming, setRenaming] = useState<Chat | null>(null);
  const [deleting, setDeleting] = useState<Chat | null>(null);
  const [actionError, setActionError] = useState<unknown>(null);
  const [status, setStatus] = useState("");

  const onAction = (chat: Chat, action: ChatAction) => {
    setActionError(null);
    switch (action) {
      case "rename":
        setRenaming(chat);
        break;
      case "delete":
        setDeleting(chat);
        break;
      case "pin":
        update.mutate(
          { id: chat.id, changes: { pinned: !chat.pinned } },
          {
            onSuccess: () => setStatus(chat.pinned ? t("sidebar.unpinned") : t("sidebar.pinnedDone")),
            onError: setActionError,
          },
        );
        break;
      case "export-markdown":
      case "export-json":
        exportChat(chat.id, action === "export-json" ? "json" : "markdown").then(
          () => setStatus(t("sidebar.exported")),
          setActionError,
        );
        break;
    }
  };

  const items = chats.data?.items ?? [];
  const pinned = items.filter((c) => c.pinned);
  const recent = items.filter((c) => !c.pinned);

  const section = (title: string, list: Chat[]) =>
    list.length > 0 && (
      <section className="mb-3">
        <h2 className="px-3 pb-1 text-xs font-semibold uppercase tracking-wide muted">{title}</h2>
        <ul className="flex flex-col gap-0.5">
          {list.map((chat) => (
            <ChatListItem key={chat.id} chat={chat} onAction={onAction} onNavigate={onClose} />
          ))}
        </ul>
      </section>
    );

  return (
    <>
      {open && (
        <div aria-hidden="true" className="fixed inset-0 z-30 bg-black/40 md:hidden" onClick={onClose} />
      )}
      <aside
        id="chat-history"
        aria-label={t("sidebar.label")}
        className={`${
          open ? "fixed inset-y-0 left-0 z-40 flex shadow-xl" : "hidden"
        } w-72 max-w-[85vw] flex-col border-r border-slate-200 bg-slate-50 dark:border-slate-800 dark:bg-slate-900 md:static md:z-auto md:flex md:shadow-none`}
      >
        <div className="flex items-center gap-2 p-3">
          <button
            type="button"
            className="btn-primary flex-1"
            onClick={() => {
              onClose();
              void navigate("/chat");
            }}
          >
            {t("sidebar.newChat")}
          </button>
          <button type="button" className="btn-ghost md:hidden" onClick={onClose} aria-label={t("sidebar.close")}>
            <span aria-hidden="true">✕</span>
          </button>
        </div>
        <div className="px-3 pb-2" role="search">
          <label htmlFor="chat-search" className="sr-only">
            {t("sidebar.search")}
          </label>
          <input
            id="chat-search"
            type="search"
            maxLength={MAX_SEARCH_CHARS}
            className="input"
            placeholder={t("sidebar.searchPlaceholder")}
            value={search}
            onChange={(e) => setSearch(e.target.value)}
          />
        </div>
        <div className="min-h-0 flex-1 overflow-y-auto px-2 pb-3">
          <ErrorMessage error={actionError} />
          {chats.isPending ? (
            <Spinner />
          ) : chats.isError ? (
            <ErrorMessage error={chats.error} onRetry={() => void chats.refetch()} />
          ) : items.length === 0 ? (
            <p className="px-3 py-4 text-sm muted">{q ? t("sidebar.noMatches") : t("sidebar.empty")}</p>
          ) : (
            <nav aria-label={t("sidebar.list")}>
              {section(t("sidebar.pinnedSection"), pinned)}
              {section(t("sidebar.recentSection"), recent)}
            </nav>
          )}
          <p role="status" className="sr-only">
            {status}
          </p>
        </div>
      </aside>
      <RenameDialog chat={renaming} onClose={() => setRenaming(null)} />
      <Dialog open={deleting !== null} onClose={() => setDeleting(null)} title={t("delete.title")}>
        <p className="mb-4 text-sm">{t("delete.body", { title: deleting?.title ?? "" })}</p>
        <ErrorMessage error={remove.error} />
        <div className="flex justify-end gap-2">
          <button type="button" className="btn-secondary" onClick={() => setDeleting(null)}>
            {t("common:actions.cancel")}
          </button>
          <button
            type="button"
            className="btn-danger"
            disabled={remove.isPending}
            onClick={() => {
              const chat = deleting;
              if (!chat) return;
              remove.mutate(chat.id, {
                onSuccess: () => {
                  setDeleting(null);
                  setStatus(t("delete.done"));
                  if (chat.id === activeId) void navigate("/chat");
                },
              });
            }}
          >
            {t("actions.delete")}
          </button>
        </div>
      </Dialog>
    </>
  );
}

const renameSchema = z.object({
  title: z.string().trim().min(1, "rename.required").max(200, "rename.tooLong"),
});

function RenameDialog({ chat, onClose }: { chat: Chat | null; onClose: () => void }) {
  const { t } = useTranslation("chat");
  const update = useUpdateChat();
  const form = useForm({ resolver: zodResolver(renameSchema), defaultValues: { title: "" } });
  useEffect(() => {
    if (chat) form.reset({ title: chat.title });
  }, [chat, form]);
  const error = form.formState.errors.title?.message;
  return (
    <Dialog open={chat !== null} onClose={onClose} title={t("rename.title")}>
      <form
        onSubmit={form.handleSubmit((values) => {
          if (!chat) return;
          update.mutate({ id: chat.id, changes: { title: values.title } }, { onSuccess: onClose });
        })}
      >
        <Field label={t("rename.label")} error={error ? t(error) : undefined}>
          <input className="input" autoFocus {...form.register("title")} />
        </Field>
        <ErrorMessage error={update.error} />
        <div className="mt-4 flex justify-end gap-2">
          <button type="button" className="btn-secondary" onClick={onClose}>
            {t("common:actions.cancel")}
          </button>
          <button type="submit" className="btn-primary" disabled={update.isPending}>
            {t("common:actions.save")}
          </button>
        </div>
      </form>
    </Dialog>
  );
}
