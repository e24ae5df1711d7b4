"""An OpenAI SSE stream rebuilt as Ollama's native NDJSON stream (docs/ollama-behaviour.md §3, §4).

Pure: no I/O, no clock reads; every time is an argument in integer nanoseconds since the epoch.
"""

from __future__ import annotations

from typing import Any

from corral.protocol.translate_native import (
    done_reason,
    error_line,
    error_message,
    first_choice,
    loads,
    metrics,
    native_json,
    native_tool_calls,
    positive,
    rfc3339,
    text_of,
)
from corral.protocol.translate_sse import SseDecoder


class SseToNdjson:
    """Feeds on an OpenAI SSE stream (chat or completions chunks, split anywhere) and gives Ollama's
    native NDJSON lines for `kind` ("chat" or "generate"), ending with the done object.

    After an upstream error event the error line is given at once and everything later is ignored.
    `finish` gives the done line when the stream ended cleanly ([DONE] or a finish_reason seen), else
    an error line; `final` then holds the done object for accounting."""

    def __init__(self, kind: str, model: str, started_ns: int) -> None:
        self.kind = kind
        self.model = model
        self.started_ns = started_ns
        self.first_ns = 0
        self.done_seen = False
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.counted = 0
        self.error: str | None = None
        self.final: dict[str, Any] | None = None
        self._sse = SseDecoder()
        self._tools: dict[int, dict[str, str]] = {}
        self._tools_sent = False
        self._finished = False

    @property
    def ended_cleanly(self) -> bool:
        return self.error is None and (self.done_seen or self.finish_reason is not None)

    def feed(self, data: bytes, now_ns: int) -> bytes:
        return b"".join(self._event(e.data, e.event, now_ns) for e in self._sse.feed(data))

    def finish(self, now_ns: int) -> bytes:
        """The last line(s) once the upstream closed: held tool calls and the done object, or the error."""
        if self._finished:
            return b""
        out = b"".join(self._event(e.data, e.event, now_ns) for e in self._sse.close())
        self._finished = True
        if self.error is not None:
            return out
        if not self.ended_cleanly:
            self.error = "the node's stream ended before it was complete"
            return out + error_line(self.error)
        out += self._tool_line(now_ns)
        self.final = self._chunk(now_ns, "", None)
        self.final["done"] = True
        self.final["done_reason"] = done_reason(self.finish_reason)
        self.final.update(metrics(self.usage, self.counted, self.started_ns, self.first_ns, now_ns))
        return out + native_json(self.final) + b"\n"

    @staticmethod
    def error_line(message: str) -> bytes:
        return error_line(message)

    def _chunk(self, now_ns: int, text: str, thinking: str | None) -> dict[str, Any]:
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

    def _event(self, data: str, event: str, now_ns: int) -> bytes:
        if self.error is not None or self.done_seen or self._finished:
            return b""
        if data.strip() == "[DONE]":
            self.done_seen = True
            return b""
        doc = loads(data)
        if doc is None and "\n" in data:  # data lines that should each have been an event
            return b"".join(self._event(line, event, now_ns) for line in data.split("\n") if line.strip())
        if event == "error" and not (isinstance(doc, dict) and doc.get("error")):
            doc = {"error": doc if isinstance(doc, dict | str) else data}
        if not isinstance(doc, dict):
            return b""
        if doc.get("error"):
            self.error = error_message(doc["error"])
            return error_line(self.error)
        usage = doc.get("usage")
        if isinstance(usage, dict) and (
            positive(usage.get("prompt_tokens")) or positive(usage.get("completion_tokens"))
        ):
            self.usage = usage  # Ollama's /v1/completions sends all-zero usage on every chunk
        choice = first_choice(doc)
        if choice is None:
            return b""
        raw_delta = choice.get("delta")
        delta: dict[str, Any] = raw_delta if isinstance(raw_delta, dict) else {}
        text = text_of(choice["text"]) if isinstance(choice.get("text"), str) else text_of(delta.get("content"))
        thinking = text_of(delta.get("reasoning_content")) or text_of(delta.get("reasoning"))
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            self._add_tool_calls(calls)
        out = b""
        if text or thinking:
            self.first_ns = self.first_ns or now_ns
            self.counted += 1
            out = native_json(self._chunk(now_ns, text, thinking)) + b"\n"
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            self.finish_reason = finish
            out += self._tool_line(now_ns)
        return out

    def _add_tool_calls(self, calls: list[Any]) -> None:
        for call in calls:
            if not isinstance(call, dict):
                continue
            slot = self._tools.setdefault(self._index(call), {"id": "", "name": "", "arguments": ""})
            if isinstance(call.get("id"), str) and call["id"]:
                slot["id"] = call["id"]
            fn = call.get("function")
            if isinstance(fn, dict):
                slot["name"] += text_of(fn.get("name"))
                args = fn.get("arguments")
                slot["arguments"] += args if isinstance(args, str) else native_json(args).decode() if args else ""

    def _index(self, call: dict[str, Any]) -> int:
        """The call's slot: its `index`, else (for servers that send none) the slot of its id, a new
        slot for a new id, or the latest slot for a continuation without id."""
        index = call.get("index")
        if isinstance(index, int) and not isinstance(index, bool):
            return index
        call_id = call.get("id")
        if call_id:
            known = [i for i, slot in self._tools.items() if slot["id"] == call_id]
            return known[0] if known else max(self._tools, default=-1) + 1
        return max(self._tools, default=0)

    def _tool_line(self, now_ns: int) -> bytes:
        """The collected tool calls, as one chunk of their own before the done object, as Ollama sends."""
        if not self._tools or self._tools_sent or self.kind != "chat":
            return b""
        self._tools_sent = True
        chunk = self._chunk(now_ns, "", None)
        chunk["message"]["tool_calls"] = native_tool_calls(
            [
                {"id": s["id"], "function": {"name": s["name"], "arguments": s["arguments"]}}
                for _, s in sorted(self._tools.items())
            ]
        )
        return native_json(chunk) + b"\n"
