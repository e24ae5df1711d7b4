"""Anthropic Messages answers as Ollama writes them (anthropic/anthropic.go ToMessagesResponse and
StreamConverter): a whole Message, or SSE events `message_start`, `content_block_start`,
`content_block_delta`, `content_block_stop`, `message_delta`, `message_stop`."""

from __future__ import annotations

from typing import Any

from corral.sim.wire import go_json


def stop_reason(done_reason: str, tool_calls: bool) -> str:
    """mapStopReason: "" stays "" (and is then omitted)."""
    if tool_calls:
        return "tool_use"
    return {"stop": "end_turn", "length": "max_tokens", "": ""}.get(done_reason, "stop_sequence")


def message_body(message_id: str, final: dict[str, Any]) -> dict[str, Any]:
    """ToMessagesResponse: thinking, text, then one tool_use block per call; no blocks is null."""
    message = final.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("thinking"):
        content.append({"type": "thinking", "thinking": message["thinking"]})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    calls = message.get("tool_calls") or []
    for call in calls:
        function = call["function"]
        content.append({"type": "tool_use", "id": call.get("id", ""), "name": function["name"]})
        content[-1]["input"] = function.get("arguments") or {}
    body: dict[str, Any] = {"id": message_id, "type": "message", "role": "assistant", "model": final.get("model", "")}
    body["content"] = content or None
    reason = stop_reason(str(final.get("done_reason", "")), bool(calls))
    if reason:
        body["stop_reason"] = reason
    body["usage"] = {"input_tokens": final.get("prompt_eval_count", 0), "output_tokens": final.get("eval_count", 0)}
    return body


class AnthropicFramer:
    """Native chat chunks → Anthropic SSE events, one content block per kind of output."""

    content_type = b"text/event-stream"

    def __init__(self, message_id: str, model: str, estimated_input_tokens: int) -> None:
        self.message_id, self.model, self.estimate = message_id, model, estimated_input_tokens
        self.first = True
        self.index = 0
        self.thinking_started = self.thinking_done = self.text_started = False
        self.tool_ids: set[str] = set()

    @staticmethod
    def _event(kind: str, data: dict[str, Any]) -> bytes:
        return b"event: " + kind.encode() + b"\ndata: " + go_json({"type": kind, **data}) + b"\n\n"

    def _start(self, block: dict[str, Any]) -> bytes:
        return self._event("content_block_start", {"index": self.index, "content_block": block})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return self._event("content_block_delta", {"index": self.index, "delta": delta})

    def _stop(self) -> bytes:
        return self._event("content_block_stop", {"index": self.index})

    def _end_thinking(self) -> bytes:
        if not self.thinking_started or self.thinking_done:
            return b""
        self.thinking_done = True
        out = self._stop()
        self.index += 1
        return out

    def frame(self, chunk: dict[str, Any]) -> bytes:
        message = chunk.get("message") or {}
        out = b""
        if self.first:
            self.first = False
            tokens = int(chunk.get("prompt_eval_count", 0)) or self.estimate
            start: dict[str, Any] = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model}
            start |= {"content": [], "usage": {"input_tokens": tokens, "output_tokens": 0}}
            out += self._event("message_start", {"message": start})
        if message.get("thinking") and not self.thinking_done:
            if self.text_started:
                out += self._stop()
                self.index += 1
                self.text_started = False
            if not self.thinking_started:
                self.thinking_started = True
                out += self._start({"type": "thinking", "thinking": ""})
            out += self._delta({"type": "thinking_delta", "thinking": message["thinking"]})
        if message.get("content"):
            out += self._end_thinking()
            if not self.text_started:
                self.text_started = True
                out += self._start({"type": "text", "text": ""})
            out += self._delta({"type": "text_delta", "text": message["content"]})
        for call in message.get("tool_calls") or []:
            if call.get("id", "") in self.tool_ids:
                continue
            out += self._end_thinking()
            if self.text_started:
                out += self._stop()
                self.index += 1
                self.text_started = False
            function = call["function"]
            out += self._start({"type": "tool_use", "id": call.get("id", ""), "name": function["name"], "input": {}})
            arguments = go_json(function.get("arguments") or {}).decode()
            out += self._delta({"type": "input_json_delta", "partial_json": arguments}) + self._stop()
            self.tool_ids.add(call.get("id", ""))
            self.index += 1
        if chunk.get("done"):
            if self.text_started or (self.thinking_started and not self.thinking_done):
                out += self._stop()
            reason = stop_reason(str(chunk.get("done_reason", "")), bool(self.tool_ids))
            usage = {"input_tokens": chunk.get("prompt_eval_count", 0), "output_tokens": chunk.get("eval_count", 0)}
            out += self._event("message_delta", {"delta": {"stop_reason": reason} if reason else {}, "usage": usage})
            out += self._event("message_stop", {})
        return out

    def tail(self) -> bytes:
        return b""

    def error(self, message: str) -> bytes:
        # The native error line decodes as an empty chat chunk: no event, and the stream just ends
        # without message_stop.
        return b""
