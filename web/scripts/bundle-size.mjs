// Prints the gzipped size of the JavaScript a browser loads to show the
// chat page (the entry, its static imports and the chat route's chunk with
// its imports) and fails the build above the budget.

import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join } from "node:path";

const BUDGET_KB = 350;
const dist = new URL("../dist/", import.meta.url).pathname;
const manifest = JSON.parse(readFileSync(join(dist, ".vite/manifest.json"), "utf8"));

const entryKey = Object.keys(manifest).find((k) => manifest[k].isEntry);
const chatKey = Object.keys(manifest).find((k) => k.endsWith("features/chat/routes/ChatPage.tsx"));
if (!entryKey || !chatKey) {
  console.error("bundle-size: the manifest has no entry or no chat page chunk");
  process.exit(1);
}

const files = new Set();
const walk = (key) => {
  const chunk = manifest[key];
  if (!chunk || files.has(chunk.file)) return;
  files.add(chunk.file);
  for (const dep of chunk.imports ?? []) walk(dep);
};
walk(entryKey);
walk(chatKey);

let total = 0;
const rows = [];
for (const file of files) {
  const size = gzipSync(readFileSync(join(dist, file)), { level: 9 }).length;
  total += size;
  rows.push([file, size]);
}
rows.sort((a, b) => b[1] - a[1]);
for (const [file, size] of rows) console.log(`  ${(size / 1024).toFixed(1).padStart(7)} KB  ${file}`);
const kb = total / 1024;
console.log(`chat page JavaScript: ${kb.toFixed(1)} KB gzipped (budget ${BUDGET_KB} KB)`);
if (kb > BUDGET_KB) {
  console.error(`bundle-size: over the ${BUDGET_KB} KB budget`);
  process.exit(1);
}
