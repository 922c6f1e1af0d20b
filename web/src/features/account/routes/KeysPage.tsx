import { useId, useState } from "react";
import { useForm } from "react-hook-form";
import { zodResolver } from "@hookform/resolvers/zod";
import { z } from "zod";
import { useTranslation } from "react-i18next";
import { Dialog } from "@/components/Dialog";
import { EmptyState } from "@/components/EmptyState";
import { ErrorMessage } from "@/components/ErrorMessage";
import { Field } from "@/components/Field";
import { Spinner } from "@/components/Spinner";
import { formatDate, formatDateTime } from "@/lib/format";
import { useApiKeys, useCreateKey, useDeleteKey, type ApiKey, type CreatedKey } from "../api/account";
import { AccountFrame } from "../components/AccountFrame";
import { NewKeyDialog } from "../components/NewKeyDialog";

const expiryChoices = [0, 30, 90, 180, 365] as const;

const schema = z.object({
  name: z
    .string()
    .trim()
    .min(1, "keys.errors.nameEmpty")
    .max(64, "keys.errors.nameLong")
    .regex(/^[^\u0000-\u001F\u007F-\u009F]*$/, "keys.errors.nameControl"),
  days: z.string(),
});
type Form = z.infer<typeof schema>;

function CreateKeyForm({ onCreated }: { onCreated: (key: CreatedKey) => void }) {
  const { t } = useTranslation("account");
  const id = useId();
  const create = useCreateKey();
  const {
    register,
    handleSubmit,
    reset,
    formState: { errors },
  } = useForm<Form>({ resolver: zodResolver(schema), defaultValues: { name: "", days: "90" } });

  const onSubmit = handleSubmit((form) => {
    const days = Number(form.days);
    create.mutate(
      { name: form.name, expires_in_days: days > 0 ? days : null },
      {
        onSuccess: (key) => {
          reset();
          onCreated(key);
        },
      },
    );
  });

  return (
    <section aria-labelledby={`${id}-heading`} className="card mb-6">
      <h2 id={`${id}-heading`} className="mb-3 text-lg font-semibold">
        {t("keys.createHeading")}
      </h2>
      <form noValidate onSubmit={onSubmit} className="grid gap-x-4 sm:grid-cols-[1fr_12rem_auto] sm:items-start">
        <Field
          label={t("keys.name")}
          hint={t("keys.nameHint")}
          error={errors.name?.message && t(errors.name.message)}
        >
          <input className="input" maxLength={64} autoComplete="off" {...register("name")} />
        </Field>
        <Field label={t("keys.expires")}>
          <select className="input" {...register("days")}>
            {expiryChoices.map((d) => (
              <option key={d} value={String(d)}>
                {d === 0 ? t("keys.never") : t("keys.days", { count: d })}
              </option>
            ))}
          </select>
        </Field>
        <div className="mb-3 sm:mt-6">
          <button type="submit" className="btn-primary w-full" disabled={create.isPending}>
            {create.isPending ? t("keys.creating") : t("keys.create")}
          </button>
        </div>
      </form>
      {create.isError && <ErrorMessage error={create.error} />}
    </section>
  );
}

function expired(key: ApiKey): boolean {
  return key.expires_at != null && Date.parse(key.expires_at) <= Date.now();
}

export default function KeysPage() {
  const { t } = useTranslation("account");
  const listId = useId();
  const keys = useApiKeys();
  const remove = useDeleteKey();
  const [created, setCreated] = useState<CreatedKey | null>(null);
  const [doomed, setDoomed] = useState<ApiKey | null>(null);

  return (
    <AccountFrame title={t("keys.title")}>
      <p className="mb-4 text-sm muted">{t("keys.intro")}</p>
      <CreateKeyForm onCreated={setCreated} />
      <section aria-labelledby={listId}>
        <h2 id={listId} className="mb-3 text-lg font-semibold">
          {t("keys.listHeading")}
        </h2>
        <p role="status" className="sr-only">
          {remove.isSuccess ? t("keys.deleted") : ""}
        </p>
        {remove.isError && (
          <div className="mb-3">
            <ErrorMessage error={remove.error} />
          </div>
        )}
        {keys.isPending ? (
          <Spinner />
        ) : keys.isError ? (
          <ErrorMessage error={keys.error} onRetry={() => void keys.refetch()} />
        ) : keys.data.length === 0 ? (
          <EmptyState title={t("keys.empty")} />
        ) : (
          <div className="card p-0 sm:p-2">
            <table className="table">
              <caption className="sr-only">{t("keys.caption")}</caption>
              <thead>
                <tr>
                  <th scope="col">{t("keys.colName")}</th>
                  <th scope="col" className="hidden sm:table-cell">
                    {t("keys.colPrefix")}
                  </th>
                  <th scope="col" className="hidden md:table-cell">
                    {t("keys.colCreated")}
                  </th>
                  <th scope="col" className="hidden md:table-cell">
                    {t("keys.colLastUsed")}
                  </th>
                  <th scope="col">{t("keys.colExpires")}</th>
                  <th scope="col">
                    <span className="sr-only">{t("keys.colActions")}</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {keys.data.map((key) => (
                  <tr key={key.id}>
                    <td className="break-all font-medium">{key.name}</td>
                    <td className="hidden font-mono text-xs sm:table-cell">{key.prefix}…</td>
                    <td className="hidden md:table-cell">{formatDate(key.created_at)}</td>
                    <td className="hidden md:table-cell">
                      {key.last_used_at ? formatDateTime(key.last_used_at) : t("keys.neverUsed")}
                    </td>
                    <td>
                      {expired(key) ? (
                        <span className="badge bg-red-100 text-red-900 dark:bg-red-950 dark:text-red-100">
                          {t("keys.expired")}
                        </span>
                      ) : key.expires_at ? (
                        formatDate(key.expires_at)
                      ) : (
                        t("keys.noExpiry")
                      )}
                    </td>
                    <td className="text-right">
                      <button
                        type="button"
                        className="btn-ghost text-red-700 dark:text-red-300"
                        aria-label={t("keys.deleteLabel", { name: key.name })}
                        onClick={() => setDoomed(key)}
                      >
                        {t("keys.delete")}
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>
      <NewKeyDialog created={created} onClose={() => setCreated(null)} />
      <Dialog open={doomed !== null} onClose={() => setDoomed(null)} title={t("keys.confirmTitle")}>
        <p className="mb-4 text-sm">{t("keys.confirmBody", { name: doomed?.name ?? "" })}</p>
        <div className="flex flex-wrap justify-end gap-2">
          <button type="button" className="btn-secondary" onClick={() => setDoomed(null)}>
            {t("common:actions.cancel")}
          </button>
          <button
            type="button"
            className="btn-danger"
            disabled={remove.isPending}
            onClick={() => {
              if (doomed) remove.mutate(doomed.id, { onSettled: () => setDoomed(null) });
            }}
          >
            {t("keys.confirmDelete")}
          </button>
        </div>
      </Dialog>
    </AccountFrame>
  );
}
