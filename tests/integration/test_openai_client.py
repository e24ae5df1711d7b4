"""The official `openai` client works against Corral's /v1 unchanged."""

from __future__ import annotations

import math

import openai
import pytest

from procs import Fleet


@pytest.fixture
def client(fleet: Fleet) -> openai.OpenAI:
    return openai.OpenAI(base_url=fleet.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def test_chat_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="llama3.2:1b", messages=[{"role": "user", "content": "Hi"}])
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert isinstance(reply.choices[0].message.content, str) and reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_completion_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="qwen2.5:7b",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0].choices == []


def test_completions(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="llama3.2:1b", prompt="Once upon a time")
    assert reply.object == "text_completion"
    assert reply.choices[0].text
    streamed = list(client.completions.create(model="llama3.2:1b", prompt="Once upon a time", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices)


def test_embeddings_default_base64_and_float(client: openai.OpenAI) -> None:
    implicit = client.embeddings.create(model="nomic-embed-text", input=["a", "b"])
    explicit = client.embeddings.create(model="nomic-embed-text", input=["a", "b"], encoding_format="float")
    assert len(implicit.data) == 2
    assert implicit.data[0].embedding == pytest.approx(explicit.data[0].embedding, rel=1e-5)
    assert math.isclose(math.sqrt(sum(x * x for x in explicit.data[1].embedding)), 1.0, rel_tol=1e-4)


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert len(ids) == len(set(ids)), "one entry per model across the fleet"
    assert {"llama3.2:1b", "qwen2.5:7b", "llama3.1:8b"} <= set(ids)
    assert client.models.retrieve("llama3.1:8b").id == "llama3.1:8b"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope:1b")


def test_unknown_model_is_openai_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    body = err.value.body
    assert isinstance(body, dict)
    assert body["type"] == "not_found_error"
    assert body["message"] == "model 'nope' not found"
