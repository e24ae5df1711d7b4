"""The relay writes the pieces of one read from the node together (corral/app/relay.py), and still
never holds a stream's chunk back: a node that sends two chunks in one write and then waits for the
client to have them must see the client get both, before it produces the third."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from procs import running, start_corral

TAGS = {"models": [{"name": "burst:1b", "model": "burst:1b", "size": 1, "digest": "0", "details": {}}]}


def chunk(line: dict[str, object]) -> bytes:
    data = json.dumps(line).encode() + b"\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


class BurstNode(ThreadingHTTPServer):
    """An Ollama stand-in whose /api/generate sends the head and a first chunk, waits for the client to
    have it, sends two chunks in one write, and waits for the client to have both before the last one
    (each wait up to 10 s; `waited` records whether each ended in time)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.client_has = [threading.Event() for _ in range(4)]  # [n]: the client has read n chunks
        self.waited: list[bool] = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: BurstNode

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
        self._json(answers.get(self.path, {}))

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
        line = {"model": "burst:1b", "created_at": "2026-01-01T00:00:00Z", "done": False}
        self.wfile.write(head + chunk({**line, "response": "one"}))
        self.wfile.flush()
        self.server.waited.append(self.server.client_has[1].wait(10))
        # Two chunks in one write, after the head has gone: they reach the gateway in one read.
        self.wfile.write(chunk({**line, "response": "two"}) + chunk({**line, "response": "three"}))
        self.wfile.flush()
        self.server.waited.append(self.server.client_has[3].wait(10))
        final = {**line, "response": "", "done": True, "done_reason": "stop", "eval_count": 3, "prompt_eval_count": 1}
        self.wfile.write(chunk(final) + b"0\r\n\r\n")
        self.wfile.flush()


@pytest.fixture
def node() -> Iterator[BurstNode]:
    server = BurstNode()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_chunks_of_one_read_reach_the_client_before_the_node_sends_more(node: BurstNode) -> None:
    url = f"http://127.0.0.1:{node.server_address[1]}"
    config = {"backends": [{"name": "burst", "url": url, "models": ["burst:1b"]}], "logging": {"access": False}}
    with running(start_corral(config)) as (corral,):
        headers = {"Host": f"localhost:{corral.port}"}
        body = {"model": "burst:1b", "prompt": "go"}
        seen: list[str] = []
        with httpx.stream("POST", corral.url + "/api/generate", json=body, headers=headers, timeout=30) as reply:
            assert reply.status_code == 200
            for text in reply.iter_lines():
                seen.append(json.loads(text)["response"])
                if len(seen) < len(node.client_has):
                    node.client_has[len(seen)].set()  # the node sends more only once the client has these
        assert node.waited == [True, True], "a chunk was held back until the node sent more"
        assert seen == ["one", "two", "three", ""]
