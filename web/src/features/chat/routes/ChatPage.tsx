import { useEffect, useState } from "react";
import { useParams } from "react-router";
import { useTranslation } from "react-i18next";
import { useQueryClient } from "@tanstack/react-query";
import { chatKey, chatsKey } from "../api/chats";
import { chatSocket, useChatSocket } from "../api/socket";
import { ChatView } from "../components/ChatView";
import { NewChat } from "../components/NewChat";
import { Sidebar } from "../components/Sidebar";
import { HistoryIcon } from "../components/Icons";

/** The chat page: history on the left, the open chat (or a new one) beside it. */
export default function ChatPage() {
  const { t } = useTranslation("chat");
  const { chatId } = useParams();
  const client = useQueryClient();
  const status = useChatSocket();
  const [sidebarOpen, setSidebarOpen] = useState(false);

  // What the socket says changes the history and the chats' stored state.
  useEffect(() => {
    const stopEvents = chatSocket.onEvent((event) => {
      if (!event.chat_id) return;
      if (event.type === "user_message") void client.invalidateQueries({ queryKey: chatsKey });
      if (event.type === "done" || (event.type === "error" && event.message)) {
        void client.invalidateQueries({ queryKey: chatKey(event.chat_id) });
        void client.invalidateQueries({ queryKey: ["me", "quota"] });
      }
    });
    // After a reconnection the stored chats say how interrupted answers ended.
    let first = chatSocket.status !== "open";
    const stopOpen = chatSocket.onOpen(() => {
      if (first) {
        first = false;
        return;
      }
      void client.invalidateQueries({ queryKey: ["chat"] });
    });
    return () => {
      stopEvents();
      stopOpen();
    };
  }, [client]);

  useEffect(() => setSidebarOpen(false), [chatId]);

  const toggle = (
    <button
      type="button"
      className="btn-ghost md:hidden"
      aria-expanded={sidebarOpen}
      aria-controls="chat-history"
      onClick={() => setSidebarOpen(true)}
      title={t("sidebar.show")}
    >
      <HistoryIcon />
      <span className="sr-only">{t("sidebar.show")}</span>
    </button>
  );

  return (
    <div className="flex h-full min-h-0">
      <Sidebar activeId={chatId} open={sidebarOpen} onClose={() => setSidebarOpen(false)} />
      <div className="flex min-w-0 flex-1 flex-col">
        {status === "reconnecting" && (
          <p role="status" className="bg-amber-100 px-3 py-1 text-center text-sm text-amber-900 dark:bg-amber-950 dark:text-amber-100">
            {t("connection.reconnecting")}
          </p>
        )}
        <div className="min-h-0 flex-1">
          {chatId ? (
            <ChatView key={chatId} chatId={chatId} sidebarToggle={toggle} />
          ) : (
            <NewChat
              header={
                <div className="flex items-center gap-2 border-b border-slate-200 px-3 py-2 md:hidden dark:border-slate-800">
                  {toggle}
                </div>
              }
            />
          )}
        </div>
      </div>
    </div>
  );
}
