"""Model management through the API acts on the fleet (issue 11 §1): real `corral sim` nodes behind a
real `corral serve`, driven with httpx and the official `ollama` client."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
import yaml

from procs import Proc, start_corral, start_sim, wait_for

# The small real model scripts/install-llama.sh fetches (tests/integration/llamacpp.py uses it too).
GGUF = Path(__file__).resolve().parents[2] / ".cache" / "models" / "gemma3-270m.gguf"
FAST = ["--tokens-per-second", "2000", "--load-seconds", "0.05"]
NODES = ("node-a", "node-b", "node-c")


def _config(*sims: Proc, names: tuple[str, ...] = NODES, **models: Any) -> dict[str, Any]:
    return {
        "backends": [{"name": n, "url": s.url} for n, s in zip(names, sims, strict=False)],
        "health": {"interval_s": 0.5, "timeout_s": 2, "rise": 1, "fall": 2},
        "routing": {"discovery_interval_s": 1},
        "models": models,
    }


def _up(corral: Proc, count: int) -> None:
    def ready() -> bool:
        nodes = httpx.get(corral.url + "/internal/status", timeout=2).json()["nodes"]
        return len(nodes) == count and all(n["state"] == "up" and n["models"] for n in nodes)

    wait_for(ready, 60, "every node up with its models discovered")


class Fleet3:
    def __init__(self, corral: Proc, sims: tuple[Proc, ...]) -> None:
        self.corral = corral
        self.sims = dict(zip(NODES, sims, strict=True))
        self.url = corral.url

    def on_node(self, node: str) -> set[str]:
        return {m["model"] for m in httpx.get(self.sims[node].url + "/api/tags", timeout=5).json()["models"]}

    def loaded_on(self, node: str) -> set[str]:
        return {m["model"] for m in httpx.get(self.sims[node].url + "/api/ps", timeout=5).json()["models"]}

    def audit(self) -> list[dict[str, Any]]:
        path = Path(yaml.safe_load(Path(self.corral.config_path).read_text())["audit"]["path"])  # type: ignore[attr-defined]
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def fleet3() -> Iterator[Fleet3]:
    sims: list[Proc] = []
    corral: Proc | None = None
    try:
        sims.append(start_sim("llama3.2:1b", extra=FAST))
        sims.append(start_sim("llama3.2:1b", extra=FAST))
        sims.append(start_sim("llama3.2:1b", extra=[*FAST, "--fail-pull", "mistral:7b"]))
        corral = start_corral(_config(*sims))
        _up(corral, 3)
        yield Fleet3(corral, tuple(sims))
    finally:
        for proc in [corral, *sims]:
            if proc is not None:
                proc.stop()


def test_pull_merges_progress_and_names_the_failing_node(fleet3: Fleet3) -> None:
    with httpx.stream("POST", fleet3.url + "/api/pull", json={"model": "mistral:7b"}, timeout=60) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in reply.iter_lines()]
    assert lines[0] == {"status": "pulling manifest"}
    bars: dict[str, list[tuple[int, int]]] = {}
    for line in lines[:-1]:
        assert "error" not in line
        if "digest" in line and line.get("completed"):
            bars.setdefault(line["digest"], []).append((line["total"], line["completed"]))
    assert bars, lines
    for digest, points in bars.items():
        totals = {t for t, _ in points}
        assert len(totals) == 1, f"the bar of {digest} changed its size: {totals}"  # the CLI fixes it at first
        done = [c for _, c in points]
        assert done == sorted(done) and done[-1] == points[0][0]  # never back, and ends full
    sizes = {d: p[0][0] for d, p in bars.items()}
    one_node = {
        m["digest"]: m for m in httpx.get(fleet3.sims["node-a"].url + "/api/tags").json()["models"]
    }  # the model's own layer: three nodes' worth in the merged total
    assert any(sizes.get("sha256:" + d) == m["size"] * 3 for d, m in one_node.items())
    error = lines[-1]["error"]
    assert error.startswith("the pull failed on node node-c: ") and "connection reset" in error
    assert "mistral:7b" in fleet3.on_node("node-a") and "mistral:7b" in fleet3.on_node("node-b")
    assert "mistral:7b" not in fleet3.on_node("node-c")
    tags = {m["model"]: m for m in httpx.get(fleet3.url + "/api/tags").json()["models"]}
    assert tags["mistral:7b"]["corral_nodes"] == ["node-a", "node-b"]  # routing saw it at once
    wait_for(
        lambda: len([r for r in fleet3.audit() if r.get("action") == "model.pull"]) >= 3, 10, "three audit records"
    )
    records = {r["detail"]["node"]: r["detail"] for r in fleet3.audit() if r.get("action") == "model.pull"}
    assert records["node-a"]["status"] == "ok" and records["node-c"]["status"] == "failed"
    httpx.request("DELETE", fleet3.url + "/api/delete", json={"model": "mistral:7b"}, timeout=30)


def test_pull_stream_false_waits_for_every_node(fleet3: Fleet3) -> None:
    reply = httpx.post(fleet3.url + "/api/pull", json={"model": "gemma2:2b", "stream": False}, timeout=60)
    assert reply.status_code == 200 and reply.json() == {"status": "success"}
    assert all("gemma2:2b" in fleet3.on_node(n) for n in NODES)
    failed = httpx.post(fleet3.url + "/api/pull", json={"model": "mistral:7b", "stream": False}, timeout=60)
    assert failed.status_code == 500 and "node node-c" in failed.json()["error"]
    missing = httpx.post(fleet3.url + "/api/pull", json={"model": "does-not-exist:1b", "stream": False}, timeout=60)
    # Every node failed alike: the fleet answers as one Ollama would.
    assert missing.status_code == 500 and missing.json() == {"error": "pull model manifest: file does not exist"}
    for model in ("gemma2:2b", "mistral:7b"):
        httpx.request("DELETE", fleet3.url + "/api/delete", json={"model": model}, timeout=30)


def test_ollama_client_manages_the_fleet(fleet3: Fleet3) -> None:
    client = ollama.Client(host=fleet3.url, timeout=60)
    statuses = [p.status for p in client.pull("phi3:mini", stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert all("phi3:mini" in fleet3.on_node(n) for n in NODES)
    assert client.copy("phi3:mini", "phi3:copy").status == "success"
    assert all("phi3:copy" in fleet3.on_node(n) for n in NODES)
    listed = client.list()
    assert [m.model for m in listed.models].count("phi3:copy") == 1
    # Load on every node holding it, then `ollama ps` lists it once per node.
    warm = httpx.post(fleet3.url + "/api/generate", json={"model": "phi3:mini"}, headers={"X-Corral-Fanout": "all"})
    assert warm.status_code == 200 and warm.json()["done_reason"] == "load"
    assert all("phi3:mini" in fleet3.loaded_on(n) for n in NODES)
    ps = client.ps()
    assert [m.model for m in ps.models].count("phi3:mini") == 3
    raw = httpx.get(fleet3.url + "/api/ps").json()["models"]
    assert sorted(m["corral_node"] for m in raw if m["model"] == "phi3:mini") == list(NODES)
    # `ollama stop`: unloaded everywhere it was loaded.
    stopped = client.generate(model="phi3:mini", keep_alive=0)
    assert stopped.done_reason == "unload"
    wait_for(lambda: all("phi3:mini" not in fleet3.loaded_on(n) for n in NODES), 5, "the model to unload everywhere")
    assert "phi3:mini" not in [m.model for m in client.ps().models]
    assert client.delete("phi3:copy").status == "success"
    assert client.delete("phi3:mini").status == "success"
    assert all("phi3:mini" not in fleet3.on_node(n) for n in NODES)
    with pytest.raises(ollama.ResponseError) as missing:
        client.delete("phi3:mini")
    assert missing.value.status_code == 404 and missing.value.error == "model 'phi3:mini' not found"
    # A pull that fails on one node: the client raises with the node named, as an in-stream error.
    with pytest.raises(ollama.ResponseError) as partial:
        for _ in client.pull("mistral:7b", stream=True):
            pass
    assert partial.value.status_code == -1 and "failed on node node-c" in partial.value.error
    client.delete("mistral:7b")


def test_delete_acts_only_where_the_model_is(fleet3: Fleet3) -> None:
    node_b = {"X-Corral-Node": "node-b"}
    pulled = httpx.post(fleet3.url + "/api/pull", json={"model": "qwen2:0.5b", "stream": False}, headers=node_b)
    assert pulled.status_code == 200
    assert "qwen2:0.5b" in fleet3.on_node("node-b") and "qwen2:0.5b" not in fleet3.on_node("node-a")
    deleted = httpx.request("DELETE", fleet3.url + "/api/delete", json={"model": "qwen2:0.5b"}, timeout=30)
    assert deleted.status_code == 200 and deleted.headers["x-corral-nodes"] == "node-b"
    invalid = httpx.post(fleet3.url + "/api/copy", json={"source": "nope:1b", "destination": "x:1b"}, timeout=30)
    assert invalid.status_code == 404 and invalid.json() == {"error": 'model "nope:1b" not found'}


def test_create_from_a_real_gguf_reaches_every_node(fleet3: Fleet3) -> None:
    if not GGUF.exists():
        pytest.skip(f"no GGUF at {GGUF}: run scripts/install-llama.sh")
    client = ollama.Client(host=fleet3.url, timeout=120)
    digest = client.create_blob(GGUF)
    _up(fleet3.corral, 3)  # a node busy hashing 250 MB may have missed a health check: the create needs all
    head = httpx.head(fleet3.url + f"/api/blobs/{digest}")
    assert head.status_code == 200  # every node has it
    progress = list(client.create(model="gemma-fleet:270m", files={"model.gguf": digest}, stream=True))
    assert progress[-1].status == "success"
    assert all("gemma-fleet:270m" in fleet3.on_node(n) for n in NODES)
    reply = client.generate(model="gemma-fleet:270m", prompt="hi", options={"num_predict": 2})
    assert reply.done
    client.delete("gemma-fleet:270m")


def test_blob_head_is_200_only_when_every_node_has_it(fleet3: Fleet3) -> None:
    data = os.urandom(4096)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    one = httpx.post(fleet3.url + f"/api/blobs/{digest}", content=data, headers={"X-Corral-Node": "node-a"})
    assert one.status_code == 201
    assert httpx.head(fleet3.url + f"/api/blobs/{digest}").status_code == 404
    assert httpx.post(fleet3.url + f"/api/blobs/{digest}", content=data).status_code == 201
    assert httpx.head(fleet3.url + f"/api/blobs/{digest}").status_code == 200
    wrong = httpx.post(fleet3.url + f"/api/blobs/{digest}", content=b"other bytes")
    assert wrong.status_code == 400 and "digest mismatch" in wrong.json()["error"]


def test_a_named_node_and_the_reject_policy(fleet3: Fleet3) -> None:
    node_a = {"X-Corral-Node": "node-a"}
    reply = httpx.post(fleet3.url + "/api/pull", json={"model": "tinyllama:1b"}, headers=node_a, timeout=30)
    assert reply.status_code == 200 and reply.headers["x-corral-node"] == "node-a"
    assert "tinyllama:1b" in fleet3.on_node("node-a") and "tinyllama:1b" not in fleet3.on_node("node-b")
    httpx.request("DELETE", fleet3.url + "/api/delete", json={"model": "tinyllama:1b"}, headers=node_a)
    sims = tuple(fleet3.sims.values())
    strict = start_corral(_config(*sims, default_targets="reject"))
    try:
        _up(strict, 3)
        for method, path in (("POST", "/api/pull"), ("POST", "/api/create"), ("DELETE", "/api/delete")):
            refused = httpx.request(method, strict.url + path, json={"model": "x"})
            assert refused.status_code == 400 and "X-Corral-Node" in refused.json()["error"], path
    finally:
        strict.stop()


def test_placement_policy_pulls_only_where_the_file_says(fleet3: Fleet3, tmp_path: Path) -> None:
    placement = tmp_path / "models.yaml"
    placement.write_text(yaml.safe_dump({"models": {"smollm:135m": {"nodes": ["node-b", "node-c"]}}}))
    sims = tuple(fleet3.sims.values())
    placed = start_corral(_config(*sims, default_targets="placement", placement_file=str(placement)))
    try:
        _up(placed, 3)
        reply = httpx.post(placed.url + "/api/pull", json={"model": "smollm:135m", "stream": False}, timeout=60)
        assert reply.status_code == 200 and reply.headers["x-corral-nodes"] == "node-b,node-c"
        assert [n for n in NODES if "smollm:135m" in fleet3.on_node(n)] == ["node-b", "node-c"]
        unplaced = httpx.post(placed.url + "/api/pull", json={"model": "other:1b"}, timeout=30)
        assert unplaced.status_code == 400 and "placement file" in unplaced.json()["error"]
        httpx.request("DELETE", placed.url + "/api/delete", json={"model": "smollm:135m"}, timeout=30)
        assert all("smollm:135m" not in fleet3.on_node(n) for n in NODES)
    finally:
        placed.stop()


def _memory_kib(proc: Proc) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            fields[name] = int(value.split()[0])
    return fields


def test_a_64_mib_blob_streams_to_two_nodes_at_constant_memory() -> None:
    sims = [start_sim("llama3.2:1b", extra=FAST), start_sim("llama3.2:1b", extra=FAST)]
    corral = start_corral(_config(*sims))
    try:
        _up(corral, 2)
        piece = os.urandom(1 << 20)
        pieces = 64
        digest = "sha256:" + hashlib.sha256(piece * pieces).hexdigest()
        assert httpx.head(corral.url + f"/api/blobs/{digest}").status_code == 404  # warm the path first
        before = _memory_kib(corral)

        def body() -> Iterator[bytes]:
            for _ in range(pieces):
                yield piece

        reply = httpx.post(corral.url + f"/api/blobs/{digest}", content=body(), timeout=120)
        assert reply.status_code == 201, reply.text
        after = _memory_kib(corral)
        growth_mib = (after["VmHWM"] - before["VmHWM"]) / 1024
        assert growth_mib < 32, f"Corral's peak memory grew by {growth_mib:.1f} MiB for a 64 MiB upload"
        assert httpx.head(corral.url + f"/api/blobs/{digest}").status_code == 200
        for sim in sims:
            assert httpx.head(sim.url + f"/api/blobs/{digest}").status_code == 200
        print(f"64 MiB to two nodes: peak RSS {before['VmHWM'] // 1024} -> {after['VmHWM'] // 1024} MiB")
    finally:
        for proc in (corral, *sims):
            proc.stop()


def test_a_pull_outlasts_the_gateway_timeouts(fleet3: Fleet3) -> None:
    # A pull may take an hour: the per-request timeouts (here far shorter than the ~1.5 s simulated
    # pull) do not cut it, streamed or not; only a node's silence (models.fanout_idle_s) would.
    sims = tuple(fleet3.sims.values())[:2]
    config = _config(*sims)
    config["timeouts"] = {"total_s": 0.5, "answer_s": 0.5, "idle_s": 0.5, "first_byte_s": 0.5}
    short = start_corral(config)
    try:
        _up(short, 2)
        whole = httpx.post(short.url + "/api/pull", json={"model": "granite:2b", "stream": False}, timeout=60)
        assert whole.status_code == 200 and whole.json() == {"status": "success"}
        streamed = httpx.post(short.url + "/api/pull", json={"model": "granite:3b"}, timeout=60)
        assert streamed.status_code == 200 and json.loads(streamed.text.splitlines()[-1]) == {"status": "success"}
        for model in ("granite:2b", "granite:3b"):
            assert all(model in fleet3.on_node(n) for n in ("node-a", "node-b"))
            httpx.request("DELETE", short.url + "/api/delete", json={"model": model}, timeout=30)
    finally:
        short.stop()
