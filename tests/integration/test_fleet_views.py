"""Fleet-wide views and model-to-node routing."""

from __future__ import annotations

import httpx

from procs import Fleet, sim_stats


def test_root_and_version(fleet: Fleet) -> None:
    root = httpx.get(fleet.url + "/")
    assert root.status_code == 200 and root.text == "Ollama is running"
    assert root.headers["content-type"].startswith("text/plain")
    head = httpx.head(fleet.url + "/")
    assert head.status_code == 200 and head.content == b""
    version = httpx.get(fleet.url + "/api/version").json()["version"]
    assert all(part.isdigit() for part in version.split("-")[0].lstrip("v").split("."))
    assert httpx.head(fleet.url + "/api/version").status_code == 200


def test_tags_is_the_deduplicated_union(fleet: Fleet) -> None:
    models = httpx.get(fleet.url + "/api/tags").json()["models"]
    names = [m["model"] for m in models]
    assert len(names) == len(set(names))
    assert {"llama3.2:1b", "qwen2.5:7b", "llama3.1:8b", "slow:1b", "faulty:1b"} <= set(names)
    for entry in models:
        assert {"name", "model", "modified_at", "size", "digest", "details"} <= set(entry)
    holders = {m["model"]: m["corral_nodes"] for m in models}
    assert holders["llama3.2:1b"] == ["node-a", "node-b"] and holders["qwen2.5:7b"] == ["node-a"]
    assert httpx.head(fleet.url + "/api/tags").status_code == 200


def test_a_model_goes_only_to_a_node_that_has_it(fleet: Fleet) -> None:
    before = sim_stats(fleet.a)["requests"].get("/api/generate", 0)
    for _ in range(6):
        reply = httpx.post(
            fleet.url + "/api/generate",
            json={"model": "llama3.1:8b", "prompt": "x", "stream": False, "options": {"num_predict": 1}},
        )
        assert reply.status_code == 200
        assert reply.headers["x-corral-node"] == "node-b"
    assert sim_stats(fleet.a)["requests"].get("/api/generate", 0) == before


def test_ps_lists_each_loaded_model_per_node(fleet: Fleet) -> None:
    for model in ("qwen2.5:7b", "llama3.1:8b"):
        assert httpx.post(fleet.url + "/api/generate", json={"model": model, "keep_alive": "10m"}).status_code == 200
    models = httpx.get(fleet.url + "/api/ps").json()["models"]
    names = [m["model"] for m in models]
    assert {"qwen2.5:7b", "llama3.1:8b"} <= set(names)
    where = [(m["model"], m["corral_node"]) for m in models]  # one entry per model and node
    assert len(where) == len(set(where))
    assert ("qwen2.5:7b", "node-a") in where and ("llama3.1:8b", "node-b") in where
    for entry in models:
        assert {"name", "model", "size", "size_vram", "digest", "details", "expires_at"} <= set(entry)


def test_request_id_is_passed_to_the_node_and_returned(fleet: Fleet) -> None:
    reply = httpx.post(
        fleet.url + "/api/generate",
        headers={"X-Request-ID": "test-req-42"},
        json={"model": "slow:1b", "prompt": "x", "stream": False, "options": {"num_predict": 1}},
    )
    assert reply.headers["x-request-id"] == "test-req-42"
    assert sim_stats(fleet.slow)["last_headers"]["x-request-id"] == "test-req-42"


def test_host_is_rewritten_and_credentials_are_not_forwarded(fleet: Fleet) -> None:
    httpx.post(
        fleet.url + "/api/generate",
        headers={"Authorization": "Bearer secret", "Host": "gw.example"},
        json={"model": "slow:1b", "prompt": "x", "stream": False, "options": {"num_predict": 1}},
    )
    seen = sim_stats(fleet.slow)["last_headers"]
    assert seen["host"] == fleet.slow.url.removeprefix("http://")
    assert "authorization" not in seen


def test_status_endpoint_lists_nodes(fleet: Fleet) -> None:
    status = httpx.get(fleet.url + "/internal/status").json()
    assert status["ready"] is True
    assert [n["name"] for n in status["nodes"]] == ["node-a", "node-b", "node-slow", "node-faulty", "node-oa"]
    assert httpx.get(fleet.url + "/ready").status_code == 200
    assert httpx.get(fleet.url + "/health").status_code == 200
