"""The simulated node's OpenAI-compatible routes, as Ollama serves them (ollama-api.md §6).

Requests are translated to native ones (as Ollama's middleware does), run by the same engine, and the
native chunks are written back in the v0.32.10+ SSE wire format.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from typing import Any

from corral.sim.engine import Engine
from corral.sim.gobase64 import base64_error
from corral.sim.request import check_top_logprobs, prepare
from corral.sim.stream import collect, merge, relay
from corral.sim.wire import BadRequest, Conn, go_json

# openai/openai.go thinkFromReasoningEffort; "" means not given.
EFFORT: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
}
EFFORT |= {"xhigh": "max", "ultra": "max"}
_EFFORT_HELP = '(must be "minimal", "low", "medium", "high", "xhigh", "ultra", "max", or "none")'
_IMAGE_PREFIXES = ("data:;base64,", *(f"data:image/{t};base64," for t in ("jpeg", "jpg", "png", "webp")))


def think_from_effort(effort: str) -> bool | str | None:
    if not effort:
        return None
    if effort not in EFFORT:
        raise BadRequest(400, f"invalid reasoning value: {json.dumps(effort, ensure_ascii=False)} {_EFFORT_HELP}")
    return EFFORT[effort]


def check_image_url(url: str) -> None:
    """openai/openai.go decodeImageURL: a base64 data URL of a known image type."""
    if url.startswith(("http://", "https://")):
        raise BadRequest(400, "image URLs are not currently supported, please use base64 encoded data instead")
    prefix = next((p for p in _IMAGE_PREFIXES if url.startswith(p)), None)
    if prefix is None or base64_error(url[len(prefix) :]) is not None:
        raise BadRequest(400, "invalid image input")


def _json(obj: object) -> bytes:
    return go_json(obj) + b"\n"  # json.NewEncoder().Encode adds the newline


def openai_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Native tool calls (arguments an object) in the OpenAI shape (arguments a JSON string)."""
    return [
        {
            "id": c.get("id", f"call_{i}"),
            "index": i,
            "type": "function",
            "function": {"name": c["function"]["name"], "arguments": go_json(c["function"]["arguments"]).decode()},
        }
        for i, c in enumerate(calls)
    ]


def usage(final: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(final.get("prompt_eval_count", 0)), int(final.get("eval_count", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class SseFramer:
    """Native chunks → SSE events: role only in the first delta, finish_reason on its own chunk, then
    the usage chunk (if asked for) and [DONE]."""

    content_type = b"text/event-stream"

    def __init__(self, kind: str, cid: str, model: str, include_usage: bool) -> None:
        self.kind, self.cid, self.model, self.include_usage = kind, cid, model, include_usage
        self.created = int(time.time())  # one value for the whole stream
        self.first = True
        self.final: dict[str, Any] = {}
        self.tool_calls = False

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        body = {"id": self.cid, "object": obj, "created": self.created, "model": self.model}
        body |= {"system_fingerprint": "fp_ollama", "choices": choices, **extra}
        return b"data: " + go_json(body) + b"\n\n"

    def _delta(self, delta: dict[str, Any]) -> bytes:
        if self.first:
            delta = {"role": "assistant", **delta}
            self.first = False
        return self._event([{"index": 0, "delta": delta, "finish_reason": None}])

    def frame(self, chunk: dict[str, Any]) -> bytes:
        if chunk.get("done"):
            self.final = chunk  # its metrics feed the usage chunk; it has no text of its own
            return b""
        if self.kind != "chat":
            zero = {"usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
            choice = {"text": chunk.get("response", ""), "index": 0, "finish_reason": None}
            return self._event([choice], **(zero if self.include_usage else {}))
        message = chunk["message"]
        out = b""
        if message.get("thinking"):
            out += self._delta({"reasoning": message["thinking"]})
        if message.get("content"):
            out += self._delta({"content": message["content"]})
        if message.get("tool_calls"):
            self.tool_calls = True
            out += self._delta({"tool_calls": openai_tool_calls(message["tool_calls"])})
        return out

    def tail(self) -> bytes:
        reason = "tool_calls" if self.tool_calls and self.final.get("done_reason") == "stop" else None
        reason = reason or self.final.get("done_reason", "stop")
        if self.kind == "chat":
            out = self._event([{"index": 0, "delta": {}, "finish_reason": reason}])
        else:
            out = self._event([{"text": "", "index": 0, "finish_reason": reason}])
        if self.include_usage:
            out += self._event([], usage=usage(self.final))
        return out + b"data: [DONE]\n\n"

    def error(self, message: str) -> bytes:
        # Ollama's quirk: the native error line is decoded as an empty response and sent as an empty
        # delta; the stream then ends with no finish chunk and no [DONE].
        if self.kind == "chat":
            return self._delta({"content": ""})
        return self._event([{"text": "", "index": 0, "finish_reason": None}])


class OpenAIRoutes:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.counter = 0

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter % 999}"

    def models(self) -> bytes:
        data = [self._model(m.name, m.modified_at) for m in self.engine.models.values()]
        return _json({"object": "list", "data": data})

    def model(self, name: str) -> bytes:
        return _json(self._model(name, self.engine.find(name).modified_at))

    @staticmethod
    def _model(name: str, created: float) -> dict[str, Any]:
        owner = name.split("/")[0] if "/" in name else "library"
        return {"id": name, "object": "model", "created": int(created), "owned_by": owner}

    def _native(self, kind: str, doc: dict[str, Any]) -> dict[str, Any]:
        """The native request Ollama's middleware builds (openai.go FromChatRequest / FromCompleteRequest)."""
        options: dict[str, Any] = {"temperature": doc.get("temperature", 1.0), "top_p": doc.get("top_p") or 1.0}
        for src, dst in (("max_tokens", "num_predict"), ("seed", "seed"), ("stop", "stop")):
            if doc.get(src) is not None:
                options[dst] = [doc[src]] if src == "stop" and isinstance(doc[src], str) else doc[src]
        for src in ("frequency_penalty", "presence_penalty"):
            if doc.get(src) is not None:
                options[src] = doc[src]
        native: dict[str, Any] = {"model": doc.get("model"), "options": options, "stream": bool(doc.get("stream"))}
        fmt = doc.get("response_format") or {}
        if isinstance(fmt, dict) and fmt.get("type") == "json_object":
            native["format"] = "json"
        elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            native["format"] = (fmt.get("json_schema") or {}).get("schema") or "json"
        if kind == "generate":
            if not isinstance(doc.get("prompt"), str):
                raise BadRequest(400, "invalid type for 'prompt' field: expected string")
            native["prompt"] = doc["prompt"]
            return native
        messages = doc.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest(400, "[] is too short - 'messages'")
        native["messages"] = [self._message(m) for m in messages if isinstance(m, dict)]
        if doc.get("tools"):
            native["tools"] = doc["tools"]
        reasoning = doc.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else doc.get("reasoning_effort")
        think = think_from_effort(effort or "")
        if think is not None:
            native["think"] = think
        native["top_logprobs"] = doc.get("top_logprobs") or 0
        return native

    @staticmethod
    def _message(m: dict[str, Any]) -> dict[str, Any]:
        content = m.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                if not isinstance(part, dict):
                    continue
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if part.get("type") == "image_url":
                    if not isinstance(url, str):
                        raise BadRequest(400, "invalid message format")
                    check_image_url(url)
                if part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
            content = "\n".join(texts)
        out: dict[str, Any] = {"role": m.get("role"), "content": content or ""}
        for call in m.get("tool_calls") or []:
            try:
                json.loads((call.get("function") or {}).get("arguments") or "{}")
            except (ValueError, AttributeError) as exc:
                raise BadRequest(400, "invalid tool call arguments") from exc
        return out

    async def complete(self, kind: str, conn: Conn, doc: dict[str, Any]) -> None:
        native = self._native(kind, doc)
        check_top_logprobs(native)
        if kind == "chat" and not str(native.get("model") or "").strip():
            raise BadRequest(400, "model is required")
        info = self.engine.find(native.get("model"))
        inf = prepare(kind, native, info, self.engine.options.keep_alive_default)
        cid = self._id("chatcmpl-" if kind == "chat" else "cmpl-")
        model = str(doc.get("model"))
        chunks = self.engine.generate(inf)
        stats, options = self.engine.stats, self.engine.options
        if doc.get("stream"):
            include = bool((doc.get("stream_options") or {}).get("include_usage"))
            await relay(conn, chunks, SseFramer(kind, cid, model, include), options, stats)
            return
        final = merge(kind, await collect(chunks, options, stats))
        reason = final.get("done_reason", "stop")
        if kind == "chat":
            msg = final["message"]
            message: dict[str, Any] = {"role": "assistant", "content": msg.get("content", "")}
            if msg.get("thinking"):
                message["reasoning"] = msg["thinking"]
            if msg.get("tool_calls"):
                message["tool_calls"] = openai_tool_calls(msg["tool_calls"])
                reason = "tool_calls" if reason == "stop" else reason
            choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": reason}
        else:
            choice = {"text": final.get("response", ""), "index": 0, "finish_reason": reason}
        body = {
            "id": cid,
            "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_ollama",
            "choices": [choice],
            "usage": usage(final),
        }
        await conn.respond(200, _json(body), b"application/json")

    async def embeddings(self, conn: Conn, doc: dict[str, Any]) -> None:
        raw = doc.get("input")
        if raw == "":
            raw = [""]
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
            inputs = raw
        else:
            raise BadRequest(400, "invalid input")
        encoding = str(doc.get("encoding_format") or "float")
        if encoding.lower() not in ("float", "base64"):
            raise BadRequest(
                400, f"Invalid value for 'encoding_format' = {encoding}. Supported values: ['float', 'base64']."
            )
        if not doc.get("model"):
            raise BadRequest(400, "model is required")
        info = self.engine.find(doc["model"], pull_hint=True)
        dims = doc.get("dimensions") if isinstance(doc.get("dimensions"), int) else None
        # An empty string still gets a vector here (the middleware sends [""], not a load request).
        vectors, tokens = await self.engine.embed(doc, info, [t or " " for t in inputs], dims)
        data = []
        for i, vector in enumerate(vectors):
            value: Any = vector
            if encoding.lower() == "base64":
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "embedding": value, "index": i})
        body = {"object": "list", "data": data, "model": doc["model"]}
        body["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        await conn.respond(200, _json(body), b"application/json")
