"""The Responses API's response object and its SSE events, as Ollama's ResponsesStreamConverter
writes them (openai/responses.go): `response.created`, `response.in_progress`, reasoning and
function-call items, `response.output_text.delta` ..., then `response.completed`.

Stream events are Go maps, so json.Marshal writes their keys sorted; the whole (non-streamed)
response is a struct, written in field order.
"""

from __future__ import annotations

import random
import time
from typing import Any

from corral.sim.openai import openai_tool_calls
from corral.sim.wire import go_json


def usage(final: dict[str, Any]) -> dict[str, Any]:
    prompt, completion = int(final.get("prompt_eval_count", 0)), int(final.get("eval_count", 0))
    return {
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": prompt + completion,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }


def _go_float(value: float | None) -> float | int:
    """A float64 defaulting to 1, as Go prints it: integral values without a fraction (1, not 1.0)."""
    value = 1.0 if value is None else float(value)
    return int(value) if value.is_integer() else value


def response_object(
    response_id: str, doc: dict[str, Any], status: str, output: list[Any], final: dict[str, Any] | None, sort: bool
) -> dict[str, Any]:
    """buildResponseObject (streamed, `sort`) or ToResponse's struct: the request's settings echoed."""
    fmt = ((doc.get("text") or {}).get("format")) or {"type": "text"}
    text_format = {"type": fmt.get("type", "")} | ({"name": fmt["name"]} if fmt.get("name") else {})
    text_format |= {k: fmt[k] for k in ("schema", "strict") if fmt.get(k) is not None}
    tools = [
        {k: t.get(k) for k in ("type", "name", "description", "strict", "parameters")}
        | ({"tools": t["tools"]} if t.get("tools") and not sort else {})
        for t in doc.get("tools") or []
    ]
    asked = doc.get("reasoning") or {}
    reasoning: dict[str, Any] | None = None
    if asked.get("effort") or asked.get("summary"):
        # The stream's map has both keys (null when unset); the struct omits empty ones.
        reasoning = {k: asked.get(k) or None for k in ("effort", "summary") if sort or asked.get(k)}
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "completed_at": None,
        "status": status,
        "incomplete_details": None,
        "model": doc.get("model", ""),
        "previous_response_id": None,
        "instructions": doc.get("instructions") or None,
        "output": output,
        "error": None,
        "tools": tools,
        "tool_choice": "auto",
        "truncation": doc.get("truncation") or "disabled",
        "parallel_tool_calls": True,
        "text": {"format": text_format},
        "top_p": _go_float(doc.get("top_p")),
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "top_logprobs": 0,
        "temperature": _go_float(doc.get("temperature")),
        "reasoning": reasoning,
        "usage": usage(final) if final is not None else None,
        "max_output_tokens": doc.get("max_output_tokens"),
        "max_tool_calls": None,
        "store": False,
        "background": bool(doc.get("background")),
        "service_tier": "default",
        "metadata": {},
        "safety_identifier": None,
        "prompt_cache_key": None,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


class ResponsesFramer:
    """Native chat chunks → Responses SSE events (`event: <type>` then `data: <json>`)."""

    content_type = b"text/event-stream"

    def __init__(self, response_id: str, item_id: str, doc: dict[str, Any]) -> None:
        self.response_id, self.item_id, self.doc = response_id, item_id, doc
        self.sequence = 0
        self.first = True
        self.index = 0  # output_index of the item being written
        self.reasoning_id = ""
        self.thinking = ""
        self.text = ""
        self.text_started = False
        self.tool_calls_sent = False
        self.done_items: list[dict[str, Any]] = []

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        data = data | {"type": kind, "sequence_number": self.sequence}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + go_json(data, sort_keys=True) + b"\n\n"

    def _response(self, status: str, output: list[Any], final: dict[str, Any] | None) -> dict[str, Any]:
        return response_object(self.response_id, self.doc, status, output, final, sort=True)

    def frame(self, chunk: dict[str, Any]) -> bytes:
        message = chunk.get("message") or {}
        out = b""
        if self.first:
            self.first = False
            out += self._event("response.created", {"response": self._response("in_progress", [], None)})
            out += self._event("response.in_progress", {"response": self._response("in_progress", [], None)})
        if message.get("thinking"):
            out += self._thinking(message["thinking"])
        if message.get("tool_calls"):
            out += self._finish_reasoning() + self._tool_calls(message["tool_calls"])
            self.tool_calls_sent = True
        elif not self.tool_calls_sent and message.get("content"):
            out += self._finish_reasoning() + self._text(message["content"])
        if chunk.get("done"):
            out += self._completion(chunk)
        return out

    def _thinking(self, thinking: str) -> bytes:
        out = b""
        if not self.reasoning_id:
            self.reasoning_id = f"rs_{random.randrange(999999)}"
            item = {"id": self.reasoning_id, "type": "reasoning", "summary": []}
            out += self._event("response.output_item.added", {"output_index": self.index, "item": item})
        self.thinking += thinking
        delta = {"item_id": self.reasoning_id, "output_index": self.index, "summary_index": 0, "delta": thinking}
        return out + self._event("response.reasoning_summary_text.delta", delta)

    def _finish_reasoning(self) -> bytes:
        if not self.reasoning_id:
            return b""
        summary = [{"type": "summary_text", "text": self.thinking}]
        item = {"id": self.reasoning_id, "type": "reasoning", "summary": summary, "encrypted_content": self.thinking}
        done = {"item_id": self.reasoning_id, "output_index": self.index, "summary_index": 0, "text": self.thinking}
        out = self._event("response.reasoning_summary_text.done", done)
        out += self._event("response.output_item.done", {"output_index": self.index, "item": item})
        self.done_items.append(item)
        self.reasoning_id, self.thinking = "", ""
        self.index += 1
        return out

    def _tool_calls(self, calls: list[dict[str, Any]]) -> bytes:
        out = b""
        for i, call in enumerate(openai_tool_calls(calls)):
            index, item_id = self.index + i, f"fc_{random.randrange(999999)}_{i}"
            name, arguments = call["function"]["name"], call["function"]["arguments"]
            item = {"id": item_id, "type": "function_call", "call_id": call["id"], "name": name}
            added = item | {"status": "in_progress", "arguments": ""}
            done = item | {"status": "completed", "arguments": arguments}
            self.done_items.append(done)
            out += self._event("response.output_item.added", {"output_index": index, "item": added})
            out += self._event(
                "response.function_call_arguments.delta",
                {"item_id": item_id, "output_index": index, "delta": arguments},
            )
            out += self._event(
                "response.function_call_arguments.done",
                {"item_id": item_id, "output_index": index, "arguments": arguments},
            )
            out += self._event("response.output_item.done", {"output_index": index, "item": done})
        self.index += len(calls)
        return out

    def _message_item(self, status: str, content: list[Any]) -> dict[str, Any]:
        return {"id": self.item_id, "type": "message", "status": status, "role": "assistant", "content": content}

    def _text(self, content: str) -> bytes:
        out = b""
        where = {"item_id": self.item_id, "output_index": self.index, "content_index": 0}
        if not self.text_started:
            self.text_started = True
            added = {"output_index": self.index, "item": self._message_item("in_progress", [])}
            out += self._event("response.output_item.added", added)
            out += self._event("response.content_part.added", where | {"part": _text_part("")})
        self.text += content
        return out + self._event("response.output_text.delta", where | {"delta": content, "logprobs": []})

    def _completion(self, final: dict[str, Any]) -> bytes:
        out = self._finish_reasoning()
        output: list[Any] = list(self.done_items)
        if self.text_started:
            where = {"item_id": self.item_id, "output_index": self.index, "content_index": 0}
            item = self._message_item("completed", [_text_part(self.text)])
            if not self.tool_calls_sent:
                out += self._event("response.output_text.done", where | {"text": self.text, "logprobs": []})
                out += self._event("response.content_part.done", where | {"part": _text_part(self.text)})
                out += self._event("response.output_item.done", {"output_index": self.index, "item": item})
            output.append(item)
        response = self._response("completed", output, final)
        response["completed_at"] = int(time.time())
        return out + self._event("response.completed", {"response": response})

    def tail(self) -> bytes:
        return b""

    def error(self, message: str) -> bytes:
        # The native error line decodes as an empty chat chunk: no event, and the stream just ends.
        return b""
