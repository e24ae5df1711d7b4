"""The OpenAI-compatible routes as Ollama serves them (§11 items 41-45, 48, 50)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.sim.conftest import Sim
from tests.sim.test_generation import WEATHER_TOOL

TOOLS: Any = [WEATHER_TOOL]

USER: Any = [{"role": "user", "content": "hello"}]


@pytest.fixture
def client(sim: Sim) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.url + "/v1", api_key="ollama", max_retries=0, timeout=30)


def sse_events(sim: Sim, path: str, body: dict[str, Any]) -> tuple[httpx.Headers, list[str]]:
    with httpx.stream("POST", sim.url + path, json=body, timeout=30) as reply:
        raw = reply.read().decode()
    assert raw.endswith("\n\n")
    events = raw[:-2].split("\n\n")
    assert all(e.startswith("data: ") for e in events)
    return reply.headers, [e[len("data: ") :] for e in events]


def test_chat_completion_json(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(model="llama3.2:1b", messages=USER)
    assert done.object == "chat.completion" and done.id.startswith("chatcmpl-")
    assert isinstance(done.choices[0].message.content, str) and done.choices[0].finish_reason == "stop"
    assert done.usage is not None
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    short = client.chat.completions.create(model="llama3.2:1b", messages=USER, max_tokens=2)
    assert short.choices[0].finish_reason == "length" and short.usage and short.usage.completion_tokens == 2


def test_chat_stream_wire_format(sim: Sim) -> None:
    body = {"model": "llama3.2:1b", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    headers, events = sse_events(sim, "/v1/chat/completions", body)
    assert headers["content-type"] == "text/event-stream"
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["created"] for c in chunks}) == 1
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["role"] == "assistant" and all("role" not in d for d in deltas[1:])
    finish, usage = chunks[-2], chunks[-1]
    assert finish["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == len(deltas) - 1
    assert sum(1 for c in chunks if "usage" in c) == 1


def test_openai_client_iterates_a_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="llama3.2:1b",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = client.chat.completions.create(model="llama3.2:1b", messages=USER)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None


def test_tool_calls_have_string_arguments(client: openai.OpenAI) -> None:
    ask: Any = [{"role": "user", "content": "what is the weather in Oslo?"}]
    done = client.chat.completions.create(model="llama3.2:1b", messages=ask, tools=TOOLS)
    call = (done.choices[0].message.tool_calls or [])[0]
    assert done.choices[0].finish_reason == "tool_calls" and call.type == "function" and call.id
    assert isinstance(json.loads(call.function.arguments), dict)
    stream = client.chat.completions.create(model="llama3.2:1b", messages=ask, tools=TOOLS, stream=True)
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    follow: Any = [
        *ask,
        {"role": "assistant", "content": "", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    assert client.chat.completions.create(model="llama3.2:1b", messages=follow).choices[0].message.content


def test_reasoning_for_thinking_models(client: openai.OpenAI, sim: Sim) -> None:
    body = {"model": "qwen3:4b", "messages": USER}
    reply = httpx.post(sim.url + "/v1/chat/completions", json=body).json()
    assert reply["choices"][0]["message"]["reasoning"]
    quiet = httpx.post(sim.url + "/v1/chat/completions", json={**body, "reasoning_effort": "none"}).json()
    assert "reasoning" not in quiet["choices"][0]["message"]
    _, events = sse_events(sim, "/v1/chat/completions", {**body, "stream": True})
    assert "reasoning" in json.loads(events[0])["choices"][0]["delta"]


def test_errors_use_the_openai_envelope(client: openai.OpenAI, sim: Sim) -> None:
    empty = httpx.post(sim.url + "/v1/chat/completions", json={"model": "llama3.2:1b", "messages": []})
    assert empty.status_code == 400
    assert empty.json() == {
        "error": {
            "message": "[] is too short - 'messages'",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=USER)
    assert err.value.body == {
        "message": "model 'nope' not found",
        "type": "not_found_error",
        "param": None,
        "code": None,
    }
    image: Any = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="llama3.2:1b", messages=image)


def test_completions(client: openai.OpenAI, sim: Sim) -> None:
    done = client.completions.create(model="llama3.2:1b", prompt="once upon")
    assert done.object == "text_completion" and done.id.startswith("cmpl-") and done.choices[0].text
    streamed = list(client.completions.create(model="llama3.2:1b", prompt="once upon", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == done.choices[0].text
    array = httpx.post(sim.url + "/v1/completions", json={"model": "llama3.2:1b", "prompt": ["a", "b"]})
    assert array.status_code == 400 and array.json()["error"]["type"] == "invalid_request_error"


def test_models_list_and_retrieve(client: openai.OpenAI, sim: Sim) -> None:
    listed = httpx.get(sim.url + "/v1/models").json()
    assert listed["object"] == "list" and len(listed["data"]) == 5
    for entry in listed["data"]:
        assert set(entry) == {"id", "object", "created", "owned_by"} and entry["owned_by"] == "library"
    assert client.models.retrieve("llama3.2:1b").id == "llama3.2:1b"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
