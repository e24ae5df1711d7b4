"""The policy simulator's load causes (counters on the node) and its keep-warm driver (the gateway's
rule, corral.domain.keep_warm, carried out on simulated runners)."""

from __future__ import annotations

from bench.policy_sim.fleet import MODELS, Node, NodeParams, Request
from bench.policy_sim.warm import keep_warm
from corral.domain.fleet import NodeView
from corral.domain.keep_warm import KeepWarm

SPECS = {m.name: m for m in MODELS}
A, B = "llama3.2:1b", "llama3.2:3b"


def fast(max_loaded: int) -> NodeParams:
    return NodeParams(vram_gb=1000, max_loaded=max_loaded, parallel=1, load_fixed_s=0.5, bw_hot=1e9, bw_cold=1e9)


def load(node: Node, name: str, now: float) -> float:
    """Send one request for `name` and let the node load it; its runner is then idle. The time after."""
    assert node.arrive(Request(0, name, 4096, 10, 10, now), now) is None
    for _ in range(60):  # three seconds in scheduler steps: an eviction, its unload, and the load
        node.schedule(now, SPECS)
        now += 0.05
    for runner in node.runners.values():
        runner.fifo.clear()
        runner.idle_since = runner.idle_since if runner.idle_since is not None else now
    return now


def test_each_load_is_counted_by_its_cause() -> None:
    first, other = Node(0, fast(max_loaded=1)), Node(1, fast(max_loaded=1))
    other.book = first.book  # one fleet
    now = load(first, A, 0.0)
    now = load(other, A, now)  # a copy is loaded on node 0: a replica
    now = load(first, B, now)  # evicts A there
    now = load(first, A, now)  # A was evicted here
    first.runners[A].idle_since = now
    first.expire(now + 301)  # idle past its 5 minutes
    now = load(first, A, now + 302)
    assert first.load_causes == {**dict.fromkeys(first.load_causes, 0), "first": 2, "evicted": 1, "expired": 1}
    assert other.load_causes["replica"] == 1


def view(node: Node) -> NodeView:
    return NodeView(
        name=str(node.index),
        max_loaded=node.p.max_loaded,
        available=frozenset(SPECS),
        model_sizes={m.name: int(m.disk_gb * 2**30) for m in MODELS},
    )


def test_keep_warm_restarts_an_idle_runners_keep_alive_only_while_its_node_has_room() -> None:
    roomy, full = Node(0, fast(max_loaded=3)), Node(1, fast(max_loaded=1))
    load(roomy, A, 0.0)
    load(full, A, 0.0)
    for node in (roomy, full):
        node.runners[A].idle_since = 0.0  # expires at 300 s
    rule = KeepWarm()
    assert keep_warm(rule, [roomy, full], [view(roomy), view(full)], 200.0) == []  # not due yet
    assert keep_warm(rule, [roomy, full], [view(roomy), view(full)], 250.0) == [0]
    assert roomy.runners[A].idle_since == 250.0 and roomy.runners[A].session_s == 300.0
    roomy.expire(320.0)
    full.expire(320.0)
    assert A in roomy.runners and A not in full.runners  # the full node's runner expired as before


def test_the_load_causes_report_runs_and_shares_every_load() -> None:
    from bench.policy_sim.load_causes import POLICIES, _one, report

    rows: dict[int, dict[str, dict[str, object]]] = {}
    for policy in POLICIES:
        seed, _, summary = _one((0, policy, 60.0))
        rows.setdefault(seed, {})[policy] = summary
        causes = summary["causes"]
        assert isinstance(causes, dict) and sum(causes.values()) > 0
    text = report(rows, list(POLICIES))
    assert "| 0 | model-aware+warm |" in text and "median p50 / p95 / p99 ratio vs LC" in text
