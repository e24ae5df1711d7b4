"""Scenarios drawn at random, to judge routing on fleets it was not tuned for (issue 17, item 6).

`python -m bench.policy_sim.generate --set held-out --draws 24 --out docs/bench` runs least-connections
and model-aware on each draw and writes `draws-<set>.md`, `.json` and `.png` (the p99 TTFT ratio
across draws). The `tuning` set (seeds from 0) is for trying changes; the `held-out` set (seeds from
100,000) is for reporting them; the `fresh` set (seeds from 200,000) was added once the held-out set
had informed a decision (a variant was left off after seeing it), and is run only to report a change
that has been tuned and kept, never to choose between variants.

A draw: 3-64 nodes (log-uniform: as many small fleets as big ones), homogeneous or mixed memory (12,
24, 48 or 80 GB), 1, 2 or 4 slots per model for the whole fleet or per node; 5-30 models, chat models
of 1B-70B (Q4 sizes, speeds and KV caches scaled from the published catalogue) and, in some draws,
one or two embedding models taking 30-60% of requests (a prompt of a few hundred tokens, no output);
Zipf popularity 0.5-1.2 over the chat models; a load shape: steady at 30-90% of the fleet's nominal
capacity, a 10% -> 90% ramp, or an overload phase (110% for the middle third); and any of: popularity
reshuffled every 2-5 min, a 5-minute burst on the coldest model, long prompts (median 4k tokens, up
to 16k), 10-30% of clients sending num_ctx 8192. Models are allowed on every node: a node too small
for one must be kept from it by the router.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from bench.policy_sim.fleet import SPECS, ModelSpec, NodeParams
from bench.policy_sim.run import Scenario, simulate, summarize

SETS = {"tuning": 0, "held-out": 100_000, "fresh": 200_000}
# The most draws a set may have: the gap between consecutive sets' first seeds, so no two sets share a seed.
MAX_DRAWS = min(b - a for a, b in itertools.pairwise(sorted(SETS.values())))
POLICIES = ("least-connections", "model-aware")
BILLIONS = (1, 3, 7, 8, 9, 14, 27, 32, 70)
# Embedding models (name, GB on disk, prompt tokens/s, KV KiB per token): nomic-embed-text,
# mxbai-embed-large and bge-m3 in Ollama's library, speeds scaled like the chat models'.
EMBEDDERS = (("nomic-embed", 0.3, 24_000.0, 36.0), ("mxbai-embed", 0.7, 14_000.0, 96.0), ("bge-m3", 1.2, 9_000.0, 96.0))
# Which features each draw has, with their probabilities (a draw may have several, or none).
CHANCES = {
    "shift": 0.3,  # popularity reshuffled every 2-5 min
    "burst": 0.25,  # the coldest chat model takes 60% of requests for 5 min
    "long_prompts": 0.2,  # median 4k tokens, up to 16k
    "alt_ctx": 0.2,  # 10-30% of chat clients send num_ctx 8192
    "embed": 0.3,  # 30-60% of requests to one or two embedding models
}
LOAD_SHAPES = {"steady": 0.6, "overload": 0.2, "ramp": 0.2}  # overload: 110% for the middle third


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


def embedder(kind: int, index: int) -> ModelSpec:
    name, disk, pp, kv = EMBEDDERS[kind]
    spec = ModelSpec(f"{name}{index}", disk, tg1=1.0, pp=pp, kv_kib=kv, embedding=True)
    SPECS[spec.name] = spec
    return spec


def draw(seed: int, duration_s: float) -> tuple[Scenario, dict[str, Any]]:
    """The scenario of this seed (the same every time) and what it contains, for the report."""
    rng = random.Random(seed)
    nodes = round(math.exp(rng.uniform(math.log(3), math.log(64))))  # as many small fleets as big ones
    mixed = rng.random() < 0.4
    memories = [rng.choice((12, 24, 48, 80)) for _ in range(nodes)] if mixed else [rng.choice((24, 48, 80))] * nodes
    # Slots per model: one setting for the fleet, or (a quarter of draws) each node its own.
    mixed_parallel = rng.random() < 0.25
    slots = [rng.choice((1, 2, 4)) for _ in range(nodes)] if mixed_parallel else [rng.choice((1, 2, 4))] * nodes
    params = tuple(NodeParams(vram_gb=0.92 * m, parallel=p) for m, p in zip(memories, slots, strict=True))
    count = rng.randint(5, 30)
    biggest = max(memories)
    # Every model fits the biggest node (else nothing could serve it, whatever the router).
    sizes = [b for b in BILLIONS if 0.6 * b + 0.5 + 2 < 0.8 * 0.92 * biggest]
    features = {name: rng.random() < chance for name, chance in CHANCES.items()}
    shape = rng.choices(list(LOAD_SHAPES), list(LOAD_SHAPES.values()))[0]
    embeds = (
        tuple(embedder(rng.randrange(len(EMBEDDERS)), i) for i in range(rng.randint(1, 2))) if features["embed"] else ()
    )
    chat = tuple(model(rng.choice(sizes), i) for i in range(count - len(embeds)))
    load = 0.5 if shape == "ramp" else rng.uniform(0.3, 0.9)
    scenario = Scenario(
        f"draw-{seed}",
        load,
        models=chat + embeds,
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
        overload=(0.33, 0.66, 1.1) if shape == "overload" else None,
        ramp=(0.1, 0.9) if shape == "ramp" else None,
        embed_share=rng.uniform(0.3, 0.6) if embeds else 0.0,
    )
    described = {
        "seed": seed,
        "nodes": nodes,
        "memory_gb": sorted(set(memories)),
        "parallel": sorted(set(slots)),
        "models": [m.name for m in scenario.models],
        "biggest_b": max(int(m.name.rsplit(":", 1)[1][:-1]) for m in chat),
        "load": "ramp 0.10-0.90" if shape == "ramp" else round(load, 2),
        "zipf": round(scenario.zipf, 2),
        **{k: v for k, v in features.items() if v and k != "embed"},
        **({"embed_share": round(scenario.embed_share, 2)} if embeds else {}),
        **({"overload": True} if shape == "overload" else {}),
    }
    return scenario, described


def _one(job: tuple[int, str, float]) -> tuple[int, str, dict[str, float], dict[str, Any]]:
    seed, policy, duration = job
    scenario, described = draw(seed, duration)
    started = time.process_time()
    summary = summarize([simulate(scenario, policy, seed)])
    return seed, policy, {**summary, "cpu_s": time.process_time() - started}, described


def cost(seed: int, duration: float) -> float:
    """Roughly how long a draw takes to simulate (nodes stepped x requests routed), to start the
    longest first and keep both workers busy to the end."""
    scenario, _ = draw(seed, duration)
    return float(scenario.nodes * (1 + scenario.embed_share) * len(scenario.models) ** 0.3)


def ratio(lc: float, ma: float) -> float:
    return lc / max(ma, 1e-3)


def draw_options(parser: argparse.ArgumentParser, draws: int = 24) -> None:
    """The options of every report over a set of generated draws."""
    parser.add_argument("--set", choices=SETS, default="tuning")
    parser.add_argument("--draws", type=int, default=draws)
    parser.add_argument("--duration", type=float, default=1800.0, help="virtual seconds of arrivals per run")
    parser.add_argument("--workers", type=int, default=2)


def chosen_seeds(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[int]:
    """The set's first `--draws` seeds, the longest to simulate first (both workers busy to the end)."""
    if args.draws > MAX_DRAWS:
        parser.error(f"--draws: at most {MAX_DRAWS}, so that the sets' seeds stay apart")
    return sorted((SETS[args.set] + i for i in range(args.draws)), key=lambda s: -cost(s, args.duration))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    draw_options(parser, draws=12)
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    args = parser.parse_args()
    seeds = chosen_seeds(parser, args)
    started = time.monotonic()
    rows: dict[int, dict[str, Any]] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        jobs = [pool.submit(_one, (s, p, args.duration)) for s in seeds for p in POLICIES]
        for job in as_completed(jobs):
            seed, policy, summary, described = job.result()
            rows.setdefault(seed, {"draw": described})[policy] = summary
    rows = dict(sorted(rows.items()))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"draws-{args.set}.json").write_text(json.dumps(rows, indent=1))
    report(rows, args, time.monotonic() - started)


FEATURES = ("mixed", "parallel_1", "embed", "ramp", "overload", "shift", "burst", "long_prompts", "alt_ctx")


def kinds(d: dict[str, Any]) -> list[str]:
    """The kinds of fleet and load a draw belongs to (a draw may be several), for the by-feature table."""
    out = {
        "mixed": len(d["memory_gb"]) > 1,
        "parallel_1": 1 in d["parallel"],
        "embed": "embed_share" in d,
        "ramp": isinstance(d["load"], str),
    }
    return [k for k in FEATURES if out.get(k, d.get(k))]


def worse_than_lc(lc: dict[str, float], ma: dict[str, float]) -> bool:
    """Model-aware more than 10% worse on p50, p95 or p99 (differences under 50 ms ignored)."""
    return any(ma[f"ttft_{q}"] > 1.1 * lc[f"ttft_{q}"] + 0.05 for q in ("p50", "p95", "p99"))


def report(rows: dict[int, dict[str, Any]], args: argparse.Namespace, wall_s: float) -> None:
    cpu = sum(rows[s][p]["cpu_s"] for s in rows for p in POLICIES)
    lines = [
        f"Set `{args.set}`: {len(rows)} draws, {args.duration:g} s of arrivals each; wall time {wall_s:.0f} s "
        f"on {args.workers} workers ({cpu:.0f} s of CPU).",
        "",
        "| draw | nodes | GB | slots | models (largest) | load | embed | features | LC loads/1k | MA loads/1k "
        "| p50 ratio | p95 ratio | p99 ratio | MA failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    p99: list[float] = []
    thrash: list[float] = []
    by_kind: dict[str, list[tuple[float, bool]]] = {k: [] for k in FEATURES}
    worse = 0
    for seed in sorted(rows):
        row = rows[seed]
        lc, ma, d = row["least-connections"], row["model-aware"], row["draw"]
        r = {q: ratio(lc[f"ttft_{q}"], ma[f"ttft_{q}"]) for q in ("p50", "p95", "p99")}
        p99.append(r["p99"])
        if lc["loads_per_1k"] > 100:
            thrash.append(r["p99"])
        bad = worse_than_lc(lc, ma)
        worse += bad
        for k in kinds(d):
            by_kind[k].append((r["p99"], bad))
        shown = [k for k in ("shift", "burst", "long_prompts", "alt_ctx", "overload") if d.get(k)]
        load = "ramp .1→.9" if isinstance(d["load"], str) else f"{d['load']:.2f}"
        embed = f"{100 * d['embed_share']:.0f}%" if "embed_share" in d else "-"
        lines.append(
            f"| {seed} | {d['nodes']} | {'/'.join(map(str, d['memory_gb']))} | {'/'.join(map(str, d['parallel']))} "
            f"| {len(d['models'])} ({d['biggest_b']}B) | {load} | {embed} | {', '.join(shown) or '-'} "
            f"| {lc['loads_per_1k']:.0f} | {ma['loads_per_1k']:.1f} | {r['p50']:.2f} | {r['p95']:.2f} "
            f"| {r['p99']:.2f}{' ✗' if bad else ''} | {ma['failed']:.0f} |"
        )
    ma_loads = [rows[s]["model-aware"]["loads_per_1k"] for s in rows]
    failed = sum(rows[s]["model-aware"]["failed"] for s in rows)
    lc_failed = sum(rows[s]["least-connections"]["failed"] for s in rows)
    lines += [
        "",
        "Ratios are least-connections ÷ model-aware TTFT (above 1: model-aware is faster); ✗: model-aware "
        "more than 10% worse than least-connections on p50, p95 or p99.",
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
        "",
        "By kind of draw (a draw counts under each kind it has):",
        "",
        "| kind | draws | median p99 ratio | worst p99 ratio | model-aware > 10% worse |",
        "|---|---|---|---|---|",
    ]
    for k, got in by_kind.items():
        if got:
            ratios = [x for x, _ in got]
            lines.append(
                f"| {k} | {len(got)} | {statistics.median(ratios):.2f}× | {min(ratios):.2f}× "
                f"| {sum(b for _, b in got)} |"
            )
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
