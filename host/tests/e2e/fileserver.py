"""A local HTTP file server for download tests, with faults the test controls.

Serves files on 127.0.0.1 (a port the OS picks) with HTTP/1.1 `Range`
support (206 with `Content-Range`, 416 past the end, `Accept-Ranges: bytes`)
and records every request it gets. Each route is registered by the test:

    server.add("/resume/model.gguf", path, cut_after=64 << 20)

Faults, per route:
  cut_after=N       the first `cut_times` requests send the headers of the
                    whole answer, then only N bytes, then close the
                    connection (the client must resume with `Range`)
  truncate_to=N     the route serves the file's first N bytes as if that
                    were the whole file (a truncated copy)
  short_body=N      every answer promises the full length but stops after N
                    bytes of the file (a server that always breaks off)
  rate=B            at most B bytes per second, so progress can be watched

`server.redirect("/away", "http://elsewhere/")` answers 302 to that URL.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 256 * 1024


@dataclass
class Route:
    path: str
    size: int
    cut_after: int | None = None
    cut_times: int = 1
    short_body: int | None = None
    rate: float | None = None
    requests: list = field(default_factory=list)


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict
    status: int = 0
    sent: int = 0
    cut: bool = False

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "CorralTestFiles/1"

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool):
        files: FileServer = self.server.files  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        rec = Recorded(self.command, path, {k.lower(): v for k, v in self.headers.items()})
        route = files.routes.get(path)
        location = files.redirects.get(path)
        if location is not None:
            with files.lock:
                files.log.append(rec)
            rec.status = 302
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with files.lock:
            files.log.append(rec)
            if route is not None:
                route.requests.append(rec)
            nth = len(route.requests) if route else 0
        if route is None:
            rec.status = 404
            self._plain(404, b"not found\n")
            return

        size = route.size
        start, end = 0, size - 1
        status = 200
        want = rec.range
        if want is not None:
            m = _RANGE.match(want.strip())
            if not m or (m.group(1) == "" and m.group(2) == ""):
                rec.status = 416
                self._unsatisfiable(size)
                return
            if m.group(1) == "":  # suffix range: the last N bytes
                n = int(m.group(2))
                start, end = max(0, size - n), size - 1
            else:
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else size - 1
                end = min(end, size - 1)
            if start >= size or start > end:
                rec.status = 416
                self._unsatisfiable(size)
                return
            status = 206
        length = end - start + 1
        rec.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return

        # How much of the promised body this answer really sends.
        limit = length
        cut = False
        if route.cut_after is not None and nth <= route.cut_times:
            limit, cut = min(length, route.cut_after), True
        if route.short_body is not None:
            limit, cut = max(0, min(length, route.short_body - start)), True
        sent = 0
        began = time.monotonic()
        try:
            with open(files.sources[path], "rb") as f:
                f.seek(start)
                while sent < limit:
                    block = f.read(min(CHUNK, limit - sent))
                    if not block:
                        break
                    self.wfile.write(block)
                    sent += len(block)
                    rec.sent = sent
                    if route.rate:
                        ahead = sent / route.rate - (time.monotonic() - began)
                        if ahead > 0:
                            time.sleep(ahead)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if cut and sent < length:
            rec.cut = True
            # Everything written reaches the client, then the connection ends
            # before the promised length.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _plain(self, status: int, body: bytes):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _unsatisfiable(self, size: int):
        self.send_response(416)
        self.send_header("Content-Range", f"bytes */{size}")
        self.send_header("Content-Length", "0")
        self.end_headers()


class FileServer:
    """Serves registered routes until `close()`."""

    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.sources: dict[str, str] = {}
        self.redirects: dict[str, str] = {}
        self.log: list[Recorded] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.files = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(
        self,
        path: str,
        source: str,
        *,
        truncate_to: int | None = None,
        cut_after: int | None = None,
        cut_times: int = 1,
        short_body: int | None = None,
        rate: float | None = None,
    ) -> str:
        """Registers `path` (starting with /) serving `source`; returns its URL."""
        size = os.path.getsize(source)
        if truncate_to is not None:
            size = min(size, truncate_to)
        self.routes[path] = Route(
            path=path,
            size=size,
            cut_after=cut_after,
            cut_times=cut_times,
            short_body=short_body,
            rate=rate,
        )
        self.sources[path] = source
        return self.base + path

    def redirect(self, path: str, location: str) -> str:
        """Registers `path` answering 302 to `location`; returns its URL."""
        self.redirects[path] = location
        return self.base + path

    def requests(self, path: str) -> list[Recorded]:
        with self.lock:
            return list(self.routes[path].requests)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
