"""Node groups, aliases, one catalog and fallbacks (issue 14 §3-5), against real processes: `corral sim`
nodes, `corral serve` with API keys (SQLite store), and the official clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
import yaml

from procs import Proc, new_key, running, sim_stats, single_process, start_corral, start_sim, wait_for

FAST = ["--tokens-per-second", "2000", "--load-seconds", "0.05"]
OA_NAME = "meta-llama/Llama-3.2-3B-Instruct"


@dataclass
class Groups:
    corral: Proc
    search: Proc  # team=search: llama3.2:1b, nomic-embed-text
    ads: Proc  # team=ads, pool=mixed: llama3.2:1b, qwen2.5:7b, small:1b, nomic-embed-text
    oa: Proc  # OpenAI-type, team=ads: the OpenAI node's name for the 3B model
    ol: Proc  # Ollama, team=ads: llama3.2:3b
    prim: Proc  # team=ads: big:7b (falls back to small:1b)
    config: Path
    admin: str
    searcher: str  # limited to team=search
    narrow: str  # may use the model named gpt-4o-mini only

    def get(self, path: str, key: str) -> httpx.Response:
        return httpx.get(self.corral.url + path, headers=bearer(key), timeout=30)

    def post(self, path: str, key: str, doc: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.corral.url + path, headers=bearer(key), json=doc, timeout=30)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def config_for(tmp: Path, search: Proc, ads: Proc, oa: Proc, ol: Proc, prim: Proc) -> dict[str, Any]:
    return {
        "backends": [
            {"name": "search", "url": search.url, "labels": {"team": "search"}},
            {"name": "ads", "url": ads.url, "labels": {"team": "ads", "pool": "mixed"}},
            {"name": "oa", "url": oa.url, "type": "openai", "labels": {"team": "ads"}},
            {"name": "ol", "url": ol.url, "labels": {"team": "ads"}},
            {"name": "prim", "url": prim.url, "labels": {"team": "ads"}, "max_concurrency": 1},
        ],
        "health": {"interval_s": 0.3, "timeout_s": 2, "rise": 1, "fall": 1},
        "routing": {"discovery_interval_s": 1, "retries": 1, "strategy": "round-robin"},
        "auth": {"enabled": True, "store_url": f"sqlite:///{tmp / 'keys.db'}", "cache_ttl_s": 0.5},
        "models": {
            "aliases": {"gpt-4o-mini": "llama3.2:3b"},
            "llama3.2:3b": {"names": [OA_NAME]},
            "big:7b": {"fallbacks": ["small:1b"], "fallback_after_s": 0.3},
            "nomic-embed-text": {"nodes": {"pool": "mixed"}},
        },
    }


@pytest.fixture(scope="module")
def groups(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Groups]:
    tmp = tmp_path_factory.mktemp("groups")
    procs: list[Proc] = []
    try:
        search = start_sim("llama3.2:1b", "nomic-embed-text", extra=FAST)
        procs.append(search)
        ads = start_sim("llama3.2:1b", "qwen2.5:7b", "small:1b", "nomic-embed-text", extra=[*FAST, "--parallel", "4"])
        procs.append(ads)
        oa = start_sim(OA_NAME, extra=FAST)
        procs.append(oa)
        ol = start_sim("llama3.2:3b", extra=FAST)
        procs.append(ol)
        prim = start_sim("big:7b", extra=FAST)
        procs.append(prim)
        config = tmp / "corral.yaml"
        config.write_text(yaml.safe_dump(config_for(tmp, search, ads, oa, ol, prim)))
        admin = new_key(config, "--name", "ops", "--role", "admin")
        searcher = new_key(config, "--name", "search-app", "--nodes", "team=search")
        narrow = new_key(config, "--name", "narrow", "--models", "gpt-4o-mini")
        corral = start_corral(config_for(tmp, search, ads, oa, ol, prim))
        procs.append(corral)
        g = Groups(corral, search, ads, oa, ol, prim, config, admin, searcher, narrow)

        def all_up() -> bool:
            nodes = g.get("/internal/status", admin).json()["nodes"]
            return all(n["state"] == "up" and n["models"] for n in nodes)

        wait_for(all_up, 20, "every node up with its models discovered")
        yield g
    finally:
        for proc in reversed(procs):
            proc.stop()


def reset(*sims: Proc) -> None:
    for sim in sims:
        httpx.post(sim.url + "/_sim/reset", timeout=5)


def generated(sim: Proc) -> int:
    requests = sim_stats(sim)["requests"]
    return sum(requests.get(p, 0) for p in ("/api/generate", "/api/chat", "/v1/chat/completions"))


def test_a_key_limited_to_a_group_never_reaches_another_groups_nodes(groups: Groups) -> None:
    g = groups
    # The model is loaded on the other group's node too (and it is free): the key still stays home.
    assert g.post("/api/generate", g.admin, {"model": "llama3.2:1b", "prompt": "x", "stream": False}).status_code == 200
    reset(g.search, g.ads)
    doc = {"model": "llama3.2:1b", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: g.post("/api/generate", g.searcher, doc), range(12)))
    assert [r.status_code for r in replies] == [200] * 12
    assert {r.headers["x-corral-node"] for r in replies} == {"search"}
    assert generated(g.search) == 12 and generated(g.ads) == 0  # the nodes' own counts
    # A model only the other group has: not found for this key, saying why, in each API's shape.
    native = g.post("/api/chat", g.searcher, {"model": "qwen2.5:7b", "messages": [], "stream": False})
    assert native.status_code == 404 and "team=search" in native.json()["error"]
    v1 = g.post(
        "/v1/chat/completions", g.searcher, {"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "x"}]}
    )
    assert v1.status_code == 404 and "team=search" in v1.json()["error"]["message"]
    assert generated(g.ads) == 0
    # The admin key (no group) reaches both nodes.
    assert g.post("/api/chat", g.admin, {"model": "qwen2.5:7b", "messages": [], "stream": False}).status_code == 200


def test_a_models_node_group_keeps_it_on_those_nodes(groups: Groups) -> None:
    g = groups
    reset(g.search, g.ads)
    for _ in range(4):
        reply = g.post("/api/embed", g.admin, {"model": "nomic-embed-text", "input": "x"})
        assert reply.status_code == 200 and reply.headers["x-corral-node"] == "ads"
    assert sim_stats(g.search)["requests"].get("/api/embed", 0) == 0
    assert sim_stats(g.ads)["requests"]["/api/embed"] == 4
    # The search key's group has the model, but not the model's group: not found there, saying which.
    refused = g.post("/api/embed", g.searcher, {"model": "nomic-embed-text", "input": "x"})
    assert refused.status_code == 404 and "team=search" in refused.json()["error"]


def test_listings_show_only_what_the_key_can_reach(groups: Groups) -> None:
    g = groups
    tags = {m["name"] for m in g.get("/api/tags", g.searcher).json()["models"]}
    assert tags == {"llama3.2:1b"}  # nomic-embed-text is on its node, but outside the model's group
    assert {m["id"] for m in g.get("/v1/models", g.searcher).json()["data"]} == tags
    assert g.get("/v1/models/qwen2.5:7b", g.searcher).status_code == 404
    g.post("/api/generate", g.searcher, {"model": "llama3.2:1b", "prompt": "x", "stream": False})
    ps = {m["name"] for m in g.get("/api/ps", g.searcher).json()["models"]}
    assert ps <= {"llama3.2:1b"}
    everything = {m["name"] for m in g.get("/api/tags", g.admin).json()["models"]}
    assert {"llama3.2:1b", "qwen2.5:7b", "small:1b", "big:7b", "llama3.2:3b", "gpt-4o-mini"} <= everything


def test_an_alias_through_the_openai_client_and_in_listings(groups: Groups) -> None:
    g = groups
    client = openai.OpenAI(base_url=g.corral.url + "/v1", api_key=g.admin, max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5
    )
    reply = raw.parse()
    assert reply.choices[0].message.content and reply.model == "gpt-4o-mini"
    assert raw.headers["x-corral-model"] == "llama3.2:3b"
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True
        )
    )
    assert chunks and all(c.model == "gpt-4o-mini" for c in chunks)
    assert "gpt-4o-mini" in [m.id for m in client.models.list()]
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    # The native API too: the alias is listed, and every streamed line names it as the client did.
    ol = ollama.Client(host=g.corral.url, headers=bearer(g.admin), timeout=30)
    assert "gpt-4o-mini" in [m.model for m in ol.list().models]
    parts = list(ol.chat(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert parts[-1].done and {p.model for p in parts} == {"gpt-4o-mini"}


def test_allow_lists_apply_to_the_model_an_alias_resolves_to(groups: Groups) -> None:
    g = groups
    denied = g.post("/api/chat", g.narrow, {"model": "gpt-4o-mini", "messages": [], "stream": False})
    assert denied.status_code == 403 and "llama3.2:3b" in denied.json()["error"]
    assert g.get("/api/tags", g.narrow).json()["models"] == []


@single_process("a node cap below the worker count: each worker keeps one slot and its own queue (docs/deploy.md)")
def test_a_full_primary_falls_back_after_fallback_after_s(groups: Groups) -> None:
    g = groups
    wait_for(lambda: g.get("/internal/status", g.admin).json()["nodes"][4]["state"] == "up", 15, "prim up")
    httpx.post(g.prim.url + "/_sim/faults", json={"tokens_per_second": 5}, timeout=5).raise_for_status()
    long = {"model": "big:7b", "prompt": "x", "stream": True, "options": {"num_predict": 1000}}
    with httpx.stream("POST", g.corral.url + "/api/generate", headers=bearer(g.admin), json=long, timeout=60) as held:
        assert held.status_code == 200 and held.headers["x-corral-model"] == "big:7b"
        lines = held.iter_lines()  # kept: a dropped iterator closes the stream
        next(lines)  # the only slot of the primary's node (max_concurrency: 1) is taken
        short = {"model": "big:7b", "prompt": "x", "stream": False, "options": {"num_predict": 2}}
        reply = g.post("/api/generate", g.admin, short)
        assert reply.status_code == 200 and reply.headers["x-corral-model"] == "small:1b"
        assert reply.json()["model"] == "big:7b"
        assert not held.is_closed  # served while the primary was still busy, not after it
    reset(g.prim)


@single_process("round-robin turns are per worker: balanced over many requests, not strictly alternating")
def test_an_openai_type_node_and_an_ollama_node_pool_under_one_catalog_name(groups: Groups) -> None:
    g = groups
    reset(g.oa, g.ol)
    listed = [m["name"] for m in g.get("/api/tags", g.admin).json()["models"]]
    assert listed.count("llama3.2:3b") == 1 and not any("meta-llama" in n.lower() for n in listed)
    served: dict[str, int] = {}
    for _ in range(4):  # round-robin over the two nodes that hold it, each under its own name
        reply = g.post(
            "/v1/chat/completions",
            g.admin,
            {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
        )
        assert reply.status_code == 200 and reply.json()["model"] == "llama3.2:3b", reply.text
        served[reply.headers["x-corral-node"]] = served.get(reply.headers["x-corral-node"], 0) + 1
    assert served == {"oa": 2, "ol": 2}
    assert sim_stats(g.oa)["requests"]["/v1/chat/completions"] == 2
    assert sim_stats(g.ol)["requests"]["/v1/chat/completions"] == 2
    # Native requests too (the OpenAI-type node through translation), and by the node-side name.
    for _ in range(2):
        reply = g.post("/api/chat", g.admin, {"model": OA_NAME, "messages": [{"role": "user", "content": "x"}]})
        lines = [json.loads(line) for line in reply.text.splitlines()]
        assert reply.status_code == 200 and lines[-1]["done"] and {x["model"] for x in lines} == {OA_NAME}


def test_fallback_when_the_primarys_nodes_die_and_back_when_they_return(groups: Groups) -> None:
    g = groups
    doc = {"model": "big:7b", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
    first = g.post("/api/generate", g.admin, doc)
    assert first.status_code == 200 and first.headers["x-corral-model"] == "big:7b"
    port = g.prim.port
    g.prim.stop()
    reset(g.ads)
    fell = g.post("/api/generate", g.admin, doc)  # before or after the health check notices: no error
    assert fell.status_code == 200, fell.text
    assert fell.headers["x-corral-model"] == "small:1b" and fell.headers["x-corral-node"] == "ads"
    assert fell.json()["model"] == "big:7b"  # the name the client used
    assert sim_stats(g.ads)["requests"]["/api/generate"] == 1
    metrics = httpx.get(g.corral.url + "/metrics", timeout=5).text
    assert 'corral_fallbacks_total{from="big:7b",to="small:1b"}' in metrics
    g.prim = start_sim("big:7b", port=port, extra=FAST)

    def primary_again() -> bool:
        reply = g.post("/api/generate", g.admin, doc)
        return reply.status_code == 200 and reply.headers["x-corral-model"] == "big:7b"

    wait_for(primary_again, 15, "the primary model to serve again")


def test_labels_in_status_metrics_and_the_key_listing(groups: Groups) -> None:
    g = groups
    nodes = {n["name"]: n for n in g.get("/internal/status", g.admin).json()["nodes"]}
    assert nodes["ads"]["labels"] == {"team": "ads", "pool": "mixed"} and nodes["search"]["labels"] == {
        "team": "search"
    }
    metrics = httpx.get(g.corral.url + "/metrics", timeout=5).text
    assert 'corral_node_info{node="ads",pool="mixed",team="ads"} 1.0' in metrics
    assert 'corral_node_info{node="search",pool="",team="search"} 1.0' in metrics
    listing = subprocess.run(
        [sys.executable, "-m", "corral", "keys", "list", "--config", str(g.config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert listing.returncode == 0 and "team=search" in listing.stdout
    keys = g.get("/admin/keys", g.admin).json()["keys"]
    assert {k["name"]: k["nodes"] for k in keys} == {"ops": None, "search-app": {"team": "search"}, "narrow": None}
    bad = g.post("/admin/keys", g.admin, {"name": "x", "nodes": "team"})
    assert bad.status_code == 400 and "nodes" in bad.json()["error"]


def test_corral_status_shows_each_nodes_labels(groups: Groups) -> None:
    # `corral status` reads /internal/status without a key: a keyless Corral over the same node.
    config = {"backends": [{"name": "search", "url": groups.search.url, "labels": {"team": "search"}}]}
    with running(start_corral(config)) as (corral,):
        wait_for(lambda: httpx.get(corral.url + "/ready", timeout=2).status_code == 200, 15, "ready")
        shown = subprocess.run(
            [sys.executable, "-m", "corral", "status", "--url", corral.url],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "250"},
        )
    assert shown.returncode == 0 and "team=search" in shown.stdout, shown.stdout + shown.stderr
