import type { ReactNode } from "react";

/**
 * Lets a wide table scroll sideways on narrow screens. It is focusable so
 * keyboard users can scroll it too, and positioned so screen-reader-only
 * text in the table does not widen the page.
 */
export function TableScroll({ label, children }: { label: string; children: ReactNode }) {
  return (
    <div role="region" aria-label={label} tabIndex={0} className="relative overflow-x-auto">
      {children}
    </div>
  );
}
