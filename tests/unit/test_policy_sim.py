"""The routing benchmark's fleet model drives the gateway's own strategies, deterministically."""

from __future__ import annotations

from bench.policy_sim.fleet import MODELS, Node, NodeParams, Request
from bench.policy_sim.run import SCENARIOS, simulate, summarize


def test_same_seed_same_result() -> None:
    scenario = SCENARIOS["thrash-50"]()
    scenario.duration_s = 60
    a, b = simulate(scenario, "model-aware", 3), simulate(scenario, "model-aware", 3)
    assert (a.ttft, a.loads) == (b.ttft, b.loads)


def test_model_aware_avoids_the_load_thrash_that_round_robin_causes() -> None:
    scenario = SCENARIOS["thrash-50"]()
    scenario.duration_s = 300
    rr = summarize([simulate(scenario, "round-robin", 1)])
    ma = summarize([simulate(scenario, "model-aware", 1)])
    assert ma["loads_per_1k"] * 5 < rr["loads_per_1k"]
    assert ma["ttft_p99"] * 3 < rr["ttft_p99"]
    assert ma["failed"] == 0 and ma["rejected_503"] == 0


def test_node_model_follows_ollamas_eviction_rule() -> None:
    node = Node(0, NodeParams(vram_gb=1000, max_loaded=2, parallel=1, load_fixed_s=0.5, bw_hot=1e9, bw_cold=1e9))
    specs = {m.name: m for m in MODELS}
    now = 0.0
    for i, name in enumerate(("llama3.2:1b", "llama3.2:3b")):
        assert node.arrive(Request(i, name, 4096, 10, 10, now), now) is None
        node.schedule(now, specs)
        now += 1.0
        node.schedule(now, specs)
    assert set(node.runners) == {"llama3.2:1b", "llama3.2:3b"}
    node.runners["llama3.2:3b"].session_s = 60  # a shorter keep-alive is evicted first
    node.runners["llama3.2:3b"].fifo.clear()
    node.runners["llama3.2:1b"].fifo.clear()
    node.arrive(Request(9, "qwen2.5:7b", 4096, 10, 10, now), now)
    node.schedule(now, specs)
    node.schedule(now, specs)
    assert "llama3.2:3b" not in node.runners and "llama3.2:1b" in node.runners
