import { useId } from "react";
import { useForm } from "react-hook-form";
import { zodResolver } from "@hookform/resolvers/zod";
import { z } from "zod";
import { useTranslation } from "react-i18next";
import { ApiError } from "@/lib/api";
import { ErrorMessage } from "@/components/ErrorMessage";
import { Field } from "@/components/Field";
import { useChangePassword } from "../api/account";

const schema = z
  .object({
    current: z.string().min(1, "password.errors.currentEmpty"),
    next: z.string().min(8, "password.errors.short").max(128, "password.errors.long"),
    repeat: z.string(),
  })
  .refine((f) => f.next === f.repeat, { path: ["repeat"], message: "password.errors.mismatch" })
  .refine((f) => f.next !== f.current, { path: ["next"], message: "password.errors.same" });
type Form = z.infer<typeof schema>;

export function PasswordForm({ username }: { username: string }) {
  const { t } = useTranslation("account");
  const id = useId();
  const change = useChangePassword();
  const {
    register,
    handleSubmit,
    reset,
    formState: { errors },
  } = useForm<Form>({
    resolver: zodResolver(schema),
    defaultValues: { current: "", next: "", repeat: "" },
  });

  const wrongCurrent =
    change.error instanceof ApiError && "current_password" in change.error.fields;
  const onSubmit = handleSubmit((form) =>
    change.mutate(
      { current_password: form.current, new_password: form.next },
      { onSuccess: () => reset() },
    ),
  );
  const message = (key?: string) => (key ? t(key) : undefined);

  return (
    <section aria-labelledby={`${id}-heading`} className="card">
      <h2 id={`${id}-heading`} className="mb-1 text-lg font-semibold">
        {t("password.heading")}
      </h2>
      <p className="mb-4 text-sm muted">{t("password.intro")}</p>
      <form noValidate onSubmit={onSubmit} className="max-w-md">
        {/* Lets password managers file the new password under the right account. */}
        <input type="text" autoComplete="username" className="hidden" value={username} tabIndex={-1} readOnly />
        <Field
          label={t("password.current")}
          error={message(errors.current?.message) ?? (wrongCurrent ? t("password.errors.wrongCurrent") : undefined)}
        >
          <input type="password" className="input" autoComplete="current-password" {...register("current")} />
        </Field>
        <Field label={t("password.new")} hint={t("password.newHint")} error={message(errors.next?.message)}>
          <input type="password" className="input" autoComplete="new-password" {...register("next")} />
        </Field>
        <Field label={t("password.repeat")} error={message(errors.repeat?.message)}>
          <input type="password" className="input" autoComplete="new-password" {...register("repeat")} />
        </Field>
        {change.isError && !wrongCurrent && (
          <div className="mb-3">
            <ErrorMessage error={change.error} />
          </div>
        )}
        <div className="flex flex-wrap items-center gap-3">
          <button type="submit" className="btn-primary" disabled={change.isPending}>
            {change.isPending ? t("password.changing") : t("password.submit")}
          </button>
        </div>
        <p role="status" className="mt-3 text-sm text-emerald-800 dark:text-emerald-300">
          {change.isSuccess ? t("password.changed") : ""}
        </p>
      </form>
    </section>
  );
}
