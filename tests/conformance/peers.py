"""Independent HTTP peers for the conformance suite: h11 (not Corral's parser) as the client and as a
fake node that records what reached it, raw sockets for what no well-behaved client would send, and
the server's memory read from /proc."""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import h11
import orjson

Headers = list[tuple[bytes, bytes]]


@dataclass
class Reply:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    all_headers: Headers = field(default_factory=list)

    def json(self) -> object:
        return orjson.loads(self.body)


class H11Client:
    """One client connection driven by h11."""

    def __init__(self, port: int, timeout: float = 10.0, source: str | None = None) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.conn = h11.Connection(h11.CLIENT)

    def request(
        self, method: str, target: str, headers: Headers | None = None, body: bytes = b"", host: bytes = b"localhost"
    ) -> Reply:
        self.send(method, target, headers, body, host)
        return self.receive()

    def send(
        self, method: str, target: str, headers: Headers | None = None, body: bytes = b"", host: bytes = b"localhost"
    ) -> None:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        hdrs = [(b"host", host), *(headers or [])]
        if body or method in ("POST", "PUT"):
            hdrs.append((b"content-length", b"%d" % len(body)))
        out = self.conn.send(h11.Request(method=method, target=target, headers=hdrs)) or b""
        if body:
            out += self.conn.send(h11.Data(data=body)) or b""
        out += self.conn.send(h11.EndOfMessage()) or b""
        self.sock.sendall(out)

    def receive(self) -> Reply:
        status = 0
        headers: Headers = []
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.InformationalResponse):
                continue
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = [(bytes(k), bytes(v)) for k, v in event.headers]
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return Reply(status, dict(headers), bytes(body), headers)

    def close(self) -> None:
        self.sock.close()


def raw(port: int, data: bytes, timeout: float = 5.0, until_close: bool = True) -> bytes:
    """Send `data` on a new connection; read what comes back until the server closes (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock, timeout) if until_close else sock.recv(65536)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    out = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not piece:
            break
        out += piece
    return out


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True when the server closes `sock` within `timeout` (whatever it sent before)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
    return False


def parse_head(data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Status, lower-case headers and the rest, from raw response bytes (one response)."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def memory_kib(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


class FakeNode:
    """An Ollama node played by h11: enough of the API for Corral to route to it, and a record of every
    request that reached it (method, target, headers, body)."""

    MODEL = "fake:1b"

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.received: list[tuple[str, str, Headers, bytes]] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _answer(self, method: str, target: str) -> tuple[int, bytes]:
        if target == "/api/version":
            return 200, b'{"version":"0.12.6"}'
        if target == "/api/tags":
            model = {"name": self.MODEL, "model": self.MODEL, "modified_at": "2026-01-01T00:00:00Z", "size": 1}
            return 200, orjson.dumps({"models": [{**model, "digest": "0", "details": {"family": "llama"}}]})
        if target == "/api/ps":
            return 200, b'{"models":[]}'
        if target in ("/", ""):
            return 200, b"Ollama is running"
        done = {"model": self.MODEL, "created_at": "2026-01-01T00:00:00Z", "response": "ok", "done": True}
        return 200, orjson.dumps(done)

    def _serve(self, sock: socket.socket) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = bytearray()
        with sock:
            while True:
                try:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = sock.recv(65536)
                        conn.receive_data(data)
                        if not data:
                            return
                    elif isinstance(event, h11.Request):
                        request, body = event, bytearray()
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage) and request is not None:
                        method, target = request.method.decode(), request.target.decode()
                        hdrs = [(bytes(k), bytes(v)) for k, v in request.headers]
                        self.received.append((method, target, hdrs, bytes(body)))
                        status, payload = self._answer(method, target)
                        sock.sendall(
                            (conn.send(h11.Response(status_code=status, headers=[("content-length", str(len(payload))),
                                                                                 ("content-type", "application/json")]))
                             or b"")
                            + (conn.send(h11.Data(data=payload)) or b"")
                            + (conn.send(h11.EndOfMessage()) or b"")
                        )  # fmt: skip
                        conn.start_next_cycle()
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                except (h11.RemoteProtocolError, h11.LocalProtocolError, OSError):
                    return

    def generate_requests(self) -> list[tuple[str, str, Headers, bytes]]:
        return [r for r in self.received if r[1] == "/api/generate"]

    def close(self) -> None:
        self._stop = True
        self.listener.close()
