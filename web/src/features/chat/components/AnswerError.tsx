import { useTranslation } from "react-i18next";
import { ApiError, type ErrorBody } from "@/lib/api";
import { errorText } from "@/lib/errors";
import { formatDateTime } from "@/lib/format";
import { useQuota } from "../api/chats";

/** Why an answer failed or a request was refused, in words. */
export function AnswerError({ body, stored }: { body?: ErrorBody | null; stored?: string | null }) {
  const { t } = useTranslation("chat");
  const quotaSpent = body?.code === "quota_exceeded" || /quota/i.test(stored ?? "");
  const quota = useQuota(quotaSpent);
  let text: string;
  if (quotaSpent) {
    text = quota.data?.resets_at
      ? t("errors.quotaResets", { time: formatDateTime(quota.data.resets_at) })
      : t("errors.quota");
  } else if (body) {
    text =
      body.code === "unavailable" || body.code === "model_failed" || body.code === "internal"
        ? t("errors.model", { message: body.message })
        : errorText(new ApiError(400, body), t as never);
  } else {
    text = t("errors.model", { message: stored ?? t("errors.noReason") });
  }
  return (
    <p role="alert" className="rounded-md border border-red-300 bg-red-50 px-3 py-2 text-sm text-red-900 dark:border-red-800 dark:bg-red-950 dark:text-red-100">
      {text}
    </p>
  );
}
