"""One catalog name over a real OpenAI-compatible server (llama.cpp's, with Gemma 3 270M, serving the
model under its Hugging Face name) and an Ollama node (`corral sim`) that calls it `gemma3:270m`; an
alias in front of both, used through the official `openai` client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from procs import Proc, sim_stats, start_corral, start_sim, wait_for

from .llamacpp import llamacpp_missing, start_llamacpp

HF_NAME = "google/gemma-3-270m-it"

pytestmark = pytest.mark.skipif(llamacpp_missing() is not None, reason=str(llamacpp_missing()))


@pytest.fixture(scope="module")
def pooled() -> Iterator[tuple[Proc, Proc]]:
    with start_llamacpp(alias=HF_NAME) as llama_url:
        sim = start_sim("gemma3:270m", extra=["--tokens-per-second", "2000", "--load-seconds", "0.05"])
        corral = None
        try:
            corral = start_corral(
                {
                    "backends": [
                        {"name": "llama", "url": llama_url, "type": "openai"},
                        {"name": "ollama", "url": sim.url},
                    ],
                    "routing": {"strategy": "round-robin", "discovery_interval_s": 1},
                    "health": {"interval_s": 0.5},
                    "models": {"aliases": {"gpt-4o-mini": "gemma3:270m"}, "gemma3:270m": {"names": [HF_NAME]}},
                }
            )
            c = corral

            def both_listed() -> bool:
                nodes = httpx.get(c.url + "/internal/status", timeout=2).json()["nodes"]
                return all(n["state"] == "up" and n["models"] for n in nodes)

            wait_for(both_listed, 30, "both nodes up with their models")
            yield corral, sim
        finally:
            if corral is not None:
                corral.stop()
            sim.stop()


def test_the_alias_reaches_both_nodes_and_every_answer_names_it(pooled: tuple[Proc, Proc]) -> None:
    corral, sim = pooled
    client = openai.OpenAI(base_url=corral.url + "/v1", api_key="x", max_retries=0, timeout=120)
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in ids and ids.count("gemma3:270m") == 1 and HF_NAME not in ids
    nodes = []
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hi"}], max_tokens=4, temperature=0
        )
        reply = raw.parse()
        assert reply.model == "gpt-4o-mini" and reply.choices[0].message.content is not None
        nodes.append(raw.headers["x-corral-node"])
    assert sorted(nodes) == ["llama", "ollama"]
    assert sim_stats(sim)["requests"]["/v1/chat/completions"] == 1
    chunks = []
    for _ in range(2):  # streamed, from each node in turn: every chunk names the alias
        chunks += list(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True
            )
        )
    assert chunks and {c.model for c in chunks} == {"gpt-4o-mini"}
