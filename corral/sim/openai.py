"""The simulated node's OpenAI-compatible routes, as Ollama serves them (ollama-api.md §6)."""

from __future__ import annotations

import base64
import random
import struct
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from corral.sim.wire import BadRequest, Receive, Send, Stream, go_json, parse_json, read_body, send_bytes

if TYPE_CHECKING:
    from corral.sim.native import Engine

SSE = b"text/event-stream"


def _json(obj: object) -> bytes:
    return go_json(obj) + b"\n"


class SseFrames:
    """Turns native chunks into v0.32.10-style SSE chunks; `tail` gives finish, usage and [DONE]."""

    def __init__(self, kind: str, cid: str, model: str, include_usage: bool) -> None:
        self.kind = kind
        self.cid = cid
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())
        self.first = True
        self.final: dict[str, Any] | None = None
        self.tool_calls = False

    def _base(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {
            "id": self.cid,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_ollama",
            "choices": choices,
        }

    def __call__(self, chunk: dict[str, Any]) -> bytes:
        if chunk.get("done"):
            self.final = chunk
            calls = (chunk.get("message") or {}).get("tool_calls")
            if calls:
                self.tool_calls = True
                delta: dict[str, Any] = {"tool_calls": openai_tool_calls(calls)}
                return b"data: " + go_json(self._base([{"index": 0, "delta": delta, "finish_reason": None}])) + b"\n\n"
            return b""
        if self.kind == "chat":
            message = chunk["message"]
            delta = {"content": message.get("content", "")}
            if message.get("thinking"):
                delta = {"reasoning": message["thinking"]}
            if self.first:
                delta = {"role": "assistant", **delta}
                self.first = False
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
        else:
            choice = {"text": chunk.get("response", ""), "index": 0, "finish_reason": None}
        return b"data: " + go_json(self._base([choice])) + b"\n\n"

    def tail(self) -> bytes:
        final = self.final or {}
        reason = final.get("done_reason", "stop")
        if self.tool_calls:
            reason = "tool_calls"
        finish = (
            {"index": 0, "delta": {}, "finish_reason": reason}
            if self.kind == "chat"
            else {"text": "", "index": 0, "finish_reason": reason}
        )
        out = b"data: " + go_json(self._base([finish])) + b"\n\n"
        if self.include_usage:
            usage = _usage(final)
            out += b"data: " + go_json({**self._base([]), "usage": usage}) + b"\n\n"
        return out + b"data: [DONE]\n\n"

    @staticmethod
    def error(message: str) -> bytes:
        return (
            b"data: "
            + go_json({"error": {"message": message, "type": "api_error", "param": None, "code": None}})
            + b"\n\n"
        )


def openai_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Native tool calls (arguments as an object) in the OpenAI shape (arguments as a JSON string)."""
    return [
        {
            "id": c["id"],
            "index": i,
            "type": "function",
            "function": {"name": c["function"]["name"], "arguments": go_json(c["function"]["arguments"]).decode()},
        }
        for i, c in enumerate(calls)
    ]


def _usage(final: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(final.get("prompt_eval_count", 0)), int(final.get("eval_count", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class OpenAIRoutes:
    def __init__(self, engine: Engine, relay: Callable[..., Awaitable[None]]) -> None:
        self.engine = engine
        self.relay = relay
        self.rng = random.Random(1)

    async def handle(self, path: str, receive: Receive, send: Send) -> None:
        if path == "/v1/models":
            data = [self._model(m.name, m.modified_at.timestamp()) for m in self.engine.models.values()]
            await send_bytes(send, 200, _json({"object": "list", "data": data}), b"application/json")
            return
        if path.startswith("/v1/models/"):
            name = path[len("/v1/models/") :]
            info = self.engine.find(name)
            await send_bytes(send, 200, _json(self._model(name, info.modified_at.timestamp())), b"application/json")
            return
        doc = parse_json(await read_body(receive))
        if path == "/v1/embeddings":
            await self.embeddings(doc, send)
        elif path == "/v1/chat/completions":
            await self.complete("chat", doc, receive, send)
        else:
            await self.complete("generate", doc, receive, send)

    @staticmethod
    def _model(name: str, created: float) -> dict[str, Any]:
        owner = name.split("/")[0] if "/" in name else "library"
        return {"id": name, "object": "model", "created": int(created), "owned_by": owner}

    def _native(self, kind: str, doc: dict[str, Any]) -> tuple[dict[str, Any], str]:
        options: dict[str, Any] = {"temperature": doc.get("temperature", 1.0), "top_p": doc.get("top_p", 1.0)}
        for src, dst in (("max_tokens", "num_predict"), ("seed", "seed"), ("stop", "stop")):
            if doc.get(src) is not None:
                options[dst] = doc[src]
        native: dict[str, Any] = {"model": doc.get("model"), "options": options, "tools": doc.get("tools")}
        if kind == "chat":
            messages = doc.get("messages")
            if not isinstance(messages, list) or not messages:
                raise BadRequest(400, f"{messages!r} is too short - 'messages'")
            parts = []
            for m in messages:
                content = m.get("content") if isinstance(m, dict) else None
                if isinstance(content, list):
                    for part in content:
                        url = part.get("image_url") if isinstance(part, dict) else None
                        url = url.get("url") if isinstance(url, dict) else url
                        if isinstance(url, str) and not url.startswith("data:"):
                            raise BadRequest(
                                400, "image URLs are not currently supported, please use base64 encoded data instead"
                            )
                        if isinstance(part, dict) and part.get("type") == "text":
                            parts.append(str(part.get("text", "")))
                elif content:
                    parts.append(str(content))
            text = " ".join(parts) or "."
        else:
            prompt = doc.get("prompt")
            if not isinstance(prompt, str):
                raise BadRequest(400, "invalid prompt: must be a string")
            text = prompt
        if doc.get("response_format", {}) and doc["response_format"].get("type") in ("json_object", "json_schema"):
            native["format"] = "json"
        return native, text

    async def complete(self, kind: str, doc: dict[str, Any], receive: Receive, send: Send) -> None:
        native, text = self._native(kind, doc)
        info = self.engine.find(doc.get("model"))
        prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
        cid = f"{prefix}{self.rng.randrange(999)}"
        chunks = self.engine.infer(kind, native, info, text)
        if not doc.get("stream"):
            parts = [c async for c in chunks]
            final = parts[-1]
            key = "message" if kind == "chat" else "response"
            content = "".join((p["message"]["content"] if kind == "chat" else p[key]) for p in parts)
            reason = final.get("done_reason", "stop")
            if kind == "chat":
                message: dict[str, Any] = {"role": "assistant", "content": content}
                calls = final["message"].get("tool_calls")
                if calls:
                    message["tool_calls"] = openai_tool_calls(calls)
                    reason = "tool_calls"
                choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": reason}
                obj = "chat.completion"
            else:
                choice = {"text": content, "index": 0, "finish_reason": reason}
                obj = "text_completion"
            body = {
                "id": cid,
                "object": obj,
                "created": int(time.time()),
                "model": doc["model"],
                "system_fingerprint": "fp_ollama",
                "choices": [choice],
                "usage": _usage(final),
            }
            await send_bytes(send, 200, _json(body), b"application/json")
            return
        include_usage = bool((doc.get("stream_options") or {}).get("include_usage"))
        frames = SseFrames(kind, cid, doc["model"], include_usage)
        await self.relay(Stream(send, receive, SSE), chunks, frames, SseFrames.error)

    async def embeddings(self, doc: dict[str, Any], send: Send) -> None:
        info = self.engine.find(doc.get("model"), quoted=True)
        raw = doc.get("input")
        if raw == "":
            raw = [""]
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
            inputs = raw
        else:
            raise BadRequest(400, "invalid input")
        encoding = str(doc.get("encoding_format") or "float").lower()
        if encoding not in ("float", "base64"):
            raise BadRequest(
                400,
                f"Invalid value for 'encoding_format' = {doc.get('encoding_format')}. "
                "Supported values: ['float', 'base64'].",
            )
        vectors = self.engine.embeddings(info, inputs, doc.get("dimensions"))
        data = []
        for i, vector in enumerate(vectors):
            value: Any = vector
            if encoding == "base64":
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "embedding": value, "index": i})
        tokens = sum(len(t.split()) for t in inputs)
        body = {
            "object": "list",
            "data": data,
            "model": doc["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        await send_bytes(send, 200, _json(body), b"application/json")
