import { useTranslation } from "react-i18next";
import { ApiError } from "./api";

/** A sentence a person understands for any error a request can end with. */
export function errorText(error: unknown, t: (key: string, options?: object) => string): string {
  if (error instanceof ApiError) {
    if (error.code === "rate_limited") {
      return error.retryAfter
        ? t("common:errors.rate_limited", { seconds: error.retryAfter })
        : t("common:errors.rate_limited_plain");
    }
    const key = `common:errors.${error.code}`;
    const text = t(key, { message: error.message, defaultValue: "" });
    return text || t("common:errors.unknown", { message: error.message });
  }
  if (error instanceof TypeError) return t("common:errors.network");
  return t("common:errors.unknown", { message: String((error as Error)?.message ?? error) });
}

export function useErrorText(): (error: unknown) => string {
  const { t } = useTranslation();
  return (error: unknown) => errorText(error, t as never);
}
