"""An Ollama stand-in that streams in controlled bursts, run as its own process for the relay tests:
`python tests/integration/burst_node.py PORT`.

Its /api/generate sends the head and a first chunk, then two chunks in one write, then the last chunk
and the stream's end; before each burst after the first it waits (up to 10 s) until the test says the
client has read what came before (`POST /_burst/next`). `GET /_burst/waits` lists, per wait, whether
the signal came in time."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TAGS = {"models": [{"name": "burst:1b", "model": "burst:1b", "size": 1, "digest": "0", "details": {}}]}
LINE = {"model": "burst:1b", "created_at": "2026-01-01T00:00:00Z", "done": False}
NEXT = threading.Semaphore(0)
WAITS: list[bool] = []


def chunk(line: dict[str, object]) -> bytes:
    data = json.dumps(line).encode() + b"\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return None

    def _json(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        answers = {"/api/version": {"version": "0.12.6"}, "/api/tags": TAGS, "/api/ps": {"models": []}}
        self._json(WAITS if self.path == "/_burst/waits" else answers.get(self.path, {}))

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/_burst/next":
            NEXT.release()
            self._json({})
            return
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
        self.wfile.write(head + chunk({**LINE, "response": "one"}))
        WAITS.append(NEXT.acquire(timeout=10))
        # Two chunks in one write, after the head has gone: they reach the gateway in one read.
        self.wfile.write(chunk({**LINE, "response": "two"}) + chunk({**LINE, "response": "three"}))
        WAITS.append(NEXT.acquire(timeout=10))
        final = {**LINE, "response": "", "done": True, "done_reason": "stop", "eval_count": 3, "prompt_eval_count": 1}
        self.wfile.write(chunk(final) + b"0\r\n\r\n")


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()
