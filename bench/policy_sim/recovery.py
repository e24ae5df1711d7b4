"""Overload and the way back, over generated draws (issue 17, item 4).

`python -m bench.policy_sim.recovery --set tuning --draws 24 [--out DIR]` runs least-connections and
model-aware on the draws of bench/policy_sim/generate.py that have an overload phase (110% of the
fleet's capacity for the middle third of the run) and reports, for each policy:

- during the overload: TTFT percentiles of the requests that arrived in it, and model-aware's against
  least-connections' ("never worse than least-connections on any percentile");
- after it: how long until the fleet is back to its steady state ("within a minute"). The steady state
  is the stretch before the overload (arrivals from 10% of the run, past the first loads, to its
  start): its p95 TTFT and its loads per minute. After the overload ends, arrivals are cut into
  whole one-minute windows; the fleet is back at the start of the first window from which every later
  one has a p95 TTFT within `max(1.25 x, + 0.5 s)` of the steady one (and, for loads, at most
  `max(2 x, + 1)` the steady loads per minute). A window of fewer than 10 requests says nothing either
  way. "never" means not by the last window.

A window's p95 is taken over the requests that arrived in it, so a request that waited through the
end of the overload counts in the window it arrived in.

"floor" is the least time any router that sheds nothing needs to serve the work the overload left
queued: (level - 1) x its length, with what the steady load leaves spare, 1 - load, on a fleet that
never loads a model and packs every slot. It bounds the backlog, not "back": new arrivals can be
served at their steady pace while part of the backlog still waits (each model has its own queues),
so a fleet can count as back sooner.
"""

from __future__ import annotations

import argparse
import math
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.policy_sim.generate import chosen_seeds, draw, draw_options
from bench.policy_sim.run import Result, Scenario, percentile, simulate

POLICIES = ("least-connections", "model-aware")
WINDOW_S = 60.0
MIN_REQUESTS = 10  # a window with fewer requests says nothing of its p95
SETTLE_SHARE = 0.1  # the steady state is measured from here (share of the run): past the first loads


def back_after(windows: list[float], bound: float) -> float | None:
    """Seconds after the end of the overload until every later window is within `bound`; None if the
    last window with a value is not. `windows` holds one value per window, in order (NaN: too few
    requests in it to say; such windows neither break nor make a return)."""
    measured = [i for i, w in enumerate(windows) if not math.isnan(w)]
    if not measured or windows[measured[-1]] > bound:
        return None
    back = measured[-1]
    for i in reversed(measured):
        if windows[i] > bound:
            break
        back = i
    return back * WINDOW_S


def measure(scenario: Scenario, result: Result) -> dict[str, Any]:
    """Steady, overload and recovery figures of one run (see the module's docstring)."""
    assert scenario.overload is not None
    start, end = scenario.overload[0] * scenario.duration_s, scenario.overload[1] * scenario.duration_s
    settle = SETTLE_SHARE * scenario.duration_s
    assert settle < start, "the steady state is measured before the overload"
    steady = [t for a, t in result.timeline if settle <= a < start]
    during = [t for a, t in result.timeline if start <= a < end]
    steady_p95 = percentile(steady, 0.95)
    steady_loads = sum(1 for t in result.load_times if settle <= t < start) / ((start - settle) / WINDOW_S)
    count = int((scenario.duration_s - end) // WINDOW_S)  # whole windows only
    ttft: list[list[float]] = [[] for _ in range(count)]
    for a, t in result.timeline:
        if end <= a < end + count * WINDOW_S:
            ttft[int((a - end) // WINDOW_S)].append(t)
    loads = [0.0] * count
    for t in result.load_times:
        if end <= t < end + count * WINDOW_S:
            loads[int((t - end) // WINDOW_S)] += 1
    windows = [percentile(w, 0.95) if len(w) >= MIN_REQUESTS else math.nan for w in ttft]
    level = scenario.overload[2]
    floor = (level - 1) * (end - start) / (1 - scenario.load) if scenario.load < 1 else math.inf
    return {
        "floor_s": floor,
        "steady_p95": steady_p95,
        "steady_loads_per_min": steady_loads,
        "during": {q: percentile(during, q) for q in (0.5, 0.95, 0.99)},
        "after_p95": windows,
        "back_ttft_s": back_after(windows, max(1.25 * steady_p95, steady_p95 + 0.5)),
        "back_loads_s": back_after(loads, max(2 * steady_loads, steady_loads + 1)),
        "windows": count,
    }


def _one(job: tuple[int, str, float]) -> tuple[int, str, dict[str, Any]]:
    seed, policy, duration = job
    scenario, described = draw(seed, duration)
    return seed, policy, {**measure(scenario, simulate(scenario, policy, seed)), "draw": described}


def overloaded(seeds: list[int], duration: float) -> list[int]:
    return [s for s in seeds if draw(s, duration)[0].overload is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    draw_options(parser)
    parser.add_argument("--out", type=Path, default=None, help="also write recovery-<set>.md there")
    args = parser.parse_args()
    seeds = overloaded(chosen_seeds(parser, args), args.duration)
    jobs = [(seed, p, args.duration) for seed in seeds for p in POLICIES]
    rows: dict[int, dict[str, dict[str, Any]]] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for seed, policy, figures in pool.map(_one, jobs):
            rows.setdefault(seed, {})[policy] = figures
    text = report(rows, args.set)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"recovery-{args.set}.md").write_text(text + "\n")


def _back(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.0f} s"


def report(rows: dict[int, dict[str, dict[str, Any]]], name: str) -> str:
    lines = [
        f"Set `{name}`: the {len(rows)} draws with an overload phase (110% for the middle third). TTFT in "
        "seconds; ratios are least-connections ÷ model-aware (above 1: model-aware is faster); "
        '"back": after the overload ends, until every later one-minute window is back to the steady '
        "p95 TTFT (or loads per minute).",
        "",
        "| draw | nodes | models | load | steady p95 LC / MA | overload p50 / p95 / p99 ratio | floor "
        "| back (p95 TTFT) LC / MA | steady loads/min LC / MA | back (loads) LC / MA |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    worse = within = 0
    ma_back: list[float] = []
    for seed in sorted(rows):
        lc, ma = rows[seed]["least-connections"], rows[seed]["model-aware"]
        d = ma["draw"]
        ratios = [lc["during"][q] / max(ma["during"][q], 1e-3) for q in (0.5, 0.95, 0.99)]
        flag = " ✗" if any(ma["during"][q] > 1.1 * lc["during"][q] + 0.05 for q in (0.5, 0.95, 0.99)) else ""
        worse += bool(flag)
        if ma["back_ttft_s"] is not None and ma["back_ttft_s"] <= WINDOW_S:
            within += 1
        ma_back.append(math.inf if ma["back_ttft_s"] is None else ma["back_ttft_s"])
        lines.append(
            f"| {seed} | {d['nodes']} | {len(d['models'])} | {d['load']} "
            f"| {lc['steady_p95']:.2f} / {ma['steady_p95']:.2f} "
            f"| {' / '.join(f'{r:.2f}' for r in ratios)}{flag} | {ma['floor_s']:.0f} s "
            f"| {_back(lc['back_ttft_s'])} / {_back(ma['back_ttft_s'])} "
            f"| {lc['steady_loads_per_min']:.1f} / {ma['steady_loads_per_min']:.1f} "
            f"| {_back(lc['back_loads_s'])} / {_back(ma['back_loads_s'])} |"
        )
    median = statistics.median(ma_back) if ma_back else math.nan
    lines += [
        "",
        f"- model-aware more than 10% worse than least-connections during the overload (p50, p95 or p99): "
        f"{worse} of {len(rows)}",
        f"- model-aware back to its steady p95 TTFT within a minute of the overload's end: {within} of {len(rows)}"
        f" (median {'never' if math.isinf(median) else f'{median:.0f} s'})",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
