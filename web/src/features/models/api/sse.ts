/** One Server-Sent Events frame: its name (`message` when unnamed) and data. */
export type SseFrame = { event: string; data: string; id?: string; retry?: number };

/**
 * Reads a `text/event-stream` body in whatever pieces the network hands
 * over: a frame, a line or even a CRLF pair may be split across chunks.
 * Follows the HTML standard's rules: `data:` lines join with "\n", a blank
 * line ends a frame, lines starting with ":" are comments (keep-alives).
 */
export class SseParser {
  private line = "";
  private skipLf = false;
  private event = "";
  private data: string[] = [];
  private id: string | undefined;
  private retry: number | undefined;

  /** Feeds decoded text; returns the frames it completed. */
  push(chunk: string): SseFrame[] {
    const frames: SseFrame[] = [];
    let start = 0;
    for (let i = 0; i < chunk.length; i += 1) {
      const c = chunk.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      if (c === 10 && this.skipLf && i === start && this.line === "") {
        // The "\n" of a "\r\n" whose "\r" ended the previous chunk or line.
        this.skipLf = false;
        start = i + 1;
        continue;
      }
      this.skipLf = c === 13;
      const line = this.line + chunk.slice(start, i);
      this.line = "";
      start = i + 1;
      const frame = this.takeLine(line);
      if (frame) frames.push(frame);
    }
    if (start < chunk.length) {
      this.line += chunk.slice(start);
      this.skipLf = false;
    }
    return frames;
  }

  private takeLine(line: string): SseFrame | null {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.event = value;
        break;
      case "data":
        this.data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) this.id = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break;
    }
    return null;
  }

  private dispatch(): SseFrame | null {
    const hadData = this.data.length > 0;
    const frame: SseFrame = { event: this.event || "message", data: this.data.join("\n") };
    if (this.id !== undefined) frame.id = this.id;
    if (this.retry !== undefined) frame.retry = this.retry;
    this.event = "";
    this.data = [];
    this.retry = undefined;
    return hadData ? frame : null;
  }
}

/**
 * Yields the frames of a streamed response body until it ends or `signal`
 * aborts.
 */
export async function* readSse(body: ReadableStream<Uint8Array>, signal?: AbortSignal): AsyncGenerator<SseFrame> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  const stop = () => void reader.cancel().catch(() => undefined);
  signal?.addEventListener("abort", stop);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
    yield* parser.push(decoder.decode());
  } finally {
    signal?.removeEventListener("abort", stop);
    reader.releaseLock();
  }
}
