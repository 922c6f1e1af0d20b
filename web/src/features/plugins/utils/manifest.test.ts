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

  it("finds the hosts it declares for outgoing HTTP", () => {
    const text = `id = "fetcher"
capabilities = ["http"]

[limits]
time-ms = 100

[http] # where it may send requests
hosts = [
  "api.example.com",
  "*.wiki.example:*", # any port
  "[2001:db8::1]:8080",
]

[config]
required = []
`;
    expect(peekManifest(text).httpHosts).toEqual(["api.example.com", "*.wiki.example:*", "[2001:db8::1]:8080"]);
    expect(peekManifest('id = "fetcher"\nhttp.hosts = ["a.example"]\n').httpHosts).toEqual(["a.example"]);
    expect(peekManifest('id = "quiet"\n[config]\nhosts = ["not.http"]\n').httpHosts).toBeUndefined();
  });

  it("gives up at once on a list still being typed", () => {
    const comments = Array.from({ length: 30 }, (_, i) => `  "h${i}.example", # ${"why ".repeat(20)}`).join("\n");
    const started = performance.now();
    expect(peekManifest(`id = "x"\n[http]\nhosts = [\n${comments}\n`).httpHosts).toBeUndefined();
    expect(performance.now() - started).toBeLessThan(500);
  });

  it("reads nothing from tables or from text that is not a manifest", () => {
    expect(peekManifest('[config]\nid = "not-the-plugin"\n').id).toBeUndefined();
    expect(peekManifest("")).toEqual({});
  });
});
