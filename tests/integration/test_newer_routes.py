"""The newer routes Ollama serves (docs/ollama-routes.md) work through Corral with the official clients:
the OpenAI Responses API, the Anthropic Messages API, and the routes without a model."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from procs import Proc, start_corral, start_sim

FAST = ["--tokens-per-second", "2000", "--load-seconds", "0"]


@pytest.fixture(scope="module")
def fleet() -> Iterator[tuple[Proc, Proc, Proc]]:
    a = start_sim("llama3.2:1b", extra=FAST)
    b = start_sim("qwen3:8b", extra=FAST)
    corral = start_corral({"backends": [{"name": "a", "url": a.url}, {"name": "b", "url": b.url}]})
    yield corral, a, b
    for proc in (corral, a, b):
        proc.stop()


def test_openai_responses_whole_and_streamed_reach_the_node_with_the_model(fleet: tuple[Proc, Proc, Proc]) -> None:
    corral, _, _ = fleet
    client = openai.OpenAI(base_url=corral.url + "/v1", api_key="unused")
    whole = client.responses.create(model="qwen3:8b", input="Say hi")
    assert whole.output_text and whole.usage is not None and whole.usage.output_tokens > 0
    with client.responses.stream(model="llama3.2:1b", input="Say hi") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text and final.output_text == text
    raw = httpx.post(corral.url + "/v1/responses", json={"model": "qwen3:8b", "input": "hi"})
    assert raw.headers["x-corral-node"] == "b"


def test_anthropic_messages_whole_and_streamed(fleet: tuple[Proc, Proc, Proc]) -> None:
    corral, _, _ = fleet
    client = anthropic.Anthropic(base_url=corral.url, api_key="unused")
    reply = client.messages.create(model="llama3.2:1b", max_tokens=16, messages=[{"role": "user", "content": "Hi"}])
    assert reply.content[0].type == "text" and reply.usage.output_tokens > 0
    with client.messages.stream(model="qwen3:8b", max_tokens=16, messages=[{"role": "user", "content": "Hi"}]) as s:
        streamed = "".join(s.text_stream)
    assert streamed


def test_anthropic_errors_keep_anthropics_shape(fleet: tuple[Proc, Proc, Proc]) -> None:
    corral, _, _ = fleet
    client = anthropic.Anthropic(base_url=corral.url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nope:1b", max_tokens=8, messages=[{"role": "user", "content": "Hi"}])
    body = missing.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert "nope:1b" in body["error"]["message"]


def test_routes_without_a_model_go_to_a_healthy_node(fleet: tuple[Proc, Proc, Proc]) -> None:
    corral, _, _ = fleet
    status = httpx.get(corral.url + "/api/status")
    assert status.status_code == 200 and "cloud" in status.json()
    assert status.headers["x-corral-node"] in ("a", "b")


def test_a_transcription_is_routed_by_its_form_field(fleet: tuple[Proc, Proc, Proc]) -> None:
    corral, _, _ = fleet
    files = {"file": ("a.wav", b"RIFF....WAVEfmt ", "audio/wav")}
    unknown = httpx.post(corral.url + "/v1/audio/transcriptions", data={"model": "whisper:1b"}, files=files)
    assert unknown.status_code == 404 and "whisper:1b" in json.dumps(unknown.json())
    routed = httpx.post(corral.url + "/v1/audio/transcriptions", data={"model": "qwen3:8b"}, files=files)
    assert routed.headers.get("x-corral-node") == "b"  # the simulator itself does not transcribe
