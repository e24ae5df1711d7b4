"""OpenAI answers in Ollama's native shapes: the pieces every answer needs (timestamps, the done
object's counts and durations, tool calls, line-safe JSON), whole stream:false answers, and error bodies
(docs/ollama-behaviour.md §3, §4).

Pure: no I/O, no clock reads; every time is an argument in integer nanoseconds since the epoch.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Any

import orjson

# Characters that str.splitlines (and so httpx's iter_lines) splits on but orjson leaves raw; control
# characters below 0x20 are escaped by orjson already. In valid UTF-8 these byte runs mean only them.
_UNSAFE = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"), (b"\xc2\x85", b"\\u0085"))


def native_json(obj: object) -> bytes:
    """Compact JSON that never holds a raw line separator of any kind."""
    try:
        raw = orjson.dumps(obj)
    except TypeError:  # lone surrogates, which only the stdlib can escape
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode()
    if b"\xe2\x80" in raw or b"\xc2\x85" in raw:
        for bad, escaped in _UNSAFE:
            raw = raw.replace(bad, escaped)
    return raw


def error_line(message: str) -> bytes:
    """Ollama's in-stream error: one last line, with no done:true after it (§5.3)."""
    return native_json({"error": message}) + b"\n"


@lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def rfc3339(now_ns: int) -> str:
    """Go's RFC3339Nano in UTC, trailing zeros trimmed: 2025-10-26T17:21:21.196249Z."""
    seconds, nanos = divmod(now_ns, 1_000_000_000)
    fraction = f".{nanos:09d}".rstrip("0") if nanos else ""
    return f"{_second(seconds)}{fraction}Z"


def loads(payload: str | bytes) -> Any:
    """Parsed JSON, or None where it is not JSON."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        try:
            return json.loads(payload)  # lone surrogate escapes, which orjson refuses
        except ValueError:
            return None


def done_reason(finish: object) -> str:
    """Ollama knows stop and length; tool_calls, content_filter and a missing reason are stops."""
    return "length" if finish == "length" else "stop"


def positive(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def metrics(usage: object, counted: int, started_ns: int, first_ns: int, now_ns: int) -> dict[str, Any]:
    """The done object's counts and durations. Token counts come from `usage`, else the count of content
    chunks; time to the first token is prompt evaluation, the rest is evaluation. Zeros are left out,
    as Go's omitempty does (§1.3); load_duration is unknowable through the OpenAI API, so always absent."""
    doc: dict[str, Any] = usage if isinstance(usage, dict) else {}
    first = first_ns or now_ns
    out = {
        "total_duration": now_ns - started_ns,
        "prompt_eval_count": positive(doc.get("prompt_tokens")),
        "prompt_eval_duration": first - started_ns,
        "eval_count": positive(doc.get("completion_tokens")) or counted,
        "eval_duration": now_ns - first,
    }
    return {k: v for k, v in out.items() if v > 0}


def arguments(value: object) -> dict[str, Any]:
    """OpenAI's JSON-string arguments as the native object. Text that is not a JSON object is kept
    under "_raw", since ollama-python needs a mapping here."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or not value.strip():
        return {}
    parsed = loads(value)
    return parsed if isinstance(parsed, dict) else {"_raw": value}


def first_choice(doc: dict[str, Any]) -> dict[str, Any] | None:
    choices = doc.get("choices")
    if not isinstance(choices, list):
        return None
    return next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), None)


def text_of(value: object) -> str:
    return value if isinstance(value, str) else ""


def error_message(err: object) -> str:
    if isinstance(err, dict):
        message = err.get("message")
        return message if isinstance(message, str) and message else native_json(err).decode()
    return err if isinstance(err, str) else native_json(err).decode()


def native_tool_calls(calls: list[Any]) -> list[dict[str, Any]]:
    """OpenAI tool calls ({id, type, function: {name, arguments: "<json>"}}) in the native shape."""
    out: list[dict[str, Any]] = []
    for call in (c for c in calls if isinstance(c, dict)):
        raw = call.get("function")
        fn: dict[str, Any] = raw if isinstance(raw, dict) else {}
        native: dict[str, Any] = {}
        if isinstance(call.get("id"), str) and call["id"]:
            native["id"] = call["id"]
        native["function"] = {
            "index": len(out),
            "name": text_of(fn.get("name")),
            "arguments": arguments(fn.get("arguments")),
        }
        out.append(native)
    return out


def openai_response_to_native(
    kind: str, body: dict[str, Any], model: str, started_ns: int, now_ns: int
) -> dict[str, Any]:
    """A whole (stream:false) OpenAI answer as Ollama's single native object. Without a first-token time
    all of the elapsed time counts as evaluation."""
    choice = first_choice(body) or {}
    raw_message = choice.get("message")
    message: dict[str, Any] = raw_message if isinstance(raw_message, dict) else {}
    text = text_of(choice["text"]) if isinstance(choice.get("text"), str) else text_of(message.get("content"))
    thinking = text_of(message.get("reasoning_content")) or text_of(message.get("reasoning"))
    out: dict[str, Any] = {"model": model, "created_at": rfc3339(now_ns)}
    if kind == "chat":
        native: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            native["thinking"] = thinking
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls:
            native["tool_calls"] = native_tool_calls(calls)
        out["message"] = native
    else:
        out["response"] = text
        if thinking:
            out["thinking"] = thinking
    out["done"] = True
    out["done_reason"] = done_reason(choice.get("finish_reason"))
    out.update(metrics(body.get("usage"), 0, started_ns, started_ns, now_ns))
    return out


def openai_error_to_native(status: int, body: bytes) -> bytes:
    """Any error body from an OpenAI-type node (the OpenAI error object, FastAPI's detail, plain text)
    as Ollama's {"error": "message"}."""
    doc = loads(body) if body.strip() else None
    message = ""
    if isinstance(doc, dict):
        if doc.get("error"):
            message = error_message(doc["error"])
        elif isinstance(doc.get("detail"), str):
            message = doc["detail"]
        elif doc.get("detail"):
            message = native_json(doc["detail"]).decode()
        elif isinstance(doc.get("message"), str):
            message = doc["message"]
    elif doc is None:
        message = body.decode("utf-8", "replace").strip()
    return native_json({"error": message or f"the node answered HTTP {status}"})
