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

describe("splitBlocks inside containers", () => {
  it("keeps a fence in a list item with a blank line in one block", () => {
    const text = "1. Run this:\n\n    ```sh\n    make\n\n    make test\n    ```\n\nDone";
    expect(splitBlocks(text)).toEqual([
      "1. Run this:\n\n    ```sh\n    make\n\n    make test\n    ```",
      "Done",
    ]);
  });

  it("keeps a fence in a list item whose marker opens it", () => {
    const text = "- ```\n  a\n\nb\n  ```\n\nafter";
    expect(splitBlocks(text)).toEqual(["- ```\n  a\n\nb\n  ```", "after"]);
  });

  it("keeps a fence in a blockquote with a blank line in one block", () => {
    const text = "> ```js\n> let a;\n\n> let b;\n> ```\n\nafter";
    expect(splitBlocks(text)).toEqual(["> ```js\n> let a;\n\n> let b;\n> ```", "after"]);
  });

  it("keeps a quote that goes on after a blank line together", () => {
    expect(splitBlocks("> one\n\n> two\n\nthree")).toEqual(["> one\n\n> two", "three"]);
  });

  it("keeps indented continuations of a list item with the item", () => {
    expect(splitBlocks("- a\n\n  more of a\n- b\n\nnext")).toEqual(["- a\n\n  more of a\n- b", "next"]);
  });

  it("keeps blank lines inside a fence as they were", () => {
    expect(splitBlocks("```\na\n  \nb\n```")).toEqual(["```\na\n  \nb\n```"]);
  });

  it("decides a cut only when the next line arrives, so earlier blocks stay final", () => {
    const full = "- item\n\n    ```\n    x\n\n    y\n    ```\n\n> q\n\n> r\n\nend [ref]\n\n[ref]: /x";
    let previous: string[] = [];
    for (let end = 1; end <= full.length; end++) {
      const blocks = splitBlocks(full.slice(0, end));
      for (let i = 0; i < previous.length - 1; i++) expect(blocks[i]).toBe(previous[i]);
      previous = blocks;
    }
    expect(previous).toEqual([
      "- item\n\n    ```\n    x\n\n    y\n    ```",
      "> q\n\n> r",
      "end [ref]",
      "[ref]: /x",
    ]);
  });
});
