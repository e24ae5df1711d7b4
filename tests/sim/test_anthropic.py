"""`/v1/messages`, the Anthropic Messages API as Ollama serves it (anthropic/anthropic.go,
middleware/anthropic.go), through the anthropic client and on the wire."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from tests.sim.conftest import Sim
from tests.sim.test_generation import WEATHER_TOOL

HI = [{"role": "user", "content": "tell me"}]


def client(sim: Sim) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.url, api_key="unused", max_retries=0)


def events(sim: Sim, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    with httpx.stream("POST", sim.url + "/v1/messages", json=body, timeout=30) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"] == "text/event-stream"
        raw = reply.read().decode()
    out = []
    for block in raw.split("\n\n")[:-1]:
        name, data = block.split("\n")
        payload = json.loads(data[len("data: ") :])
        assert name == "event: " + payload["type"]
        out.append((payload["type"], payload))
    return out


def test_whole_message(sim: Sim) -> None:
    reply = client(sim).messages.create(model="llama3.2:1b", max_tokens=4, messages=HI)  # type: ignore[arg-type]
    assert reply.type == "message" and reply.role == "assistant" and reply.id.startswith("msg_")
    assert reply.stop_reason == "max_tokens" and reply.usage.output_tokens == 4
    assert len(reply.content) == 1 and reply.content[0].type == "text" and reply.content[0].text
    # The sim talks until num_predict (max_tokens) is spent; a stop sequence ends it with done_reason
    # "stop", which mapStopReason turns into end_turn (not stop_sequence).
    stopped = client(sim).messages.create(model="llama3.2:1b", max_tokens=50, messages=HI, stop_sequences=[" "])  # type: ignore[arg-type]
    assert stopped.stop_reason == "end_turn" and " " not in stopped.content[0].text  # type: ignore[union-attr]


def test_stream_events(sim: Sim) -> None:
    stream = events(sim, {"model": "llama3.2:1b", "max_tokens": 3, "stream": True, "messages": HI})
    names = [name for name, _ in stream]
    assert names == ["message_start", "content_block_start"] + ["content_block_delta"] * 3 + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = stream[0][1]["message"]
    assert start["content"] == [] and start["usage"]["input_tokens"] >= 1 and start["model"] == "llama3.2:1b"
    assert stream[1][1]["content_block"] == {"type": "text", "text": ""}
    assert stream[-2][1]["delta"] == {"stop_reason": "max_tokens"} and stream[-2][1]["usage"]["output_tokens"] == 3
    text = "".join(data["delta"]["text"] for name, data in stream if name == "content_block_delta")
    with client(sim).messages.stream(model="llama3.2:1b", max_tokens=3, messages=HI) as s:  # type: ignore[arg-type]
        assert s.get_final_message().content[0].text == text  # type: ignore[union-attr]


def test_thinking_then_text_blocks(sim: Sim) -> None:
    stream = events(sim, {"model": "qwen3:4b", "max_tokens": 40, "stream": True, "messages": HI})
    starts = [data["content_block"]["type"] for name, data in stream if name == "content_block_start"]
    assert starts == ["thinking", "text"]
    indexes = [data["index"] for name, data in stream if name == "content_block_stop"]
    assert indexes == [0, 1]


def test_tool_use(sim: Sim) -> None:
    function: Any = WEATHER_TOOL["function"]
    tool: Any = {"name": "get_weather", "description": "weather", "input_schema": function["parameters"]}
    ask = [{"role": "user", "content": "what is the weather in Paris?"}]
    reply = client(sim).messages.create(model="llama3.2:1b", max_tokens=100, messages=ask, tools=[tool])  # type: ignore[arg-type]
    assert reply.stop_reason == "tool_use"
    use = [b for b in reply.content if b.type == "tool_use"]
    assert len(use) == 1 and use[0].name == "get_weather" and "location" in use[0].input
    with client(sim).messages.stream(model="llama3.2:1b", max_tokens=100, messages=ask, tools=[tool]) as s:  # type: ignore[arg-type]
        final = s.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[-1].input == use[0].input  # type: ignore[union-attr]


def test_thinking_on_a_model_without_it_is_relaxed(sim: Sim) -> None:
    # ChatHandler's relax_thinking, set by the Anthropic middleware: no 400, thinking just dropped.
    body = {"model": "llama3.2:1b", "max_tokens": 3, "messages": HI, "thinking": {"type": "enabled"}}
    assert httpx.post(sim.url + "/v1/messages", json=body, timeout=30).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "kind", "message"),
    [
        ({"max_tokens": 3, "messages": HI}, 400, "invalid_request_error", "model is required"),
        (
            {"model": "llama3.2:1b", "messages": HI},
            400,
            "invalid_request_error",
            "max_tokens is required and must be positive",
        ),
        (
            {"model": "llama3.2:1b", "max_tokens": 3, "messages": []},
            400,
            "invalid_request_error",
            "messages is required",
        ),
        ({"model": "nope", "max_tokens": 3, "messages": HI}, 404, "not_found_error", "model 'nope' not found"),
        (
            {"model": "llama3.2:1b", "max_tokens": 3, "messages": [{"role": "user"}]},
            400,
            "invalid_request_error",
            "unexpected end of JSON input",
        ),
        (
            {
                "model": "llama3.2:1b",
                "max_tokens": 3,
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "QQ="}}]}
                ],
            },
            400,
            "invalid_request_error",
            "invalid base64 image data: illegal base64 data at input byte 3",
        ),
        (
            {"model": "llama3.2:1b", "max_tokens": 3, "messages": HI, "stream": "yes"},
            400,
            "invalid_request_error",
            "json: cannot unmarshal string into Go struct field MessagesRequest.stream of type bool",
        ),
    ],
)
def test_errors_use_the_anthropic_shape(sim: Sim, body: dict[str, Any], status: int, kind: str, message: str) -> None:
    reply = httpx.post(sim.url + "/v1/messages", json=body, timeout=30)
    assert reply.status_code == status
    error = reply.json()
    assert error["type"] == "error" and error["error"] == {"type": kind, "message": message}
    assert error["request_id"].startswith("req_")


def test_anthropic_client_raises_on_errors(clean: Sim) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client(clean).messages.create(model="nope", max_tokens=3, messages=HI)  # type: ignore[arg-type]
    clean.faults(error_rate=1.0)
    with pytest.raises(anthropic.InternalServerError) as err:
        client(clean).messages.create(model="llama3.2:1b", max_tokens=3, messages=HI)  # type: ignore[arg-type]
    assert err.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_midstream_failure_ends_without_message_stop(clean: Sim) -> None:
    clean.faults(midstream_error_after=2)
    stream = events(clean, {"model": "llama3.2:1b", "max_tokens": 50, "stream": True, "messages": HI})
    names = [name for name, _ in stream]
    assert names.count("content_block_delta") == 2 and "message_stop" not in names
