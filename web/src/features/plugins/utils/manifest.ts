// A first look at a plugin.toml before it is sent: enough to say what is
// about to be installed. The server reads the manifest properly and has
// the last word.

export type ManifestPeek = {
  id?: string;
  name?: string;
  version?: string;
  api?: string;
  capabilities?: string[];
  hooks?: string[];
  /** `[http] hosts`: where it means to send HTTP requests. */
  httpHosts?: string[];
};

/** The top-level part, before the first table header (`[limits]`, `[config]`). */
function topLevel(text: string): string {
  const header = /^\s*\[/m.exec(text);
  return header ? text.slice(0, header.index) : text;
}

/** The body of the table `[name]`, up to the next table header. */
function table(text: string, name: string): string | undefined {
  const header = new RegExp(`^\\s*\\[\\s*${name}\\s*\\]\\s*(?:#[^\\n]*)?$`, "m").exec(text);
  if (!header) return undefined;
  const rest = text.slice(header.index + header[0].length);
  const next = /^\s*\[/m.exec(rest);
  return next ? rest.slice(0, next.index) : rest;
}

function stringKey(text: string, key: string): string | undefined {
  const match = new RegExp(`^\\s*${key}\\s*=\\s*(?:"([^"\\n]*)"|'([^'\\n]*)')`, "m").exec(text);
  return match ? (match[1] ?? match[2]) : undefined;
}

function listKey(text: string, key: string): string[] | undefined {
  // Comments and quoted items may hold a `]` (an IPv6 host: "[2001:db8::1]:8080").
  // A comment runs to the end of its line, so each character matches one
  // way only and a list still being typed, without its `]`, fails at once.
  const items = `(?:#[^\\n]*$|"[^"\\n]*"|'[^'\\n]*'|[^\\]"'#])*`;
  const match = new RegExp(`^\\s*${key}\\s*=\\s*\\[(${items})\\]`, "m").exec(text);
  if (!match) return undefined;
  const inner = match[1].replace(/#[^\n]*/g, "");
  return [...inner.matchAll(/"([^"\n]*)"|'([^'\n]*)'/g)].map((m) => m[1] ?? m[2]);
}

export function peekManifest(text: string): ManifestPeek {
  const top = topLevel(text);
  return {
    id: stringKey(top, "id"),
    name: stringKey(top, "name"),
    version: stringKey(top, "version"),
    api: stringKey(top, "api"),
    capabilities: listKey(top, "capabilities"),
    hooks: listKey(top, "hooks"),
    // As a table of its own, or as a dotted key before the first table.
    httpHosts: listKey(table(text, "http") ?? "", "hosts") ?? listKey(top, "http\\.hosts"),
  };
}
