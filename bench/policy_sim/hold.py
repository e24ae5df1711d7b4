"""Cold models held at the gateway, judged on generated draws (docs/benchmarks.md, "Cold models held at
the gateway"): `python -m bench.policy_sim.hold --set tuning --draws 24` runs least-connections,
model-aware and model-aware+hold (bench/policy_sim/cold_hold.py) on each draw of the set and prints, per
draw, each policy's p99 ratio to least-connections, p95, p50 and loads per 1,000, then the summary the
issue's targets use. `--out FILE` keeps the raw figures as JSON."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.policy_sim.generate import chosen_seeds, draw, draw_options, ratio, worse_than_lc
from bench.policy_sim.run import HOLD, simulate, summarize

POLICIES = ("least-connections", "model-aware", HOLD)


def _one(job: tuple[int, str, float]) -> tuple[int, str, dict[str, float]]:
    seed, policy, duration = job
    scenario, _ = draw(seed, duration)
    return seed, policy, summarize([simulate(scenario, policy, seed)])


def table(rows: dict[int, dict[str, dict[str, float]]]) -> list[str]:
    lines = [
        "| draw | p99 ratio MA → hold | p95 MA → hold (LC) | p50 MA → hold (LC) | loads/1k MA → hold |",
        "|---|---|---|---|---|",
    ]
    for seed, row in sorted(rows.items()):
        lc, ma, hold = row["least-connections"], row["model-aware"], row[HOLD]
        marks = ["✗" if worse_than_lc(lc, m) else "" for m in (ma, hold)]
        lines.append(
            f"| {seed} | {ratio(lc['ttft_p99'], ma['ttft_p99']):.2f}{marks[0]} → "
            f"{ratio(lc['ttft_p99'], hold['ttft_p99']):.2f}{marks[1]} "
            f"| {ma['ttft_p95']:.1f} → {hold['ttft_p95']:.1f} ({lc['ttft_p95']:.1f}) "
            f"| {ma['ttft_p50']:.2f} → {hold['ttft_p50']:.2f} ({lc['ttft_p50']:.2f}) "
            f"| {ma['loads_per_1k']:.1f} → {hold['loads_per_1k']:.1f} |"
        )
    return lines


def summary(rows: dict[int, dict[str, dict[str, float]]]) -> list[str]:
    lines = ["", "| | model-aware | model-aware+hold |", "|---|---|---|"]
    out: dict[str, list[str]] = {}
    for policy in ("model-aware", HOLD):
        p99 = [ratio(r["least-connections"]["ttft_p99"], r[policy]["ttft_p99"]) for r in rows.values()]
        thrash = [
            ratio(r["least-connections"]["ttft_p99"], r[policy]["ttft_p99"])
            for r in rows.values()
            if r["least-connections"]["loads_per_1k"] > 100
        ]
        worse = sum(worse_than_lc(r["least-connections"], r[policy]) for r in rows.values())
        loads = [r[policy]["loads_per_1k"] for r in rows.values()]
        out[policy] = [
            f"{statistics.median(p99):.2f}×",
            f"{statistics.median(thrash):.2f}×, {sum(x >= 2 for x in thrash)} of {len(thrash)} ≥ 2×" if thrash else "-",
            f"{worse} of {len(rows)}",
            f"{sum(r[policy]['failed'] for r in rows.values()):.0f}",
            f"{statistics.median(loads):.1f}",
        ]
    names = (
        "median p99 ratio (LC ÷ policy)",
        "where LC thrashes: median p99 ratio",
        "draws > 10% worse than LC on p50, p95 or p99",
        "requests failed",
        "median loads per 1,000",
    )
    for i, name in enumerate(names):
        lines.append(f"| {name} | {out['model-aware'][i]} | {out[HOLD][i]} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    draw_options(parser)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    seeds = chosen_seeds(parser, args)
    started = time.monotonic()
    rows: dict[int, dict[str, dict[str, float]]] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        jobs = [(s, p, args.duration) for s in seeds for p in POLICIES]
        for seed, policy, result in pool.map(_one, jobs):
            rows.setdefault(seed, {})[policy] = result
    if args.out is not None:
        data: dict[str, Any] = {str(s): r for s, r in sorted(rows.items())}
        args.out.write_text(json.dumps(data, indent=1))
    print(f"Set `{args.set}`: {len(rows)} draws; wall time {time.monotonic() - started:.0f} s.\n")
    print("\n".join(table(rows) + summary(rows)))


if __name__ == "__main__":
    main()
