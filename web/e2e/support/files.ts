// A local HTTP file server on 127.0.0.1 for the model-download journey:
// routes map to files on disk; anything else is a 404.

import { createReadStream, statSync } from "node:fs";
import { createServer, type ServerResponse, type Server } from "node:http";
import type { Readable } from "node:stream";

interface Route {
  file: string;
  /** Bytes per second; unlimited when absent. */
  rate?: number;
}

/** Pipes `stream` to `res` at about `rate` bytes per second. */
function send(stream: Readable, res: ServerResponse, rate?: number): void {
  if (!rate) {
    stream.pipe(res);
    return;
  }
  const began = Date.now();
  let sent = 0;
  stream.on("data", (chunk: Buffer) => {
    sent += chunk.length;
    const ahead = sent / rate - (Date.now() - began) / 1000;
    const ok = res.write(chunk);
    if (ahead > 0 || !ok) {
      stream.pause();
      const resume = () => setTimeout(() => stream.resume(), Math.max(0, ahead * 1000));
      if (ok) resume();
      else res.once("drain", resume);
    }
  });
  stream.on("end", () => res.end());
  res.on("close", () => stream.destroy());
}

export class FileServer {
  private server: Server;
  private routes = new Map<string, Route>();
  readonly requests: string[] = [];
  port = 0;

  constructor() {
    this.server = createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://127.0.0.1");
      this.requests.push(url.pathname);
      const route = this.routes.get(url.pathname);
      if (!route) {
        res.writeHead(404, { "Content-Type": "text/plain" });
        res.end("not found");
        return;
      }
      const { file, rate } = route;
      const size = statSync(file).size;
      const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
      if (range) {
        const start = Number(range[1]);
        const end = range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
        if (start >= size) {
          res.writeHead(416, { "Content-Range": `bytes */${size}` });
          res.end();
          return;
        }
        res.writeHead(206, {
          "Content-Type": "application/octet-stream",
          "Content-Length": end - start + 1,
          "Content-Range": `bytes ${start}-${end}/${size}`,
          "Accept-Ranges": "bytes",
        });
        if (req.method === "HEAD") return void res.end();
        send(createReadStream(file, { start, end }), res, rate);
        return;
      }
      res.writeHead(200, {
        "Content-Type": "application/octet-stream",
        "Content-Length": size,
        "Accept-Ranges": "bytes",
      });
      if (req.method === "HEAD") return void res.end();
      send(createReadStream(file), res, rate);
    });
  }

  get base(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    const address = this.server.address();
    this.port = typeof address === "object" && address ? address.port : 0;
    return this;
  }

  /** Serves `file` at `route`, at `rate` bytes per second if given; returns its URL. */
  add(route: string, file: string, rate?: number): string {
    this.routes.set(route, { file, rate });
    return `${this.base}${route}`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
