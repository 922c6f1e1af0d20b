import { useEffect } from "react";
import { useForm } from "react-hook-form";
import { zodResolver } from "@hookform/resolvers/zod";
import { z } from "zod";
import { useTranslation } from "react-i18next";
import { Dialog } from "@/components/Dialog";
import { Field } from "@/components/Field";
import { ErrorMessage } from "@/components/ErrorMessage";
import { ApiError } from "@/lib/api";
import { useCreateUser, useResetPassword, useUpdateUser } from "../api/users";
import type { Role, UserView } from "../api/users";

// The same limits the server checks, so most mistakes show before sending.
const username = z
  .string()
  .trim()
  .min(3, "users.form.usernameLength")
  .max(32, "users.form.usernameLength")
  .regex(/^[A-Za-z0-9._-]+$/, "users.form.usernameChars");
const password = z.string().min(8, "users.form.passwordLength").max(128, "users.form.passwordLength");
const displayName = z.string().trim().max(64, "users.form.displayNameLength").regex(/^[^\u0000-\u001F\u007F-\u009F]*$/, "users.form.displayNameChars");

const createSchema = z.object({
  username,
  display_name: displayName,
  role: z.enum(["user", "admin", "technician"]),
  password,
});
type CreateValues = z.infer<typeof createSchema>;

/** Puts the server's per-field complaints next to the fields they name. */
function serverFieldErrors<T extends string>(error: unknown, fields: readonly T[], set: (field: T, message: string) => void) {
  if (!(error instanceof ApiError)) return;
  for (const [field, message] of Object.entries(error.fields)) {
    if ((fields as readonly string[]).includes(field)) set(field as T, message);
  }
}

export function CreateUserDialog({
  open,
  onClose,
  roles,
  onCreated,
}: {
  open: boolean;
  onClose: () => void;
  roles: Role[];
  onCreated: (user: UserView) => void;
}) {
  const { t } = useTranslation("admin");
  const create = useCreateUser();
  const form = useForm<CreateValues>({
    resolver: zodResolver(createSchema),
    defaultValues: { username: "", display_name: "", role: "user", password: "" },
  });
  const { errors } = form.formState;
  useEffect(() => {
    if (open) {
      form.reset();
      create.reset();
    }
  }, [open]);
  const message = (key?: string) => (key ? t(key, { defaultValue: key }) : undefined);

  return (
    <Dialog open={open} onClose={onClose} title={t("users.create.title")}>
      <form
        noValidate
        onSubmit={form.handleSubmit((values) =>
          create.mutate(
            { ...values, display_name: values.display_name || null },
            {
              onSuccess: (user) => {
                onCreated(user);
                onClose();
              },
              onError: (error) =>
                serverFieldErrors(error, ["username", "display_name", "password", "role"] as const, (field, text) =>
                  form.setError(field, { message: text }),
                ),
            },
          ),
        )}
      >
        <Field label={t("users.fields.username")} hint={t("users.form.usernameHint")} error={message(errors.username?.message)}>
          <input className="input" autoComplete="off" {...form.register("username")} />
        </Field>
        <Field label={t("users.fields.displayName")} error={message(errors.display_name?.message)}>
          <input className="input" autoComplete="off" {...form.register("display_name")} />
        </Field>
        <Field label={t("users.fields.role")} error={message(errors.role?.message)}>
          <select className="input" {...form.register("role")}>
            {roles.map((role) => (
              <option key={role} value={role}>
                {t(`common:roles.${role}`)}
              </option>
            ))}
          </select>
        </Field>
        <Field label={t("users.fields.password")} hint={t("users.form.passwordHint")} error={message(errors.password?.message)}>
          <input className="input" type="password" autoComplete="new-password" {...form.register("password")} />
        </Field>
        <ErrorMessage error={create.error} />
        <div className="mt-4 flex justify-end gap-2">
          <button type="button" className="btn-secondary" onClick={onClose}>
            {t("common:actions.cancel")}
          </button>
          <button type="submit" className="btn-primary" disabled={create.isPending}>
            {t("users.create.submit")}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

const resetSchema = z.object({ new_password: password });

export function ResetPasswordDialog({
  user,
  onClose,
  onDone,
}: {
  user: UserView | null;
  onClose: () => void;
  onDone: (user: UserView) => void;
}) {
  const { t } = useTranslation("admin");
  const reset = useResetPassword();
  const form = useForm<{ new_password: string }>({ resolver: zodResolver(resetSchema), defaultValues: { new_password: "" } });
  useEffect(() => {
    if (user) {
      form.reset();
      reset.reset();
    }
  }, [user]);
  const error = form.formState.errors.new_password?.message;
  return (
    <Dialog open={!!user} onClose={onClose} title={t("users.reset.title", { username: user?.username ?? "" })}>
      {user && (
        <form
          noValidate
          onSubmit={form.handleSubmit(({ new_password }) =>
            reset.mutate(
              { id: user.id, new_password },
              {
                onSuccess: () => {
                  onDone(user);
                  onClose();
                },
              },
            ),
          )}
        >
          <p className="mb-3 text-sm muted">{t("users.reset.body")}</p>
          <Field label={t("users.fields.newPassword")} hint={t("users.form.passwordHint")} error={error ? t(error) : undefined}>
            <input className="input" type="password" autoComplete="new-password" {...form.register("new_password")} />
          </Field>
          <ErrorMessage error={reset.error} />
          <div className="mt-4 flex justify-end gap-2">
            <button type="button" className="btn-secondary" onClick={onClose}>
              {t("common:actions.cancel")}
            </button>
            <button type="submit" className="btn-primary" disabled={reset.isPending}>
              {t("users.reset.submit")}
            </button>
          </div>
        </form>
      )}
    </Dialog>
  );
}

const nameSchema = z.object({ display_name: displayName });

export function EditNameDialog({
  user,
  onClose,
  onDone,
}: {
  user: UserView | null;
  onClose: () => void;
  onDone: (user: UserView) => void;
}) {
  const { t } = useTranslation("admin");
  const update = useUpdateUser();
  const form = useForm<{ display_name: string }>({ resolver: zodResolver(nameSchema) });
  useEffect(() => {
    if (user) {
      form.reset({ display_name: user.display_name });
      update.reset();
    }
  }, [user]);
  const error = form.formState.errors.display_name?.message;
  return (
    <Dialog open={!!user} onClose={onClose} title={t("users.rename.title", { username: user?.username ?? "" })}>
      {user && (
        <form
          noValidate
          onSubmit={form.handleSubmit(({ display_name }) =>
            update.mutate(
              { id: user.id, display_name },
              {
                onSuccess: (updated) => {
                  onDone(updated);
                  onClose();
                },
              },
            ),
          )}
        >
          <Field label={t("users.fields.displayName")} error={error ? t(error) : undefined}>
            <input className="input" autoComplete="off" {...form.register("display_name")} />
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
      )}
    </Dialog>
  );
}

/** Asks before disabling: the account is signed out everywhere at once. */
export function DisableDialog({
  user,
  onClose,
  onDone,
}: {
  user: UserView | null;
  onClose: () => void;
  onDone: (user: UserView) => void;
}) {
  const { t } = useTranslation("admin");
  const update = useUpdateUser();
  useEffect(() => {
    if (user) update.reset();
  }, [user]);
  return (
    <Dialog open={!!user} onClose={onClose} title={t("users.disable.title", { username: user?.username ?? "" })}>
      {user && (
        <>
          <p className="mb-4 text-sm">{t("users.disable.body", { username: user.username })}</p>
          <ErrorMessage error={update.error} />
          <div className="mt-4 flex justify-end gap-2">
            <button type="button" className="btn-secondary" onClick={onClose}>
              {t("common:actions.cancel")}
            </button>
            <button
              type="button"
              className="btn-danger"
              disabled={update.isPending}
              onClick={() =>
                update.mutate(
                  { id: user.id, disabled: true },
                  {
                    onSuccess: (updated) => {
                      onDone(updated);
                      onClose();
                    },
                  },
                )
              }
            >
              {t("users.disable.confirm")}
            </button>
          </div>
        </>
      )}
    </Dialog>
  );
}
