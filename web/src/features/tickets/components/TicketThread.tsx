import { useTranslation } from "react-i18next";
import { formatDateTime } from "@/lib/format";
import type { TicketWithComments } from "../api/tickets";

type Post = {
  id: string;
  author: string;
  staff: boolean;
  internal: boolean;
  body: string;
  at: string;
};

/** The ticket's description and its replies, oldest first. */
export function TicketThread({ ticket, headingId }: { ticket: TicketWithComments; headingId: string }) {
  const { t } = useTranslation("tickets");
  const posts: Post[] = [
    {
      id: ticket.id,
      author: ticket.owner_username,
      staff: false,
      internal: false,
      body: ticket.body,
      at: ticket.created_at,
    },
    ...[...ticket.comments]
      .sort((a, b) => Date.parse(a.created_at) - Date.parse(b.created_at))
      .map((c) => ({
        id: c.id,
        author: c.author_username,
        staff: c.author_is_staff,
        internal: c.internal,
        body: c.body,
        at: c.created_at,
      })),
  ];
  return (
    <ol className="flex flex-col gap-3" aria-labelledby={headingId}>
      {posts.map((post, index) => (
        <li key={post.id}>
          <article
            aria-label={t(post.internal ? "thread.noteBy" : "thread.postBy", { user: post.author })}
            className={
              post.internal
                ? "rounded-lg border border-dashed border-amber-500 bg-amber-50 p-4 dark:border-amber-500 dark:bg-amber-950"
                : post.staff
                  ? "rounded-lg border border-brand-600/40 bg-brand-50 p-4 dark:border-brand-500/40 dark:bg-slate-900"
                  : "card"
            }
          >
            <header className="mb-2 flex flex-wrap items-center gap-2 text-sm">
              <span className="font-semibold">{post.author}</span>
              {post.staff && (
                <span className="badge bg-brand-700 text-white dark:bg-brand-500 dark:text-slate-950">
                  {t("thread.staff")}
                </span>
              )}
              {post.internal && (
                <span className="badge bg-amber-200 text-amber-950 dark:bg-amber-800 dark:text-amber-50">
                  {t("thread.staffOnly")}
                </span>
              )}
              {index === 0 && <span className="muted">{t("thread.opened")}</span>}
              <time dateTime={post.at} className="ml-auto text-xs muted">
                {formatDateTime(post.at)}
              </time>
            </header>
            <div className="whitespace-pre-wrap break-words text-sm leading-relaxed">{post.body}</div>
          </article>
        </li>
      ))}
    </ol>
  );
}
