"""The official `ollama` client works through Corral unchanged."""

from __future__ import annotations

import math

import ollama
import pytest

from procs import Fleet


@pytest.fixture
def client(fleet: Fleet) -> ollama.Client:
    return ollama.Client(host=fleet.url, timeout=30)


def test_chat_non_stream(client: ollama.Client) -> None:
    reply = client.chat(model="llama3.2:1b", messages=[{"role": "user", "content": "Hello there"}])
    assert reply.message.role == "assistant"
    assert reply.message.content
    assert reply.done is True
    assert reply.done_reason in ("stop", "length")
    assert reply.eval_count and reply.eval_count > 0
    assert reply.total_duration and reply.total_duration > 0


def test_chat_stream_concatenates_to_the_non_stream_text(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "Tell me a story"}]
    options = {"seed": 7}
    whole = client.chat(model="llama3.2:1b", messages=messages, options=options)
    parts = list(client.chat(model="llama3.2:1b", messages=messages, options=options, stream=True))
    assert len(parts) >= 2
    assert all(p.message.role == "assistant" for p in parts)
    assert parts[-1].done is True and parts[-1].done_reason
    assert not any(p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].eval_count == len([p for p in parts[:-1] if p.message.content])


def test_generate_stream_and_not(client: ollama.Client) -> None:
    whole = client.generate(model="qwen2.5:7b", prompt="Why is the sky blue?", options={"seed": 3})
    assert whole.response and whole.done
    chunks = list(client.generate(model="qwen2.5:7b", prompt="Why is the sky blue?", options={"seed": 3}, stream=True))
    assert "".join(c.response for c in chunks) == whole.response
    assert chunks[-1].done and chunks[-1].eval_count


def test_generate_num_predict_stops_with_length(client: ollama.Client) -> None:
    reply = client.generate(model="llama3.2:1b", prompt="Count", options={"num_predict": 3})
    assert reply.done_reason == "length"
    assert reply.eval_count == 3


def test_embed_returns_unit_vectors(client: ollama.Client) -> None:
    reply = client.embed(model="nomic-embed-text", input=["one", "two"])
    assert len(reply.embeddings) == 2
    for vector in reply.embeddings:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-4)
    same = client.embed(model="nomic-embed-text", input="one")
    assert same.embeddings[0] == pytest.approx(reply.embeddings[0])


def test_legacy_embeddings(client: ollama.Client) -> None:
    reply = client.embeddings(model="nomic-embed-text", prompt="hello")
    assert len(reply.embedding) > 0


def test_show_list_ps_version(client: ollama.Client) -> None:
    shown = client.show("llama3.1:8b")
    assert shown.modelinfo is not None
    listed = {m.model for m in client.list().models}
    assert {"llama3.2:1b", "qwen2.5:7b", "llama3.1:8b", "nomic-embed-text:latest"} <= listed
    client.generate(model="llama3.1:8b")  # an empty prompt loads the model
    assert "llama3.1:8b" in {m.model for m in client.ps().models}


def test_unknown_model_is_404_as_ollama_says(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 404
    assert err.value.error == "model 'no-such-model' not found"


def test_model_name_spellings_are_one_model(client: ollama.Client) -> None:
    for spelling in ("llama3.1:8b", "LLAMA3.1:8B", "registry.ollama.ai/library/llama3.1:8b"):
        reply = client.generate(model=spelling, prompt="hi", options={"num_predict": 2})
        assert reply.model == spelling  # echoed exactly as sent
