import { useForm } from "react-hook-form";
import { zodResolver } from "@hookform/resolvers/zod";
import { z } from "zod";
import { Link, Navigate } from "react-router";
import { useTranslation } from "react-i18next";
import { ApiError } from "@/lib/api";
import { useAuth } from "@/lib/auth";
import { useErrorText } from "@/lib/errors";
import { Field } from "@/components/Field";
import { Spinner } from "@/components/Spinner";
import { AuthFrame } from "./AuthFrame";
import { useAuthOptions } from "./SignInPage";

const schema = z
  .object({
    username: z
      .string()
      .trim()
      .min(1, "validation.usernameRequired")
      .regex(/^[A-Za-z0-9._-]{3,32}$/, "validation.usernamePattern"),
    displayName: z.string().trim().max(64, "validation.displayNameLength"),
    password: z.string().min(8, "validation.passwordLength").max(128, "validation.passwordLength"),
    confirm: z.string(),
  })
  .refine((v) => v.password === v.confirm, { path: ["confirm"], message: "validation.passwordMismatch" });
type Values = z.infer<typeof schema>;

export default function RegisterPage() {
  const { t } = useTranslation("auth");
  const errorText = useErrorText();
  const { state, register: createAccount } = useAuth();
  const options = useAuthOptions();
  const {
    register,
    handleSubmit,
    setError,
    formState: { errors, isSubmitting },
  } = useForm<Values>({ resolver: zodResolver(schema), defaultValues: { displayName: "" } });

  if (state.status === "loading" || options.isPending) return <Spinner />;
  if (state.status === "signed-in") return <Navigate to="/chat" replace />;

  const onSubmit = handleSubmit(async (values) => {
    try {
      await createAccount(values.username, values.password, values.displayName);
    } catch (error) {
      if (error instanceof ApiError) {
        for (const [field, message] of Object.entries(error.fields)) {
          const name = field === "display_name" ? "displayName" : field;
          if (name === "username" || name === "password" || name === "displayName") {
            setError(name, { message });
          }
        }
      }
      setError("root", { message: errorText(error) });
    }
  });

  const closed = options.data && !options.data.registration_open;
  return (
    <AuthFrame title={t("register.title")}>
      {closed ? (
        <p role="status" className="mb-3 text-sm">
          {t("register.closed")}
        </p>
      ) : (
        <form onSubmit={onSubmit} noValidate>
          <Field
            label={t("register.username")}
            hint={t("register.usernameHint")}
            error={errors.username && t(errors.username.message!)}
          >
            <input className="input" autoComplete="username" autoFocus {...register("username")} />
          </Field>
          <Field label={t("register.displayName")} error={errors.displayName && t(errors.displayName.message!)}>
            <input className="input" autoComplete="name" {...register("displayName")} />
          </Field>
          <Field
            label={t("register.password")}
            hint={t("register.passwordHint")}
            error={errors.password && t(errors.password.message!)}
          >
            <input className="input" type="password" autoComplete="new-password" {...register("password")} />
          </Field>
          <Field label={t("register.confirm")} error={errors.confirm && t(errors.confirm.message!)}>
            <input className="input" type="password" autoComplete="new-password" {...register("confirm")} />
          </Field>
          {errors.root && (
            <p role="alert" className="mb-3 text-sm text-red-700 dark:text-red-400">
              {errors.root.message}
            </p>
          )}
          <button type="submit" className="btn-primary w-full" disabled={isSubmitting}>
            {isSubmitting ? t("register.submitting") : t("register.submit")}
          </button>
        </form>
      )}
      <p className="mt-4 text-center text-sm muted">
        {t("register.haveAccount")}{" "}
        <Link className="font-medium text-brand-700 underline dark:text-brand-500" to="/sign-in">
          {t("register.signIn")}
        </Link>
      </p>
    </AuthFrame>
  );
}
