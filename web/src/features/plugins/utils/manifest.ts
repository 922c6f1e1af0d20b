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
};

/** The top-level part, before the first table header (`[limits]`, `[config]`). */
function topLevel(text: string): string {
  const header = /^\s*\[/m.exec(text);
  return header ? text.slice(0, header.index) : text;
}

function stringKey(text: string, key: string): string | undefined {
  const match = new RegExp(`^\\s*${key}\\s*=\\s*(?:"([^"\\n]*)"|'([^'\\n]*)')`, "m").exec(text);
  return match ? (match[1] ?? match[2]) : undefined;
}

function listKey(text: string, key: string): string[] | undefined {
  const match = new RegExp(`^\\s*${key}\\s*=\\s*\\[([^\\]]*)\\]`, "m").exec(text);
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
  };
}
