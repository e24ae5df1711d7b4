"""Model-aware routing's priors and the shapes its estimates take (docs/routing.md).

`Costs` holds every constant of the cost model; `Option` is one node weighed for one request. The
helpers here read a node's view the same way wherever the strategy weighs it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from corral.domain.fleet import LoadedModel, NodeView

Key = tuple[str, str]  # (model, load-time options)


@dataclass(frozen=True, slots=True)
class Costs:
    """The cost model's priors (docs/ollama-behaviour.md §6); the defaults suit GPU nodes on NVMe."""

    load_fixed_s: float = 1.5  # spawn the runner, allocate KV cache and graph, warm up
    load_bytes_per_s: float = 2.5e9  # disk to GPU, page cache cold
    default_size: int = 4_000_000_000  # bytes on disk of a model whose size is unknown
    resident_factor: float = 1.3  # resident bytes ÷ bytes on disk (KV cache, graph), until /api/ps says
    fit_share: float = 0.8  # Ollama loads without evicting only into this share of free memory
    unload_s: float = 1.0  # stopping a victim and waiting for its memory to come back
    service_s: float = 5.0  # a typical request's time in a slot, for a model of `reference_size` bytes
    reference_size: int = 5_000_000_000  # decoding is memory-bound: bigger models hold a slot longer
    replicate_discount: float = 0.3  # a load into free room, once no resident replica has a free slot
    in_use_s: float = 60.0  # a model routed to within this long is in use: evicting it costs a reload
    rate_window_s: float = 60.0  # arrival rates per model are averaged over about this long
    # A model's copies are overloaded at this utilisation (its last minute's rate ÷ what they serve): a load
    # that evicts another model for one more copy then goes without the stability charge. Below it the
    # copies keep up and the queue is a passing burst (evictions.py, `_calm`).
    overload: float = 0.5
    # Evicting a copy of a model in use also costs the stability charge when its remaining copies would
    # run at this utilisation or more. Both were 0.6 until issue 17's thrash-70 round: a model at 50-60%
    # queued on its busy copy rather than take a replica (docs/benchmarks.md, "Replicas from 50%").
    keep_overload: float = 0.58
    stability_loads: float = 4.0  # charged, in load times, for an eviction that only moves a queue elsewhere
    forget_s: float = 10.0  # how long the router's own residency news outlives its estimates
    affinity_slack_s: float = 1.0  # stay on a session's node unless another is this much sooner
    affinity_max: int = 65_536  # sessions remembered
    learn_rate: float = 0.2  # weight of each new observation in the learnt service and load times
    # In a fleet of more nodes than this, a decision uses the per-model index (fleet_index.py) and
    # bounded scans, so that it costs about the same at 256 nodes as at 16 (docs/benchmarks.md, decision
    # time); where the full filter must decide, it weighs at most this many of each kind.
    scan_nodes: int = 16
    ready_scan: int = 4  # with the index: enough copies with a free slot to choose among
    weigh_nodes: int = 4  # ... and, with none, the copies and the nodes to load on weighed (each)
    # Work, not requests (corral/domain/ledger.py). False: queues counted in requests, as before issue 17
    # (with `saturation` at infinity, the decisions of a fleet of up to `scan_nodes` nodes are then the
    # same as before it, request for request).
    work_waits: bool = True
    # The per-token priors, before anything is learnt.
    tpot_s: float = 0.01  # seconds per output token, one sequence alone, for a model of `reference_size`
    prefill_share: float = 1 / 30  # a prompt token's prefill ÷ an output token's decode
    batching: float = 0.35  # b sequences batched on one runner each decode (1 + batching·(b − 1)) slower
    # A model's copies are queued when the soonest start on any of them is this many of its load times
    # away: then a load that evicts another model is weighed without the stability charge.
    replicate_after: float = math.inf
    queue_weight: float = 1.5  # a queue's estimated wait is its mean; the tail is longer
    ledger_max_age_s: float = 3600.0  # a runner whose newest request is older than this is forgotten
    saturation: float = 1.0  # nodes this full of requests (÷ their slots) are saturated: no eviction helps
    prefill_queue: float = 1.0  # a free slot behind more than this many load times of prompts is no free slot
    batch_cold: bool = True  # while every copy of a model is loading, its requests wait for them: no eviction
    # An eviction of the last copy of a model that gets a request or more per reload time also costs,
    # this many times, the waits of those requests (evictions.py, `_stranded`: its rate × reload², when
    # rate × reload ≥ 1). Off (0): on the held-out draws it made more draws worse than least-connections,
    # not fewer (docs/benchmarks.md, "The draws where model-aware loses").
    victim_queue: float = 0.0
    # When the nodes weighed are saturated (`saturation`), a load that would evict a runner with requests
    # queued beyond its slots is weighed only if nothing else is left (no copy to queue on, no other
    # load): it would hand one backlog's node to another and add a load to both. Off: it cut loads on
    # every set, but in the held-out overload draws made model-aware worse than least-connections
    # during the overload in 3 of 4 (none without it): a model whose popularity rose mid-overload
    # waited on its one copy (docs/benchmarks.md, "Backlogs left where they are").
    saturated_keeps_queues: bool = False
    homes: bool = True  # keep models that fit smaller nodes off the only home of a big model in use (homes.py)
    # ... and charge that in full even on a load into free room (the replica discount spares it) on a node
    # where such a big model is busy or was sent within `in_use_s`: the room is its, and its next load
    # would evict the small model or wait for its requests to drain. Elsewhere the discount applies.
    # On since the simulator's nodes evict as Ollama does: on the tuning draws one fewer draw is worse
    # than least-connections and no median moves (docs/benchmarks.md, "Free room on a big model's node").
    homes_full: bool = True
    # A free slot (or a queue, or a load) on a node big enough for such a big model, while its requests
    # wait longer than its load time there or on its other copies, also costs the GPU time it takes
    # from them: the request's service time for each of their requests queued (evictions.py,
    # `_homes_queued`). Off: on the tuning draws it helped the mixed fleet whose 70B outgrew its homes
    # (draw 22, p99 0.82x -> 0.86x least-connections), but on held-out mixed fleets with homes to spare
    # it kept small models off nodes the big model did not need and halved two of the largest wins
    # (docs/benchmarks.md, "A queued big model's GPU time").
    homes_busy: bool = False
    # A load queued on a node counts until its own first token comes back, not until a first token of a
    # load sent after it (load_queue.py, `until_answered`); and a copy whose load is still queued behind
    # slower ones is loading until that queue says, not until the estimate made when it was sent. Off: a
    # first token of any later load frees every load sent before it (Ollama's first in, first out), which
    # the fast path of a model still resident breaks (docs/benchmarks.md, "Loads counted until they answer").
    queue_until_answered: bool = True


@dataclass(slots=True)
class Option:
    node: NodeView
    resident: bool
    cost: float
    ready_slot: bool = False  # resident, loaded, and a slot free now
    replica: bool = False  # not resident, and loading here evicts nothing and waits for no other load
    victims: tuple[LoadedModel, ...] = ()
    kept: float = 0.0  # the part of `cost` the replica discount does not reduce (homes.py's charge)
    wait: float | None = None  # a copy's estimated wait where `cost` weighs it more (queue_weight); else cost


def holds_fast(runners: Sequence[LoadedModel], model: str, options_key: str) -> bool:
    """candidates.holds, as a plain loop (it runs once per node per decision in big fleets)."""
    for m in runners:  # noqa: SIM110 (a generator in any() costs twice as much here)
        if m.model == model and m.options_key == options_key:
            return True
    return False


def busy_others(node: NodeView, model: str) -> int:
    """Other models with requests in flight on the node: they time-share its GPU."""
    count = 0
    for m, k in node.in_flight_by_model.items():  # a plain loop: twice as fast as sum() over a generator
        if k > 0 and m != model:
            count += 1
    return count


def fleet_memories(nodes: Sequence[NodeView]) -> frozenset[int] | None:
    out = set()
    for n in nodes:
        if n.vram_bytes is None:
            return None
        out.add(n.vram_bytes)
    return frozenset(out)


def speed(node: NodeView) -> float:
    return node.weight if node.weight > 0 else 1e-9
