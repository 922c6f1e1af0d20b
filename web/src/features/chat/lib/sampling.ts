import { z } from "zod";
import type { Schemas } from "@/lib/api";

export type Sampling = Schemas["SamplingOverrides"];

/** A number field of the form: empty means "the model's default". */
function optionalNumber(check: (n: z.ZodNumber) => z.ZodNumber, integer = false) {
  return z
    .string()
    .trim()
    .refine((v) => {
      if (v === "") return true;
      const n = Number(v);
      if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) return false;
      return check(z.number()).safeParse(n).success;
    }, "invalid")
    .transform((v) => (v === "" ? null : Number(v)));
}

export const samplingFields = ["temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens", "seed"] as const;
export type SamplingField = (typeof samplingFields)[number];

export const settingsSchema = z.object({
  title: z.string().trim().min(1, "invalid").max(200, "invalid"),
  system_prompt: z.string().max(20000, "invalid"),
  temperature: optionalNumber((n) => n.min(0).max(5)),
  top_p: optionalNumber((n) => n.gt(0).max(1)),
  top_k: optionalNumber((n) => n.min(0).max(100000), true),
  min_p: optionalNumber((n) => n.min(0).max(1)),
  repeat_penalty: optionalNumber((n) => n.gt(0).max(10)),
  max_tokens: optionalNumber((n) => n.min(1).max(1_000_000), true),
  seed: optionalNumber((n) => n.min(0).max(Number.MAX_SAFE_INTEGER), true),
});

export type SettingsInput = z.input<typeof settingsSchema>;
export type SettingsOutput = z.output<typeof settingsSchema>;

/**
 * The chat's sampling with the form's fields applied: an empty field goes
 * back to the model's default; settings the form does not show stay.
 */
export function samplingFrom(values: SettingsOutput, current: Sampling | null | undefined): Sampling {
  const next: Record<string, unknown> = { ...(current ?? {}) };
  for (const field of samplingFields) {
    const value = values[field];
    if (value === null) delete next[field];
    else next[field] = value;
  }
  return next as Sampling;
}

export function sameSampling(a: Sampling | null | undefined, b: Sampling | null | undefined): boolean {
  const norm = (s: Sampling | null | undefined) =>
    JSON.stringify(Object.entries(s ?? {}).filter(([, v]) => v != null).sort(([x], [y]) => x.localeCompare(y)));
  return norm(a) === norm(b);
}

/** A sampling value as the form shows it. */
export function asText(value: number | null | undefined): string {
  return value == null ? "" : String(value);
}

// Under the private prefix, so that signing out forgets drafts (lib/session.ts).
const DRAFT = "corral.private.chat.draft.";

export function loadDraft(key: string): string {
  try {
    return localStorage.getItem(DRAFT + key) ?? "";
  } catch {
    return "";
  }
}

export function saveDraft(key: string, text: string): void {
  try {
    if (text) localStorage.setItem(DRAFT + key, text);
    else localStorage.removeItem(DRAFT + key);
  } catch {
    // Nothing to keep it in.
  }
}
