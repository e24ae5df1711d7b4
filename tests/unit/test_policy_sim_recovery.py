"""The overload report (bench/policy_sim/recovery.py): when a fleet counts as back to its steady state
after an overload, measured on a run's timeline."""

from __future__ import annotations

import math
import random
from dataclasses import replace

from bench.policy_sim.fleet import Request
from bench.policy_sim.recovery import back_after, measure
from bench.policy_sim.run import Result, Scenario, workload


def run(timeline: list[tuple[float, float]], loads: list[float]) -> Result:
    ttft = [t for _, t in timeline]
    return Result(ttft, [], len(loads), 0, 0, 0, 0, 0, 0, 0.0, 0, timeline=timeline, load_times=loads)


def test_back_after_is_the_start_of_the_first_window_from_which_all_are_within_bound() -> None:
    assert back_after([9.0, 3.0, 1.0, 1.0], bound=2.0) == 120.0
    assert back_after([1.0, 1.0], bound=2.0) == 0.0
    assert back_after([1.0, 9.0, 1.0, 5.0], bound=2.0) is None  # the last window is not back
    # A window too thin to say (NaN) neither breaks a return nor makes one.
    assert back_after([9.0, math.nan, 1.0, math.nan, 1.0], bound=2.0) == 120.0
    assert back_after([9.0, math.nan], bound=2.0) is None
    assert back_after([math.nan, math.nan], bound=2.0) is None


def test_a_fleet_whose_queue_drains_two_minutes_after_the_overload_is_back_then() -> None:
    # 1,000 s, overload from 300 to 600 s. Steady TTFT 0.2 s; during the overload 30 s; after it, the
    # backlog takes two minutes to drain (20 s, then 5 s), then 0.2 s again. Loads: one a minute in
    # steady state, ten a minute in the overload and the minute after.
    scenario = Scenario("s", 0.5, duration_s=1000.0, overload=(0.3, 0.6, 1.1))
    timeline = [(float(a), 0.2) for a in range(100, 300)]
    timeline += [(float(a), 30.0) for a in range(300, 600)]
    timeline += [(600.0 + a, 20.0 if a < 60 else 5.0 if a < 120 else 0.2) for a in range(400)]
    loads = [float(t) for t in range(100, 300, 60)] + [300 + 6.0 * k for k in range(60)]
    loads += [600 + 6.0 * k for k in range(10)] + [800.0, 900.0]
    figures = measure(scenario, run(timeline, loads))
    assert figures["steady_p95"] == 0.2
    assert figures["during"][0.5] == 30.0
    assert figures["back_ttft_s"] == 120.0
    assert figures["back_loads_s"] == 60.0
    # The least any queue-everything router needs: 10% of 300 s of work, at 50% spare capacity.
    assert math.isclose(figures["floor_s"], 60.0)


def test_a_fleet_that_sheds_more_after_the_overload_than_without_it_is_not_back() -> None:
    # Served requests are as fast as in the run without the overload, but it still refuses a fifth of
    # the arrivals for two minutes after it, where the run without the overload refuses none.
    scenario = Scenario("s", 0.5, duration_s=1200.0, overload=(0.25, 0.5, 1.1))
    base = [(float(a), 0.2) for a in range(100, 1200)]
    over = [(float(a), 0.2) for a in range(100, 1200) if not (600 <= a < 720 and a % 5 == 0)]
    shed = [float(a) for a in range(600, 720, 5)]
    result = Result([], [], 0, 0, 0, 0, 0, 0, 0, 0.0, 0, timeline=over, shed=shed)
    figures = measure(scenario, result, run(base, []))
    assert figures["back_ttft_s"] == 120.0


def test_back_is_measured_against_the_same_arrivals_without_the_overload() -> None:
    # After the overload, both runs see the same event at 840-900 s (TTFT 8 s: a popularity shift, say).
    # Against the steady state before the overload the fleet would count as back only after it; against
    # the run without the overload it is back once its own backlog (one minute of 20 s) is served.
    scenario = Scenario("s", 0.5, duration_s=1200.0, overload=(0.25, 0.5, 1.1))

    def after(a: int) -> float:
        return 8.0 if 240 <= a < 300 else 0.2

    base = [(float(a), 0.2) for a in range(100, 300)] + [(float(a), 1.0) for a in range(300, 600)]
    base += [(600.0 + a, after(a)) for a in range(600)]
    over = [(float(a), 0.2) for a in range(100, 300)] + [(float(a), 30.0) for a in range(300, 600)]
    over += [(600.0 + a, 20.0 if a < 60 else after(a)) for a in range(600)]
    alone = measure(scenario, run(over, []))
    assert alone["back_ttft_s"] == 300.0  # after the later event, which is over the steady bound
    figures = measure(scenario, run(over, []), run(base, []))
    assert figures["back_ttft_s"] == 60.0
    assert figures["back_loads_s"] == 0.0  # no loads in either run


def test_shed_requests_count_in_their_share_and_as_not_answered_in_time() -> None:
    scenario = Scenario("s", 0.5, duration_s=1000.0, overload=(0.3, 0.6, 1.1))
    timeline = [(float(a), 0.2) for a in range(100, 300)]
    # During the overload, of every four arrivals: one answered in 5 s, one in 90 s, two refused.
    timeline += [(float(a), 5.0 if a % 4 == 0 else 90.0) for a in range(300, 600, 2)]
    shed = [float(a) for a in range(301, 600, 2)]
    result = Result([t for _, t in timeline], [], 0, 0, 0, 0, 0, 0, 0, 0.0, 0, timeline=timeline, shed=shed)
    figures = measure(scenario, result)
    assert math.isclose(figures["shed"]["during"], 0.5)
    assert figures["shed"]["steady"] == 0.0
    # Answered within 60 s: the 5 s ones only, a quarter of the arrivals (a refused one counts as not).
    assert math.isclose(figures["good_during"], 0.25)


def test_the_run_without_the_overload_has_the_same_arrivals_outside_it() -> None:
    scenario = Scenario("s", 0.5, duration_s=1800.0, overload=(1 / 3, 2 / 3, 1.1))
    full = workload(scenario, random.Random(7))
    thinned = workload(replace(scenario, overload_thinned=True), random.Random(7))
    start, end = 600.0, 1200.0

    def outside(requests: list[Request]) -> list[tuple[int, str, float, int]]:
        return [(r.rid, r.model, r.arrival, r.prompt) for r in requests if not start <= r.arrival < end]

    assert outside(full) == outside(thinned)
    inside = [sum(start <= r.arrival < end for r in rs) for rs in (full, thinned)]
    assert abs(inside[1] / inside[0] - 0.5 / 1.1) < 0.05  # the overload's extra share is dropped
