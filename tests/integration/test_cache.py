"""The response and embeddings caches against real processes: `corral sim` nodes, `corral serve`, and a
real redis-server for the cache replicas share (docs/cache.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from corral.protocol import embed_wire
from procs import Proc, new_key, running, sim_stats, start_corral, start_sim, wait_for
from tests.contract.servers import ServerUnavailable, start_redis

EMBED = "nomic-embed-text:latest"
CHAT = "llama3.2:1b"
FAST = ["--tokens-per-second", "3000", "--load-seconds", "0", "--parallel", "8"]


def cache_config(sim: Proc, **cache: Any) -> dict[str, Any]:
    return {
        "backends": [{"name": "n", "url": sim.url}],
        "routing": {"discovery_interval_s": 0.2},
        "cache": {"responses": {"enabled": True}, "embeddings": {"enabled": True}, **cache},
    }


@pytest.fixture(scope="module")
def sim() -> Iterator[Proc]:
    proc = start_sim(CHAT, "qwen2.5:0.5b", EMBED + "=embed", extra=FAST)
    yield proc
    proc.stop()


def client(corral: Proc, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=corral.url, headers={"host": f"localhost:{corral.port}", **headers}, timeout=30)


def ready(http: httpx.Client, *models: str) -> None:
    wait_for(lambda: all(m in http.get("/api/tags").text for m in models), 15, "discovery of the models")


@pytest.fixture(scope="module")
def corral(sim: Proc) -> Iterator[Proc]:
    proc = start_corral(cache_config(sim))
    with client(proc) as http:
        ready(http, CHAT, EMBED)
    yield proc
    proc.stop()


def node_calls(sim: Proc, path: str) -> int:
    return int(sim_stats(sim)["requests"].get(path, 0))


def chat(prompt: str, stream: bool, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}]
    return {"model": CHAT, "messages": messages, "stream": stream, "options": {"temperature": 0}, **extra}


CASES = [
    ("/api/generate", {"model": CHAT, "prompt": "gen stream", "options": {"temperature": 0}}, "application/x-ndjson"),
    ("/api/chat", chat("chat whole", False), "application/json"),
    ("/api/chat", chat("chat stream", True), "application/x-ndjson"),
    (
        "/v1/chat/completions",
        {"model": CHAT, "messages": [{"role": "user", "content": "v1"}], "seed": 5},
        "application/json",
    ),
    (
        "/v1/chat/completions",
        {"model": CHAT, "messages": [{"role": "user", "content": "v1 s"}], "temperature": 0, "stream": True},
        "text/event-stream",
    ),
    ("/v1/completions", {"model": CHAT, "prompt": "v1 completion", "temperature": 0}, "application/json"),
]


@pytest.mark.parametrize(("path", "body", "content_type"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_a_hit_is_byte_identical_to_the_relayed_answer(
    corral: Proc, sim: Proc, path: str, body: dict[str, Any], content_type: str
) -> None:
    with client(corral) as http:
        first = http.post(path, json=body)
        calls = node_calls(sim, path)
        second = http.post(path, json=body)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-corral-cache"] == "miss" and second.headers["x-corral-cache"] == "hit"
    assert second.content == first.content  # timestamps and durations included: the answer as it was
    assert first.headers["content-type"].startswith(content_type)
    assert second.headers["content-type"] == first.headers["content-type"]
    assert ("transfer-encoding" in second.headers) == ("transfer-encoding" in first.headers)  # a stream stays one
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert node_calls(sim, path) == calls  # the node was not asked again


def test_only_deterministic_requests_are_cached(corral: Proc, sim: Proc) -> None:
    body = {"model": CHAT, "prompt": "sampled", "stream": False, "options": {"temperature": 0.8}}
    with client(corral) as http:
        replies = [http.post("/api/generate", json=body) for _ in range(2)]
    assert all(r.status_code == 200 and "x-corral-cache" not in r.headers for r in replies)


def test_no_cache_asks_the_node_and_refreshes_the_entry(corral: Proc, sim: Proc) -> None:
    body = chat("refresh me", False)
    with client(corral) as http:
        assert http.post("/api/chat", json=body).headers["x-corral-cache"] == "miss"
        calls = node_calls(sim, "/api/chat")
        fresh = http.post("/api/chat", json=body, headers={"cache-control": "no-cache"})
        assert fresh.headers["x-corral-cache"] == "miss" and node_calls(sim, "/api/chat") == calls + 1
        hit = wait_for(lambda: (r := http.post("/api/chat", json=body)).headers["x-corral-cache"] == "hit" and r)
    assert hit.content == fresh.content  # the refreshed answer replaced the first one


def test_a_stream_the_node_cut_short_is_not_kept(corral: Proc, sim: Proc) -> None:
    body = {"model": CHAT, "prompt": "cut", "options": {"temperature": 0, "num_predict": 20}}
    httpx.post(sim.url + "/_sim/faults", json={"midstream_error_after": 3}, timeout=5)
    try:
        with client(corral) as http:
            broken = http.post("/api/generate", json=body)
    finally:
        httpx.post(sim.url + "/_sim/faults", json={"midstream_error_after": None}, timeout=5)
    assert b'"error"' in broken.content
    with client(corral) as http:
        again = http.post("/api/generate", json=body)
    assert again.headers["x-corral-cache"] == "miss" and b'"error"' not in again.content


def test_a_re_pulled_model_misses(sim: Proc) -> None:
    node = start_sim(CHAT, "qwen2.5:0.5b", extra=FAST)
    corral = start_corral(cache_config(node))
    with running(corral, node), client(corral) as http:
        ready(http, CHAT)
        body = {"model": CHAT, "prompt": "weights", "stream": False, "options": {"temperature": 0}}
        assert http.post("/api/generate", json=body).headers["x-corral-cache"] == "miss"
        assert http.post("/api/generate", json=body).headers["x-corral-cache"] == "hit"

        def digest() -> str:
            return str(next(m["digest"] for m in http.get("/api/tags").json()["models"] if m["name"] == CHAT))

        before = digest()
        # New weights under the same name: the simulator's create takes the digest of `from`.
        made = httpx.post(node.url + "/api/create", json={"model": CHAT, "from": "qwen2.5:0.5b", "stream": False})
        assert made.status_code == 200
        wait_for(lambda: digest() != before, 10, "discovery of the new digest")
        assert http.post("/api/generate", json=body).headers["x-corral-cache"] == "miss"


def test_scope_key_keeps_each_key_to_its_own_entries(tmp_path: Path, sim: Proc) -> None:
    store = f"sqlite:///{tmp_path / 'keys.db'}"
    keys_config = tmp_path / "keys.yaml"
    keys_config.write_text(yaml.safe_dump({"auth": {"enabled": True, "store_url": store}}))
    key_a, key_b = new_key(keys_config, "--name", "a"), new_key(keys_config, "--name", "b")
    corral = start_corral({**cache_config(sim), "auth": {"enabled": True, "store_url": store}})
    body = chat("a secret question", False)
    a_headers, b_headers = {"authorization": f"Bearer {key_a}"}, {"authorization": f"Bearer {key_b}"}
    with running(corral), client(corral, **a_headers) as a, client(corral, **b_headers) as b:
        ready(a, CHAT)
        assert a.post("/api/chat", json=body).headers["x-corral-cache"] == "miss"
        hit = wait_for(lambda: (r := a.post("/api/chat", json=body)).headers["x-corral-cache"] == "hit" and r)
        calls = node_calls(sim, "/api/chat")
        other = b.post("/api/chat", json=body)
        assert other.headers["x-corral-cache"] == "miss"  # B never gets A's answer
        assert node_calls(sim, "/api/chat") == calls + 1
        assert other.content != hit.content  # its own answer (created_at differs), not A's bytes


def vectors_of(kind: str, body: bytes) -> list[bytes]:
    return list(embed_wire.split(kind, body).items)


COUNTS = re.compile(rb'"(total_duration|load_duration|prompt_eval_count|prompt_tokens|total_tokens)":\d+')


@pytest.mark.parametrize(
    ("path", "kind", "extra"),
    [
        ("/api/embed", "embed", {}),
        ("/api/embed", "embed", {"dimensions": 64, "truncate": True}),
        ("/v1/embeddings", "v1-float", {}),
        ("/v1/embeddings", "v1-base64", {"encoding_format": "base64"}),
    ],
)
def test_a_partly_cached_batch_keeps_order_and_the_node_bytes(
    corral: Proc, sim: Proc, path: str, kind: str, extra: dict[str, Any]
) -> None:
    tag = f"{kind}-{len(extra)}"
    batch = [f"{tag} c", f"{tag} a", f"{tag} b", f"{tag} c", f"{tag} d"]
    with client(corral) as http:
        warm = http.post(path, json={"model": EMBED, "input": [f"{tag} a", f"{tag} b"], **extra})
        assert warm.headers["x-corral-cache"] == "miss"
        wait_for(
            lambda: (
                http.post(path, json={"model": EMBED, "input": f"{tag} a", **extra}).headers["x-corral-cache"] == "hit"
            )
        )
        direct_calls = node_calls(sim, path)
        mixed = http.post(path, json={"model": EMBED, "input": batch, **extra})
        assert node_calls(sim, path) == direct_calls + 1  # only the misses went, in one request
        assert mixed.headers["x-corral-cache"] == "miss" and mixed.headers["x-corral-cache-hits"] == "2"
        whole = wait_for(
            lambda: (
                (r := http.post(path, json={"model": EMBED, "input": batch, **extra})).headers["x-corral-cache"]
                == "hit"
                and r
            )
        )
    direct = httpx.post(sim.url + path, json={"model": EMBED, "input": batch, **extra}, timeout=30)
    assert mixed.status_code == whole.status_code == direct.status_code == 200
    assert vectors_of(kind, mixed.content) == vectors_of(kind, direct.content) == vectors_of(kind, whole.content)
    # Apart from the counts (the node's, for what it computed), the bytes the node itself would send.
    assert COUNTS.sub(b"", mixed.content) == COUNTS.sub(b"", direct.content)
    assert json.loads(whole.content).keys() <= json.loads(direct.content).keys()
    assert mixed.headers["content-type"] == whole.headers["content-type"] == direct.headers["content-type"]
    if kind.startswith("v1"):
        assert [d["index"] for d in json.loads(mixed.content)["data"]] == list(range(len(batch)))


def test_the_legacy_embeddings_route_is_cached(corral: Proc, sim: Proc) -> None:
    body = {"model": EMBED, "prompt": "legacy text"}
    with client(corral) as http:
        first = http.post("/api/embeddings", json=body)
        second = wait_for(
            lambda: (r := http.post("/api/embeddings", json=body)).headers["x-corral-cache"] == "hit" and r
        )
    assert first.headers["x-corral-cache"] == "miss" and second.content == first.content


def metric(http: httpx.Client, name: str) -> float:
    line = next(x for x in http.get("/metrics").text.splitlines() if x.startswith(name + " "))
    return float(line.split()[-1])


def test_the_memory_cache_stays_within_its_caps(sim: Proc) -> None:
    cap, entry_cap = 64 * 1024, 32 * 1024
    corral = start_corral(cache_config(sim, max_bytes=cap, max_entry_bytes=entry_cap))
    with running(corral), client(corral) as http:
        ready(http, CHAT, EMBED)
        for i in range(40):
            texts = [f"cap {i} {j}" for j in range(4)]  # 4 vectors of 768 floats: ~60 KB a batch
            assert http.post("/api/embed", json={"model": EMBED, "input": texts}).status_code == 200
            assert metric(http, "corral_cache_bytes") <= cap
        assert metric(http, "corral_cache_bytes") > cap / 2
        long = {"model": CHAT, "prompt": "long", "options": {"temperature": 0, "num_predict": 2000}}
        first = http.post("/api/generate", json=long)
        assert len(first.content) > entry_cap
        assert http.post("/api/generate", json=long).headers["x-corral-cache"] == "miss"  # never stored


def test_two_replicas_share_hits_through_redis(sim: Proc) -> None:
    try:
        redis_cm = start_redis()
        redis = redis_cm.__enter__()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        config = cache_config(sim, backend="redis", redis_url=redis.url)
        one, two = start_corral(config), start_corral(cache_config(sim, backend="redis", redis_url=redis.url))
        with running(one, two), client(one) as a, client(two) as b:
            ready(a, CHAT, EMBED)
            ready(b, CHAT, EMBED)
            body = chat("shared by replicas", True)
            first = a.post("/api/chat", json=body)
            assert first.headers["x-corral-cache"] == "miss"
            hit = wait_for(lambda: (r := b.post("/api/chat", json=body)).headers["x-corral-cache"] == "hit" and r)
            assert hit.content == first.content
            a.post("/api/embed", json={"model": EMBED, "input": ["shared x", "shared y"]})
            wait_for(
                lambda: (
                    b.post("/api/embed", json={"model": EMBED, "input": ["shared y"]}).headers["x-corral-cache"]
                    == "hit"
                )
            )
    finally:
        redis_cm.__exit__(None, None, None)


@pytest.mark.parametrize("charge_hits", [True, False])
def test_hits_are_audited_and_charged_to_token_limits_by_policy(tmp_path: Path, sim: Proc, charge_hits: bool) -> None:
    store = f"sqlite:///{tmp_path / 'keys.db'}"
    keys_config = tmp_path / "keys.yaml"
    keys_config.write_text(yaml.safe_dump({"auth": {"enabled": True, "store_url": store}}))
    key = new_key(keys_config, "--name", "t", "--tpm", "40")
    config = {
        **cache_config(sim, charge_hits=charge_hits),
        "auth": {"enabled": True, "store_url": store},
        "limits": {"estimate_tokens": 5},
        "audit": {"path": str(tmp_path / "audit.log")},
    }
    corral = start_corral(config)
    body = {"model": CHAT, "prompt": "x", "stream": False, "options": {"temperature": 0, "num_predict": 12}}
    with running(corral), client(corral, authorization=f"Bearer {key}") as http:
        ready(http, CHAT)
        replies = [http.post("/api/generate", json=body) for _ in range(6)]
    statuses = [r.status_code for r in replies]
    # Each answer is 13 tokens (1 prompt + 12): three fit in 40 a minute when hits are charged.
    if charge_hits:
        assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]
    else:
        assert statuses == [200] * 6
    assert [r.headers.get("x-corral-cache") for r in replies[:3]] == ["miss", "hit", "hit"]

    def audited() -> list[dict[str, Any]]:
        lines = (tmp_path / "audit.log").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r.get("route") == "/api/generate"]

    records = wait_for(lambda: len(audited()) == 6 and audited(), 10, "the audit records")
    assert [r["status"] for r in records] == statuses
    assert records[1]["node"] is None and records[1]["key_name"] == "t"  # a hit, audited like any request
