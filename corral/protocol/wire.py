"""Error bodies and in-stream error frames in each API family's own shape."""

from __future__ import annotations

import json

JSON = b"application/json; charset=utf-8"
NDJSON = b"application/x-ndjson"
SSE = b"text/event-stream"


def _dumps(obj: object) -> bytes:
    # ensure_ascii keeps U+2028/U+2029 escaped, which NDJSON line splitters rely on.
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode()


def ollama_error(message: str) -> bytes:
    """Ollama's error body: {"error": "..."}."""
    return _dumps({"error": message})


def openai_error_type(status: int) -> str:
    if status == 400 or status == 413:
        return "invalid_request_error"
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    return "api_error"


def openai_error(message: str, status: int, code: str | None = None, param: str | None = None) -> bytes:
    """The OpenAI error object."""
    return _dumps({"error": {"message": message, "type": openai_error_type(status), "param": param, "code": code}})


def anthropic_error_type(status: int) -> str:
    """Anthropic's error type for a status (as Ollama's middleware/anthropic.go maps it)."""
    return {
        400: "invalid_request_error",
        413: "request_too_large",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
        503: "overloaded_error",
        529: "overloaded_error",
    }.get(status, "api_error")


def anthropic_error(message: str, status: int, request_id: str = "") -> bytes:
    """The Anthropic Messages API error body."""
    body: dict[str, object] = {"type": "error", "error": {"type": anthropic_error_type(status), "message": message}}
    if request_id:
        body["request_id"] = request_id
    return _dumps(body)


def anthropic_error_event(message: str) -> bytes:
    """An `error` event that ends a /v1/messages stream; anthropic-python raises on it."""
    return b"event: error\ndata: " + anthropic_error(message, 500) + b"\n\n"


def responses_error_event(message: str, code: str | None = None) -> bytes:
    """An `error` event that ends a /v1/responses stream; openai-python raises APIError on it."""
    error = {"message": message, "type": "api_error", "param": None, "code": code}
    event: dict[str, object] = {"type": "error", "code": code, "message": message, "param": None, "error": error}
    return b"event: error\ndata: " + _dumps(event) + b"\n\n"


def ndjson_error_line(message: str) -> bytes:
    """The last line of a native stream that failed after it started (no done:true follows)."""
    return ollama_error(message) + b"\n"


def sse_error_event(message: str, code: str | None = None) -> bytes:
    """An SSE event that makes openai-python raise APIError, ending a /v1 stream that failed."""
    return b"data: " + openai_error(message, 500, code) + b"\n\n"


def dumps(obj: object) -> bytes:
    return _dumps(obj)


# The event each /v1 SSE format ends a complete answer with; a stream that ends without it was cut by
# the node (Ollama ends a failed /v1 stream silently: an empty delta and no [DONE]).
_SSE_END = {"chat": b"data: [DONE]", "responses": b"response.completed", "anthropic": b"message_stop"}


class SseEnd:
    """Watches relayed SSE bytes for the event that marks a complete answer; one `in` per chunk."""

    __slots__ = ("_carry", "marker", "seen")

    def __init__(self, kind: str) -> None:
        self.marker = _SSE_END[kind]
        self.seen = False
        self._carry = b""

    def feed(self, data: bytes) -> None:
        if self.seen:
            return
        if self.marker in data or self.marker in self._carry + data[: len(self.marker)]:
            self.seen = True
        self._carry = data[-len(self.marker) :]
