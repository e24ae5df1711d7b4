"""Model management: tags, show, pull, push, create, copy, delete, blobs (§11 items 32-39)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime

import httpx
import ollama
import pytest

from tests.sim.conftest import FAST, Sim, start_sim


@pytest.fixture
def node() -> Iterator[Sim]:
    """A node of its own: these tests add and remove models."""
    with start_sim("--model", "llama3.2:1b", "--model", "nomic-embed-text", *FAST) as fresh:
        yield fresh


def tag_names(sim: Sim) -> list[str]:
    return [m["name"] for m in httpx.get(sim.url + "/api/tags").json()["models"]]


def test_tags_entries_have_every_field(sim: Sim) -> None:
    reply = httpx.get(sim.url + "/api/tags")
    models = reply.json()["models"]
    assert len(models) == 5
    for entry in models:
        assert {"name", "model", "modified_at", "size", "digest", "details"} <= set(entry)
        details = entry["details"]
        assert {"parent_model", "format", "family", "families", "parameter_size", "quantization_level"} <= set(details)
        assert len(entry["digest"]) == 64 and entry["size"] > 0
    stamps = [datetime.fromisoformat(m["modified_at"]) for m in models]
    assert stamps == sorted(stamps, reverse=True)
    assert httpx.head(sim.url + "/api/tags").status_code == 200
    listed = ollama.Client(host=sim.url).list()
    assert {m.model for m in listed.models} == set(tag_names(sim))


def test_facts_are_the_same_on_every_node(sim: Sim, node: Sim) -> None:
    def facts(s: Sim) -> dict[str, tuple[str, int]]:
        return {m["name"]: (m["digest"], m["size"]) for m in httpx.get(s.url + "/api/tags").json()["models"]}

    assert facts(sim)["llama3.2:1b"] == facts(node)["llama3.2:1b"]


def test_show_has_model_info_details_and_capabilities(sim: Sim) -> None:
    client = ollama.Client(host=sim.url)
    shown = client.show("llama3.2:1b")
    assert shown.modelinfo is not None and shown.details is not None
    assert set(shown.capabilities or []) == {"completion", "tools"}
    assert set(client.show("qwen3:4b").capabilities or []) == {"completion", "tools", "thinking"}
    assert client.show("nomic-embed-text").capabilities == ["embedding"]
    legacy = httpx.post(sim.url + "/api/show", json={"name": "llama3.2:1b"})
    assert legacy.status_code == 200 and "model_info" in legacy.json()
    nothing = httpx.post(sim.url + "/api/show", json={})
    assert (nothing.status_code, nothing.json()) == (400, {"error": "model is required"})


def test_pull_streams_progress_and_adds_the_model(node: Sim) -> None:
    with httpx.stream("POST", node.url + "/api/pull", json={"model": "mistral:7b"}, timeout=30) as reply:
        assert reply.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in reply.iter_lines()]
    statuses = [line["status"] for line in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    progress = [line for line in lines if "digest" in line]
    assert progress and all({"total", "completed"} <= set(p) for p in progress)
    assert progress[0]["status"] == "pulling " + progress[0]["digest"][7:19]
    assert tag_names(node)[0] == "mistral:7b"  # newest first
    assert ollama.Client(host=node.url).pull("phi3:mini").status == "success"  # stream:false
    assert "phi3:mini" in tag_names(node)


def test_failed_pulls(node: Sim) -> None:
    whole = httpx.post(node.url + "/api/pull", json={"model": "nonexistent:1b", "stream": False}, timeout=30)
    assert whole.status_code == 500 and "file does not exist" in whole.json()["error"]
    with httpx.stream("POST", node.url + "/api/pull", json={"model": "nonexistent:1b"}, timeout=30) as reply:
        lines = [json.loads(line) for line in reply.iter_lines()]
    assert reply.status_code == 200 and "error" in lines[-1]
    with pytest.raises(ollama.ResponseError):
        list(ollama.Client(host=node.url).pull("nonexistent:1b", stream=True))


def test_push_and_create_stream_statuses(node: Sim) -> None:
    client = ollama.Client(host=node.url)
    pushed = [p.status for p in client.push("llama3.2:1b", stream=True)]
    assert pushed[0] == "retrieving manifest" and pushed[-1] == "success"
    created = [p.status for p in client.create(model="mine:1b", from_="llama3.2:1b", system="be brief", stream=True)]
    assert created[-1] == "success"
    assert client.create(model="mine2:1b", from_="llama3.2:1b").status == "success"
    assert {"mine:1b", "mine2:1b"} <= set(tag_names(node))


def test_copy_and_delete(node: Sim) -> None:
    copied = httpx.post(node.url + "/api/copy", json={"source": "llama3.2:1b", "destination": "copy:1b"})
    assert (copied.status_code, copied.content) == (200, b"")
    digests = {m["name"]: m["digest"] for m in httpx.get(node.url + "/api/tags").json()["models"]}
    assert digests["copy:1b"] == digests["llama3.2:1b"]
    unknown = httpx.post(node.url + "/api/copy", json={"source": "nope", "destination": "x"})
    assert (unknown.status_code, unknown.json()) == (404, {"error": 'model "nope" not found'})
    httpx.post(node.url + "/api/generate", json={"model": "copy:1b"})  # loaded: delete unloads it
    deleted = httpx.request("DELETE", node.url + "/api/delete", json={"model": "copy:1b"})
    assert (deleted.status_code, deleted.content) == (200, b"")
    assert "copy:1b" not in tag_names(node) and "copy:1b" not in node.ps()
    again = httpx.request("DELETE", node.url + "/api/delete", json={"model": "copy:1b"})
    assert (again.status_code, again.json()) == (404, {"error": "model 'copy:1b' not found"})
    client = ollama.Client(host=node.url)
    assert client.copy("llama3.2:1b", "other:1b").status == "success"
    assert client.delete("other:1b").status == "success"


def test_blobs_then_create_from_them(node: Sim) -> None:
    data = b"GGUF fake weights"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    url = node.url + "/api/blobs/" + digest
    assert httpx.head(url).status_code == 404
    assert httpx.post(url, content=data).status_code == 201
    assert httpx.head(url).status_code == 200
    assert httpx.post(url, content=data).status_code == 200
    wrong = httpx.post(node.url + "/api/blobs/sha256:" + "0" * 64, content=data)
    assert wrong.status_code == 400 and "digest mismatch" in wrong.json()["error"]
    assert httpx.head(node.url + "/api/blobs/nonsense").status_code == 400
    created = httpx.post(node.url + "/api/create", json={"model": "blobby:1b", "files": {"m.gguf": digest}}, timeout=30)
    assert created.status_code == 200 and "blobby:1b" in tag_names(node)
