"""The floor on loads any router must make (bench/policy_sim/load_bound.py, load_floor.py): right on
hand-made traces whose optimum is known, never above the optimum found by exhaustive search, and the
report runs end to end."""

from __future__ import annotations

import heapq
import itertools
import json
import math
import random
import subprocess
import sys
from pathlib import Path

from bench.policy_sim.generate import draw
from bench.policy_sim.load_floor import (
    Pool,
    Trace,
    blocks,
    compulsory,
    farthest_in_future,
    floor,
    held_in_future,
    slowest_at,
    trace_of,
)
from bench.policy_sim.run import workload

ROOT = Path(__file__).resolve().parents[2]


def trace(runners: list[int], sizes: tuple[float, ...], capacity: float, most: int = 99, gap: float = 1.0) -> Trace:
    return Trace(tuple(gap * (i + 1) for i in range(len(runners))), tuple(runners), Pool(capacity, most, sizes))


def lowest(t: Trace, wait_s: float = 0.0) -> int:
    return floor(t, wait_s, 0.0, blocks(t))


def test_two_models_that_fit_together_load_once_each() -> None:
    t = trace([0, 1] * 10, (10.0, 12.0), capacity=24.0)
    assert lowest(t) == compulsory(t) == farthest_in_future(t) == 2


def test_alternating_models_of_which_only_one_fits_load_on_every_request() -> None:
    t = trace([0, 1] * 10, (10.0, 12.0), capacity=20.0)
    assert lowest(t) == farthest_in_future(t) == 20


def test_the_count_of_runners_binds_like_memory() -> None:
    # Three small models, room for two runners: A B C A B C ... with the future known, one load in
    # two after the first two (each eviction picks the model asked for last).
    t = trace([0, 1, 2] * 4, (1.0, 1.0, 1.0), capacity=100.0, most=2)
    assert lowest(t) == farthest_in_future(t) == 7


def test_a_longer_wait_lets_requests_share_a_load() -> None:
    t = trace([0, 1] * 10, (10.0, 12.0), capacity=20.0)
    assert lowest(t, 2.0) < lowest(t, 0.0) == 20
    # Held up to 3 s, requests 1 s apart can share a load with the next request of their model.
    assert lowest(t, 3.0) <= held_in_future(t, 3.0) < 20
    assert lowest(t, 100.0) == compulsory(t) == held_in_future(t, 100.0) == 2  # one load of each, late


def test_exempting_the_slowest_requests_only_lowers_the_floor() -> None:
    # One cold model asked for once among hot ones that fill the pool: exempt, its load may come late,
    # but it still comes (never below one load per model).
    t = trace([0, 1] * 50 + [2] + [0, 1] * 49, (10.0, 10.0, 10.0), capacity=20.0)
    exact, lenient = floor(t, 0.0, 0.0, blocks(t)), floor(t, 0.0, 0.01, blocks(t))
    assert exact == farthest_in_future(t) == 4 and lenient == compulsory(t) == 3


def test_the_estimate_spends_the_exempt_requests_on_the_copies_that_served_fewest() -> None:
    # A and B fill the pool; C is asked for twice, far apart. Each C evicts B, which is loaded again
    # (6 loads); C's first copy serves one request and C is loaded again later, so exempting that
    # request (1% of 62 rounds up to 1) saves its load: C waits for its second copy.
    t = trace([0, 1] * 10 + [2] + [0, 1] * 10 + [2] + [0, 1] * 10, (10.0, 10.0, 10.0), capacity=20.0)
    assert held_in_future(t, 0.0) == 6 and held_in_future(t, 0.0, 0.01) == 5
    assert floor(t, 0.0, 0.01, blocks(t)) <= 5


def optimum(t: Trace, wait_s: float, exempt: frozenset[int] = frozenset()) -> float:
    """The fewest loads of the relaxation, by exhaustive search: each request's runner resident at some
    instant in [a, a + W] ([a, end] if exempt). Time is cut at every a and a + W into points and the
    open gaps between them; a point holds one resident set, a gap any sequence of them."""
    n, pool = len(t.runners), t.pool
    end = t.arrivals[-1] + wait_s + 1
    hi = [end if r in exempt else a + wait_s for r, a in enumerate(t.arrivals)]
    cuts = sorted({*t.arrivals, *hi})
    slots = [(c, c) for c in cuts] + [(lo, up) for lo, up in itertools.pairwise(cuts)]
    slots.sort(key=lambda s: (s[0], s[1] != s[0]))  # point, then the gap after it
    runners = sorted(set(t.runners))
    sets = [
        frozenset(c)
        for size in range(len(runners) + 1)
        for c in itertools.combinations(runners, size)
        if len(c) <= pool.max_resident and sum(pool.sizes[k] for k in c) <= pool.capacity_gb + 1e-9
    ]

    def served(s: frozenset[int], slot: tuple[float, float]) -> int:
        got = [r for r in range(n) if t.arrivals[r] <= slot[0] and slot[1] <= hi[r] and t.runners[r] in s]
        return sum(1 << r for r in got)

    states: dict[tuple[frozenset[int], int], float] = {(frozenset(), 0): 0}
    for slot in slots:
        nxt: dict[tuple[frozenset[int], int], float] = {}
        heap = [(cost, i, s, mask) for i, ((s, mask), cost) in enumerate(states.items())]
        heapq.heapify(heap)
        tie = len(heap)
        while heap:
            cost, _, s, mask = heapq.heappop(heap)
            if nxt.get((s, mask | served(s, slot)), math.inf) <= cost:
                continue
            nxt[(s, mask | served(s, slot))] = cost
            for other in sets if slot[0] < slot[1] else ():  # a gap: change the set, any number of times
                heapq.heappush(heap, (cost + len(other - s), tie, other, mask | served(s, slot)))
                tie += 1
        if slot[0] == slot[1]:  # a point: one set there, changed on the way in
            nxt = {}
            for (s, mask), cost in states.items():
                for other in sets:
                    key = (other, mask | served(other, slot))
                    nxt[key] = min(nxt.get(key, math.inf), cost + len(other - s))
        states = nxt
    return min((c for (_, mask), c in states.items() if mask == (1 << n) - 1), default=math.inf)


def test_the_floor_never_exceeds_the_optimum_on_small_random_traces() -> None:
    rng = random.Random(7)
    for _ in range(40):
        count, n = rng.randint(2, 4), rng.randint(3, 7)
        sizes = tuple(rng.choice((4.0, 6.0, 9.0, 12.0)) for _ in range(count))
        t = Trace(
            tuple(sorted(rng.uniform(0, 10) for _ in range(n))),
            tuple(rng.randrange(count) for _ in range(n)),
            Pool(rng.choice((12.0, 16.0, 21.0)), rng.choice((1, 2, 3)), sizes),
        )
        found = blocks(t)
        exact = optimum(t, 0.0)
        assert floor(t, 0.0, 0.0, found) <= exact <= farthest_in_future(t)
        wait = rng.uniform(0.5, 4.0)
        assert floor(t, wait, 0.0, found) <= optimum(t, wait) <= held_in_future(t, wait)
        assert held_in_future(t, 0.0) == farthest_in_future(t)
        # 1% of 3-7 requests: one may be slow, whichever it is.
        one_slow = min(optimum(t, wait, frozenset({r})) for r in range(len(t.runners)))
        assert floor(t, wait, 0.01, found) <= one_slow <= held_in_future(t, wait, 0.01)


def test_fewer_loads_than_the_floor_allows_mean_a_p99_at_least_this() -> None:
    t = trace([0, 1] * 500, (10.0, 12.0), capacity=20.0)
    found = blocks(t)
    at = slowest_at(t, 10.0, found)  # 10 loads per 1,000: 10 loads for 1,000 requests 1 s apart
    assert 0 < at < 1000 and floor(t, at, 0.01, found) > 10 >= floor(t, 1000.0, 0.01, found)
    few = trace([0, 1, 2, 3], (1.0,) * 4, 10.0)  # 4 models in 4 requests: 1,000 per 1,000 whatever the wait
    assert slowest_at(few, 10.0, blocks(few)) == math.inf


def test_a_draw_s_trace_is_the_simulated_one_and_every_runner_fits_a_node() -> None:
    scenario, _ = draw(100_020, 300.0)  # 3 nodes of 24 GB, 12 models, some clients at num_ctx 8192
    t = trace_of(scenario, 100_020)
    assert t.unservable == 0 and len(t.runners) > 50
    assert t.pool.capacity_gb == sum(p.vram_gb for p in scenario.node_params) and t.pool.max_resident == 9
    asked = {(r.model, r.num_ctx) for r in workload(scenario, random.Random(100_020 * 7919 + 1))}
    assert len(t.pool.sizes) == len(asked) > len({m for m, _ in asked})  # a runner per (model, num_ctx)
    assert all(size <= 0.8 * max(p.vram_gb for p in scenario.node_params) for size in t.pool.sizes)


def load_bound(reports: Path) -> str:
    args = ["--set", "tuning", "--draws", "2", "--duration", "30", "--workers", "1", "--reports", str(reports)]
    cmd = [sys.executable, "-m", "bench.policy_sim.load_bound", *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_report_runs_over_a_set_of_draws(tmp_path: Path) -> None:
    out = load_bound(tmp_path)  # no report of generate.py there: the two policies are simulated
    assert "| draw | nodes | models (runners) | pool GB | compulsory |" in out
    assert out.count("\n| 0 |") + out.count("\n| 1 |") == 2
    assert "median floor per 1,000" in out


def test_the_report_reads_the_policies_loads_from_generate_s_report_when_it_has_the_draws(tmp_path: Path) -> None:
    ran = {"loads_per_1k": 777.0, "ttft_p99": 12.0}
    rows = {str(s): {"least-connections": ran, "model-aware": {**ran, "loads_per_1k": 7.5}} for s in (0, 1)}
    (tmp_path / "draws-tuning.json").write_text(json.dumps(rows))
    (tmp_path / "draws-tuning.md").write_text("Set `tuning`: 2 draws, 30 s of arrivals each; wall time 1 s\n")
    assert load_bound(tmp_path).count("| 777 / 7.5 |") == 2  # not simulated again: the report's figures
