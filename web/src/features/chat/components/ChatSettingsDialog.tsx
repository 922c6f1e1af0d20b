import { useEffect } from "react";
import { useTranslation } from "react-i18next";
import { useForm } from "react-hook-form";
import { zodResolver } from "@hookform/resolvers/zod";
import { Dialog } from "@/components/Dialog";
import { ErrorMessage } from "@/components/ErrorMessage";
import { Field } from "@/components/Field";
import { useUpdateChat, type Chat, type UpdateChatRequest } from "../api/chats";
import {
  asText,
  sameSampling,
  samplingFields,
  samplingFrom,
  settingsSchema,
  type SettingsInput,
  type SettingsOutput,
} from "../lib/sampling";

type Props = {
  chat: Chat;
  open: boolean;
  onClose: () => void;
  onSaved: () => void;
};

function defaults(chat: Chat): SettingsInput {
  const sampling = chat.sampling ?? {};
  return {
    title: chat.title,
    system_prompt: chat.system_prompt ?? "",
    temperature: asText(sampling.temperature),
    top_p: asText(sampling.top_p),
    top_k: asText(sampling.top_k),
    min_p: asText(sampling.min_p),
    repeat_penalty: asText(sampling.repeat_penalty),
    max_tokens: asText(sampling.max_tokens),
    seed: asText(sampling.seed),
  };
}

/** Title, system prompt and sampling of one chat. */
export function ChatSettingsDialog({ chat, open, onClose, onSaved }: Props) {
  const { t } = useTranslation("chat");
  const update = useUpdateChat();
  const form = useForm<SettingsInput, unknown, SettingsOutput>({
    resolver: zodResolver(settingsSchema),
    defaultValues: defaults(chat),
  });

  useEffect(() => {
    if (open) {
      form.reset(defaults(chat));
      update.reset();
    }
    // Only when the dialog opens: a refetch must not wipe what is being typed.
  }, [open]);

  const errorOf = (name: keyof SettingsInput) =>
    form.formState.errors[name] ? t(`settings.invalid.${name}`) : undefined;

  const submit = form.handleSubmit(async (values) => {
    const changes: UpdateChatRequest = {};
    if (values.title !== chat.title) changes.title = values.title;
    if (values.system_prompt !== (chat.system_prompt ?? "")) changes.system_prompt = values.system_prompt;
    const sampling = samplingFrom(values, chat.sampling);
    if (!sameSampling(sampling, chat.sampling)) changes.sampling = sampling;
    if (Object.keys(changes).length > 0) await update.mutateAsync({ id: chat.id, changes });
    onSaved();
    onClose();
  });

  return (
    <Dialog open={open} onClose={onClose} title={t("settings.title")}>
      <form onSubmit={(e) => void submit(e)} noValidate>
        <Field label={t("settings.chatTitle")} error={errorOf("title")}>
          <input className="input" {...form.register("title")} />
        </Field>
        <Field label={t("settings.systemPrompt")} hint={t("settings.systemPromptHint")} error={errorOf("system_prompt")}>
          <textarea className="input min-h-24" rows={4} {...form.register("system_prompt")} />
        </Field>
        <fieldset className="mt-2 rounded-md border border-slate-200 p-3 dark:border-slate-700">
          <legend className="px-1 text-sm font-medium">{t("settings.sampling")}</legend>
          <p className="mb-3 text-xs muted">{t("settings.samplingHint")}</p>
          <div className="grid grid-cols-1 gap-x-4 sm:grid-cols-2">
            {samplingFields.map((name) => (
              <Field key={name} label={t(`settings.fields.${name}`)} hint={t(`settings.hints.${name}`)} error={errorOf(name)}>
                <input
                  className="input"
                  inputMode={name === "top_k" || name === "max_tokens" || name === "seed" ? "numeric" : "decimal"}
                  placeholder={t("settings.default")}
                  {...form.register(name)}
                />
              </Field>
            ))}
          </div>
        </fieldset>
        <ErrorMessage error={update.error} />
        <div className="mt-4 flex justify-end gap-2">
          <button type="button" className="btn-secondary" onClick={onClose}>
            {t("common:actions.cancel")}
          </button>
          <button type="submit" className="btn-primary" disabled={form.formState.isSubmitting}>
            {t("common:actions.save")}
          </button>
        </div>
      </form>
    </Dialog>
  );
}
