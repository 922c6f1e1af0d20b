import { describe, expect, it } from "vitest";
import { configFields, initialValues, problemsByField, toConfig } from "./configSchema";

const schema = {
  type: "object",
  properties: {
    levels: { type: "array", items: { type: "string" }, enum: ["low", "high"] },
    mask: { type: "string", default: "[{kind}]", maxLength: 100 },
    "top-k": { type: "integer", default: 4, minimum: 1, maximum: 20 },
    score: { type: "number", default: 0.3 },
    token: { type: "string", secret: true },
    odd: { type: "object" },
  },
  required: ["token"],
};

describe("configuration schema", () => {
  it("reads the supported kinds and skips what it cannot show", () => {
    const fields = configFields(schema);
    expect(fields.map((f) => [f.name, f.kind])).toEqual([
      ["levels", "strings"],
      ["mask", "string"],
      ["top-k", "integer"],
      ["score", "number"],
      ["token", "string"],
    ]);
    expect(fields[0].options).toEqual(["low", "high"]);
    expect(fields.find((f) => f.name === "token")).toMatchObject({ secret: true, required: true });
    expect(configFields(null)).toEqual([]);
    expect(configFields({ type: "object" })).toEqual([]);
  });

  it("starts from the saved values, the defaults where none is saved, and never a secret", () => {
    const fields = configFields(schema);
    expect(initialValues(fields, { levels: ["high"], score: 0.5, token: "leaked?" })).toEqual({
      levels: ["high"],
      mask: "[{kind}]",
      "top-k": "4",
      score: "0.5",
      token: "",
    });
  });

  it("turns form values into the object the server checks", () => {
    const fields = configFields(schema);
    expect(toConfig(fields, { levels: ["low"], mask: "", "top-k": " 7 ", score: "-0.25", token: "" })).toEqual({
      config: { levels: ["low"], mask: null, "top-k": 7, score: -0.25, token: null },
      errors: {},
    });
    const bad = toConfig(fields, { levels: [], mask: "x", "top-k": "1.5", score: "abc", token: "t" });
    expect(bad.errors).toEqual({
      "top-k": { key: "config.errors.integer" },
      score: { key: "config.errors.number" },
    });
  });

  it("keeps the lines of a list of strings, without blank ones", () => {
    const fields = configFields({ type: "object", properties: { sites: { type: "array", items: { type: "string" } } } });
    expect(toConfig(fields, { sites: " a.example \n\n b.example\n" }).config).toEqual({ sites: ["a.example", "b.example"] });
    expect(toConfig(fields, { sites: "" }).config).toEqual({ sites: [] });
  });

  it("matches the server's problems to fields, and keeps the rest", () => {
    expect(
      problemsByField('top-k: must be at most 20; levels: item 0 must be one of "low", "high"; x: not a setting of this plugin', [
        "top-k",
        "levels",
      ]),
    ).toEqual({
      fields: { "top-k": "must be at most 20", levels: 'item 0 must be one of "low", "high"' },
      other: ["x: not a setting of this plugin"],
    });
    expect(problemsByField("config: must be a JSON object", ["top-k"])).toEqual({
      fields: {},
      other: ["config: must be a JSON object"],
    });
  });
});
