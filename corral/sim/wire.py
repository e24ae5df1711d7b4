"""ASGI plumbing for the simulator: Go-style JSON, Go-style decode errors, timestamps, and a small
connection object that writes responses and knows whether one has started."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_UTF8 = b"application/json; charset=utf-8"
_GO_ESCAPES = {
    b"<": b"\\u003c",
    b">": b"\\u003e",
    b"&": b"\\u0026",
    "\u2028".encode(): b"\\u2028",
    "\u2029".encode(): b"\\u2029",
}
_GO_RE = re.compile(b"[<>&]|\xe2\x80[\xa8\xa9]")
_FOREVER_UNIX = 253402210800.0  # datetime's limit; only reached by absurd keep_alive values


class BadRequest(Exception):
    """An error answered with a status and a message, in the route family's error shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def go_json(obj: object, sort_keys: bool = False) -> bytes:
    """JSON as Go's encoding/json writes it: compact, with <, >, &, U+2028 and U+2029 escaped.
    `sort_keys` for values Go holds as maps (json.Marshal writes map keys sorted)."""
    data = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    return _GO_RE.sub(lambda m: _GO_ESCAPES[m.group(0)], data) if _GO_RE.search(data) else data


def now_rfc3339() -> str:
    """Go's time.Now().UTC() in RFC3339Nano: trailing zeros of the fraction trimmed, then Z."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return stamp + "Z"


def local_time(unix: float) -> str:
    """A local time with its offset, as /api/tags, /api/show and /api/ps print them."""
    return datetime.fromtimestamp(min(unix, _FOREVER_UNIX)).astimezone().isoformat()


class Conn:
    """One request's response side: a whole body, or a streamed one written piece by piece."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self._send = send
        self.started = False
        self.finished = False
        self.arrived = time.monotonic()

    async def read_body(self) -> bytes:
        chunks = []
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ConnectionResetError("client went away while sending the body")
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(chunks)

    async def start(self, status: int, content_type: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        self.started = True
        headers = [(b"content-type", content_type), *(extra or [])]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def write(self, data: bytes, more: bool = True) -> None:
        if not more:
            self.finished = True
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(self, status: int, body: bytes, content_type: bytes = JSON_UTF8) -> None:
        await self.start(status, content_type, [(b"content-length", str(len(body)).encode())])
        await self.write(body, more=False)

    async def json(self, obj: object, status: int = 200) -> None:
        await self.respond(status, go_json(obj))

    async def error(self, status: int, message: str) -> None:
        await self.respond(status, go_json({"error": message}))

    async def anthropic_error(self, status: int, message: str) -> None:
        """anthropic.NewError (anthropic/anthropic.go): the type follows the status."""
        kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error"}
        kind |= {404: "not_found_error", 429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}
        body = {"type": "error", "error": {"type": kind.get(status, "api_error"), "message": message}}
        body["request_id"] = "req_" + secrets.token_hex(12)
        await self.respond(status, go_json(body) + b"\n", b"application/json")

    async def openai_error(self, status: int, message: str) -> None:
        kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        await self.respond(status, go_json(body) + b"\n", b"application/json")
