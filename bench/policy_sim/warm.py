"""The gateway's keep-warm rule (corral/domain/keep_warm.py) in the simulator: what it sees of each
node (`/api/ps`: the runners with their expiry) and what its refresh does there (an empty-prompt
generate with keep_alive restarts an idle runner's keep-alive, server/sched.go)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from bench.policy_sim.fleet import GIB, Node
from corral.domain.fleet import LoadedModel, NodeView
from corral.domain.keep_warm import KeepWarm


def ps(node: Node) -> tuple[LoadedModel, ...]:
    """The node's runners as `/api/ps` lists them: an idle runner expires at idle_since + keep-alive."""
    return tuple(
        LoadedModel(
            r.spec.name,
            f"num_ctx={r.num_ctx}" if r.num_ctx != 4096 else "",
            size=int(r.vram * GIB),
            expires_at=math.inf if r.idle_since is None or r.ref else r.idle_since + r.session_s,
            digest=r.spec.name,
        )
        for r in node.runners.values()
    )


def keep_warm(rule: KeepWarm, nodes: Sequence[Node], views: Sequence[NodeView], now: float) -> list[int]:
    """Run the rule and carry out its refreshes; the nodes whose runners' keep-alive changed."""
    seen = [replace(v, loaded=ps(n)) if n.up else v for n, v in zip(nodes, views, strict=True)]
    touched = []
    for action in rule.decide(seen, now):
        node = nodes[int(action.node)]
        runner = node.runners.get(action.model)
        if runner is None or runner.unloading or runner.ref or node.loading is runner:
            continue  # not idle (the rule saw it idle at this same instant, so this does not happen)
        runner.idle_since = now  # the empty request ends at once: the keep-alive restarts
        runner.session_s = rule.p.keep_alive_s
        touched.append(node.index)
    return touched
