"""The overload report (bench/policy_sim/recovery.py): when a fleet counts as back to its steady state
after an overload, measured on a run's timeline."""

from __future__ import annotations

import math

from bench.policy_sim.recovery import back_after, measure
from bench.policy_sim.run import Result, Scenario


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
