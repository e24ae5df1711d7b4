"""`/v1/responses`, the OpenAI Responses API as Ollama serves it (openai/responses.go,
middleware/openai.go ResponsesMiddleware), through the openai client and on the wire."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.sim.conftest import Sim
from tests.sim.test_generation import WEATHER_TOOL


def client(sim: Sim) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.url + "/v1", api_key="unused", max_retries=0)


def events(sim: Sim, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The SSE stream as (event name, data) pairs, checking the framing on the way."""
    with httpx.stream("POST", sim.url + "/v1/responses", json=body, timeout=30) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"] == "text/event-stream"
        raw = reply.read().decode()
    out = []
    for block in raw.split("\n\n")[:-1]:
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        payload = json.loads(data[len("data: ") :])
        assert payload["type"] == name[len("event: ") :]
        out.append((payload["type"], payload))
    assert raw.endswith("\n\n")
    return out


def test_whole_response(sim: Sim) -> None:
    reply = client(sim).responses.create(model="llama3.2:1b", input="tell me", max_output_tokens=4)
    assert reply.object == "response" and reply.status == "completed" and reply.id.startswith("resp_")
    assert reply.model == "llama3.2:1b" and len(reply.output) == 1
    assert reply.output[0].type == "message" and reply.output_text
    assert reply.usage is not None and reply.usage.output_tokens == 4
    assert reply.usage.total_tokens == reply.usage.input_tokens + 4
    raw = httpx.post(
        sim.url + "/v1/responses", json={"model": "llama3.2:1b", "input": "tell me", "max_output_tokens": 4}
    )
    assert raw.headers["content-type"] == "application/json" and raw.content.endswith(b"\n")
    assert raw.json()["output"][0]["content"][0]["text"] == reply.output_text  # deterministic text
    assert raw.json()["temperature"] == 1 and '"top_p":1,' in raw.text  # Go prints float64 1 as 1


def test_stream_events_in_order(sim: Sim) -> None:
    body = {"model": "llama3.2:1b", "input": [{"role": "user", "content": "tell me"}], "stream": True}
    stream = events(sim, body | {"max_output_tokens": 5})
    names = [name for name, _ in stream]
    assert names[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert names[4:9] == ["response.output_text.delta"] * 5
    assert names[9:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [data["sequence_number"] for _, data in stream] == list(range(len(stream)))
    text = "".join(data["delta"] for name, data in stream if name == "response.output_text.delta")
    completed = stream[-1][1]["response"]
    assert completed["status"] == "completed" and completed["output"][0]["content"][0]["text"] == text
    assert completed["usage"]["output_tokens"] == 5
    whole = client(sim).responses.create(model="llama3.2:1b", input="tell me", max_output_tokens=5)
    assert whole.output_text == text


def test_thinking_and_tool_calls(sim: Sim) -> None:
    stream = events(sim, {"model": "qwen3:4b", "input": "hi", "stream": True, "max_output_tokens": 30})
    names = [name for name, _ in stream]
    assert "response.reasoning_summary_text.delta" in names and "response.output_text.delta" in names
    assert names.index("response.reasoning_summary_text.done") < names.index("response.output_text.delta")
    function: Any = WEATHER_TOOL["function"]
    tool: Any = {"type": "function", **function}
    reply = client(sim).responses.create(model="llama3.2:1b", input="what is the weather in Paris?", tools=[tool])
    calls = [item for item in reply.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and "location" in json.loads(calls[0].arguments)
    streamed: Any = client(sim).responses.create(
        model="llama3.2:1b", input="what is the weather in Paris?", tools=[tool], stream=True
    )
    kinds = [event.type for event in streamed]
    assert "response.function_call_arguments.done" in kinds and kinds[-1] == "response.completed"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "nope", "input": "x"}, 404, "model 'nope' not found"),
        ({"input": "x"}, 400, "model is required"),
        (
            {"model": "llama3.2:1b", "input": 5},
            400,
            "input must be a string or array: json: cannot unmarshal number into Go value of type []json.RawMessage",
        ),
        (
            {"model": "llama3.2:1b", "input": [{"content": "x"}]},
            400,
            "input[0]: input item missing required 'type' field",
        ),
        ({"model": "llama3.2:1b", "input": [{"type": "bogus"}]}, 400, 'input[0]: unknown input item type: "bogus"'),
        (
            {"model": "llama3.2:1b", "input": "x", "stream": "yes"},
            400,
            "json: cannot unmarshal string into Go struct field ResponsesRequest.stream of type bool",
        ),
        (
            {"model": "llama3.2:1b", "input": "x", "reasoning": {"effort": "huge"}},
            400,
            'invalid reasoning value: "huge" (must be "minimal", "low", "medium", "high", "xhigh", "ultra", "max", '
            'or "none")',
        ),
    ],
)
def test_errors_use_the_openai_shape(sim: Sim, body: dict[str, Any], status: int, message: str) -> None:
    reply = httpx.post(sim.url + "/v1/responses", json=body, timeout=30)
    kind = {400: "invalid_request_error", 404: "not_found_error"}[status]
    assert reply.status_code == status
    assert reply.json() == {"error": {"message": message, "type": kind, "param": None, "code": None}}


def test_openai_client_raises_on_errors(sim: Sim) -> None:
    with pytest.raises(openai.NotFoundError):
        client(sim).responses.create(model="nope", input="x")


def test_midstream_failure_just_ends_the_stream(clean: Sim) -> None:
    # Ollama's quirk: the native error line decodes as an empty chunk, so no event follows it and
    # no response.completed is sent.
    clean.faults(midstream_error_after=2)
    stream = events(clean, {"model": "llama3.2:1b", "input": "tell me", "stream": True})
    names = [name for name, _ in stream]
    assert names.count("response.output_text.delta") == 2 and "response.completed" not in names
