import { useForm } from "react-hook-form";
import { zodResolver } from "@hookform/resolvers/zod";
import { z } from "zod";
import { useTranslation } from "react-i18next";
import { Link, useNavigate, useSearchParams } from "react-router";
import { ApiError } from "@/lib/api";
import { ErrorMessage } from "@/components/ErrorMessage";
import { Field } from "@/components/Field";
import { PageHeader } from "@/components/PageHeader";
import { categories, priorities, useCreateTicket } from "../api/tickets";

// Messages are translation keys, turned into words where they are shown.
const schema = z.object({
  subject: z
    .string()
    .trim()
    .min(3, "new.errors.subjectShort")
    .max(200, "new.errors.subjectLong")
    .regex(/^[^\u0000-\u001F\u007F-\u009F]*$/, "new.errors.subjectControl"),
  body: z.string().trim().min(1, "new.errors.bodyEmpty").max(20000, "new.errors.bodyLong"),
  category: z.enum(categories),
  priority: z.enum(priorities),
});

type Form = z.infer<typeof schema>;

export default function NewTicketPage() {
  const { t } = useTranslation("tickets");
  const navigate = useNavigate();
  const [params, setParams] = useSearchParams();
  const chatId = params.get("chat") || null;
  const create = useCreateTicket();
  const {
    register,
    handleSubmit,
    formState: { errors },
  } = useForm<Form>({
    resolver: zodResolver(schema),
    defaultValues: { subject: "", body: "", category: "question", priority: "normal" },
  });

  const onSubmit = handleSubmit((form) => {
    create.mutate(
      { ...form, chat_id: chatId },
      { onSuccess: (ticket) => void navigate(`/tickets/${ticket.number}`) },
    );
  });
  const message = (key?: string) => (key ? t(key) : undefined);
  const badChat = create.error instanceof ApiError && "chat_id" in create.error.fields;

  return (
    <div className="mx-auto max-w-2xl p-4 sm:p-6">
      <p className="mb-2 text-sm">
        <Link to="/tickets" className="text-brand-800 hover:underline dark:text-brand-100">
          ← {t("ticket.back")}
        </Link>
      </p>
      <PageHeader title={t("new.title")} />
      <p className="mb-4 text-sm muted">{t("new.intro")}</p>
      <form className="card" noValidate onSubmit={onSubmit}>
        {chatId && (
          <div className="mb-4 flex flex-wrap items-center justify-between gap-2 rounded-md border border-brand-600/40 bg-brand-50 p-3 text-sm text-slate-900 dark:border-brand-500/50 dark:bg-slate-800 dark:text-slate-100">
            <span>
              {t("new.linkedChat")}{" "}
              <Link to={`/chat/${chatId}`} className="font-mono text-brand-800 underline dark:text-brand-100">
                {chatId}
              </Link>
            </span>
            <button
              type="button"
              className="btn-ghost"
              onClick={() => {
                const next = new URLSearchParams(params);
                next.delete("chat");
                setParams(next, { replace: true });
              }}
            >
              {t("new.unlinkChat")}
            </button>
          </div>
        )}
        <Field label={t("new.subject")} error={message(errors.subject?.message)}>
          <input className="input" maxLength={200} autoComplete="off" {...register("subject")} />
        </Field>
        <Field
          label={t("new.description")}
          hint={t("new.descriptionHint")}
          error={message(errors.body?.message)}
        >
          <textarea className="input min-h-40" rows={8} {...register("body")} />
        </Field>
        <div className="grid gap-x-4 sm:grid-cols-2">
          <Field label={t("new.category")}>
            <select className="input" {...register("category")}>
              {categories.map((c) => (
                <option key={c} value={c}>
                  {t(`category.${c}`)}
                </option>
              ))}
            </select>
          </Field>
          <Field label={t("new.priority")}>
            <select className="input" {...register("priority")}>
              {priorities.map((p) => (
                <option key={p} value={p}>
                  {t(`priority.${p}`)}
                </option>
              ))}
            </select>
          </Field>
        </div>
        {create.isError && (
          <div className="mb-3">
            {badChat ? (
              <p role="alert" className="rounded-md border border-red-300 bg-red-50 p-3 text-sm text-red-900 dark:border-red-800 dark:bg-red-950 dark:text-red-100">
                {t("new.errors.chat")}
              </p>
            ) : (
              <ErrorMessage error={create.error} />
            )}
          </div>
        )}
        <div className="flex flex-wrap justify-end gap-2">
          <Link to="/tickets" className="btn-secondary">
            {t("common:actions.cancel")}
          </Link>
          <button type="submit" className="btn-primary" disabled={create.isPending}>
            {create.isPending ? t("new.opening") : t("new.submit")}
          </button>
        </div>
      </form>
    </div>
  );
}
