import { useId } from "react";
import { useForm } from "react-hook-form";
import { zodResolver } from "@hookform/resolvers/zod";
import { z } from "zod";
import { useTranslation } from "react-i18next";
import { ErrorMessage } from "@/components/ErrorMessage";
import { useAddComment } from "../api/tickets";

const schema = z.object({
  body: z.string().trim().min(1, "reply.errors.empty").max(20000, "reply.errors.long"),
  internal: z.boolean(),
});
type Form = z.infer<typeof schema>;

export function ReplyForm({ ticketId, staff }: { ticketId: string; staff: boolean }) {
  const { t } = useTranslation("tickets");
  const id = useId();
  const add = useAddComment(ticketId);
  const {
    register,
    handleSubmit,
    reset,
    watch,
    formState: { errors },
  } = useForm<Form>({ resolver: zodResolver(schema), defaultValues: { body: "", internal: false } });
  const internal = watch("internal");

  const onSubmit = handleSubmit((form) => {
    add.mutate(
      { body: form.body, internal: staff ? form.internal : undefined },
      { onSuccess: () => reset({ body: "", internal: false }) },
    );
  });

  return (
    <form
      noValidate
      onSubmit={onSubmit}
      aria-labelledby={`${id}-heading`}
      className={`mt-4 rounded-lg border p-4 ${
        internal
          ? "border-dashed border-amber-500 bg-amber-50 dark:bg-amber-950"
          : "border-slate-200 bg-white dark:border-slate-700 dark:bg-slate-900"
      }`}
    >
      <h2 id={`${id}-heading`} className="mb-2 text-base font-semibold">
        {t("reply.heading")}
      </h2>
      <label htmlFor={`${id}-body`} className="label">
        {t("reply.label")}
      </label>
      <textarea
        id={`${id}-body`}
        rows={5}
        className="input min-h-28"
        aria-invalid={errors.body ? true : undefined}
        aria-describedby={errors.body ? `${id}-error` : undefined}
        onKeyDown={(event) => {
          if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) void onSubmit();
        }}
        {...register("body")}
      />
      {errors.body?.message && (
        <p id={`${id}-error`} className="mt-1 text-sm text-red-700 dark:text-red-400">
          {t(errors.body.message)}
        </p>
      )}
      {add.isError && (
        <div className="mt-3">
          <ErrorMessage error={add.error} />
        </div>
      )}
      <div className="mt-3 flex flex-wrap items-center justify-between gap-3">
        {staff ? (
          <div className="flex flex-wrap items-center gap-x-2 text-sm">
            <input
              id={`${id}-internal`}
              type="checkbox"
              className="size-4 accent-amber-600"
              aria-describedby={`${id}-internal-hint`}
              {...register("internal")}
            />
            <label htmlFor={`${id}-internal`}>{t("reply.internal")}</label>
            <span id={`${id}-internal-hint`} className="muted">
              {t("reply.internalHint")}
            </span>
          </div>
        ) : (
          <span />
        )}
        <button type="submit" className="btn-primary" disabled={add.isPending}>
          {add.isPending ? t("reply.sending") : t("reply.send")}
        </button>
      </div>
      <p role="status" className="sr-only">
        {add.isSuccess ? t("reply.sent") : ""}
      </p>
    </form>
  );
}
