import { describe, expect, it } from "vitest";
import { peekManifest } from "./manifest";

describe("a first look at plugin.toml", () => {
  it("finds what the install dialog shows", () => {
    const text = `# Redacts personal data
id = "pii-redact"
name = 'PII redaction'
version = "0.1.0"
api = "0.1.0"
hooks = ["before-prompt", "stream"]
capabilities = [
  "log",   # for debugging
  "config",
]

[limits]
memory-mb = 32

[config.properties.id]
type = "string"
`;
    expect(peekManifest(text)).toEqual({
      id: "pii-redact",
      name: "PII redaction",
      version: "0.1.0",
      api: "0.1.0",
      hooks: ["before-prompt", "stream"],
      capabilities: ["log", "config"],
    });
  });

  it("reads nothing from tables or from text that is not a manifest", () => {
    expect(peekManifest('[config]\nid = "not-the-plugin"\n').id).toBeUndefined();
    expect(peekManifest("")).toEqual({});
  });
});
