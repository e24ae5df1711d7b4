"""An OpenAI-type node (here `corral sim` spoken to only through its /v1 routes) serves native Ollama
clients through translation, and OpenAI clients as it is."""

from __future__ import annotations

import json

import httpx
import ollama
import openai

from procs import Fleet, sim_stats


def test_native_chat_through_an_openai_node(fleet: Fleet) -> None:
    client = ollama.Client(host=fleet.url, timeout=30)
    before = sim_stats(fleet.oa)["requests"].get("/v1/chat/completions", 0)
    whole = client.chat(model="remote:7b", messages=[{"role": "user", "content": "hi"}], options={"seed": 1})
    assert whole.message.content and whole.done and whole.done_reason in ("stop", "length")
    assert whole.eval_count and whole.prompt_eval_count and whole.total_duration
    parts = list(
        client.chat(model="remote:7b", messages=[{"role": "user", "content": "hi"}], stream=True, options={"seed": 1})
    )
    assert len(parts) >= 2 and parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert sim_stats(fleet.oa)["requests"].get("/v1/chat/completions", 0) == before + 2
    assert sim_stats(fleet.oa)["requests"].get("/api/chat", 0) == 0


def test_native_generate_through_an_openai_node(fleet: Fleet) -> None:
    client = ollama.Client(host=fleet.url, timeout=30)
    reply = client.generate(model="remote:7b", prompt="Once", options={"num_predict": 4})
    assert reply.response and reply.done_reason == "length" and reply.eval_count == 4
    with httpx.stream("POST", fleet.url + "/api/generate", json={"model": "remote:7b", "prompt": "x"}) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in r.iter_lines()]
    assert lines[-1]["done"] is True and "created_at" in lines[0]


def test_openai_clients_reach_the_node_as_they_are(fleet: Fleet) -> None:
    client = openai.OpenAI(base_url=fleet.url + "/v1", api_key="x", max_retries=0, timeout=30)
    reply = client.chat.completions.create(model="remote:7b", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    assert "remote:7b" in [m.id for m in client.models.list()]


def test_native_only_routes_skip_openai_nodes(fleet: Fleet) -> None:
    reply = httpx.post(fleet.url + "/api/embed", json={"model": "remote:7b", "input": "x"})
    assert reply.status_code == 503
    assert "error" in reply.json()
