"""ASGI plumbing for the simulator: Go-style JSON, request bodies, responses, disconnect watching."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_RE = re.compile("[<>&\u2028\u2029]")


def go_json(obj: object) -> bytes:
    """JSON as Go's encoding/json writes it: compact, with <, >, &, U+2028 and U+2029 escaped."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return _GO_RE.sub(lambda m: _GO_ESCAPES[m.group(0)], text).encode()


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def local_time(unix: float) -> str:
    try:
        return datetime.fromtimestamp(unix).astimezone().isoformat()
    except (OverflowError, ValueError, OSError):
        return "2318-01-01T00:00:00+00:00"


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise asyncio.CancelledError
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def parse_json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise BadRequest(400, "missing request body")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise BadRequest(400, str(exc)) from exc
    if not isinstance(doc, dict):
        raise BadRequest(400, "json: cannot unmarshal array into Go value of type api.Request")
    return doc


async def send_bytes(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, obj: object, status: int = 200) -> None:
    await send_bytes(send, status, go_json(obj), b"application/json; charset=utf-8")


async def send_error(send: Send, status: int, message: str) -> None:
    await send_bytes(send, status, go_json({"error": message}), b"application/json; charset=utf-8")


async def send_openai_error(send: Send, status: int, message: str) -> None:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    await send_bytes(send, status, go_json(body) + b"\n", b"application/json")


class Stream:
    """A chunked response body written piece by piece; notices when the client goes away."""

    def __init__(self, send: Send, receive: Receive, content_type: bytes) -> None:
        self._send = send
        self._receive = receive
        self.content_type = content_type
        self.started = False
        self.gone = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.started = True
        await self._send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", self.content_type)]}
        )
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone.set()
                return

    async def write(self, data: bytes) -> None:
        if self.gone.is_set():
            raise asyncio.CancelledError
        try:
            await self._send({"type": "http.response.body", "body": data, "more_body": True})
        except OSError as exc:  # the client went away between two tokens
            self.gone.set()
            raise asyncio.CancelledError from exc

    async def end(self) -> None:
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})
        self.close()

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
