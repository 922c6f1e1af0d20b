import { describe, expect, it } from "vitest";
import { cachedPrompt, daysBetween, lastDays, speedPerDay, tokensPerDay, usageByModel } from "./stats";

const usage = (model: string, day: string | null, prompt: number, completion: number, extra = {}) => ({
  model,
  day,
  generations: 1,
  failed: 0,
  prompt_tokens: prompt,
  cached_prompt_tokens: 0,
  completion_tokens: completion,
  ...extra,
});

describe("platform statistics", () => {
  it("lists every day of a range, across a month end", () => {
    expect(daysBetween("2026-01-30", "2026-02-02")).toEqual(["2026-01-30", "2026-01-31", "2026-02-01", "2026-02-02"]);
    expect(daysBetween("2026-02-02", "2026-02-01")).toEqual([]);
  });

  it("counts the last N days up to today", () => {
    expect(lastDays(7, new Date("2026-03-05T23:30:00Z"))).toEqual({ from: "2026-02-27", to: "2026-03-05" });
    expect(lastDays(1, new Date("2026-03-05T01:00:00Z"))).toEqual({ from: "2026-03-05", to: "2026-03-05" });
  });

  it("sums the models' tokens per day and fills the days without any", () => {
    const series = tokensPerDay({ from: "2026-01-01", to: "2026-01-04" }, [
      usage("a", "2026-01-01", 10, 5),
      usage("b", "2026-01-01", 1, 2),
      usage("a", "2026-01-03", 7, 0),
      usage("a", "2025-12-31", 100, 100),
      usage("a", null, 1000, 1000),
    ]);
    expect(series).toEqual([
      { day: "2026-01-01", prompt: 11, completion: 7, total: 18 },
      { day: "2026-01-02", prompt: 0, completion: 0, total: 0 },
      { day: "2026-01-03", prompt: 7, completion: 0, total: 7 },
      { day: "2026-01-04", prompt: 0, completion: 0, total: 0 },
    ]);
  });

  it("weights speed by generations and leaves empty days empty", () => {
    const series = speedPerDay({ from: "2026-01-01", to: "2026-01-02" }, [
      usage("a", "2026-01-01", 0, 0, { generations: 3, avg_time_to_first_token_ms: 100, tokens_per_second: 10 }),
      usage("b", "2026-01-01", 0, 0, { generations: 1, avg_time_to_first_token_ms: 500, tokens_per_second: null }),
    ]);
    expect(series).toEqual([
      { day: "2026-01-01", ttft: 200, tps: 10 },
      { day: "2026-01-02", ttft: null, tps: null },
    ]);
  });

  it("sums the prompt tokens taken from the cache and their share", () => {
    expect(
      cachedPrompt([
        usage("a", null, 300, 10, { cached_prompt_tokens: 240 }),
        usage("b", null, 100, 10, { cached_prompt_tokens: 10 }),
      ]),
    ).toEqual({ prompt: 400, cached: 250, share: 0.625 });
    expect(cachedPrompt([])).toEqual({ prompt: 0, cached: 0, share: null });
  });

  it("orders models by tokens", () => {
    expect(usageByModel([usage("small", null, 1, 1), usage("big", null, 50, 50, { generations: 4, failed: 1 })])).toEqual([
      { model: "big", tokens: 100, generations: 4, failed: 1 },
      { model: "small", tokens: 2, generations: 1, failed: 0 },
    ]);
  });
});
