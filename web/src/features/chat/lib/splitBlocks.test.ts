import { describe, expect, it } from "vitest";
import { splitBlocks } from "./splitBlocks";

describe("splitBlocks", () => {
  it("splits paragraphs at blank lines", () => {
    expect(splitBlocks("one\ntwo\n\nthree\n\n\nfour")).toEqual(["one\ntwo", "three", "four"]);
  });

  it("gives nothing for empty or blank text", () => {
    expect(splitBlocks("")).toEqual([]);
    expect(splitBlocks("\n\n  \n")).toEqual([]);
  });

  it("keeps a fenced code block with blank lines in one block", () => {
    const text = "Intro\n\n```python\ndef f():\n\n    return 1\n```\n\nAfter";
    expect(splitBlocks(text)).toEqual(["Intro", "```python\ndef f():\n\n    return 1\n```", "After"]);
  });

  it("keeps an unclosed fence open to the end while it streams", () => {
    expect(splitBlocks("Text\n\n```js\nlet a;\n\nlet b;")).toEqual(["Text", "```js\nlet a;\n\nlet b;"]);
  });

  it("closes a fence only with the same character and at least its length", () => {
    const text = "````md\n```\n\ninner\n```\n````\n\nend";
    expect(splitBlocks(text)).toEqual(["````md\n```\n\ninner\n```\n````", "end"]);
    expect(splitBlocks("~~~\na\n\n```\nb\n~~~\n\nc")).toEqual(["~~~\na\n\n```\nb\n~~~", "c"]);
  });

  it("does not take inline code with backticks for a fence", () => {
    expect(splitBlocks("```not a fence```\n\nnext")).toEqual(["```not a fence```", "next"]);
  });

  it("keeps earlier blocks identical as the text grows", () => {
    const full = "# Title\n\nA paragraph.\n\n```\ncode\n\nmore\n```\n\n- a\n- b";
    let previous: string[] = [];
    for (let end = 1; end <= full.length; end++) {
      const blocks = splitBlocks(full.slice(0, end));
      // Every block but the last of the previous split is final.
      for (let i = 0; i < previous.length - 1; i++) expect(blocks[i]).toBe(previous[i]);
      previous = blocks;
    }
    expect(previous).toHaveLength(4);
  });
});
