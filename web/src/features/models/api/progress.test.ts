import { beforeAll, describe, expect, it } from "vitest";
import i18n from "@/i18n";
import { progressPercent, progressText } from "./progress";

const t = i18n.t.bind(i18n) as never;
const MB = 1024 * 1024;
const GB = 1024 * MB;

describe("progressText", () => {
  beforeAll(async () => {
    await i18n.changeLanguage("en");
  });

  it("says how much, how fast and how long", () => {
    expect(progressText({ bytes: 1.2 * GB, total: 3.4 * GB, rate: 12 * MB, eta_secs: 180 }, t)).toBe(
      "1.2 GB of 3.4 GB · 12 MB/s · 3 min left",
    );
  });

  it("rounds the time left to the minute", () => {
    expect(progressText({ bytes: 1, total: 2, rate: 1, eta_secs: 170 }, t)).toBe("1 B of 2 B · 1 B/s · 3 min left");
    expect(progressText({ bytes: 1, total: 2, rate: 1, eta_secs: 3900 }, t)).toBe("1 B of 2 B · 1 B/s · 1 h 5 min left");
  });

  it("leaves out what is not known yet", () => {
    expect(progressText({ bytes: 512, total: null, rate: 0, eta_secs: null }, t)).toBe("512 B so far");
    expect(progressText({ bytes: 5 * MB, total: 10 * MB, rate: 1 * MB, eta_secs: null }, t)).toBe(
      "5 MB of 10 MB · 1 MB/s",
    );
  });

  it("speaks Romanian", async () => {
    await i18n.changeLanguage("ro");
    try {
      expect(progressText({ bytes: 1.5 * GB, total: 3 * GB, rate: 2 * MB, eta_secs: 45 }, t)).toBe(
        "1,5 GB din 3 GB · 2 MB/s · încă 45 s",
      );
    } finally {
      await i18n.changeLanguage("en");
    }
  });
});

describe("progressPercent", () => {
  it("is the share done, or null without a total", () => {
    expect(progressPercent({ bytes: 25, total: 100 })).toBe(25);
    expect(progressPercent({ bytes: 150, total: 100 })).toBe(100);
    expect(progressPercent({ bytes: 5, total: null })).toBeNull();
    expect(progressPercent({ bytes: 5, total: 0 })).toBeNull();
  });
});
