"""Native Ollama `/api/chat` and `/api/generate` requests as OpenAI requests, for OpenAI-type nodes.

Pure: no I/O, no clock reads. The mapping is docs/ollama-behaviour.md §4 read backwards. Native fields an
OpenAI server has no use for are dropped: load-time options (num_ctx, num_gpu...), keep_alive, raw,
template, context, logprobs, and the sampling options only Ollama knows (repeat_penalty, typical_p...).
"""

from __future__ import annotations

import json
from typing import Any

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"

# top_k and min_p are not OpenAI's, but vLLM, llama.cpp's server and LM Studio all read them.
_NUMBER_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "min_p": "min_p",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
}
_THINK_LEVELS = {"low": "low", "medium": "medium", "high": "high", "max": "high"}
# Leading base64 characters of each format's magic bytes; native images carry no media type.
_IMAGE_MAGIC = (("iVBORw0KGgo", "image/png"), ("/9j/", "image/jpeg"), ("R0lGOD", "image/gif"), ("UklGR", "image/webp"))


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _options(raw: object) -> dict[str, Any]:
    options: dict[str, Any] = raw if isinstance(raw, dict) else {}
    out: dict[str, Any] = {}
    for native, name in _NUMBER_OPTIONS.items():
        if _is_number(options.get(native)):
            out[name] = options[native]
    top_k = _int(options.get("top_k"))
    if top_k is not None and top_k > 0:
        out["top_k"] = top_k
    seed = _int(options.get("seed"))
    if seed is not None and seed >= 0:  # Ollama's -1 means "random", which is OpenAI's absent seed
        out["seed"] = seed
    num_predict = _int(options.get("num_predict"))
    if num_predict is not None and num_predict > 0:  # -1/-2 mean "no limit" natively
        out["max_tokens"] = num_predict
    stop = options.get("stop")
    if isinstance(stop, str) and stop:
        out["stop"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop"] = [s for s in stop if isinstance(s, str)]
    return out


def _common(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"model": doc.get("model", "")}
    out.update(_options(doc.get("options")))
    fmt = doc.get("format")
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    think = doc.get("think")
    if isinstance(think, str) and think in _THINK_LEVELS:
        out["reasoning_effort"] = _THINK_LEVELS[think]
    stream = doc.get("stream") is not False  # native routes stream unless told not to (§1.4)
    out["stream"] = stream
    if stream:
        out["stream_options"] = {"include_usage": True}
    return out


def image_url(image: str) -> str:
    """A native base64 image as a data URL, its media type guessed from the leading bytes."""
    if image.startswith("data:"):
        return image
    media = next((m for prefix, m in _IMAGE_MAGIC if image.startswith(prefix)), "image/png")
    return f"data:{media};base64,{image}"


def _arguments(value: object) -> str:
    if isinstance(value, str):
        return value  # already the JSON string OpenAI wants
    return json.dumps(value if value is not None else {}, separators=(",", ":"))


def _tool_calls(calls: list[Any], at: int) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(c for c in calls if isinstance(c, dict)):
        raw = call.get("function")
        fn: dict[str, Any] = raw if isinstance(raw, dict) else {}
        out.append(
            {
                "id": str(call.get("id") or f"call_{at}_{i}"),
                "type": "function",
                "function": {"name": str(fn.get("name", "")), "arguments": _arguments(fn.get("arguments"))},
            }
        )
    return out


def _content(msg: dict[str, Any]) -> str | list[dict[str, Any]]:
    text = msg.get("content")
    text = text if isinstance(text, str) else ""
    images = [i for i in msg.get("images") or [] if isinstance(i, str)]
    if not images:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    return parts + [{"type": "image_url", "image_url": {"url": image_url(i)}} for i in images]


def messages_to_openai(messages: list[Any]) -> list[dict[str, Any]]:
    """Native messages as OpenAI messages. A tool result without `tool_call_id` is linked to the latest
    assistant call of the same `tool_name` (else the next unanswered one), since OpenAI servers need it."""
    out: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []  # the latest assistant tool calls not yet answered
    for at, msg in enumerate(m for m in messages if isinstance(m, dict)):
        role = str(msg.get("role") or "user").lower()
        item: dict[str, Any] = {"role": role, "content": _content(msg)}
        calls = msg.get("tool_calls")
        if isinstance(calls, list) and calls:
            item["tool_calls"] = _tool_calls(calls, at)
            pending = list(item["tool_calls"])
        if role == "tool":
            name = msg.get("tool_name")
            match = next((c for c in pending if c["function"]["name"] == name), pending[0] if pending else None)
            call_id = msg.get("tool_call_id") or (match["id"] if match else None)
            if match is not None and match["id"] == call_id:
                pending.remove(match)
            if call_id:
                item["tool_call_id"] = str(call_id)
            if isinstance(name, str) and name:
                item["name"] = name
        out.append(item)
    return out


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    return [{"type": "function", **t} for t in tools if isinstance(t, dict)]


def chat_request_to_openai(doc: dict[str, Any]) -> dict[str, Any]:
    """A native /api/chat body as a /v1/chat/completions body."""
    out = _common(doc)
    raw = doc.get("messages")
    out["messages"] = messages_to_openai(raw if isinstance(raw, list) else [])
    tools = doc.get("tools")
    if isinstance(tools, list) and tools:
        out["tools"] = _tools(tools)
    return out


def generate_request_to_openai(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A native /api/generate body as (path, body).

    A plain prompt (with `suffix` if any) goes to /v1/completions. A `system` prompt or `images` have no
    place in a completion, so such requests go to /v1/chat/completions as a system and a user message
    (`suffix` is then dropped). The answer is rebuilt in generate's shape either way."""
    if doc.get("system") or doc.get("images"):
        messages: list[dict[str, Any]] = []
        if isinstance(doc.get("system"), str) and doc["system"]:
            messages.append({"role": "system", "content": doc["system"]})
        messages.append({"role": "user", "content": doc.get("prompt") or "", "images": doc.get("images") or []})
        return CHAT_PATH, chat_request_to_openai({**doc, "messages": messages, "tools": None})
    out = _common(doc)
    prompt = doc.get("prompt")
    out["prompt"] = prompt if isinstance(prompt, str) else ""
    suffix = doc.get("suffix")
    if isinstance(suffix, str) and suffix:
        out["suffix"] = suffix
    return COMPLETIONS_PATH, out
