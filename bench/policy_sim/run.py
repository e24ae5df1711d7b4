"""Drives the simulated fleet with the gateway's own routing strategies (corral.domain.routing).

The gateway part: NodeView snapshots with its own in-flight counts applied at once and the /api/ps
residency refreshed every `poll_s`; health marks a dead node down after fall x interval; every policy
gets the same retry rule (connection error or 503 before the first token: retry elsewhere, at most 2).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from bench.policy_sim.cold_hold import ColdHold
from bench.policy_sim.fleet import GIB, MODELS, ModelSpec, Node, NodeParams, Request
from bench.policy_sim.multiturn import MultiTurn, PrefixRouting, conversation_rate, first_turns, next_turn
from bench.policy_sim.warm import keep_warm
from corral.domain.fleet import LoadedModel, NodeView, NoRoute, NoRouteReason, RouteRequest
from corral.domain.keep_warm import KeepWarm
from corral.domain.model_aware import ModelAware
from corral.domain.num_ctx import effective, parse
from corral.domain.residency import Action, Residency
from corral.domain.routing import LeastConnections, Strategy, make_strategy

DT = 0.05
POLL_S = 1.0
FALL_S = 2.0  # health: fall 2 x interval 1 s


@dataclass
class Scenario:
    name: str
    load: float  # share of nominal capacity
    models: tuple[ModelSpec, ...] = MODELS
    nodes: int = 4
    params: NodeParams = field(default_factory=NodeParams)
    duration_s: float = 1800.0  # fleet-model.md §6(b): 30 min runs plus drain
    kill_node_at: float | None = None  # share of duration
    burst: tuple[float, float] | None = None  # (start, end) shares: the coldest model takes 60% of traffic
    alt_ctx_share: float = 0.0  # share of clients sending num_ctx 8192
    num_ctx_policy: str | None = None  # models.<name>.num_ctx for every model (corral.domain.num_ctx)
    # Generated scenarios (bench/policy_sim/generate.py) also set these; the defaults are the published ones.
    node_params: tuple[NodeParams, ...] = ()  # one per node (mixed fleets); empty: `params` for every node
    zipf: float = 1.0  # popularity exponent
    shift_every_s: float | None = None  # popularity reshuffled this often
    overload: tuple[float, float, float] | None = None  # (start, end) shares of the run at this load
    prompt_median: float = 400.0
    prompt_cap: int = 2048
    multiturn: MultiTurn | None = None  # conversations resending their history (bench/policy_sim/multiturn.py)
    embed_share: float = 0.0  # share of requests to the embedding models among `models` (ModelSpec.embedding)
    ramp: tuple[float, float] | None = None  # load from the first share of capacity to the second, linearly
    # The same arrivals without the overload's extra ones (the run it is measured against, recovery.py)
    overload_thinned: bool = False

    def node(self, i: int) -> NodeParams:
        return self.node_params[i] if self.node_params else self.params


@dataclass
class Result:
    ttft: list[float]
    e2e: list[float]
    loads: int
    evictions: int
    rejected_503: int
    failed: int  # before any token reached the client: retries exhausted, no route, did not fit
    cut: int  # streaming when their node died (no gateway can save those)
    completed: int
    requests: int
    duration: float
    tokens: int
    ttft_later: list[float] = field(default_factory=list)  # multi-turn: TTFT of the turns after the first
    cached_share: float = 0.0  # multi-turn: share of prompt tokens a slot already held
    load_causes: dict[str, int] = field(default_factory=dict)  # Node.load_causes summed (not in the figures)
    # (arrival, TTFT) of each request with a first token, and the moment of each load (recovery.py)
    timeline: list[tuple[float, float]] = field(default_factory=list)
    load_times: list[float] = field(default_factory=list)
    shed: list[float] = field(default_factory=list)  # arrivals refused at once: estimated wait over the bound
    unserved: list[float] = field(default_factory=list)  # arrivals that never had a first token, nor were shed

    def pct(self, values: list[float], q: float) -> float:
        return percentile(values, q)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile of `values` (the value at rank q·n; NaN for none), as every report here takes it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


PROMPT_MEAN = 400 * math.exp(1.0**2 / 2)  # lognormal(median 400, sigma 1.0)
OUTPUT_MEAN = 180 * math.exp(0.9**2 / 2)  # lognormal(median 180, sigma 0.9)
EMBED_MEDIAN, EMBED_SIGMA, EMBED_CAP = 256.0, 0.8, 2048  # an embedding request: one chunk of a document
EMBED_MEAN = EMBED_MEDIAN * math.exp(EMBED_SIGMA**2 / 2)


def popularity(s: Scenario, names: list[str]) -> dict[str, float]:
    """Each model's share of requests: Zipf over the chat models in `names` order, the embedding
    models splitting `embed_share` evenly."""
    specs = {m.name: m for m in s.models}
    chat = [n for n in names if not specs[n].embedding]
    embed = [n for n in names if specs[n].embedding]
    weights = [1 / (i + 1) ** s.zipf for i in range(len(chat))]
    rest = 1.0 - (s.embed_share if embed else 0.0)
    mix = {n: rest * w / sum(weights) for n, w in zip(chat, weights, strict=True)}
    return mix | {n: s.embed_share / len(embed) for n in embed}


def nominal_capacity(s: Scenario, mix: dict[str, float]) -> float:
    """Requests/s the fleet sustains for this model mix when every node has every slot busy: per
    request, its prefill alone on the GPU plus its share of the batched decode, averaged over the mix
    (so "50% load" means half the fleet's capacity whichever models happen to be the popular ones)."""
    specs = {m.name: m for m in s.models}
    prompt_mean = PROMPT_MEAN * s.prompt_median / 400.0

    def per_request(params: NodeParams, shares: dict[str, float] = mix) -> float:
        b = params.parallel
        out = 0.0
        for name, share in shares.items():
            spec = specs[name]
            if spec.embedding:
                out += share * EMBED_MEAN / spec.pp
                continue
            aggregate = spec.tg1 * b / (1 + params.serial_frac * (b - 1))
            out += share * (prompt_mean / spec.pp + OUTPUT_MEAN / aggregate)
        return out

    if s.node_params:
        # A mixed fleet: no model may take more than the nodes it fits can serve of it.
        def fits(spec: ModelSpec, p: NodeParams) -> bool:
            return spec.vram_gb(4096, p.parallel) <= 0.8 * p.vram_gb

        mixed = sum(1 / per_request(p) for p in s.node_params)
        for name, share in mix.items():
            alone = sum(1 / per_request(p, {name: 1.0}) for p in s.node_params if fits(specs[name], p))
            mixed = min(mixed, alone / share)
        return mixed
    return s.nodes / per_request(s.params)


def workload(s: Scenario, rng: random.Random) -> list[Request]:
    if s.multiturn is not None:
        rate = conversation_rate(s.multiturn, s.load, [s.node(i) for i in range(s.nodes)], s.models[0])
        return first_turns(s.multiturn, rate, s.duration_s, s.models[0], rng)
    embed = [m.name for m in s.models if m.embedding] if s.embed_share > 0 else []
    names = [m.name for m in s.models if m.name not in embed]
    rng.shuffle(names)
    weights = [1 / (i + 1) ** s.zipf for i in range(len(names))]  # Zipf
    if embed:
        rate = s.load * nominal_capacity(s, popularity(s, names + embed))
    else:  # the published scenarios: exactly as before
        rate = s.load * nominal_capacity(s, {n: w / sum(weights) for n, w in zip(names, weights, strict=True)})
    out: list[Request] = []
    t = 0.0
    rid = 0
    shifts = random.Random(rng.random()) if s.shift_every_s else None
    next_shift = s.shift_every_s or math.inf
    # Thinning (`overload_thinned`) draws from its own stream, so every other draw is the same as the
    # overloaded run's: both runs have the same arrivals outside the overload, and the same models.
    thinning = random.Random(1)
    while True:
        over = s.overload
        if over is not None and over[0] * s.duration_s <= t < over[1] * s.duration_s:
            t += rng.expovariate(rate * over[2] / s.load)
        elif s.ramp is not None:  # the rate at this instant: slow enough a change for a Poisson step
            low, high = s.ramp
            t += rng.expovariate(rate / s.load * (low + (high - low) * min(1.0, t / s.duration_s)))
        else:
            t += rng.expovariate(rate)
        if t >= s.duration_s:
            return out
        # The share of the rate at `t` that is the overload's (an arrival outside it is never thinned)
        extra = 1 - s.load / over[2] if over is not None and over[0] <= t / s.duration_s < over[1] else 0.0
        while shifts is not None and t >= next_shift:
            shifts.shuffle(names)  # which model is popular changes; the shape of popularity does not
            next_shift += s.shift_every_s or math.inf
        if embed and rng.random() < s.embed_share:
            prompt = min(EMBED_CAP, int(rng.lognormvariate(math.log(EMBED_MEDIAN), EMBED_SIGMA)) + 1)
            request = Request(rid, rng.choice(embed), 4096, prompt, 0, t)
        else:
            if s.burst and s.burst[0] * s.duration_s <= t < s.burst[1] * s.duration_s and rng.random() < 0.6:
                model = names[-1]
            else:
                model = rng.choices(names, weights)[0]
            ctx = 8192 if rng.random() < s.alt_ctx_share else 4096
            if s.num_ctx_policy is not None:  # the gateway's rewrite, before routing (4096: not set)
                ctx = effective(parse(s.num_ctx_policy), None if ctx == 4096 else ctx) or 4096
            prompt = min(s.prompt_cap, int(rng.lognormvariate(math.log(s.prompt_median), 1.0)) + 1)
            output = min(2048, int(rng.lognormvariate(math.log(180), 0.9)) + 1)
            request = Request(rid, model, ctx, prompt, output, t)
        rid += 1
        if not (s.overload_thinned and extra and thinning.random() < extra):
            out.append(request)


class Oracle(LeastConnections):
    """Lower bound: loads are free and instant (set on the nodes); least connections among nodes."""


def ctx_key(num_ctx: int) -> str:
    """The gateway's options key for a request's load-time options (4096 is the nodes' default)."""
    return f"num_ctx={num_ctx}" if num_ctx != 4096 else ""


def simulate(s: Scenario, policy: str, seed: int, shed_after_s: float = 0.0) -> Result:
    """One run. `shed_after_s` (policy SHED): the bound on the estimated wait; 0, SHED_AFTER_S."""
    requests = workload(s, random.Random(seed * 7919 + 1))
    per_node = [s.node(i) for i in range(s.nodes)]
    if policy == "oracle":  # ideal placement: every model resident everywhere, loads free and instant
        per_node = [
            NodeParams(**{**p.__dict__, "instant_loads": True, "max_loaded": 99, "vram_gb": 1e6}) for p in per_node
        ]
    nodes = [Node(i, p) for i, p in enumerate(per_node)]
    for n in nodes:
        n.book = nodes[0].book  # one fleet-wide record of the load causes (counters only)
    unfit: list[set[str]] = [set() for _ in nodes]  # models a node refused for memory (the gateway learns it)
    specs = {m.name: m for m in s.models}
    controller = Residency() if policy == RESIDENCY else None
    prefixes = PrefixRouting(s.models[0].pp) if policy == PREFIX else None  # prompt_eval_rate as configured
    cold: ColdHold[Request] | None = ColdHold() if policy == HOLD else None  # the gateway's hold (cold_hold.py)
    warm = KeepWarm() if policy == WARM else None  # residency.keep_warm (bench/policy_sim/warm.py)
    base = "model-aware" if controller is not None or prefixes is not None or cold is not None else policy
    base = "model-aware" if warm is not None or policy == SHED else base
    shed_after = (shed_after_s or SHED_AFTER_S) if policy == SHED else None
    shed: list[float] = []
    later: list[tuple[float, int, Request]] = []  # multi-turn: next turns, after their think time
    turns_issued = 0
    strategy: Strategy = Oracle() if policy == "oracle" else make_strategy(base, random.Random(seed))
    router = strategy if isinstance(strategy, ModelAware) else None
    pins: dict[tuple[int, str], float] = {}  # (node, model) -> keep-alive the controller asked for
    next_decision = 0.0
    next_warm = 0.0
    in_flight: list[dict[str, int]] = [{} for _ in nodes]
    residency: list[tuple[LoadedModel, ...]] = [() for _ in nodes]
    marked_down: dict[int, float] = {}
    finished: list[Request] = []
    retry_heap: list[tuple[float, int, Request]] = []
    rejected = failed = cut = 0
    next_poll = 0.0
    arrivals = iter(requests)
    upcoming = next(arrivals, None)
    now = 0.0
    end = s.duration_s + 600.0  # drain

    sizes = {m.name: int(m.disk_gb * GIB) for m in s.models}
    available = frozenset(specs)
    # Speed without changing an event: a node's snapshot is rebuilt only when what it shows changed
    # (`snapshot`), its /api/ps residency only when its runners changed or a dispatch edited it
    # (`polled`), and a node with nothing to do is not stepped until its next keep-alive expiry (`quiet`).
    snapshot: list[NodeView | None] = [None for _ in nodes]
    polled: list[int] = [-1 for _ in nodes]  # Node.version the residency was last read at (-1: edited since)
    quiet: list[float] = [-math.inf for _ in nodes]

    def view(n: Node) -> NodeView:
        return NodeView(
            name=str(n.index),
            up=n.index not in marked_down or now < marked_down[n.index],
            parallel=n.p.parallel,
            max_loaded=n.p.max_loaded,
            vram_bytes=int(n.p.vram_gb * GIB),
            available=available,
            model_sizes=sizes,
            loaded=residency[n.index],
            in_flight=sum(in_flight[n.index].values()),
            in_flight_by_model=dict(in_flight[n.index]),
            unfit=frozenset(unfit[n.index]),
        )

    def views() -> list[NodeView]:
        out = []
        for n in nodes:
            cached = snapshot[n.index]
            if cached is None or n.index in marked_down:  # `up` depends on the time there
                cached = snapshot[n.index] = view(n)
            out.append(cached)
        return out

    def sent(index: int, model: str) -> None:
        in_flight[index][model] = in_flight[index].get(model, 0) + 1
        snapshot[index] = None
        quiet[index] = -math.inf

    def settled(index: int, model: str) -> None:
        in_flight[index][model] -= 1
        snapshot[index] = None

    def route_of(req: Request, exclude: frozenset[str]) -> RouteRequest:
        prefer, slack = prefixes.prefer(req) if prefixes is not None else (None, 0.0)
        return RouteRequest(
            req.model,
            options_key=ctx_key(req.num_ctx),
            exclude=exclude,
            est_tokens=req.prompt + req.output,
            est_prompt_tokens=req.prompt,
            prefer=prefer,
            prefer_slack_s=slack,
            shed_after_s=shed_after,
        )

    def admit(req: Request) -> None:
        """A new request: to routing now, or (model-aware+hold) held at the gateway while cold."""
        route = route_of(req, frozenset())
        if cold is not None and router is not None and cold.should_hold(views(), route, router, now):
            cold.hold(route, now, req)
            return
        dispatch(req, frozenset(), route)

    def release() -> None:
        """Held batches whose loader freed: the first request is routed, the rest follow it to its node."""
        assert cold is not None and router is not None
        while (batch := cold.next_batch(views(), router, now)) is not None:
            first = batch[0].payload
            pinned = dispatch(first, frozenset(), batch[0].route)
            for held in batch[1:]:
                route = held.route
                if pinned is not None:
                    others = frozenset(str(n.index) for n in nodes if n.index != pinned)
                    route = replace(route, exclude=route.exclude | others)
                dispatch(held.payload, frozenset(), route)

    def dispatch(req: Request, exclude: frozenset[str], route: RouteRequest | None = None) -> int | None:
        """Route and send the request; the node that took it, or None (failed, or to be retried)."""
        nonlocal rejected, failed
        if route is None:
            route = route_of(req, exclude)
        pick = strategy.pick(views(), route, now)
        if isinstance(pick, NoRoute):
            if pick.reason is NoRouteReason.SHED:  # the gateway's 503 with Retry-After, at once
                shed.append(req.arrival)
                req.failed = "shed"
                return None
            failed += 1
            req.failed = "no route"
            return None
        index = int(pick.node)
        req.sent_at = now
        req.attempts += 1
        req.node = index
        req.prefill_left, req.decode_left = float(req.prompt), float(req.output)
        error = nodes[index].arrive(req, now)
        if error is None:
            sent(index, req.model)
            loaded = residency[index]
            key = route.options_key
            if not any(m.model == req.model and m.options_key == key for m in loaded):
                residency[index] = (*[m for m in loaded if m.model != req.model], LoadedModel(req.model, key))
                polled[index] = -1
            return index
        if error == "503":
            rejected += 1
        if req.attempts <= 2:
            heapq.heappush(retry_heap, (now, req.rid, req))
            req.failed = None
            req._exclude = exclude | {str(index)}  # type: ignore[attr-defined]
        else:
            failed += 1
            req.failed = error
        return None

    def act(action: Action) -> None:
        """What the gateway's residency task sends: an empty-prompt generate with keep_alive, to one node."""
        index = int(action.node)
        pins[(index, action.model)] = math.inf if action.keep_alive == "-1" else 300.0
        quiet[index] = -math.inf  # its runners' keep-alive changes at the next step
        if action.kind != "preload":
            return
        others = frozenset(str(n.index) for n in nodes if n.index != index)
        pick = strategy.pick(views(), RouteRequest(action.model, exclude=others, est_tokens=1), now)
        if isinstance(pick, NoRoute):
            return
        req = Request(-1, action.model, 4096, 0, 0, now, preload=True)
        req.node = index
        if nodes[index].arrive(req, now) is None:
            sent(index, req.model)
            if not any(m.model == req.model for m in residency[index]):
                residency[index] = (*residency[index], LoadedModel(req.model))
                polled[index] = -1

    while now < end:
        if s.kill_node_at is not None and nodes[0].up and now >= s.kill_node_at * s.duration_s:
            marked_down[0] = now + FALL_S
            for req in nodes[0].fail():
                settled(0, req.model)
                if req.first_token is not None:
                    cut += 1
                    req.failed = "node died mid-stream"
                elif req.attempts <= 2:
                    req._exclude = frozenset({"0"})  # type: ignore[attr-defined]
                    heapq.heappush(retry_heap, (now, req.rid, req))
                else:
                    failed += 1
                    req.failed = "node died"
        while retry_heap and retry_heap[0][0] <= now:
            _, _, req = heapq.heappop(retry_heap)
            dispatch(req, getattr(req, "_exclude", frozenset()))
        while later and later[0][0] <= now:
            admit(heapq.heappop(later)[2])
        while upcoming is not None and upcoming.arrival <= now:
            if controller is not None:
                controller.observe(upcoming.model, now)
            admit(upcoming)
            upcoming = next(arrivals, None)
        if cold:
            release()
        if now >= next_poll:
            for n in nodes:
                if polled[n.index] == n.version:
                    continue  # the same runners: the same /api/ps
                polled[n.index] = n.version
                snapshot[n.index] = None
                residency[n.index] = tuple(
                    LoadedModel(
                        r.spec.name,
                        f"num_ctx={r.num_ctx}" if r.num_ctx != 4096 else "",
                        size=int(r.vram * GIB),
                        digest=r.spec.name,  # the sim's eviction order is by name
                    )
                    for r in n.runners.values()
                )
            next_poll = now + POLL_S
        if controller is not None and now >= next_decision:
            assert isinstance(strategy, ModelAware)
            for action in controller.decide(views(), strategy, now):
                act(action)
            next_decision = now + RESIDENCY_INTERVAL_S
        if warm is not None and now >= next_warm:
            for index in keep_warm(warm, nodes, views(), now):
                quiet[index] = nodes[index].quiet_until()  # its next expiry moved
            next_warm = now + RESIDENCY_INTERVAL_S
        done_now: list[Request] = []
        started: list[Request] = []
        for n in nodes:
            if n.up and now < quiet[n.index] - 1e-6:
                continue  # nothing to do there before a keep-alive runs out (Node.quiet_until)
            if n.up:
                for runner in n.runners.values() if pins else ():
                    wanted = pins.get((n.index, runner.spec.name))
                    if wanted is not None and not runner.unloading:
                        runner.session_s = wanted  # the keep_alive of the controller's last request
                n.schedule(now, specs)
                done_before = len(done_now)
                n.step(now, DT, done_now, started)
                n.expire(now)
                # A busy node can only fall quiet when a request of it finished or was refused.
                recheck = len(done_now) > done_before or n.unfit or quiet[n.index] > -math.inf
                for req in n.unfit:
                    # Ollama's 500 "model requires more system memory", before any byte: the gateway
                    # retries it elsewhere and keeps the model off this node (corral/app/attempts.py).
                    settled(n.index, req.model)
                    unfit[n.index].add(req.model)
                    if req.attempts <= 2:
                        req.failed = None
                        req._exclude = getattr(req, "_exclude", frozenset()) | {str(n.index)}  # type: ignore[attr-defined]
                        heapq.heappush(retry_heap, (now, req.rid, req))
                    else:
                        failed += 1
                n.unfit.clear()
                if recheck:
                    quiet[n.index] = n.quiet_until()
        for req in started:
            strategy.first_token(str(req.node), req.model, ctx_key(req.num_ctx), now, sent_at=req.sent_at)
        for req in done_now:
            settled(req.node, req.model)
            if req.first_token is not None and req.done_at is not None:
                strategy.finished(str(req.node), req.model, req.done_at - req.first_token, now)
        finished += [r for r in done_now if not r.preload]
        for req in done_now:
            if prefixes is not None:
                prefixes.served(req)
            follow = next_turn(req, now, len(requests) + turns_issued)
            if follow is not None and follow.arrival < s.duration_s + 300:
                turns_issued += 1
                heapq.heappush(later, (follow.arrival, follow.rid, follow))
        if (
            upcoming is None
            and not later
            and not retry_heap
            and not cold
            and all(
                quiet[n.index] > -math.inf or (not n.pending and all(r.ref == 0 for r in n.runners.values()))
                for n in nodes
            )
        ):
            break
        now += DT
    ttft = [r.first_token - r.arrival for r in finished if r.first_token is not None]
    e2e = [r.done_at - r.arrival for r in finished if r.done_at is not None]
    return Result(
        ttft,
        e2e,
        sum(n.loads for n in nodes),
        sum(n.evictions for n in nodes),
        rejected,
        failed,
        cut,
        len(finished),
        len(requests) + turns_issued,
        s.duration_s,
        sum(r.output for r in finished),
        [r.first_token - r.arrival for r in finished if r.turn > 1 and r.first_token is not None],
        sum(r.cached for r in finished) / max(1, sum(r.prompt for r in finished if r.segments)),
        {k: sum(n.load_causes[k] for n in nodes) for k in nodes[0].load_causes},
        [(r.arrival, r.first_token - r.arrival) for r in finished if r.first_token is not None],
        sorted(t for n in nodes for t in n.load_times),
        shed,
        [r.arrival for r in requests if r.first_token is None and r.failed != "shed"],
    )


def summarize(results: list[Result]) -> dict[str, float]:
    ttft = [x for r in results for x in r.ttft]
    e2e = [x for r in results for x in r.e2e]
    total = sum(r.requests for r in results)
    merged = Result(ttft, e2e, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    later = [x for r in results for x in r.ttft_later]
    turns = {
        "later_p50": merged.pct(later, 0.5),
        "later_p99": merged.pct(later, 0.99),
        "cached_share": sum(r.cached_share for r in results) / len(results),
    }
    turns = turns if later else {}
    return {
        **turns,
        "ttft_p50": merged.pct(ttft, 0.50),
        "ttft_p95": merged.pct(ttft, 0.95),
        "ttft_p99": merged.pct(ttft, 0.99),
        "e2e_p50": merged.pct(e2e, 0.50),
        "e2e_p99": merged.pct(e2e, 0.99),
        "loads_per_1k": 1000 * sum(r.loads for r in results) / max(1, total),
        "evictions_per_1k": 1000 * sum(r.evictions for r in results) / max(1, total),
        "rejected_503": sum(r.rejected_503 for r in results),
        "failed": sum(r.failed for r in results),
        "cut": sum(r.cut for r in results),
        "throughput_rps": sum(r.completed for r in results) / sum(r.duration for r in results),
        "slo_share": sum(1 for x in ttft if x <= 2.0) / max(1, total),
        "requests": total,
    }


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "thrash-30": lambda: Scenario("thrash-30", 0.3),
    "thrash-50": lambda: Scenario("thrash-50", 0.5),
    "thrash-70": lambda: Scenario("thrash-70", 0.7),
    "no-thrash-70": lambda: Scenario("no-thrash-70", 0.7, params=NodeParams(vram_gb=76, max_loaded=6)),
    "single-model-70": lambda: Scenario("single-model-70", 0.7, models=(MODELS[3],)),
    "node-death-50": lambda: Scenario("node-death-50", 0.5, kill_node_at=0.5),
    "hot-burst-50": lambda: Scenario("hot-burst-50", 0.5, burst=(0.5, 0.5 + 300 / 1800)),  # 5 min
    "parallel-1-50": lambda: Scenario("parallel-1-50", 0.5, params=NodeParams(parallel=1)),
    "num-ctx-skew-50": lambda: Scenario("num-ctx-skew-50", 0.5, alt_ctx_share=0.3),
    "num-ctx-normalize-50": lambda: Scenario(
        "num-ctx-normalize-50", 0.5, alt_ctx_share=0.3, num_ctx_policy="normalize"
    ),
    # Conversations resending their history over shared system prompts (issue 13 §1).
    "multi-turn-50": lambda: Scenario("multi-turn-50", 0.5, models=(MODELS[3],), multiturn=MultiTurn()),
}
RESIDENCY = "model-aware+residency"  # model-aware routing with the residency controller (residency.enabled)
RESIDENCY_INTERVAL_S = 1.0
PREFIX = "model-aware+prefix"  # model-aware with routing.prefix_affinity (docs/routing.md)
HOLD = "model-aware+hold"  # model-aware with cold models' requests held at the gateway (cold_hold.py)
SHED = "model-aware+shed"  # model-aware with queue.shed_after_s: a request estimated to wait longer is refused
SHED_AFTER_S = 30.0
WARM = "model-aware+warm"  # model-aware with keep-warm (residency.keep_warm; corral/domain/keep_warm.py)
POLICIES = ("round-robin", "least-connections", "power-of-two", "model-aware", PREFIX, RESIDENCY, HOLD, "oracle")
