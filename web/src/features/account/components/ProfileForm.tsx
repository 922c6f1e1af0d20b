import { useId } from "react";
import { useForm } from "react-hook-form";
import { zodResolver } from "@hookform/resolvers/zod";
import { z } from "zod";
import { useTranslation } from "react-i18next";
import type { UserView } from "@/lib/session";
import { ErrorMessage } from "@/components/ErrorMessage";
import { Field } from "@/components/Field";
import { formatDate, formatDateTime } from "@/lib/format";
import { useUpdateMe } from "../api/account";

const schema = z.object({
  display_name: z
    .string()
    .trim()
    .max(64, "profile.errors.long")
    .regex(/^[^\u0000-\u001F\u007F-\u009F]*$/, "profile.errors.control"),
});
type Form = z.infer<typeof schema>;

export function ProfileForm({ user }: { user: UserView }) {
  const { t } = useTranslation("account");
  const id = useId();
  const update = useUpdateMe();
  const {
    register,
    handleSubmit,
    reset,
    formState: { errors, isDirty },
  } = useForm<Form>({
    resolver: zodResolver(schema),
    values: { display_name: user.display_name },
  });

  const onSubmit = handleSubmit((form) =>
    update.mutate(form, { onSuccess: (saved) => reset({ display_name: saved.display_name }) }),
  );

  return (
    <section aria-labelledby={`${id}-heading`} className="card mb-6">
      <h2 id={`${id}-heading`} className="mb-3 text-lg font-semibold">
        {t("profile.heading")}
      </h2>
      <dl className="mb-4 grid gap-3 text-sm sm:grid-cols-3">
        <div>
          <dt className="muted">{t("profile.role")}</dt>
          <dd className="mt-1">
            <span className="badge">{t(`common:roles.${user.role}`)}</span>
          </dd>
        </div>
        <div>
          <dt className="muted">{t("profile.since")}</dt>
          <dd className="mt-1">{formatDate(user.created_at)}</dd>
        </div>
        <div>
          <dt className="muted">{t("profile.lastLogin")}</dt>
          <dd className="mt-1">{formatDateTime(user.last_login_at)}</dd>
        </div>
      </dl>
      <form noValidate onSubmit={onSubmit} className="max-w-md">
        <Field label={t("profile.username")} hint={t("profile.usernameHint")}>
          <input className="input bg-slate-50 dark:bg-slate-800" value={user.username} readOnly />
        </Field>
        <Field
          label={t("profile.displayName")}
          hint={t("profile.displayNameHint")}
          error={errors.display_name?.message && t(errors.display_name.message)}
        >
          <input className="input" maxLength={64} autoComplete="nickname" {...register("display_name")} />
        </Field>
        {update.isError && (
          <div className="mb-3">
            <ErrorMessage error={update.error} />
          </div>
        )}
        <div className="flex flex-wrap items-center gap-3">
          <button type="submit" className="btn-primary" disabled={update.isPending || !isDirty}>
            {update.isPending ? t("profile.saving") : t("profile.save")}
          </button>
          <p role="status" className="text-sm text-emerald-800 dark:text-emerald-300">
            {update.isSuccess && !isDirty ? t("profile.saved") : ""}
          </p>
        </div>
      </form>
    </section>
  );
}
