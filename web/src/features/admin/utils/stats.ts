import type { Schemas } from "@/lib/api";

type ModelUsage = Schemas["ModelUsage"];

export type DateRange = { from: string; to: string };

/** `YYYY-MM-DD` of a date in UTC, the calendar the server counts days in. */
export function isoDay(date: Date): string {
  return date.toISOString().slice(0, 10);
}

function parseDay(day: string): Date {
  return new Date(`${day}T00:00:00Z`);
}

/** The last `days` days up to and including `today`. */
export function lastDays(days: number, today: Date = new Date()): DateRange {
  const to = isoDay(today);
  const from = new Date(parseDay(to).getTime() - (days - 1) * 86_400_000);
  return { from: isoDay(from), to };
}

/** Every day from `from` to `to`, both included; empty when `from` is after `to`. */
export function daysBetween(from: string, to: string): string[] {
  const out: string[] = [];
  const end = parseDay(to).getTime();
  for (let t = parseDay(from).getTime(); t <= end && out.length <= 1000; t += 86_400_000) {
    out.push(isoDay(new Date(t)));
  }
  return out;
}

export type TokenDay = { day: string; prompt: number; completion: number; total: number };

/** Prompt and completion tokens of all models summed per day, with zero for days without generations. */
export function tokensPerDay(range: DateRange, modelDays: ModelUsage[]): TokenDay[] {
  const byDay = new Map<string, TokenDay>();
  for (const day of daysBetween(range.from, range.to)) {
    byDay.set(day, { day, prompt: 0, completion: 0, total: 0 });
  }
  for (const usage of modelDays) {
    const entry = usage.day ? byDay.get(usage.day) : undefined;
    if (!entry) continue;
    entry.prompt += usage.prompt_tokens;
    entry.completion += usage.completion_tokens;
    entry.total += usage.prompt_tokens + usage.completion_tokens;
  }
  return [...byDay.values()];
}

export type SpeedDay = { day: string; ttft: number | null; tps: number | null };

/**
 * Time to first token and tokens per second per day, the models' figures
 * weighted by how many generations each had; null on days without any.
 */
export function speedPerDay(range: DateRange, modelDays: ModelUsage[]): SpeedDay[] {
  const sums = new Map<string, { ttft: number; ttftN: number; tps: number; tpsN: number }>();
  for (const day of daysBetween(range.from, range.to)) sums.set(day, { ttft: 0, ttftN: 0, tps: 0, tpsN: 0 });
  for (const usage of modelDays) {
    const entry = usage.day ? sums.get(usage.day) : undefined;
    if (!entry) continue;
    const weight = Math.max(usage.generations, 1);
    if (usage.avg_time_to_first_token_ms != null) {
      entry.ttft += usage.avg_time_to_first_token_ms * weight;
      entry.ttftN += weight;
    }
    if (usage.tokens_per_second != null) {
      entry.tps += usage.tokens_per_second * weight;
      entry.tpsN += weight;
    }
  }
  return [...sums.entries()].map(([day, s]) => ({
    day,
    ttft: s.ttftN ? s.ttft / s.ttftN : null,
    tps: s.tpsN ? s.tps / s.tpsN : null,
  }));
}

export type CachedPrompt = { prompt: number; cached: number; share: number | null };

/**
 * Prompt tokens of all models and how many of them the models took from
 * their caches instead of reading them again; `share` is null when no
 * prompt was read.
 */
export function cachedPrompt(models: ModelUsage[]): CachedPrompt {
  const prompt = models.reduce((s, m) => s + m.prompt_tokens, 0);
  const cached = models.reduce((s, m) => s + m.cached_prompt_tokens, 0);
  return { prompt, cached, share: prompt > 0 ? cached / prompt : null };
}

export type ModelBar = { model: string; tokens: number; generations: number; failed: number };

/** Per-model totals, most tokens first. */
export function usageByModel(models: ModelUsage[]): ModelBar[] {
  return models
    .map((m) => ({
      model: m.model,
      tokens: m.prompt_tokens + m.completion_tokens,
      generations: m.generations,
      failed: m.failed,
    }))
    .sort((a, b) => b.tokens - a.tokens || a.model.localeCompare(b.model));
}
