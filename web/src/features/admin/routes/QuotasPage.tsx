import { useEffect, useState } from "react";
import { useFieldArray, useForm } from "react-hook-form";
import { zodResolver } from "@hookform/resolvers/zod";
import { z } from "zod";
import { useTranslation } from "react-i18next";
import { PageHeader } from "@/components/PageHeader";
import { Spinner } from "@/components/Spinner";
import { ErrorMessage } from "@/components/ErrorMessage";
import { EmptyState } from "@/components/EmptyState";
import { Field } from "@/components/Field";
import { useUser as useMe } from "@/lib/auth";
import { can } from "@/lib/roles";
import { formatNumber } from "@/lib/format";
import { useQuotas, useSaveQuotas } from "../api/admin";
import type { Quotas } from "../api/admin";
import { useUser } from "../api/users";
import type { Role } from "../api/users";
import { UserPicker } from "../components/UserPicker";

const ROLES: Role[] = ["user", "admin", "technician"];
// Whole tokens, small enough to stay exact in a JavaScript number.
const optionalTokens = z.string().trim().regex(/^\d{0,15}$/, "quotas.errors.tokens");
const tokens = z.string().trim().regex(/^\d{1,15}$/, "quotas.errors.tokensRequired");

const schema = z.object({
  roles: z.object({ user: optionalTokens, admin: optionalTokens, technician: optionalTokens }),
  users: z.array(z.object({ userId: z.string(), tokens })),
});
type Values = z.infer<typeof schema>;

function toValues(quotas: Quotas): Values {
  const roles = quotas.roles ?? {};
  const text = (n: number | null | undefined) => (n == null ? "" : String(n));
  return {
    roles: { user: text(roles.user), admin: text(roles.admin), technician: text(roles.technician) },
    users: Object.entries(quotas.users ?? {}).map(([userId, n]) => ({ userId, tokens: String(n) })),
  };
}

function toQuotas(values: Values): Quotas {
  const roles: NonNullable<Quotas["roles"]> = {};
  for (const role of ROLES) {
    const v = values.roles[role].trim();
    if (v !== "") roles[role] = Number(v);
  }
  const users: Record<string, number> = {};
  for (const row of values.users) users[row.userId] = Number(row.tokens.trim());
  return { roles, users };
}

function OverrideRow({
  index,
  userId,
  register,
  error,
  onRemove,
}: {
  index: number;
  userId: string;
  register: ReturnType<typeof useForm<Values>>["register"];
  error?: string;
  onRemove: () => void;
}) {
  const { t } = useTranslation("admin");
  const user = useUser(userId);
  const name = user.data?.username ?? userId;
  const errorId = `override-${index}-error`;
  return (
    <li className="flex flex-wrap items-end gap-3 border-b border-slate-100 py-3 dark:border-slate-800">
      <div className="min-w-40 flex-1">
        <label htmlFor={`override-${index}`} className="label">
          {t("quotas.overrideFor", { username: name })}
        </label>
        <input
          id={`override-${index}`}
          className="input"
          inputMode="numeric"
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? errorId : undefined}
          {...register(`users.${index}.tokens`)}
        />
        {error && (
          <p id={errorId} className="mt-1 text-sm text-red-700 dark:text-red-400">
            {error}
          </p>
        )}
      </div>
      {user.data && (
        <span className="badge mb-2">{t(`common:roles.${user.data.role}`)}</span>
      )}
      <button
        type="button"
        className="btn-secondary"
        aria-label={t("quotas.removeOverride", { username: name })}
        onClick={onRemove}
      >
        {t("quotas.remove")}
      </button>
    </li>
  );
}

export default function QuotasPage() {
  const { t } = useTranslation("admin");
  const me = useMe();
  const quotas = useQuotas();
  const save = useSaveQuotas();
  const [saved, setSaved] = useState(false);
  const form = useForm<Values>({
    resolver: zodResolver(schema),
    defaultValues: { roles: { user: "", admin: "", technician: "" }, users: [] },
  });
  const overrides = useFieldArray({ control: form.control, name: "users", keyName: "key" });
  const { errors } = form.formState;

  useEffect(() => {
    if (quotas.data) form.reset(toValues(quotas.data));
  }, [quotas.data, form]);

  const message = (key?: string) => (key ? t(key) : undefined);
  const isTechnician = can.technician(me.role);

  return (
    <div className="mx-auto w-full max-w-3xl p-4 sm:p-6">
      <PageHeader title={t("quotas.title")} />
      <p className="mb-4 text-sm muted">{t("quotas.intro")}</p>
      {quotas.isPending ? (
        <Spinner />
      ) : quotas.isError ? (
        <ErrorMessage error={quotas.error} onRetry={() => void quotas.refetch()} />
      ) : (
        <form
          noValidate
          className="flex flex-col gap-4"
          onSubmit={form.handleSubmit((values) => {
            setSaved(false);
            save.mutate(toQuotas(values), { onSuccess: () => setSaved(true) });
          })}
        >
          <section className="card" aria-labelledby="quotas-roles">
            <h2 id="quotas-roles" className="mb-1 text-lg font-semibold">
              {t("quotas.roles")}
            </h2>
            <p className="mb-3 text-sm muted">{t("quotas.rolesHint")}</p>
            <div className="grid gap-x-4 sm:grid-cols-3">
              {ROLES.map((role) => {
                const locked = role === "technician" && !isTechnician;
                const current = quotas.data.roles?.[role];
                return (
                  <Field
                    key={role}
                    label={t("quotas.roleLabel", { role: t(`common:roles.${role}`) })}
                    hint={
                      locked
                        ? t("quotas.technicianOnly")
                        : current == null
                          ? t("quotas.unlimitedNow")
                          : t("quotas.limitNow", { tokens: formatNumber(current) })
                    }
                    error={message(errors.roles?.[role]?.message)}
                  >
                    <input
                      className="input"
                      inputMode="numeric"
                      placeholder={t("quotas.unlimited")}
                      readOnly={locked}
                      {...form.register(`roles.${role}`)}
                    />
                  </Field>
                );
              })}
            </div>
          </section>

          <section className="card" aria-labelledby="quotas-users">
            <h2 id="quotas-users" className="mb-1 text-lg font-semibold">
              {t("quotas.users")}
            </h2>
            <p className="mb-3 text-sm muted">{t("quotas.usersHint")}</p>
            {overrides.fields.length === 0 ? (
              <EmptyState title={t("quotas.noOverrides")} />
            ) : (
              <ul aria-label={t("quotas.users")}>
                {overrides.fields.map((field, index) => (
                  <OverrideRow
                    key={field.key}
                    index={index}
                    userId={field.userId}
                    register={form.register}
                    error={message(errors.users?.[index]?.tokens?.message)}
                    onRemove={() => overrides.remove(index)}
                  />
                ))}
              </ul>
            )}
            <div className="mt-4">
              <UserPicker
                label={t("quotas.addOverride")}
                exclude={overrides.fields.map((f) => f.userId)}
                onPick={(user) => {
                  overrides.append({ userId: user.id, tokens: "0" });
                  setSaved(false);
                }}
              />
            </div>
          </section>

          <ErrorMessage error={save.error} />
          <div className="flex flex-wrap items-center gap-3">
            <button type="submit" className="btn-primary" disabled={save.isPending}>
              {t("quotas.save")}
            </button>
            <p role="status" aria-live="polite" className="text-sm text-emerald-800 dark:text-emerald-300">
              {saved && !form.formState.isDirty ? t("common:state.saved") : ""}
            </p>
          </div>
        </form>
      )}
    </div>
  );
}

