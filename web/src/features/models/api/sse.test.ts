import { describe, expect, it } from "vitest";
import { readSse, SseParser, type SseFrame } from "./sse";

const feed = (chunks: string[]) => {
  const parser = new SseParser();
  return chunks.flatMap((c) => parser.push(c));
};

describe("SseParser", () => {
  it("reads named frames with JSON data", () => {
    const frames = feed([
      'event: model_status\ndata: {"type":"model_status","model_id":"m1","status":"ready"}\n\n',
    ]);
    expect(frames).toEqual([
      { event: "model_status", data: '{"type":"model_status","model_id":"m1","status":"ready"}' },
    ]);
  });

  it("joins a frame split anywhere across chunks", () => {
    const text = 'event: model_download\ndata: {"bytes":1024}\n\nevent: model_deleted\ndata: {"model_id":"x"}\n\n';
    for (let cut = 1; cut < text.length; cut += 1) {
      const frames = feed([text.slice(0, cut), text.slice(cut)]);
      expect(frames, `cut at ${cut}`).toEqual([
        { event: "model_download", data: '{"bytes":1024}' },
        { event: "model_deleted", data: '{"model_id":"x"}' },
      ]);
    }
  });

  it("survives one character per chunk and CRLF split between chunks", () => {
    const text = "event: lagged\r\ndata: {\"missed\":3}\r\n\r\n";
    expect(feed(text.split(""))).toEqual([{ event: "lagged", data: '{"missed":3}' }]);
    expect(feed(["event: a\r", "\ndata: 1\r", "\n\r", "\n"])).toEqual([{ event: "a", data: "1" }]);
  });

  it("accepts lone CR line ends", () => {
    expect(feed(["event: a\rdata: 1\r\r"])).toEqual([{ event: "a", data: "1" }]);
  });

  it("joins several data lines, skips comments and frames without data", () => {
    const frames = feed([": keep-alive\n\n", "data: one\ndata:two\n\n", "event: empty\n\n", "data\n\n"]);
    expect(frames).toEqual([
      { event: "message", data: "one\ntwo" },
      { event: "message", data: "" },
    ]);
  });

  it("keeps the id and retry fields and forgets the event name after each frame", () => {
    const frames = feed(["id: 7\nretry: 500\nevent: x\ndata: 1\n\ndata: 2\n\n"]);
    expect(frames).toEqual([
      { event: "x", data: "1", id: "7", retry: 500 },
      { event: "message", data: "2", id: "7" },
    ]);
  });

  it("holds an unfinished frame until its blank line arrives", () => {
    const parser = new SseParser();
    expect(parser.push("event: a\ndata: 1\n")).toEqual([]);
    expect(parser.push("\n")).toEqual([{ event: "a", data: "1" }]);
  });
});

describe("readSse", () => {
  it("decodes a byte stream whose multi-byte characters are split across chunks", async () => {
    const bytes = new TextEncoder().encode('event: model_status\ndata: {"error":"fișier lipsă"}\n\n');
    const cut = bytes.indexOf(0xc8) + 1; // inside "ș"
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(bytes.slice(0, cut));
        controller.enqueue(bytes.slice(cut));
        controller.close();
      },
    });
    const frames: SseFrame[] = [];
    for await (const frame of readSse(body)) frames.push(frame);
    expect(frames).toEqual([{ event: "model_status", data: '{"error":"fișier lipsă"}' }]);
  });

  it("stops when its signal aborts", async () => {
    const abort = new AbortController();
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode("data: 1\n\n"));
      },
    });
    const frames: SseFrame[] = [];
    for await (const frame of readSse(body, abort.signal)) {
      frames.push(frame);
      abort.abort();
    }
    expect(frames).toHaveLength(1);
  });
});
