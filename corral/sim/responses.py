"""`POST /v1/responses`, the OpenAI Responses API as Ollama serves it (middleware/openai.go
ResponsesMiddleware, openai/responses.go): the request becomes a native chat request, run by the
same engine, and the answer is written back as a Responses object or its SSE events."""

from __future__ import annotations

import json
import random
import time
from typing import Any

from corral.sim.engine import Engine
from corral.sim.gojson import ANY, RAW_PAIRS, STRING, Pairs, custom, decode_value, kind_of, struct
from corral.sim.openai import check_image_url, openai_tool_calls, think_from_effort
from corral.sim.request import check_top_logprobs, prepare
from corral.sim.responses_events import ResponsesFramer, response_object
from corral.sim.stream import collect, merge, relay
from corral.sim.wire import BadRequest, Conn, go_json

# The shapes ResponsesInput.UnmarshalJSON and its helpers decode items into (openai/responses.go).
_TYPE_ROLE = struct(
    'struct { Type string "json:\\"type\\""; Role string "json:\\"role\\"" }', {"type": STRING, "role": STRING}
)
_NOT_RAW_ITEMS = "json: cannot unmarshal {} into Go value of type []json.RawMessage"
_MESSAGE = struct("openai.ResponsesInputMessage", {"type": STRING, "role": STRING, "content": RAW_PAIRS})
_CONTENT = {
    "input_text": struct("openai.ResponsesTextContent", {"type": STRING, "text": STRING}),
    "output_text": struct("openai.ResponsesOutputTextContent", {"type": STRING, "text": STRING}),
    "input_image": struct(
        "openai.ResponsesImageContent", {"type": STRING, "detail": STRING, "file_id": STRING, "image_url": STRING}
    ),
    "input_file": struct("openai.ResponsesFileContent", {"type": STRING, "file_data": STRING, "filename": STRING}),
}
_ITEMS = {
    "function_call": struct(
        "openai.ResponsesFunctionCall",
        {"id": STRING, "type": STRING, "call_id": STRING, "name": STRING, "arguments": STRING},
    ),
    "function_call_output": struct(
        "openai.ResponsesFunctionCallOutput", {"type": STRING, "call_id": STRING, "output": ANY}
    ),
    "reasoning": struct(
        "openai.ResponsesReasoningInput", {"id": STRING, "type": STRING, "summary": ANY, "encrypted_content": STRING}
    ),
}


def _content(raw: Any) -> tuple[str, int]:
    """Message content: a string, or items whose texts are joined; images are checked and counted."""
    if raw is None or isinstance(raw, str):
        return raw or "", 0
    if not isinstance(raw, list) or isinstance(raw, Pairs):
        raise BadRequest(
            400,
            "content must be a string or array: " + _NOT_RAW_ITEMS.format(kind_of(raw)),
        )
    text, images = "", 0
    for j, item in enumerate(raw):
        kind = decode_value(item, struct("t", {"type": STRING})).get("type", "") if isinstance(item, Pairs) else ""
        if kind not in _CONTENT:
            raise BadRequest(400, f"content[{j}]: unknown content type: {kind}")
        part = decode_value(item, _CONTENT[kind])
        if kind in ("input_text", "output_text"):
            text += part.get("text", "")
        elif kind == "input_image" and part.get("image_url"):
            check_image_url(part["image_url"])
            images += 1
        elif kind == "input_file":
            raise BadRequest(400, "file inputs are not currently supported")
    return text, images


def _items(value: Any) -> list[tuple[str, dict[str, Any]]]:
    """ResponsesInput.UnmarshalJSON: a string (one user message) or an array of typed items."""
    if value is None or isinstance(value, str):
        return [("text", {"text": value or ""})]
    if not isinstance(value, list) or isinstance(value, Pairs):
        raise BadRequest(
            400,
            "input must be a string or array: " + _NOT_RAW_ITEMS.format(kind_of(value)),
        )
    out = []
    for i, raw in enumerate(value):
        try:
            head = decode_value(raw, _TYPE_ROLE) or {}
            kind = head.get("type") or ("message" if head.get("role") else "")
            if kind == "message":
                message = decode_value(raw, _MESSAGE)
                text, images = _content(message.get("content"))
                out.append(("message", {"role": message.get("role", ""), "content": text, "images": images}))
            elif kind in _ITEMS:
                out.append((kind, decode_value(raw, _ITEMS[kind])))
            elif kind == "web_search_call":
                continue  # history metadata only
            elif not kind:
                raise BadRequest(400, "input item missing required 'type' field")
            else:
                raise BadRequest(400, f"unknown input item type: {json.dumps(kind, ensure_ascii=False)}")
        except BadRequest as exc:
            raise BadRequest(400, f"input[{i}]: {exc.message}") from None
    return out


INPUT = custom("openai.ResponsesInput", _items, pairs=True)


def _output_text(output: Any) -> str:
    if isinstance(output, list):
        return "".join(str(p.get("text", "")) for p in output if isinstance(p, dict))
    return output if isinstance(output, str) else ""


def to_native(doc: dict[str, Any]) -> dict[str, Any]:
    """FromResponsesRequest (openai/responses.go): the native chat request."""
    messages: list[dict[str, Any]] = []
    if doc.get("instructions"):
        messages.append({"role": "system", "content": doc["instructions"]})
    thinking = ""
    for kind, item in doc.get("input") or []:
        if kind == "text":
            if item["text"]:
                messages.append({"role": "user", "content": item["text"]})
        elif kind == "reasoning":
            thinking = item.get("encrypted_content", "")
        elif kind == "message":
            message = {"role": item["role"], "content": item["content"]}
            if message["role"] == "assistant" and thinking:
                message["thinking"], thinking = thinking, ""
            messages.append(message)
        elif kind == "function_call":
            try:
                args = json.loads(item.get("arguments") or "{}")
            except ValueError as exc:
                raise BadRequest(400, f"failed to parse function call arguments: {exc}") from None
            call = {"id": item.get("call_id", ""), "function": {"name": item.get("name", ""), "arguments": args}}
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = _output_text(item.get("output"))
            messages.append({"role": "tool", "content": output, "tool_call_id": item.get("call_id", "")})
    if thinking:
        messages.append({"role": "assistant", "content": "", "thinking": thinking})
    options: dict[str, Any] = {"temperature": 1.0 if doc.get("temperature") is None else doc["temperature"]}
    if doc.get("top_p") is not None:
        options["top_p"] = doc["top_p"]
    if doc.get("max_output_tokens") is not None:
        options["num_predict"] = doc["max_output_tokens"]
    native: dict[str, Any] = {"model": doc.get("model", ""), "messages": messages, "options": options}
    think = think_from_effort((doc.get("reasoning") or {}).get("effort") or "")
    if think is not None:
        native["think"] = think
    tools = []
    for tool in doc.get("tools") or []:
        function = {"name": tool.get("name", ""), "description": tool.get("description") or ""}
        function["parameters"] = tool.get("parameters") or {}
        tools.append({"type": tool.get("type", ""), "function": function})
    if tools:
        native["tools"] = tools
    fmt = ((doc.get("text") or {}).get("format")) or {}
    if fmt.get("type") == "json_schema" and fmt.get("schema") is not None:
        native["format"] = fmt["schema"]
    return native


class ResponsesRoutes:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def create(self, conn: Conn, doc: dict[str, Any]) -> None:
        native = to_native(doc)
        check_top_logprobs(native)
        if not str(native.get("model") or "").strip():
            raise BadRequest(400, "model is required")
        info = self.engine.find(native["model"])
        inf = prepare("chat", native, info, self.engine.options.keep_alive_default)
        response_id, item_id = f"resp_{random.randrange(999999)}", f"msg_{random.randrange(999999)}"
        stats, options = self.engine.stats, self.engine.options
        if inf.empty:
            final = await self.engine.load(inf)
        else:
            chunks = self.engine.generate(inf)
            if doc.get("stream"):
                await relay(conn, chunks, ResponsesFramer(response_id, item_id, doc), options, stats)
                return
            final = merge("chat", await collect(chunks, options, stats))
        await conn.respond(200, go_json(self._whole(response_id, item_id, doc, final)) + b"\n", b"application/json")

    @staticmethod
    def _whole(response_id: str, item_id: str, doc: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
        """ToResponse: one reasoning item if there was thinking, then the function calls or the message."""
        message = final.get("message") or {}
        output: list[dict[str, Any]] = []
        if message.get("thinking"):
            summary = [{"type": "summary_text", "text": message["thinking"]}]
            reasoning = {"id": f"rs_{response_id}", "type": "reasoning", "summary": summary}
            output.append(reasoning | {"encrypted_content": message["thinking"]})
        calls = openai_tool_calls(message.get("tool_calls") or [])
        for i, call in enumerate(calls):
            function = call["function"]
            output.append(
                {
                    "id": f"fc_{response_id}_{i}",
                    "type": "function_call",
                    "status": "completed",
                    "call_id": call["id"],
                    "name": function["name"],
                    "arguments": function["arguments"],
                }
            )
        if not calls:
            text = {"type": "output_text", "text": message.get("content", ""), "annotations": [], "logprobs": []}
            output.append(
                {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [text]}
            )
        body = response_object(response_id, doc, "completed", output, final, sort=False)
        body["created_at"] = int(time.time())
        body["completed_at"] = int(time.time())
        return body
