import { useForm } from "react-hook-form";
import { zodResolver } from "@hookform/resolvers/zod";
import { z } from "zod";
import { Link, Navigate, useLocation, useSearchParams } from "react-router";
import { useQuery } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { api, ApiError, unwrap } from "@/lib/api";
import { useAuth } from "@/lib/auth";
import { useErrorText } from "@/lib/errors";
import { Field } from "@/components/Field";
import { Spinner } from "@/components/Spinner";
import { AuthFrame } from "./AuthFrame";

const schema = z.object({
  username: z.string().trim().min(1, "validation.usernameRequired"),
  password: z.string().min(1, "validation.passwordRequired"),
});
type Values = z.infer<typeof schema>;

/**
 * Where to go after signing in: only a path inside Corral. Browsers read
 * `\` as `/` in URLs, so `/\host` would leave the site as `//host` does.
 */
export function safeNext(next: string | null): string {
  if (!next || !/^\/(?![/\\])/.test(next) || next.includes("\\")) return "/chat";
  // URL parsing drops tabs and newlines, which could turn `/\t/host` into `//host`.
  if (/[\u0000-\u001f\u007f]/.test(next)) return "/chat";
  return next;
}

export function useAuthOptions() {
  return useQuery({
    queryKey: ["auth-options"],
    queryFn: async () => unwrap(await api.GET("/api/auth/options")),
    staleTime: 60_000,
  });
}

export default function SignInPage() {
  const { t } = useTranslation("auth");
  const errorText = useErrorText();
  const { state, signIn } = useAuth();
  const [params] = useSearchParams();
  const location = useLocation();
  const options = useAuthOptions();
  const {
    register,
    handleSubmit,
    setError,
    formState: { errors, isSubmitting },
  } = useForm<Values>({ resolver: zodResolver(schema) });

  if (state.status === "loading") return <Spinner />;
  if (state.status === "signed-in") return <Navigate to={safeNext(params.get("next"))} replace />;

  const reason =
    (location.state as { reason?: string } | null)?.reason ??
    (state.status === "signed-out" ? state.reason : undefined);

  const onSubmit = handleSubmit(async (values) => {
    try {
      await signIn(values.username, values.password);
    } catch (error) {
      const message =
        error instanceof ApiError && error.status === 401 ? t("signIn.wrong") : errorText(error);
      setError("root", { message });
    }
  });

  return (
    <AuthFrame title={t("signIn.title")}>
      {reason && (
        <p role="status" className="mb-3 rounded-md bg-amber-50 p-2 text-sm text-amber-900 dark:bg-amber-950 dark:text-amber-100">
          {t(`common:session.${reason}`)}
        </p>
      )}
      <form onSubmit={onSubmit} noValidate>
        <Field label={t("signIn.username")} error={errors.username && t(errors.username.message!)}>
          <input className="input" autoComplete="username" autoFocus {...register("username")} />
        </Field>
        <Field label={t("signIn.password")} error={errors.password && t(errors.password.message!)}>
          <input className="input" type="password" autoComplete="current-password" {...register("password")} />
        </Field>
        {errors.root && (
          <p role="alert" className="mb-3 text-sm text-red-700 dark:text-red-400">
            {errors.root.message}
          </p>
        )}
        <button type="submit" className="btn-primary w-full" disabled={isSubmitting}>
          {isSubmitting ? t("signIn.submitting") : t("signIn.submit")}
        </button>
      </form>
      {options.data?.registration_open && (
        <p className="mt-4 text-center text-sm muted">
          {t("signIn.noAccount")}{" "}
          <Link className="font-medium text-brand-700 underline dark:text-brand-500" to="/register">
            {t("signIn.register")}
          </Link>
        </p>
      )}
    </AuthFrame>
  );
}
