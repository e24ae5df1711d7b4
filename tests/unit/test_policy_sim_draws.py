"""Generated scenarios (bench/policy_sim/generate.py): reproducible, over the issue's range of fleets (embedding
mixes, ramps, up to 64 nodes), and a mixed fleet loses nothing to placement."""

from __future__ import annotations

import itertools
import math
import random
import subprocess
import sys

from bench.policy_sim.fleet import MODELS, Node, NodeParams, Request
from bench.policy_sim.generate import MAX_DRAWS, SETS, draw, embedder, model
from bench.policy_sim.run import DT, Scenario, simulate, workload


def test_a_draw_is_the_same_for_the_same_seed_and_held_out_seeds_differ() -> None:
    a, da = draw(100_000, 60)
    b, db = draw(100_000, 60)
    assert da == db and a.node_params == b.node_params
    assert draw(100_001, 60)[1] != da


def test_the_tuning_held_out_and_fresh_sets_share_no_seed() -> None:
    # A set of at most MAX_DRAWS draws from its first seed never reaches the next set's first seed, so a
    # report on the fresh set is on draws no variant was chosen on.
    starts = sorted(SETS.values())
    assert SETS["fresh"] == 200_000 and len(starts) == 3
    spans = [range(s, s + MAX_DRAWS) for s in starts]
    assert all(a[-1] < b[0] for a, b in itertools.pairwise(spans))
    assert draw(SETS["fresh"], 60)[1] not in (draw(SETS["held-out"], 60)[1], draw(SETS["tuning"], 60)[1])


def test_a_set_of_more_draws_than_the_gap_between_sets_is_refused() -> None:
    cmd = [sys.executable, "-m", "bench.policy_sim.generate", "--set", "fresh", "--draws", str(MAX_DRAWS + 1)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--draws: at most 100000" in done.stderr


def test_a_model_too_big_for_some_nodes_never_fails_there() -> None:
    # A 70B model (42.5 GB) and a small one on two 24 GB nodes and one 80 GB node: every request for
    # the big one must end up on the big node, whatever the strategy picks first.
    big, small = model(70, 0), model(3, 1)
    params = (NodeParams(vram_gb=22), NodeParams(vram_gb=22), NodeParams(vram_gb=74))
    scenario = Scenario("mixed", 0.3, models=(big, small), nodes=3, node_params=params, duration_s=120)
    for policy in ("least-connections", "round-robin", "model-aware"):
        result = simulate(scenario, policy, 2)
        assert result.failed == 0, policy
        assert result.completed == result.requests, policy


def test_draws_span_the_issues_range_of_fleets() -> None:
    # Issue 17 item 6: 3-64 nodes, mixed memory and `parallel` including 1, 5-30 models up to 70B,
    # embedding mixes, ramps and overload phases; only drawing, nothing simulated.
    described = [draw(seed, 1800)[1] for seed in range(200)]
    nodes = [d["nodes"] for d in described]
    assert min(nodes) >= 3 and max(nodes) <= 64 and sum(n > 32 for n in nodes) >= 20
    assert all(5 <= len(d["models"]) <= 30 for d in described)
    assert any(d["biggest_b"] == 70 for d in described)
    assert any(len(d["parallel"]) > 1 and 1 in d["parallel"] for d in described)
    assert any(len(d["memory_gb"]) > 1 for d in described)
    shares = [d["embed_share"] for d in described if "embed_share" in d]
    assert len(shares) >= 30 and all(0.3 <= s <= 0.6 for s in shares)
    assert sum(isinstance(d["load"], str) for d in described) >= 20  # ramps
    assert sum("overload" in d for d in described) >= 20


def test_the_same_seed_draws_the_same_requests() -> None:
    a, _ = draw(100_006, 30)
    b, _ = draw(100_006, 30)
    assert workload(a, random.Random(1)) == workload(b, random.Random(1))


def embedding_scenario(share: float, duration_s: float) -> Scenario:
    models = (model(7, 0), model(3, 1), embedder(0, 0))
    return Scenario("embed", 0.5, models=models, nodes=3, embed_share=share, duration_s=duration_s)


def test_an_embedding_request_is_its_prompt_only() -> None:
    requests = workload(embedding_scenario(0.5, 120), random.Random(3))
    embeds = [r for r in requests if r.model == "nomic-embed0"]
    assert 0.4 < len(embeds) / len(requests) < 0.6
    assert all(r.output == 0 and r.prompt > 0 for r in embeds)
    assert all(r.output > 0 for r in requests if r not in embeds)
    # Simulated, it produces no tokens and is done when its prompt is evaluated.
    result = simulate(embedding_scenario(1.0, 20), "model-aware", 3)
    assert result.completed == result.requests > 100 and result.tokens == 0
    assert all(abs(e - t) <= DT + 1e-9 for e, t in zip(sorted(result.e2e), sorted(result.ttft), strict=True))


def test_a_ramps_rate_rises_over_the_run() -> None:
    ramp = Scenario("ramp", 0.5, nodes=8, ramp=(0.1, 0.9), duration_s=600)
    times = [r.arrival for r in workload(ramp, random.Random(5))]
    first, last = sum(t < 120 for t in times), sum(t >= 480 for t in times)
    assert last > 3 * first  # 0.1-0.26 of capacity in the first fifth, 0.74-0.9 in the last
    steady = [r.arrival for r in workload(Scenario("steady", 0.5, nodes=8, duration_s=600), random.Random(5))]
    assert 0.8 < sum(t >= 480 for t in steady) / sum(t < 120 for t in steady) < 1.25


def test_a_big_generated_fleet_runs_and_loses_nothing_to_placement() -> None:
    seed = next(s for s in range(100_000, 100_100) if draw(s, 10)[1]["nodes"] >= 48)
    scenario, _ = draw(seed, 10)
    for policy in ("least-connections", "model-aware"):
        result = simulate(scenario, policy, seed)
        assert result.failed == 0 and result.completed == result.requests > 0, policy


def test_an_idle_node_is_skipped_only_until_its_keep_alive_runs_out() -> None:
    node = Node(0, NodeParams(load_fixed_s=0.1))
    specs = {m.name: m for m in MODELS}
    node.arrive(Request(0, "llama3.2:1b", 4096, 10, 5, 0.0), 0.0)
    assert node.quiet_until() == -math.inf  # a queued request: step it
    now, done, started = 0.0, [], []
    while not done:
        node.schedule(now, specs)
        node.step(now, DT, done, started)
        now += DT
    runner = node.runners["llama3.2:1b"]
    assert node.quiet_until() == runner.idle_since + runner.session_s == done[0].done_at + 300
