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


def ndjson_error_line(message: str) -> bytes:
    """The last line of a native stream that failed after it started (no done:true follows)."""
    return ollama_error(message) + b"\n"


def sse_error_event(message: str, code: str | None = None) -> bytes:
    """An SSE event that makes openai-python raise APIError, ending a /v1 stream that failed."""
    return b"data: " + openai_error(message, 500, code) + b"\n\n"


def dumps(obj: object) -> bytes:
    return _dumps(obj)
