"""`POST /v1/messages`, the Anthropic Messages API as Ollama serves it
(middleware/anthropic.go AnthropicMessagesMiddleware, anthropic/anthropic.go): the request
becomes a native chat request, and the answer is written back as a Message or as Anthropic's
SSE events (message_start, content_block_start/delta/stop, message_delta, message_stop)."""

from __future__ import annotations

import json
import secrets
from typing import Any

from corral.sim.anthropic_events import AnthropicFramer, message_body
from corral.sim.engine import Engine
from corral.sim.gobase64 import base64_error
from corral.sim.gojson import (
    ANY,
    BOOL,
    RAW_PAIRS,
    STRING,
    Pairs,
    custom,
    decode_value,
    ptr,
    struct,
    type_error,
)
from corral.sim.request import prepare
from corral.sim.stream import collect, merge, relay
from corral.sim.wire import BadRequest, Conn, go_json

_SOURCE = struct("anthropic.ImageSource", {"type": STRING, "media_type": STRING, "data": STRING, "url": STRING})
_BLOCK = struct(
    "anthropic.ContentBlock",
    {
        "type": STRING,
        "text": ptr(STRING),
        "citations": ANY,
        "source": ptr(_SOURCE),
        "id": STRING,
        "name": STRING,
        "input": ANY,
        "tool_use_id": STRING,
        "content": ANY,
        "is_error": BOOL,
        "thinking": ptr(STRING),
        "signature": STRING,
    },
)
# MessageParam.UnmarshalJSON reads the message into this anonymous struct first.
_PARAM = struct(
    'struct { Role string "json:\\"role\\""; Content json.RawMessage "json:\\"content\\"" }',
    {"role": STRING, "content": RAW_PAIRS},
)


def _message_param(value: Any) -> dict[str, Any]:
    """MessageParam.UnmarshalJSON: content is a string (one text block) or an array of blocks."""
    raw = decode_value(value, _PARAM) or {}
    if "content" not in raw:
        raise BadRequest(400, "unexpected end of JSON input")  # json.Unmarshal of an empty RawMessage
    content = raw["content"]
    if content is None or isinstance(content, str):
        return {"role": raw.get("role", ""), "content": [{"type": "text", "text": content or ""}]}
    if not isinstance(content, list) or isinstance(content, Pairs):
        raise type_error(content, "[]anthropic.ContentBlock")
    return {"role": raw.get("role", ""), "content": [decode_value(b, _BLOCK) or {} for b in content]}


MESSAGE_PARAM = custom("anthropic.MessageParam", _message_param, pairs=True)


def _image(source: dict[str, Any] | None) -> None:
    """resolveImageSource: only base64 sources, and they must decode."""
    if source is None:
        raise BadRequest(400, "invalid image source")
    if source.get("type") != "base64":
        raise BadRequest(400, f"invalid image source type: {source.get('type', '')}. Only base64 images are supported.")
    offset = base64_error(source.get("data", ""))
    if offset is not None:
        raise BadRequest(400, f"invalid base64 image data: illegal base64 data at input byte {offset}")


def _tool_result(content: Any) -> str:
    if isinstance(content, str):
        return content
    text = ""
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            text += block["text"]
        elif block.get("type") == "image":
            if not isinstance(block.get("source"), dict):
                raise BadRequest(400, "invalid tool_result image source")
            _image(block["source"])
    return text


def _convert(message: dict[str, Any]) -> list[dict[str, Any]]:
    """convertMessage: text, images, tool uses and thinking make one message; tool results become
    tool messages (before it for a user turn, after it otherwise)."""
    role = str(message.get("role", "")).lower()
    text, thinking, calls, results, images = "", "", [], [], 0
    for block in message["content"]:
        kind = block.get("type")
        if kind == "text":
            text += block.get("text") or ""
        elif kind == "image":
            _image(block.get("source"))
            images += 1
        elif kind in ("tool_use", "server_tool_use"):
            if kind == "tool_use" and not block.get("id"):
                raise BadRequest(400, "tool_use block missing required 'id' field")
            if kind == "tool_use" and not block.get("name"):
                raise BadRequest(400, "tool_use block missing required 'name' field")
            function = {"name": block.get("name", ""), "arguments": block.get("input") or {}}
            calls.append({"id": block.get("id", ""), "function": function})
        elif kind in ("tool_result", "web_search_tool_result"):
            content = _tool_result(block.get("content"))
            results.append({"role": "tool", "content": content, "tool_call_id": block.get("tool_use_id", "")})
        elif kind == "thinking":
            thinking = block.get("thinking") or ""
    out = results if role == "user" else []
    if text or images or calls or thinking:
        out.append({"role": role, "content": text, "tool_calls": calls, "thinking": thinking})
    return out if role == "user" else out + results


def to_native(doc: dict[str, Any]) -> dict[str, Any]:
    """FromMessagesRequest (anthropic/anthropic.go)."""
    messages: list[dict[str, Any]] = []
    system = doc.get("system")
    if isinstance(system, list):
        system = "".join(
            b["text"]
            for b in system
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    for message in doc.get("messages") or []:
        messages += _convert(message)
    options: dict[str, Any] = {"num_predict": doc.get("max_tokens", 0)}
    for src, dst in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k")):
        if doc.get(src) is not None:
            options[dst] = doc[src]
    if doc.get("stop_sequences"):
        options["stop"] = doc["stop_sequences"]
    tools = []
    for tool in doc.get("tools") or []:
        schema = tool.get("input_schema")
        if schema is not None and not isinstance(schema, dict):
            name = json.dumps(tool.get("name", ""), ensure_ascii=False)
            error = type_error(schema, "api.ToolFunctionParameters").message
            raise BadRequest(400, f"invalid input_schema for tool {name}: {error}")
        function = {
            "name": tool.get("name", ""),
            "description": tool.get("description", ""),
            "parameters": schema or {},
        }
        tools.append({"type": "function", "function": function})
    native: dict[str, Any] = {"model": doc.get("model", ""), "messages": messages, "options": options}
    native["stream"] = bool(doc.get("stream"))
    if tools:
        native["tools"] = tools
    thinking = (doc.get("thinking") or {}).get("type")
    effort = str((doc.get("output_config") or {}).get("effort") or "").strip().lower()
    effort = "high" if effort == "xhigh" else effort
    if thinking in ("enabled", "disabled"):
        native["think"] = thinking == "enabled"
    elif effort in ("high", "medium", "low", "max"):
        native["think"] = effort
    return native


def estimate_input_tokens(doc: dict[str, Any]) -> int:
    """EstimateInputTokens: about four bytes a token, for message_start before the real count."""
    system = doc.get("system")
    total = len(system.encode()) if isinstance(system, str) else len(go_json(system)) if system else 0
    for message in doc.get("messages") or []:
        total += len(str(message.get("role", "")).encode())
        for block in message["content"]:
            total += len((block.get("text") or "").encode()) + len((block.get("thinking") or "").encode())
            if block.get("type") in ("tool_use", "tool_result"):
                total += len(go_json(block))
    for tool in doc.get("tools") or []:
        schema = tool.get("input_schema")
        total += len(str(tool.get("name", "")).encode()) + len(str(tool.get("description", "")).encode())
        total += len(go_json(schema)) if schema is not None else 0
    tokens = total // 4
    return 1 if tokens == 0 and (doc.get("messages") or system is not None) else tokens


class AnthropicRoutes:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def messages(self, conn: Conn, doc: dict[str, Any]) -> None:
        # The middleware's own checks, in its order, before the chat handler's.
        if not doc.get("model"):
            raise BadRequest(400, "model is required")
        if int(doc.get("max_tokens") or 0) <= 0:
            raise BadRequest(400, "max_tokens is required and must be positive")
        if not doc.get("messages"):
            raise BadRequest(400, "messages is required")
        native = to_native(doc)
        info = self.engine.find(native["model"])
        inf = prepare("chat", native, info, self.engine.options.keep_alive_default, relax_thinking=True)
        message_id = "msg_" + secrets.token_hex(12)
        stats, options = self.engine.stats, self.engine.options
        if inf.empty:
            final = await self.engine.load(inf)
        else:
            chunks = self.engine.generate(inf)
            if doc.get("stream"):
                framer = AnthropicFramer(message_id, str(doc["model"]), estimate_input_tokens(doc))
                await relay(conn, chunks, framer, options, stats)
                return
            final = merge("chat", await collect(chunks, options, stats))
        await conn.respond(200, go_json(message_body(message_id, final)) + b"\n", b"application/json")
