"""Bad input gets a clear error in the API's own shape; node errors keep their code; node-changing calls
need a named node."""

from __future__ import annotations

import json

import httpx
import ollama
import pytest

from procs import Fleet, Proc, sim_stats, wait_for


def test_empty_and_malformed_bodies(fleet: Fleet) -> None:
    empty = httpx.post(fleet.url + "/api/chat", content=b"")
    assert empty.status_code == 400 and empty.json() == {"error": "missing request body"}
    bad = httpx.post(fleet.url + "/api/chat", content=b"{not json")
    assert bad.status_code == 400 and "invalid JSON" in bad.json()["error"]
    v1 = httpx.post(fleet.url + "/v1/chat/completions", content=b"[1,2")
    assert v1.status_code == 400
    assert v1.json()["error"]["type"] == "invalid_request_error"


def test_model_missing_from_the_body(fleet: Fleet) -> None:
    chat = httpx.post(fleet.url + "/api/chat", json={"messages": []})
    assert chat.status_code == 400 and chat.json() == {"error": "model is required"}
    generate = httpx.post(fleet.url + "/api/generate", json={"prompt": "x"})
    assert generate.status_code == 404 and generate.json() == {"error": "model '' not found"}


def test_form_encoded_curl_body_is_accepted(fleet: Fleet) -> None:
    reply = httpx.post(
        fleet.url + "/api/generate",
        content=b'{"model":"llama3.2:1b","prompt":"x","stream":false}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status_code == 200 and reply.json()["done"] is True


def test_unknown_path_and_wrong_method(fleet: Fleet) -> None:
    assert httpx.get(fleet.url + "/api/nope").status_code == 404
    wrong = httpx.get(fleet.url + "/api/chat")
    assert wrong.status_code == 405
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=fleet.url)._request_raw("GET", "/api/chat")
    assert err.value.status_code == 405


def test_oversized_body_is_413(fleet: Fleet) -> None:
    reply = httpx.post(fleet.url + "/api/chat", content=b"x" * (17 * 1024 * 1024))
    assert reply.status_code == 413
    assert "limit" in reply.json()["error"]


def test_node_error_keeps_its_status_and_body(fleet: Fleet, faulty: Proc) -> None:
    # The faulty node may still be marked down (a health check timed out under load) or its breaker open
    # from an earlier test's faults: wait until it serves again, so that the error below is its own.
    body = {"model": "faulty:1b", "prompt": "x", "stream": False}
    wait_for(
        lambda: httpx.post(fleet.url + "/api/generate", json=body).status_code == 200, 30, "the faulty node serving"
    )
    httpx.post(faulty.url + "/_sim/faults", json={"error_rate": 1.0}, timeout=5)
    reply = httpx.post(fleet.url + "/api/generate", json={"model": "faulty:1b", "prompt": "x", "stream": False})
    assert reply.status_code == 500
    assert "error" in reply.json()


def test_embed_unknown_model_message(fleet: Fleet) -> None:
    reply = httpx.post(fleet.url + "/api/embed", json={"model": "nope", "input": "x"})
    assert reply.status_code == 404
    assert reply.json() == {"error": 'model "nope" not found, try pulling it first'}


def test_a_push_needs_a_named_node_and_a_named_node_must_exist(fleet: Fleet) -> None:
    # Pull, create, copy and delete act on the fleet without the header (tests/integration/test_fanout.py);
    # a push uploads one node's copy, so it still needs the node named.
    reply = httpx.post(fleet.url + "/api/push", json={"model": "x"})
    assert reply.status_code == 400
    assert "X-Corral-Node" in reply.json()["error"]
    unknown = httpx.post(fleet.url + "/api/pull", headers={"X-Corral-Node": "nope"}, json={"model": "x"})
    assert unknown.status_code == 404 and "node-a" in unknown.json()["error"]


def test_pull_to_a_named_node_then_it_serves_the_model(fleet: Fleet) -> None:
    lines = []
    with httpx.stream(
        "POST",
        fleet.url + "/api/pull",
        headers={"X-Corral-Node": "node-b"},
        json={"model": "mistral:7b"},
        timeout=30,
    ) as reply:
        assert reply.status_code == 200
        lines = [json.loads(line) for line in reply.iter_lines()]
    assert lines[0]["status"] == "pulling manifest"
    assert lines[-1]["status"] == "success"
    assert any("completed" in line for line in lines)
    names = {m["model"] for m in httpx.get(fleet.url + "/api/tags").json()["models"]}
    assert "mistral:7b" in names
    reply = httpx.post(fleet.url + "/api/generate", json={"model": "mistral:7b", "prompt": "x", "stream": False})
    assert reply.status_code == 200 and reply.headers["x-corral-node"] == "node-b"
    deleted = httpx.request(
        "DELETE", fleet.url + "/api/delete", headers={"X-Corral-Node": "node-b"}, json={"model": "mistral:7b"}
    )
    assert deleted.status_code == 200
    assert "mistral:7b" not in {m["model"] for m in httpx.get(fleet.url + "/api/tags").json()["models"]}
    again = httpx.request(
        "DELETE", fleet.url + "/api/delete", headers={"X-Corral-Node": "node-b"}, json={"model": "mistral:7b"}
    )
    assert again.status_code == 404


def test_unload_with_keep_alive_zero(fleet: Fleet) -> None:
    assert httpx.post(fleet.url + "/api/generate", json={"model": "llama3.1:8b"}).json()["done_reason"] == "load"
    reply = httpx.post(fleet.url + "/api/generate", json={"model": "llama3.1:8b", "keep_alive": 0}).json()
    assert reply["done_reason"] == "unload"
    wait_for(
        lambda: "llama3.1:8b" not in {m["model"] for m in httpx.get(fleet.b.url + "/api/ps").json()["models"]},
        5,
        "the model to unload",
    )
    assert sim_stats(fleet.b)["loads"] >= 1


def test_blobs_and_create_go_to_the_named_node(fleet: Fleet) -> None:
    import hashlib

    data = b"GGUF fake weights " * 100
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    node = {"X-Corral-Node": "node-a"}
    assert httpx.head(fleet.url + f"/api/blobs/{digest}", headers=node).status_code == 404
    assert httpx.post(fleet.url + f"/api/blobs/{digest}", headers=node, content=data).status_code == 201
    assert httpx.head(fleet.url + f"/api/blobs/{digest}", headers=node).status_code == 200
    assert httpx.post(fleet.url + f"/api/blobs/{digest}", headers=node, content=data).status_code == 200
    wrong = httpx.post(fleet.url + f"/api/blobs/{digest}", headers=node, content=b"other")
    assert wrong.status_code == 400 and "digest mismatch" in wrong.json()["error"]
    created = httpx.post(
        fleet.url + "/api/create",
        headers=node,
        timeout=30,
        json={"model": "custom:1b", "files": {"model.gguf": digest}, "stream": False},
    )
    assert created.status_code == 200 and created.json() == {"status": "success"}
    reply = httpx.post(fleet.url + "/api/generate", json={"model": "custom:1b", "prompt": "x", "stream": False})
    assert reply.status_code == 200 and reply.headers["x-corral-node"] == "node-a"
    copied = httpx.post(fleet.url + "/api/copy", headers=node, json={"source": "custom:1b", "destination": "copy:1b"})
    assert copied.status_code == 200 and copied.content == b""
    assert "copy:1b" in {m["model"] for m in httpx.get(fleet.url + "/api/tags").json()["models"]}


def test_parameters_ollama_refuses_are_rejected_naming_the_field(fleet: Fleet) -> None:
    # Ollama has no bounds on sampling values (temperature 9 passes); it refuses wrong types.
    native = httpx.post(
        fleet.url + "/api/chat",
        json={"model": "llama3.2:1b", "messages": [{"role": "user", "content": "x"}], "options": {"temperature": "9"}},
    )
    assert native.status_code == 400 and native.json()["error"].startswith("options.temperature:")
    v1 = httpx.post(
        fleet.url + "/v1/chat/completions",
        json={"model": "llama3.2:1b", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": "extreme"},
    )
    assert v1.status_code == 400
    assert v1.json()["error"]["param"] == "reasoning_effort" and v1.json()["error"]["type"] == "invalid_request_error"
