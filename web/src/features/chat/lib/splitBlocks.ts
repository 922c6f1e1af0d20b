/**
 * Splits Markdown into top-level blocks. Text only ever grows while an
 * answer streams, so every block but the last is final: its string never
 * changes again and its rendering can be kept.
 *
 * A cut is made only where it cannot change the meaning: at blank lines,
 * outside any fenced code block (fences are found inside blockquotes and
 * list items too), and only before a line that starts a new top-level block,
 * with no indentation (which would continue a list item or code) and not
 * `>` right after a quote. The cut is therefore decided when the line after
 * the blank lines arrives.
 *
 * The blocks joined with "\n\n" give back the text up to blank-line runs,
 * which Markdown treats alike.
 */
export function splitBlocks(text: string): string[] {
  const blocks: string[] = [];
  const lines = text.split("\n");
  let current: string[] = [];
  // Blank lines seen since the last non-blank one, not yet known to be a cut.
  let blanks: string[] = [];
  // The fence that opened the code block we are in: its character and length.
  let fence: { char: string; length: number } | null = null;

  for (const line of lines) {
    if (line.trim() === "") {
      if (current.length > 0) blanks.push(line);
      continue;
    }
    if (blanks.length > 0) {
      const cut = fence === null && !/^\s/.test(line) && !(line.startsWith(">") && isQuote(current));
      if (cut) {
        blocks.push(current.join("\n"));
        current = [];
      } else {
        current.push(...blanks);
      }
      blanks = [];
    }
    current.push(line);
    // Fences are looked for inside quotes and list items as well.
    const inner = line.replace(/^(?:\s*>)+/, "").replace(/^\s*(?:(?:[-*+]|\d{1,9}[.)])\s+)?/, "");
    const marker = /^(`{3,}|~{3,})(.*)$/.exec(inner);
    if (!marker) continue;
    if (fence) {
      if (marker[1][0] === fence.char && marker[1].length >= fence.length && marker[2].trim() === "") {
        fence = null;
      }
    } else if (!(marker[1][0] === "`" && marker[2].includes("`"))) {
      fence = { char: marker[1][0], length: marker[1].length };
    }
  }
  if (current.length > 0) blocks.push(current.join("\n"));
  return blocks;
}

function isQuote(block: string[]): boolean {
  return block.length > 0 && /^\s{0,3}>/.test(block[block.length - 1]);
}
