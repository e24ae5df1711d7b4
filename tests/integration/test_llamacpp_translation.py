"""The translation against a real OpenAI-compatible server: native-shaped requests go through
corral.protocol.translate to llama.cpp's server, and what comes back must parse with the official
ollama client's response types, ending with a complete done object."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ollama._types import ChatResponse, GenerateResponse

from corral.protocol.translate import (
    SseToNdjson,
    chat_request_to_openai,
    generate_request_to_openai,
    openai_error_to_native,
    openai_response_to_native,
)

from .llamacpp import MODEL_ALIAS, llamacpp_missing, start_llamacpp

pytestmark = pytest.mark.llamacpp

GREEDY = {"temperature": 0, "seed": 1, "num_ctx": 4096}  # num_ctx: a native-only option, dropped


@pytest.fixture(scope="module")
def node() -> Iterator[str]:
    reason = llamacpp_missing()
    if reason:
        pytest.skip(reason)
    with start_llamacpp() as url:
        yield url


def request(node: str, kind: str, doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if kind == "chat":
        return node + "/v1/chat/completions", chat_request_to_openai(doc)
    path, body = generate_request_to_openai(doc)
    return node + path, body


def stream(node: str, kind: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The native NDJSON lines, as a gateway would write them, parsed."""
    url, body = request(node, kind, doc)
    assert body["stream"] is True
    translator = SseToNdjson(kind, doc["model"], time.time_ns())
    out = b""
    with httpx.stream("POST", url, json=body, timeout=120) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        for chunk in reply.iter_raw():
            out += translator.feed(chunk, time.time_ns())
    out += translator.finish(time.time_ns())
    assert translator.ended_cleanly and translator.done_seen
    assert out.endswith(b"\n") and b"\n\n" not in out
    return [json.loads(line) for line in out.decode().split("\n")[:-1]]


def whole(node: str, kind: str, doc: dict[str, Any]) -> dict[str, Any]:
    url, body = request(node, kind, {**doc, "stream": False})
    started = time.time_ns()
    reply = httpx.post(url, json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    return openai_response_to_native(kind, reply.json(), doc["model"], started, time.time_ns())


def check_final(final: dict[str, Any], limit: int) -> None:
    assert final["done"] is True and final["done_reason"] in ("stop", "length")
    assert 0 < final["eval_count"] <= limit
    assert final["total_duration"] > 0 and final["eval_duration"] > 0
    assert final["created_at"].endswith("Z")


def test_generate_stream_and_whole(node: str) -> None:
    doc = {"model": MODEL_ALIAS, "prompt": "The capital of France is", "options": {**GREEDY, "num_predict": 8}}
    lines = stream(node, "generate", doc)
    parts = [GenerateResponse(**line) for line in lines]
    assert len(parts) >= 2 and [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert all(p.model == MODEL_ALIAS for p in parts)
    text = "".join(p.response for p in parts)
    assert text.strip()
    final = lines[-1]
    check_final(final, 8)
    assert final["done_reason"] == "length" and final["response"] == ""
    assert final["prompt_eval_duration"] > 0  # the time to the first token

    one = whole(node, "generate", doc)
    reply = GenerateResponse(**one)
    assert reply.done and reply.done_reason == "length" and reply.response == text  # greedy: the same text
    assert one["eval_count"] == 8 and one["prompt_eval_count"] > 0
    check_final(one, 8)


def test_chat_stream_and_whole(node: str) -> None:
    # A base model without a chat template: llama-cpp-python falls back to [INST] prompts, after which
    # this system and user pair (unlike most) greedily gives tokens before the end of sequence.
    messages = [
        {"role": "system", "content": "You are a poet."},
        {"role": "user", "content": "Write a poem about the sea."},
    ]
    doc = {"model": MODEL_ALIAS, "messages": messages, "options": {**GREEDY, "num_predict": 6}}
    lines = stream(node, "chat", doc)
    parts = [ChatResponse(**line) for line in lines]
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert all(p.message.role == "assistant" and isinstance(p.message.content, str) for p in parts)
    check_final(lines[-1], 6)
    text = "".join(p.message.content or "" for p in parts)

    one = whole(node, "chat", doc)
    reply = ChatResponse(**one)
    assert reply.done and reply.message.role == "assistant" and reply.message.content == text
    assert one["prompt_eval_count"] > 0
    check_final(one, 6)


def test_generate_with_a_system_prompt_goes_through_chat(node: str) -> None:
    doc = {"model": MODEL_ALIAS, "prompt": "Write a poem about the sea.", "system": "You are a poet."}
    doc["options"] = {**GREEDY, "num_predict": 4}
    assert generate_request_to_openai(doc)[0] == "/v1/chat/completions"
    lines = stream(node, "generate", doc)
    parts = [GenerateResponse(**line) for line in lines]
    assert "".join(p.response for p in parts).strip() and all("message" not in line for line in lines)
    check_final(lines[-1], 4)


def test_node_errors_become_native_errors(node: str) -> None:
    # llama-cpp-python knows only json_object, so a native JSON-schema format is refused by this node.
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    url, body = request(node, "chat", {"model": MODEL_ALIAS, "messages": [{"role": "user", "content": "x"}]})
    reply = httpx.post(
        url,
        json={
            **body,
            "stream": False,
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
        },
        timeout=60,
    )
    assert reply.status_code >= 400
    native = json.loads(openai_error_to_native(reply.status_code, reply.content))
    assert list(native) == ["error"] and "json_object" in native["error"]
