"""Generated scenarios (bench/policy_sim/generate.py): reproducible, and a mixed fleet loses nothing
to placement."""

from __future__ import annotations

from bench.policy_sim.fleet import NodeParams
from bench.policy_sim.generate import draw, model
from bench.policy_sim.run import Scenario, simulate


def test_a_draw_is_the_same_for_the_same_seed_and_held_out_seeds_differ() -> None:
    a, da = draw(100_000, 60)
    b, db = draw(100_000, 60)
    assert da == db and a.node_params == b.node_params
    assert draw(100_001, 60)[1] != da


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
