"""Embeddings: /api/embed, the legacy /api/embeddings and /v1/embeddings (§11 items 29-31, 49)."""

from __future__ import annotations

import math

import httpx
import ollama
import openai
import pytest

from tests.sim.conftest import Sim


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def test_embed_gives_one_unit_vector_per_input(sim: Sim) -> None:
    one = httpx.post(sim.url + "/api/embed", json={"model": "nomic-embed-text", "input": "hello"}).json()
    assert one["model"] == "nomic-embed-text" and len(one["embeddings"]) == 1
    assert abs(norm(one["embeddings"][0]) - 1) < 1e-5
    assert one["prompt_eval_count"] >= 1 and one["total_duration"] > 0
    many = ollama.Client(host=sim.url).embed(model="nomic-embed-text", input=["hello", "world"])
    assert len(many.embeddings) == 2
    assert list(many.embeddings[0]) == one["embeddings"][0]  # deterministic per text
    assert many.embeddings[0] != many.embeddings[1]


def test_embed_dimensions_truncates_and_renormalises(sim: Sim) -> None:
    reply = httpx.post(sim.url + "/api/embed", json={"model": "nomic-embed-text", "input": "x", "dimensions": 16})
    vector = reply.json()["embeddings"][0]
    assert len(vector) == 16 and abs(norm(vector) - 1) < 1e-5


@pytest.mark.parametrize("value", [[1, 2], 5, {"a": "b"}])
def test_embed_rejects_other_input_types(sim: Sim, value: object) -> None:
    reply = httpx.post(sim.url + "/api/embed", json={"model": "nomic-embed-text", "input": value})
    assert (reply.status_code, reply.json()) == (400, {"error": "invalid input type"})


def test_embed_empty_input_loads_the_model(sim: Sim) -> None:
    reply = httpx.post(sim.url + "/api/embed", json={"model": "nomic-embed-text", "input": ""})
    assert reply.json() == {"model": "nomic-embed-text", "embeddings": []}
    assert "nomic-embed-text:latest" in sim.ps()


def test_embed_errors(sim: Sim) -> None:
    missing = httpx.post(sim.url + "/api/embed", json={"model": "nope", "input": "x"})
    assert (missing.status_code, missing.json()) == (404, {"error": 'model "nope" not found, try pulling it first'})
    # EmbedHandler answers a missing name like an unknown one (routes.go: writeModelRefParseError, 404).
    nameless = httpx.post(sim.url + "/api/embed", json={"input": "x"})
    assert (nameless.status_code, nameless.json()) == (404, {"error": "model '' not found"})
    long = {"model": "nomic-embed-text", "input": "word " * 3000, "truncate": False}
    too_long = httpx.post(sim.url + "/api/embed", json=long)
    assert (too_long.status_code, too_long.json()) == (400, {"error": "the input length exceeds the context length"})


def test_legacy_embeddings_are_not_normalised(sim: Sim) -> None:
    reply = httpx.post(sim.url + "/api/embeddings", json={"model": "nomic-embed-text", "prompt": "hello"}).json()
    assert set(reply) == {"embedding"} and len(reply["embedding"]) > 10
    assert abs(norm(reply["embedding"]) - 1) > 0.1
    empty = httpx.post(sim.url + "/api/embeddings", json={"model": "nomic-embed-text", "prompt": ""}).json()
    assert empty == {"embedding": []}
    assert ollama.Client(host=sim.url).embeddings(model="nomic-embed-text", prompt="hello").embedding


def test_openai_embeddings_match_native_vectors(sim: Sim) -> None:
    native = httpx.post(sim.url + "/api/embed", json={"model": "nomic-embed-text", "input": ["a", "b"]}).json()
    client = openai.OpenAI(base_url=sim.url + "/v1", api_key="ollama", max_retries=0)
    default = client.embeddings.create(model="nomic-embed-text", input=["a", "b"])  # base64 on the wire
    assert [list(map(float, d.embedding)) for d in default.data] == native["embeddings"]
    floats = client.embeddings.create(model="nomic-embed-text", input="a", encoding_format="float")
    assert floats.data[0].embedding == native["embeddings"][0]
    assert floats.usage.prompt_tokens >= 1 and floats.object == "list"


def test_openai_embeddings_errors(sim: Sim) -> None:
    bad = httpx.post(
        sim.url + "/v1/embeddings", json={"model": "nomic-embed-text", "input": "a", "encoding_format": "foo"}
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == {
        "message": "Invalid value for 'encoding_format' = foo. Supported values: ['float', 'base64'].",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    empty = httpx.post(sim.url + "/v1/embeddings", json={"model": "nomic-embed-text", "input": []})
    assert empty.status_code == 400 and empty.json()["error"]["message"] == "invalid input"
    client = openai.OpenAI(base_url=sim.url + "/v1", api_key="ollama", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="a")
