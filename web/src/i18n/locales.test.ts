// Every text shown in English has a Romanian translation and the other way
// round; plural forms may differ (Romanian has "few").

import { describe, expect, it } from "vitest";

const files = import.meta.glob<Record<string, unknown>>(
  ["../features/*/locales/*.json", "./*/common.json"],
  { eager: true, import: "default" },
);

function keys(value: Record<string, unknown>, prefix = ""): string[] {
  return Object.entries(value).flatMap(([key, inner]) =>
    inner && typeof inner === "object"
      ? keys(inner as Record<string, unknown>, `${prefix}${key}.`)
      : [`${prefix}${key}`.replace(/_(zero|one|two|few|many|other)$/, "")],
  );
}

const english = Object.keys(files).filter((path) => /\/en(\.json|\/common\.json)$/.test(path));

describe("translations", () => {
  it("cover every namespace in both languages", () => {
    expect(english.length).toBe(8);
  });

  it.each(english)("%s has the same keys in Romanian", (path) => {
    const romanian = path.replace(/\/en(\.json|\/)/, "/ro$1");
    expect(files[romanian], `${romanian} is missing`).toBeDefined();
    const en = new Set(keys(files[path]));
    const ro = new Set(keys(files[romanian]));
    expect([...en].filter((k) => !ro.has(k)), "missing in Romanian").toEqual([]);
    expect([...ro].filter((k) => !en.has(k)), "missing in English").toEqual([]);
  });
});
