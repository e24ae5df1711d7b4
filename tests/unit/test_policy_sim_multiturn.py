"""The policy simulator's prompt cache per slot and its multi-turn workload (issue 13 §1)."""

from __future__ import annotations

from bench.policy_sim.fleet import MODELS, Node, NodeParams, Request
from bench.policy_sim.run import PREFIX, SCENARIOS, simulate, summarize

SPEC = MODELS[3]
SPECS = {SPEC.name: SPEC}


def run_until_done(node: Node, req: Request, now: float) -> float:
    assert node.arrive(req, now) is None
    while req.done_at is None:
        node.schedule(now, SPECS)
        node.step(now, 0.05, [], [])
        now += 0.05
    return now


def test_a_slot_holding_the_history_evaluates_only_the_new_tokens_and_an_unload_loses_it() -> None:
    node = Node(0, NodeParams(parallel=2, load_fixed_s=0.0, bw_cold=1e9, bw_hot=1e9))
    first = Request(1, SPEC.name, 4096, 5000, 10, 0.0)
    first.segments = ((-1, 4000), (64, 1000))
    now = run_until_done(node, first, 0.0)
    assert first.cached == 0
    second = Request(2, SPEC.name, 4096, 5000 + 10 + 50, 10, now)
    second.segments = (*first.segments, (65, 10), (66, 50))
    now = run_until_done(node, second, now)
    assert second.cached == 5010  # the system prompt, the first question and its answer
    other = Request(3, SPEC.name, 4096, 4100, 10, now)
    other.segments = ((-1, 4000), (128, 100))  # another conversation of the same application
    now = run_until_done(node, other, now)
    assert other.cached == 4000
    node.fail()  # the runner goes, and its cache with it
    node.up = True
    again = Request(4, SPEC.name, 4096, second.prompt + 20, 10, now)
    again.segments = (*second.segments, (67, 10), (68, 10))
    run_until_done(node, again, now)
    assert again.cached == 0


def test_prefix_affinity_halves_the_ttft_of_later_turns() -> None:
    scenario = SCENARIOS["multi-turn-50"]()
    scenario.duration_s = 600
    plain = summarize([simulate(scenario, "model-aware", 1)])
    prefix = summarize([simulate(scenario, PREFIX, 1)])
    assert prefix["cached_share"] > plain["cached_share"] + 0.1
    assert prefix["later_p50"] * 2 <= plain["later_p50"]
    assert prefix["failed"] == 0


def test_without_shared_prefixes_the_hook_changes_nothing() -> None:
    scenario = SCENARIOS["thrash-50"]()
    scenario.duration_s = 120
    a, b = simulate(scenario, "model-aware", 2), simulate(scenario, PREFIX, 2)
    assert (a.ttft, a.loads, a.evictions) == (b.ttft, b.loads, b.evictions)
