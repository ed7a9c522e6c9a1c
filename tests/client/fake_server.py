"""A scripted HTTP server on loopback for what the real service does not do on demand: 503s, 429s with
Retry-After, connections dropped mid-answer. Each request takes the next step of the script; every request is
recorded (method, path, headers, body)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    send_bytes: int | None = None  # stop after this many body bytes and close (a dropped connection)
    drop: bool = False  # close without answering at all
    length: bool = True  # send Content-Length (False: the body ends when the connection closes, as SSE)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeServer:
    def __init__(self, script: list[Reply]) -> None:
        self.script, self.seen = list(script), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: a closed socket ends a body

            def log_message(self, *args) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                       body))
                reply = outer.script.pop(0) if outer.script else Reply(500, b"script exhausted")
                if reply.drop:
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                if reply.length:
                    headers["Content-Length"] = str(len(reply.body))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body[: reply.send_bytes] if reply.send_bytes is not None else reply.body)
                self.wfile.flush()

            do_GET = do_POST = do_HEAD = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
