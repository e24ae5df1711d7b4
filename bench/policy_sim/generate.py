"""Scenarios drawn at random, to judge routing on fleets it was not tuned for (issue 17, item 6).

`python -m bench.policy_sim.generate --set held-out --draws 40 --out docs/bench` runs least-connections
and model-aware on each draw and writes `draws-<set>.md`, `.json` and `.png` (the p99 TTFT ratio
across draws). The `tuning` set (seeds from 0) is for trying changes; the `held-out` set (seeds from
100,000) is for reporting them, and is never looked at while tuning.

A draw: 3-16 nodes (homogeneous or mixed memory: 12, 24, 48 or 80 GB), 1, 2 or 4 slots per model,
5-14 models of 1B-70B (Q4 sizes, speeds and KV caches scaled from the published catalogue), Zipf
popularity 0.5-1.2, and any of: popularity reshuffled every 2-5 min, a burst on the coldest model,
long prompts (median 4k tokens, up to 16k), 10-30% of clients sending num_ctx 8192, an overload
phase at 110% for a third of the run. Load 30-90% of the fleet's nominal capacity otherwise. Models
are allowed on every node: a node too small for one must be kept from it by the router.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.policy_sim.fleet import SPECS, ModelSpec, NodeParams
from bench.policy_sim.run import Scenario, simulate, summarize

SETS = {"tuning": 0, "held-out": 100_000}
POLICIES = ("least-connections", "model-aware")
BILLIONS = (1, 3, 7, 8, 9, 14, 27, 32, 70)


def model(billions: int, index: int) -> ModelSpec:
    """A Q4 model of this size, its speeds scaled from the published catalogue (bench/policy_sim/fleet.py)."""
    disk = 0.6 * billions + 0.5
    spec = ModelSpec(
        f"gen{index}:{billions}b",
        round(disk, 1),
        tg1=min(200.0, 550.0 / disk),
        pp=9000.0 / disk**0.6,
        kv_kib=16 * billions**0.7 + 24,
    )
    SPECS[spec.name] = spec
    return spec


def draw(seed: int, duration_s: float) -> tuple[Scenario, dict[str, Any]]:
    rng = random.Random(seed)
    nodes = rng.randint(3, 16)
    mixed = rng.random() < 0.4
    memories = [rng.choice((12, 24, 48, 80)) for _ in range(nodes)] if mixed else [rng.choice((24, 48, 80))] * nodes
    parallel = rng.choice((1, 2, 4))
    params = tuple(NodeParams(vram_gb=0.92 * m, parallel=parallel) for m in memories)
    count = rng.randint(5, 14)
    biggest = max(memories)
    # Every model fits the biggest node (else nothing could serve it, whatever the router).
    sizes = [b for b in BILLIONS if 0.6 * b + 0.5 + 2 < 0.8 * 0.92 * biggest]
    models = tuple(model(rng.choice(sizes), i) for i in range(count))
    features = {
        "shift": rng.random() < 0.3,
        "burst": rng.random() < 0.25,
        "long_prompts": rng.random() < 0.2,
        "alt_ctx": rng.random() < 0.2,
        "overload": rng.random() < 0.2,
    }
    load = rng.uniform(0.3, 0.9)
    scenario = Scenario(
        f"draw-{seed}",
        load,
        models=models,
        nodes=nodes,
        params=params[0],
        node_params=params,
        duration_s=duration_s,
        zipf=rng.uniform(0.5, 1.2),
        shift_every_s=rng.uniform(120, 300) if features["shift"] else None,
        burst=(0.5, 0.5 + 300 / 1800) if features["burst"] else None,
        prompt_median=4000 if features["long_prompts"] else 400,
        prompt_cap=16_384 if features["long_prompts"] else 2048,
        alt_ctx_share=rng.uniform(0.1, 0.3) if features["alt_ctx"] else 0.0,
        overload=(0.33, 0.66, 1.1) if features["overload"] else None,
    )
    described = {
        "seed": seed,
        "nodes": nodes,
        "memory_gb": sorted(set(memories)),
        "parallel": parallel,
        "models": [m.name for m in models],
        "load": round(load, 2),
        "zipf": round(scenario.zipf, 2),
        **{k: v for k, v in features.items() if v},
    }
    return scenario, described


def _one(job: tuple[int, str, float]) -> tuple[int, str, dict[str, float], dict[str, Any]]:
    seed, policy, duration = job
    scenario, described = draw(seed, duration)
    return seed, policy, summarize([simulate(scenario, policy, seed)]), described


def ratio(lc: float, ma: float) -> float:
    return lc / max(ma, 1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=SETS, default="tuning")
    parser.add_argument("--draws", type=int, default=12)
    parser.add_argument("--duration", type=float, default=1800.0, help="virtual seconds of arrivals per run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    args = parser.parse_args()
    seeds = [SETS[args.set] + i for i in range(args.draws)]
    started = time.monotonic()
    rows: dict[int, dict[str, Any]] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for seed, policy, summary, described in pool.map(
            _one, [(s, p, args.duration) for s in seeds for p in POLICIES]
        ):
            rows.setdefault(seed, {"draw": described})[policy] = summary
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"draws-{args.set}.json").write_text(json.dumps(rows, indent=1))
    report(rows, args, time.monotonic() - started)


def report(rows: dict[int, dict[str, Any]], args: argparse.Namespace, wall_s: float) -> None:
    lines = [
        f"Set `{args.set}`: {len(rows)} draws, {args.duration:g} s of arrivals each, wall time {wall_s:.0f} s.",
        "",
        "| draw | nodes | GB | slots | models | load | features | LC loads/1k | MA loads/1k "
        "| p50 ratio | p95 ratio | p99 ratio | MA failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    p99: list[float] = []
    thrash: list[float] = []
    worse = 0
    for seed in sorted(rows):
        row = rows[seed]
        lc, ma, d = row["least-connections"], row["model-aware"], row["draw"]
        r = {q: ratio(lc[f"ttft_{q}"], ma[f"ttft_{q}"]) for q in ("p50", "p95", "p99")}
        p99.append(r["p99"])
        if lc["loads_per_1k"] > 100:
            thrash.append(r["p99"])
        # "more than 10% worse" on a percentile, ignoring differences under 50 ms
        if any(ma[f"ttft_{q}"] > 1.1 * lc[f"ttft_{q}"] + 0.05 for q in ("p50", "p95", "p99")):
            worse += 1
        features = ", ".join(k for k in ("shift", "burst", "long_prompts", "alt_ctx", "overload") if d.get(k))
        lines.append(
            f"| {seed} | {d['nodes']} | {'/'.join(map(str, d['memory_gb']))} | {d['parallel']} | "
            f"{len(d['models'])} | {d['load']:.2f} | {features or '-'} | {lc['loads_per_1k']:.0f} | "
            f"{ma['loads_per_1k']:.1f} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | {ma['failed']:.0f} |"
        )
    ma_loads = [rows[s]["model-aware"]["loads_per_1k"] for s in rows]
    failed = sum(rows[s]["model-aware"]["failed"] for s in rows)
    lc_failed = sum(rows[s]["least-connections"]["failed"] for s in rows)
    lines += [
        "",
        "Ratios are least-connections ÷ model-aware TTFT (above 1: model-aware is faster).",
        "",
        f"- median p99 ratio, all draws: {statistics.median(p99):.2f}×",
        f"- draws where least-connections thrashes (> 100 loads/1k): {len(thrash)}"
        + (
            f"; median p99 ratio {statistics.median(thrash):.2f}×, "
            f"{sum(1 for x in thrash if x >= 2) / len(thrash):.0%} of them ≥ 2×"
            if thrash
            else ""
        ),
        f"- draws where model-aware is > 10% worse on p50, p95 or p99: {worse} of {len(rows)}",
        f"- requests failed (model-aware): {failed:.0f}; least-connections: {lc_failed:.0f}",
        f"- median model-aware loads per 1,000: {statistics.median(ma_loads):.1f}",
    ]
    text = "\n".join(lines) + "\n"
    (args.out / f"draws-{args.set}.md").write_text(text)
    print(text)
    chart(p99, args.out / f"draws-{args.set}.png", args.set)


def chart(p99: list[float], path: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    ordered = sorted(p99)
    ax.bar(range(len(ordered)), ordered, color=["tab:red" if x < 1 else "tab:blue" for x in ordered])
    ax.axhline(1, color="black", linewidth=0.8)
    ax.axhline(2, color="grey", linewidth=0.8, linestyle="--")
    ax.set_yscale("log")
    ax.set_xlabel("draws, sorted")
    ax.set_ylabel("p99 TTFT: least-connections ÷ model-aware")
    ax.set_title(f"{name} draws: model-aware vs least-connections")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
