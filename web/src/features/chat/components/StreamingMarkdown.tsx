import { memo, useMemo } from "react";
import { useTranslation } from "react-i18next";
import ReactMarkdown, { type Components } from "react-markdown";
import remarkGfm from "remark-gfm";
import rehypeHighlight from "rehype-highlight";
import { splitBlocks } from "../lib/splitBlocks";
import { CodeBlock } from "./CodeBlock";
import "./markdown.css";

const remarkPlugins = [remarkGfm];
const rehypePlugins = [rehypeHighlight];

/**
 * An image in an answer is named, never loaded: fetching it would send
 * whatever a model was led to put in its address to that address's owner,
 * with no click.
 */
function AnswerImage({ src, alt }: { src?: unknown; alt?: string }) {
  const { t } = useTranslation("chat");
  const address = typeof src === "string" ? src : "";
  let host = "";
  try {
    host = new URL(address, window.location.href).host;
  } catch {
    host = "";
  }
  return (
    <span className="md-image" title={address}>
      {t("message.image", { name: alt || "image", host: host || "?" })}
    </span>
  );
}

// Raw HTML in a model's answer stays text: react-markdown drops it unless a
// plugin says otherwise, and none here does.
const components: Components = {
  img: ({ src, alt }) => <AnswerImage src={src} alt={alt} />,
  a: ({ node: _node, ...props }) => <a {...props} target="_blank" rel="noopener noreferrer" />,
  pre: ({ node, children }) => <CodeBlock node={node}>{children}</CodeBlock>,
  // An answer's headings sit below the page's and the message's own.
  h1: ({ node: _node, ...props }) => <h3 className="md-h1" {...props} />,
  h2: ({ node: _node, ...props }) => <h4 className="md-h2" {...props} />,
  h3: ({ node: _node, ...props }) => <h5 className="md-h3" {...props} />,
  h4: ({ node: _node, ...props }) => <h6 className="md-h4" {...props} />,
  h5: ({ node: _node, ...props }) => <h6 className="md-h4" {...props} />,
  table: ({ node: _node, ...props }) => (
    <div className="md-table" tabIndex={0}>
      <table {...props} />
    </div>
  ),
};

/** One top-level block; once complete its source never changes, so it renders once. */
export const MarkdownBlock = memo(function MarkdownBlock({ source }: { source: string }) {
  return (
    <ReactMarkdown remarkPlugins={remarkPlugins} rehypePlugins={rehypePlugins} components={components}>
      {source}
    </ReactMarkdown>
  );
});

/**
 * Markdown that may still be growing. While it streams, completed blocks
 * keep their rendering and only the last block is parsed again when text
 * arrives. A finished answer is one document, so that things that reach
 * across blocks (reference-style link definitions) resolve.
 */
export function StreamingMarkdown({ text, streaming = true }: { text: string; streaming?: boolean }) {
  const blocks = useMemo(() => (streaming ? splitBlocks(text) : [text]), [text, streaming]);
  return (
    <div className="md">
      {blocks.map((block, index) => (
        <MarkdownBlock key={streaming ? index : "all"} source={block} />
      ))}
    </div>
  );
}
