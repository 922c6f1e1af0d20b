import type { ReactNode } from "react";
import { useTranslation } from "react-i18next";
import { CopyButton } from "@/components/CopyButton";

type HastNode = {
  type: string;
  value?: string;
  tagName?: string;
  properties?: Record<string, unknown>;
  children?: HastNode[];
};

function textOf(node: HastNode | undefined): string {
  if (!node) return "";
  if (node.type === "text") return node.value ?? "";
  return (node.children ?? []).map(textOf).join("");
}

function languageOf(node: HastNode | undefined): string | null {
  const code = node?.children?.find((c) => c.tagName === "code");
  const classes = code?.properties?.className;
  if (!Array.isArray(classes)) return null;
  for (const c of classes) {
    if (typeof c === "string" && c.startsWith("language-")) return c.slice("language-".length);
  }
  return null;
}

/** A fenced code block with its language and a copy button. */
export function CodeBlock({ node, children }: { node?: unknown; children: ReactNode }) {
  const { t } = useTranslation("chat");
  const hast = node as HastNode | undefined;
  const language = languageOf(hast);
  const text = textOf(hast).replace(/\n$/, "");
  return (
    <div className="md-code">
      <div className="md-code-bar">
        <span>{language ?? t("message.code")}</span>
        <CopyButton text={text} label={t("message.copyCode")} className="md-code-copy" />
      </div>
      {/* Focusable so a keyboard can scroll long lines. */}
      <pre tabIndex={0}>{children}</pre>
    </div>
  );
}
