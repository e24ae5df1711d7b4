"""Native Ollama chat/generate ⇄ the OpenAI API, for OpenAI-type nodes (vLLM, llama.cpp, LM Studio).

Pure: no I/O, no clock reads (times in nanoseconds are arguments). The request mapping follows
ollama-api.md §6.1 in reverse; the answer is rebuilt in Ollama's native shapes (§3.1, §3.2), ending
with the `done` object and its counts and durations.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from corral.protocol.wire import dumps, ollama_error

_OPTION_MAP = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "num_predict": "max_tokens",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
}


def rfc3339(now_ns: int) -> str:
    return datetime.fromtimestamp(now_ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def _common(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"model": doc.get("model")}
    raw = doc.get("options")
    options: dict[str, Any] = raw if isinstance(raw, dict) else {}
    for native, openai_name in _OPTION_MAP.items():
        if native in options and options[native] is not None:
            value = options[native]
            if native == "num_predict" and (not isinstance(value, int) or value < 0):
                continue
            out[openai_name] = value
    fmt = doc.get("format")
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    stream = doc.get("stream", True) is not False  # native routes stream unless told not to
    out["stream"] = stream
    if stream:
        out["stream_options"] = {"include_usage": True}
    return out


def _message(msg: dict[str, Any]) -> dict[str, Any]:
    role = str(msg.get("role", "user")).lower()
    content: Any = msg.get("content") or ""
    images = msg.get("images") or []
    if images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": content}] if content else []
        parts += [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{img}"}} for img in images]
        content = parts
    out: dict[str, Any] = {"role": role, "content": content}
    calls = msg.get("tool_calls")
    if calls:
        out["tool_calls"] = [
            {
                "id": call.get("id") or f"call_{i}",
                "type": "function",
                "function": {
                    "name": (call.get("function") or {}).get("name", ""),
                    "arguments": json.dumps((call.get("function") or {}).get("arguments") or {}),
                },
            }
            for i, call in enumerate(calls)
        ]
    if role == "tool":
        if msg.get("tool_call_id"):
            out["tool_call_id"] = msg["tool_call_id"]
        if msg.get("tool_name"):
            out["name"] = msg["tool_name"]
    return out


def chat_request_to_openai(doc: dict[str, Any]) -> dict[str, Any]:
    out = _common(doc)
    raw = doc.get("messages")
    messages: list[Any] = raw if isinstance(raw, list) else []
    out["messages"] = [_message(m) for m in messages if isinstance(m, dict)]
    if doc.get("tools"):
        out["tools"] = doc["tools"]
    return out


def generate_request_to_openai(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Plain prompts go to /v1/completions; a system prompt or images need /v1/chat/completions."""
    if doc.get("system") or doc.get("images"):
        messages: list[dict[str, Any]] = []
        if doc.get("system"):
            messages.append({"role": "system", "content": doc["system"]})
        messages.append({"role": "user", "content": doc.get("prompt") or "", "images": doc.get("images") or []})
        body = chat_request_to_openai({**doc, "messages": messages})
        return "/v1/chat/completions", body
    out = _common(doc)
    out["prompt"] = doc.get("prompt") or ""
    if doc.get("suffix"):
        out["suffix"] = doc["suffix"]
    return "/v1/completions", out


def _reason(finish: object) -> str:
    return "length" if finish == "length" else "stop"


def _metrics(usage: dict[str, Any] | None, counted: int, started_ns: int, first_ns: int, now_ns: int) -> dict[str, Any]:
    usage = usage or {}
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens", counted)
    first = first_ns or now_ns
    out: dict[str, Any] = {"total_duration": max(1, now_ns - started_ns)}
    # Ollama omits zero metrics (omitempty); so do we.
    if isinstance(prompt, int) and prompt > 0:
        out["prompt_eval_count"] = prompt
    if max(0, first - started_ns):
        out["prompt_eval_duration"] = first - started_ns
    if isinstance(completion, int) and completion > 0:
        out["eval_count"] = completion
    if max(0, now_ns - first):
        out["eval_duration"] = now_ns - first
    return out


class SseToNdjson:
    """Feeds on an OpenAI SSE byte stream (any chunking) and emits Ollama NDJSON lines."""

    def __init__(self, kind: str, model: str, started_ns: int) -> None:
        self.kind = kind  # "chat" or "generate"
        self.model = model
        self.started_ns = started_ns
        self.first_ns = 0
        self.buffer = b""
        self.done_seen = False
        self.finish_reason: object = None
        self.usage: dict[str, Any] | None = None
        self.counted = 0
        self.error: str | None = None
        self.final: dict[str, Any] | None = None
        self._tools: dict[int, dict[str, Any]] = {}

    def feed(self, data: bytes, now_ns: int) -> bytes:
        self.buffer += data
        out: list[bytes] = []
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                break
            line = self.buffer[:end].rstrip(b"\r")
            self.buffer = self.buffer[end + 1 :]
            if not line.startswith(b"data:"):
                continue  # blank separators, comments (": ping"), event names
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done_seen = True
                continue
            try:
                event = json.loads(payload)
            except ValueError:
                continue
            line_out = self._event(event, now_ns)
            if line_out:
                out.append(line_out)
        return b"".join(out)

    def _chunk(self, now_ns: int, text: str, thinking: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {"model": self.model, "created_at": rfc3339(now_ns)}
        if self.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            chunk["message"] = message
        else:
            chunk["response"] = text
            if thinking:
                chunk["thinking"] = thinking
        chunk["done"] = False
        return chunk

    def _event(self, event: object, now_ns: int) -> bytes:
        if not isinstance(event, dict):
            return b""
        if event.get("error"):
            err = event["error"]
            self.error = str(err.get("message") if isinstance(err, dict) else err)
            return b""
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        choices = event.get("choices") or []
        choice = next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), None)
        if choice is None:
            return b""
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        raw = choice.get("delta")
        delta: dict[str, Any] = raw if isinstance(raw, dict) else {}
        text = choice.get("text") if self.kind == "generate" and "text" in choice else delta.get("content")
        thinking = delta.get("reasoning") or delta.get("reasoning_content")
        for call in delta.get("tool_calls") or []:
            slot = self._tools.setdefault(int(call.get("index", 0)), {"id": call.get("id"), "name": "", "args": ""})
            fn = call.get("function") or {}
            slot["name"] += fn.get("name") or ""
            slot["args"] += fn.get("arguments") or ""
            if call.get("id"):
                slot["id"] = call["id"]
        if not text and not thinking:
            return b""
        if not self.first_ns:
            self.first_ns = now_ns
        self.counted += 1
        return dumps(self._chunk(now_ns, text or "", thinking)) + b"\n"

    def final_object(self, now_ns: int) -> dict[str, Any]:
        final = self._chunk(now_ns, "")
        if self._tools and self.kind == "chat":
            final["message"]["tool_calls"] = [
                {"id": t["id"], "function": {"index": i, "name": t["name"], "arguments": _args(t["args"])}}
                for i, t in sorted(self._tools.items())
            ]
        final["done"] = True
        final["done_reason"] = _reason(self.finish_reason)
        final.update(_metrics(self.usage, self.counted, self.started_ns, self.first_ns, now_ns))
        return final

    def finish(self, now_ns: int) -> bytes:
        """The last line: the node's error if it sent one, else the native `done` object."""
        if self.buffer.strip():
            self.feed(b"\n", now_ns)
        if self.error is not None:
            return self.error_line(self.error)
        self.final = self.final_object(now_ns)
        return dumps(self.final) + b"\n"

    @staticmethod
    def error_line(message: str) -> bytes:
        return ollama_error(message) + b"\n"


def _args(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {"_raw": text}


def openai_response_to_native(
    kind: str, body: dict[str, Any], model: str, started_ns: int, now_ns: int
) -> dict[str, Any]:
    """A whole (non-stream) OpenAI answer as Ollama's single native object."""
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    out: dict[str, Any] = {"model": model, "created_at": rfc3339(now_ns)}
    if kind == "chat" and "message" in choice:
        msg = choice.get("message") or {}
        message: dict[str, Any] = {"role": "assistant", "content": msg.get("content") or ""}
        if msg.get("reasoning") or msg.get("reasoning_content"):
            message["thinking"] = msg.get("reasoning") or msg.get("reasoning_content")
        if msg.get("tool_calls"):
            message["tool_calls"] = [
                {
                    "id": c.get("id"),
                    "function": {
                        "index": i,
                        "name": (c.get("function") or {}).get("name", ""),
                        "arguments": _args((c.get("function") or {}).get("arguments", "")),
                    },
                }
                for i, c in enumerate(msg["tool_calls"])
            ]
        out["message"] = message
    elif kind == "chat":
        out["message"] = {"role": "assistant", "content": choice.get("text") or ""}
    else:
        msg = choice.get("message") or {}
        out["response"] = choice.get("text") if "text" in choice else (msg.get("content") or "")
    out["done"] = True
    out["done_reason"] = _reason(choice.get("finish_reason"))
    out.update(_metrics(body.get("usage"), 0, started_ns, started_ns, now_ns))
    return out


def openai_error_to_native(status: int, body: bytes) -> bytes:
    """An OpenAI error object (or any body) as {"error": "message"}."""
    try:
        doc = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return ollama_error(text or f"node answered HTTP {status}")
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        return ollama_error(str(err.get("message") or err))
    if isinstance(err, str):
        return ollama_error(err)
    if isinstance(doc, dict) and isinstance(doc.get("detail"), str):
        return ollama_error(doc["detail"])
    return ollama_error(f"node answered HTTP {status}")
