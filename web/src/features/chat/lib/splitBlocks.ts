/**
 * Splits Markdown into top-level blocks at blank lines that are not inside a
 * fenced code block. Text only ever grows while an answer streams, so every
 * block but the last is final: its string never changes again and its
 * rendering can be kept.
 *
 * The blocks joined with "\n\n" give back the text up to blank-line runs,
 * which Markdown treats alike.
 */
export function splitBlocks(text: string): string[] {
  const blocks: string[] = [];
  const lines = text.split("\n");
  let current: string[] = [];
  // The fence that opened the code block we are in: its character and length.
  let fence: { char: string; length: number } | null = null;

  for (const line of lines) {
    const marker = /^ {0,3}(`{3,}|~{3,})(.*)$/.exec(line);
    if (fence) {
      current.push(line);
      if (
        marker &&
        marker[1][0] === fence.char &&
        marker[1].length >= fence.length &&
        marker[2].trim() === ""
      ) {
        fence = null;
      }
      continue;
    }
    if (marker && !(marker[1][0] === "`" && marker[2].includes("`"))) {
      fence = { char: marker[1][0], length: marker[1].length };
      current.push(line);
      continue;
    }
    if (line.trim() === "") {
      if (current.length > 0) {
        blocks.push(current.join("\n"));
        current = [];
      }
      continue;
    }
    current.push(line);
  }
  if (current.length > 0) blocks.push(current.join("\n"));
  return blocks;
}
