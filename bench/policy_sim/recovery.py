"""Overload and the way back, over generated draws (issue 17, item 4).

`python -m bench.policy_sim.recovery --set tuning --draws 24 [--out DIR] [--shed-after 30,10,60]` runs
least-connections, model-aware, and model-aware shedding by estimated wait (`queue.shed_after_s`, one
run per bound) on the draws of bench/policy_sim/generate.py that have an overload phase (110% of the
fleet's capacity for the middle third of the run) and reports, for each:

- during the overload: TTFT percentiles of the requests that arrived in it (served ones: a shed
  request has no TTFT), against least-connections' ("never worse than least-connections on any
  percentile"); the share of them shed; and the share of all of them answered within GOOD_S, a shed
  one counting as not, which puts shedding and queueing on one scale;
- after it: how long until the fleet is back to its steady state ("within a minute"). Each policy is
  also run on the same arrivals without the overload's extra ones (`Scenario.overload_thinned`: the
  arrivals outside the overload are the same, inside it the extra share is dropped), and the fleet is
  back at the start of the first one-minute window k from which the arrivals of windows k.. (pooled)
  have a p95 TTFT within `max(1.25 x, + 0.5 s)` of the same windows' in the run without the overload,
  an arrival shed or never answered counting as never answered, and a share of those within
  `max(1.25 x, + 1 point)` of theirs (loads: at most `max(2 x, + 1)` theirs). Pooling the rest of the
  run keeps one noisy minute (a p95 over a minute's few dozen requests moves with one load) from
  deciding, and comparing with the run without the overload keeps what the fleet would do anyway after
  it (a popularity shift, a ramp) from counting as not back. "never" means not by the last window.

"steady" columns are the stretch before the overload (arrivals from 10% of the run, past the first
loads, to its start). A window's p95 is taken over the requests that arrived in it, so a request that
waited through the end of the overload counts in the window it arrived in.

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
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.policy_sim.generate import chosen_seeds, draw, draw_options
from bench.policy_sim.run import SHED, Result, Scenario, percentile, simulate

POLICIES = ("least-connections", "model-aware")  # and model-aware with shedding (SHED), per bound
WINDOW_S = 60.0
MIN_REQUESTS = 10  # a window with fewer requests says nothing of its p95
SETTLE_SHARE = 0.1  # the steady state is measured from here (share of the run): past the first loads
GOOD_S = 60.0  # "answered in time": nginx's default proxy_read_timeout, a common client patience
AFTER_S = 300.0  # the shed share "after the overload" is over this long
BOUNDS = (30.0, 10.0, 60.0)  # queue.shed_after_s values run by default; the first is tabled per draw


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


def _by_window(times: list[tuple[float, float]], start: float, count: int) -> list[list[float]]:
    """The values of (time, value) pairs in each of `count` one-minute windows from `start`."""
    out: list[list[float]] = [[] for _ in range(count)]
    for t, value in times:
        if start <= t < start + count * WINDOW_S:
            out[int((t - start) // WINDOW_S)].append(value)
    return out


def _windows(timeline: list[tuple[float, float]], start: float, count: int) -> list[float]:
    """The p95 TTFT of each of `count` one-minute windows of arrivals from `start` (NaN: too few)."""
    return [percentile(w, 0.95) if len(w) >= MIN_REQUESTS else math.nan for w in _by_window(timeline, start, count)]


Alike = Callable[[list[float], list[float]], bool]


def settled(ours: list[list[float]], theirs: list[list[float]], alike: Alike) -> float | None:
    """Seconds after the end of the overload from which what follows is `alike` what follows in the
    run without it: the first window k such that the values of windows k.. (pooled) are; None if
    none is. Pooling the rest of the run keeps one noisy minute from deciding (a p95 over a minute's
    few dozen requests moves with a single load)."""
    for k in range(len(ours)):
        if alike([v for w in ours[k:] for v in w], [v for w in theirs[k:] for v in w]):
            return k * WINDOW_S
    return None


def _ttft_alike(ours: list[float], theirs: list[float]) -> bool:
    """Arrivals' TTFTs (inf: never answered, a shed one included): the p95 within `max(1.25 x,
    + 0.5 s)` of theirs, and the share never answered within `max(1.25 x, + 1 point)` of theirs (two
    runs that both shed more than 5% have an infinite p95: the shares tell them apart)."""
    if len(ours) < MIN_REQUESTS or len(theirs) < MIN_REQUESTS:
        return len(ours) < MIN_REQUESTS
    base = percentile(theirs, 0.95)
    if percentile(ours, 0.95) > max(1.25 * base, base + 0.5):
        return False
    lost, their_lost = (sum(math.isinf(t) for t in ts) / len(ts) for ts in (ours, theirs))
    return lost <= max(1.25 * their_lost, their_lost + 0.01)


def _arrivals(result: Result) -> list[tuple[float, float]]:
    """(arrival, TTFT) of every arrival, inf for one never answered (shed, or failed)."""
    return [*result.timeline, *((t, math.inf) for t in result.shed), *((t, math.inf) for t in result.unserved)]


def _loads_alike(ours: list[float], theirs: list[float]) -> bool:
    return len(ours) <= max(2 * len(theirs), len(theirs) + 1)


def _share(times: list[float], served: list[tuple[float, float]], start: float, end: float) -> float:
    """The share of the arrivals in [start, end) that `times` (refused arrivals) holds."""
    refused = sum(1 for t in times if start <= t < end)
    total = refused + sum(1 for a, _ in served if start <= a < end)
    return refused / total if total else 0.0


def _good(result: Result, start: float, end: float) -> float:
    """The share of the arrivals in [start, end) whose first token came within GOOD_S."""
    served = [t for a, t in result.timeline if start <= a < end]
    refused = sum(1 for t in result.shed if start <= t < end)
    arrived = len(served) + refused + sum(1 for t in result.unserved if start <= t < end)
    return sum(1 for t in served if t <= GOOD_S) / arrived if arrived else math.nan


def measure(scenario: Scenario, result: Result, without: Result | None = None) -> dict[str, Any]:
    """Steady, overload and recovery figures of one run (see the module's docstring); `without`: the
    same policy's run of the same arrivals without the overload's extra ones, which each window after
    the overload is held to (else the steady state before the overload is)."""
    assert scenario.overload is not None
    start, end = scenario.overload[0] * scenario.duration_s, scenario.overload[1] * scenario.duration_s
    settle = SETTLE_SHARE * scenario.duration_s
    assert settle < start, "the steady state is measured before the overload"
    steady = [t for a, t in result.timeline if settle <= a < start]
    during = [t for a, t in result.timeline if start <= a < end]
    steady_p95 = percentile(steady, 0.95)
    steady_loads = sum(1 for t in result.load_times if settle <= t < start) / ((start - settle) / WINDOW_S)
    count = int((scenario.duration_s - end) // WINDOW_S)  # whole windows only
    loads = [0.0] * count
    for t in result.load_times:
        if end <= t < end + count * WINDOW_S:
            loads[int((t - end) // WINDOW_S)] += 1
    windows = _windows(result.timeline, end, count)
    level = scenario.overload[2]
    floor = (level - 1) * (end - start) / (1 - scenario.load) if scenario.load < 1 else math.inf
    if without is None:  # every later window against the steady state before the overload
        back_ttft = back_after(windows, max(1.25 * steady_p95, steady_p95 + 0.5))
        back_loads = back_after(loads, max(2 * steady_loads, steady_loads + 1))
    else:  # against the same arrivals without the overload's extra ones
        back_ttft = settled(
            _by_window(_arrivals(result), end, count), _by_window(_arrivals(without), end, count), _ttft_alike
        )
        back_loads = settled(
            _by_window([(t, 1.0) for t in result.load_times], end, count),
            _by_window([(t, 1.0) for t in without.load_times], end, count),
            _loads_alike,
        )
    return {
        "floor_s": floor,
        "steady_p95": steady_p95,
        "steady_loads_per_min": steady_loads,
        "during": {q: percentile(during, q) for q in (0.5, 0.95, 0.99)},
        "after_p95": windows,
        "back_ttft_s": back_ttft,
        "back_loads_s": back_loads,
        "windows": count,
        # Arrivals during the overload answered within GOOD_S, refused ones counted as not
        "good_during": _good(result, start, end),
        "shed": {
            "steady": _share(result.shed, result.timeline, settle, start),
            "during": _share(result.shed, result.timeline, start, end),
            "after": _share(result.shed, result.timeline, end, end + AFTER_S),
        },
    }


def _one(job: tuple[int, str, float, float]) -> tuple[int, str, dict[str, Any]]:
    seed, policy, duration, bound = job
    scenario, described = draw(seed, duration)
    result = simulate(scenario, policy, seed, shed_after_s=bound)
    without = simulate(replace(scenario, overload_thinned=True), policy, seed, shed_after_s=bound)
    return seed, _label(policy, bound), {**measure(scenario, result, without), "draw": described}


def _label(policy: str, bound: float) -> str:
    return f"{policy} {bound:g}" if policy == SHED else policy


def overloaded(seeds: list[int], duration: float) -> list[int]:
    return [s for s in seeds if draw(s, duration)[0].overload is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    draw_options(parser)
    parser.add_argument("--out", type=Path, default=None, help="also write recovery-<set>.md there")
    parser.add_argument(
        "--shed-after",
        default=",".join(f"{b:g}" for b in BOUNDS),
        help="queue.shed_after_s values to run model-aware with (comma-separated); the first one is tabled per draw",
    )
    args = parser.parse_args()
    bounds = [float(b) for b in args.shed_after.split(",")]
    seeds = overloaded(chosen_seeds(parser, args), args.duration)
    jobs = [(seed, p, args.duration, 0.0) for seed in seeds for p in POLICIES]
    jobs += [(seed, SHED, args.duration, b) for seed in seeds for b in bounds]
    rows: dict[int, dict[str, dict[str, Any]]] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for seed, label, figures in pool.map(_one, jobs):
            rows.setdefault(seed, {})[label] = figures
    text = report(rows, args.set, bounds)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"recovery-{args.set}.md").write_text(text + "\n")


def _back(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.0f} s"


def _ratios(lc: dict[str, Any], other: dict[str, Any]) -> tuple[str, bool]:
    """LC ÷ other on the overload's p50/p95/p99, and whether `other` is more than 10% worse on one."""
    ratios = [lc["during"][q] / max(other["during"][q], 1e-3) for q in (0.5, 0.95, 0.99)]
    worse = any(other["during"][q] > 1.1 * lc["during"][q] + 0.05 for q in (0.5, 0.95, 0.99))
    return " / ".join(f"{r:.2f}" for r in ratios) + (" ✗" if worse else ""), worse


def report(rows: dict[int, dict[str, dict[str, Any]]], name: str, bounds: list[float]) -> str:
    first = _label(SHED, bounds[0])
    lines = [
        f"Set `{name}`: the {len(rows)} draws with an overload phase (110% for the middle third). TTFT in "
        "seconds; ratios are least-connections ÷ the other (above 1: the other is faster); "
        f"+shed is model-aware with `queue.shed_after_s` {bounds[0]:g} s (percentiles of the served "
        "requests; shed: the share refused, during the overload / the five minutes after it / before it); "
        '"back": after the overload ends, until the arrivals from then on (pooled one-minute windows; '
        "a shed one never answered) have a p95 TTFT, and a share never answered, like the same policy's "
        "on the same arrivals without the overload's extra ones (loads: their count).",
        "",
        "| draw | nodes | models | load | steady p95 LC / MA / +shed | overload p50 / p95 / p99 ratio MA "
        "| ... +shed | shed during / after / before | floor | back (p95 TTFT) LC / MA / +shed "
        "| steady loads/min LC / MA | back (loads) LC / MA |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    worse = {"model-aware": 0, first: 0}
    within = dict.fromkeys((*POLICIES, first), 0)
    for seed in sorted(rows):
        lc, ma, shed = rows[seed]["least-connections"], rows[seed]["model-aware"], rows[seed][first]
        d = ma["draw"]
        ma_ratios, ma_worse = _ratios(lc, ma)
        shed_ratios, shed_worse = _ratios(lc, shed)
        worse["model-aware"] += ma_worse
        worse[first] += shed_worse
        for label in within:
            back = rows[seed][label]["back_ttft_s"]
            within[label] += back is not None and back <= WINDOW_S
        shares = " / ".join(f"{100 * shed['shed'][k]:.1f}%" for k in ("during", "after", "steady"))
        lines.append(
            f"| {seed} | {d['nodes']} | {len(d['models'])} | {d['load']} "
            f"| {lc['steady_p95']:.2f} / {ma['steady_p95']:.2f} / {shed['steady_p95']:.2f} "
            f"| {ma_ratios} | {shed_ratios} | {shares} | {ma['floor_s']:.0f} s "
            f"| {_back(lc['back_ttft_s'])} / {_back(ma['back_ttft_s'])} / {_back(shed['back_ttft_s'])} "
            f"| {lc['steady_loads_per_min']:.1f} / {ma['steady_loads_per_min']:.1f} "
            f"| {_back(lc['back_loads_s'])} / {_back(ma['back_loads_s'])} |"
        )
    n = len(rows)
    lines += [
        "",
        f"- more than 10% worse than least-connections during the overload (p50, p95 or p99): model-aware "
        f"{worse['model-aware']} of {n}, +shed {worse[first]} of {n}",
        f"- back to the steady state within a minute of the overload's end: least-connections "
        f"{within['least-connections']} of {n}, model-aware {within['model-aware']} of {n}, "
        f"+shed {within[first]} of {n}",
        "",
        *sweep(rows, bounds),
    ]
    return "\n".join(lines)


def sweep(rows: dict[int, dict[str, dict[str, Any]]], bounds: list[float]) -> list[str]:
    """One line per bound (and none): the draws' counts, the median overload p99 ratio and shed shares."""
    lines = [
        f"| model-aware | > 10% worse than LC during the overload | back within a minute | overload p99 ratio "
        f"(median) | shed during / after / before (median) | answered within {GOOD_S:g} s during the overload "
        "(median; LC) |",
        "|---|---|---|---|---|---|",
    ]
    for label in ["model-aware", *(_label(SHED, b) for b in bounds)]:
        worse = back = 0
        p99: list[float] = []
        good: list[float] = []
        lc_good = statistics.median(rows[seed]["least-connections"]["good_during"] for seed in rows)
        shares: dict[str, list[float]] = {"during": [], "after": [], "steady": []}
        for seed in sorted(rows):
            lc, other = rows[seed]["least-connections"], rows[seed][label]
            worse += _ratios(lc, other)[1]
            back += other["back_ttft_s"] is not None and other["back_ttft_s"] <= WINDOW_S
            p99.append(lc["during"][0.99] / max(other["during"][0.99], 1e-3))
            good.append(100 * other["good_during"])
            for k, v in shares.items():
                v.append(100 * other["shed"][k])
        name = "no shedding" if label == "model-aware" else f"`shed_after_s` {label.split()[-1]} s"
        median = " / ".join(f"{statistics.median(v):.1f}%" for v in shares.values()) if p99 else "-"
        ratio = statistics.median(p99) if p99 else math.nan
        answered = f"{statistics.median(good):.1f}% ({100 * lc_good:.1f}%)" if good else "-"
        lines.append(
            f"| {name} | {worse} of {len(rows)} | {back} of {len(rows)} | {ratio:.2f}× | {median} | {answered} |"
        )
    return lines


if __name__ == "__main__":
    main()
