"""The simulator's gateway-side hold of cold models (`model-aware+hold`, bench/policy_sim/cold_hold.py):
nothing is lost in the hold, and a fleet that holds its models is routed as without it."""

from __future__ import annotations

from bench.policy_sim.generate import draw
from bench.policy_sim.run import HOLD, SCENARIOS, simulate


def test_on_a_fleet_that_cannot_hold_its_models_every_held_request_is_answered() -> None:
    scenario, _ = draw(1, 300.0)  # 5 nodes, 29 models: most requests are for a model no node holds
    plain, held = simulate(scenario, "model-aware", 1), simulate(scenario, HOLD, 1)
    assert held.failed == 0 and held.completed == held.requests == plain.requests
    assert held.ttft != plain.ttft  # the hold changed when requests started
    assert len(held.ttft) == held.completed  # each held request has its TTFT, counted from its arrival


def test_a_fleet_that_holds_its_models_routes_exactly_as_without_the_hold() -> None:
    scenario = SCENARIOS["single-model-70"]()
    scenario.duration_s = 120
    plain, held = simulate(scenario, "model-aware", 1), simulate(scenario, HOLD, 1)
    assert (held.ttft, held.loads) == (plain.ttft, plain.loads)
