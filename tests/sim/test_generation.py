"""Native generation: NDJSON framing, chunk shapes, stream:false aggregation, num_predict, stop, format,
tools, thinking and determinism (§11 items 9-10, 13-16)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import ollama

from tests.sim.conftest import Sim

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["location"],
        },
    },
}


def stream_lines(sim: Sim, path: str, body: dict[str, Any]) -> tuple[httpx.Headers, list[dict[str, Any]]]:
    with httpx.stream("POST", sim.url + path, json=body, timeout=30) as reply:
        assert reply.status_code == 200
        raw = reply.read()
    assert raw.endswith(b"\n")
    text = raw.decode()
    lines = text.splitlines()  # str.splitlines semantics, as httpx's line decoder
    assert all(line.strip() for line in lines), "no blank or whitespace-only lines"
    assert not any(line.startswith("data:") for line in lines)
    return reply.headers, [json.loads(line) for line in lines]


def test_generate_streams_by_default(sim: Sim) -> None:
    headers, chunks = stream_lines(sim, "/api/generate", {"model": "llama3.2:1b", "prompt": "tell me"})
    assert headers["content-type"] == "application/x-ndjson"
    assert len(chunks) >= 2
    for chunk in chunks[:-1]:
        assert set(chunk) == {"model", "created_at", "response", "done"}
        assert chunk["model"] == "llama3.2:1b" and chunk["created_at"].endswith("Z") and chunk["done"] is False
    final = chunks[-1]
    assert final["done"] is True and final["done_reason"] == "stop" and final["response"] == ""
    assert isinstance(final["context"], list)
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration"):
        assert isinstance(final[key], int) and final[key] > 0
    assert final["eval_count"] == len(chunks) - 1
    assert final["eval_duration"] > 0
    rate = final["eval_count"] / final["eval_duration"] * 1e9
    assert 100 < rate < 5000  # the node runs at 1000 tokens/s


def test_chat_chunks_all_carry_an_assistant_message(sim: Sim) -> None:
    body = {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hello"}]}
    _, chunks = stream_lines(sim, "/api/chat", body)
    for chunk in chunks:
        assert chunk["message"]["role"] == "assistant" and isinstance(chunk["message"]["content"], str)
    final = chunks[-1]
    assert final["message"]["content"] == "" and final["done_reason"] == "stop" and "context" not in final
    assert final["eval_count"] == len(chunks) - 1


def test_stream_false_equals_the_concatenated_stream(sim: Sim) -> None:
    body = {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "same input"}]}
    _, chunks = stream_lines(sim, "/api/chat", body)
    whole = httpx.post(sim.url + "/api/chat", json={**body, "stream": False})
    assert whole.headers["content-type"].startswith("application/json")
    assert not whole.content.endswith(b"\n")
    doc = whole.json()
    assert doc["message"]["content"] == "".join(c["message"]["content"] for c in chunks)
    assert doc["done"] is True and doc["eval_count"] == chunks[-1]["eval_count"]


def test_text_depends_on_input_and_seed(sim: Sim) -> None:
    def text(prompt: str, seed: int | None = None) -> str:
        options: dict[str, Any] = {} if seed is None else {"seed": seed}
        body = {"model": "llama3.2:1b", "prompt": prompt, "stream": False, "options": options}
        return str(httpx.post(sim.url + "/api/generate", json=body).json()["response"])

    assert text("a") == text("a")
    assert text("a") != text("b")
    assert text("a", seed=1) != text("a", seed=2)


def test_num_predict_ends_with_length(sim: Sim) -> None:
    client = ollama.Client(host=sim.url)
    parts = list(client.generate(model="llama3.2:1b", prompt="x", stream=True, options={"num_predict": 3}))
    assert [p.done for p in parts] == [False, False, False, True]
    assert parts[-1].done_reason == "length" and parts[-1].eval_count == 3


def test_stop_sequence_cuts_the_text(sim: Sim) -> None:
    body = {"model": "llama3.2:1b", "prompt": "stop test", "stream": False}
    full = httpx.post(sim.url + "/api/generate", json=body).json()["response"]
    word = full.split()[3]
    cut = httpx.post(sim.url + "/api/generate", json={**body, "options": {"stop": [word]}}).json()
    assert cut["done_reason"] == "stop"
    assert full.startswith(cut["response"]) and word not in cut["response"]


def test_format_json_and_schema_give_valid_json(sim: Sim) -> None:
    body: dict[str, Any] = {"model": "llama3.2:1b", "prompt": "json please", "stream": False, "format": "json"}
    assert isinstance(json.loads(httpx.post(sim.url + "/api/generate", json=body).json()["response"]), dict)
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array"}},
        "required": ["name", "age"],
    }
    client = ollama.Client(host=sim.url)
    reply = client.chat(model="llama3.2:1b", messages=[{"role": "user", "content": "who"}], format=schema)
    doc = json.loads(reply.message.content or "")
    assert isinstance(doc["name"], str) and isinstance(doc["age"], int) and isinstance(doc["tags"], list)


def test_tool_calls_have_object_arguments(sim: Sim) -> None:
    client = ollama.Client(host=sim.url)
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    reply = client.chat(model="llama3.2:1b", messages=messages, tools=[WEATHER_TOOL])
    calls = reply.message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert isinstance(calls[0].function.arguments, dict) and "location" in calls[0].function.arguments
    streamed = [p for p in client.chat(model="llama3.2:1b", messages=messages, tools=[WEATHER_TOOL], stream=True)]
    assert any(p.message.tool_calls for p in streamed) and streamed[-1].done
    # With the tool's answer in the conversation the model answers in text.
    messages += [reply.message, {"role": "tool", "content": "sunny", "tool_name": "get_weather"}]
    follow = client.chat(model="llama3.2:1b", messages=messages, tools=[WEATHER_TOOL])
    assert follow.message.content and not follow.message.tool_calls


def test_thinking_models_think_first(sim: Sim) -> None:
    body = {"model": "qwen3:4b", "messages": [{"role": "user", "content": "why"}]}
    _, chunks = stream_lines(sim, "/api/chat", body)
    kinds = ["thinking" if c["message"].get("thinking") else "content" for c in chunks[:-1]]
    assert kinds[0] == "thinking" and "content" in kinds
    assert kinds == sorted(kinds, key=lambda k: k != "thinking")  # all thinking before any content
    whole = httpx.post(sim.url + "/api/chat", json={**body, "stream": False}).json()
    assert whole["message"]["thinking"] == "".join(c["message"].get("thinking", "") for c in chunks)
    quiet = httpx.post(sim.url + "/api/chat", json={**body, "stream": False, "think": False}).json()
    assert "thinking" not in quiet["message"]
    generate = {"model": "qwen3:4b", "prompt": "why", "stream": False, "think": "high"}
    assert httpx.post(sim.url + "/api/generate", json=generate).json()["thinking"]


def test_logprobs_are_returned_when_asked(sim: Sim) -> None:
    body = {"model": "llama3.2:1b", "prompt": "x", "logprobs": True, "top_logprobs": 2, "options": {"num_predict": 2}}
    _, chunks = stream_lines(sim, "/api/generate", body)
    assert all(len(c["logprobs"][0]["top_logprobs"]) == 2 for c in chunks[:-1])


def test_ollama_client_streams_and_parses(sim: Sim) -> None:
    client = ollama.Client(host=sim.url)
    parts = list(client.chat(model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert parts[-1].done and parts[-1].done_reason == "stop"
    assert "".join(p.message.content or "" for p in parts)
