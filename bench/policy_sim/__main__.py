"""Routing policies in virtual time: `python -m bench.policy_sim [--quick] [--seeds N] [--out DIR]`.

Writes DIR/policy_sim.md (tables) and DIR/policy_sim_*.png (charts)."""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.policy_sim.run import POLICIES, SCENARIOS, Result, simulate, summarize


def _one(args: tuple[str, str, int, float | None]) -> tuple[str, str, Result]:
    name, policy, seed, duration = args
    scenario = SCENARIOS[name]()
    if duration is not None:
        scenario.duration_s = duration
    return name, policy, simulate(scenario, policy, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one seed, short runs, two scenarios (a smoke test)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=None, help="virtual seconds of arrivals per run")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument(
        "--merge", action="store_true", help="update DIR/policy_sim.json with these runs instead of replacing it"
    )
    args = parser.parse_args()
    names = args.scenarios.split(",")
    policies = args.policies.split(",")
    seeds, duration = args.seeds, args.duration
    if args.quick:
        names, seeds, duration = ["thrash-50", "single-model-70"], 1, 120.0
    jobs = [(n, p, seed, duration) for n in names for p in policies for seed in range(seeds)]
    started = time.monotonic()
    results: dict[tuple[str, str], list[Result]] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for name, policy, result in pool.map(_one, jobs):
            results.setdefault((name, policy), []).append(result)
    table = {f"{n}/{p}": summarize(r) for (n, p), r in results.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge and (args.out / "policy_sim.json").exists():
        table = {**json.loads((args.out / "policy_sim.json").read_text()), **table}
        names = [n for n in SCENARIOS if any(k.startswith(n + "/") for k in table)]
    (args.out / "policy_sim.json").write_text(json.dumps(table, indent=2))
    lines = [
        f"Seeds: {seeds}; virtual arrival time per run: {duration or 'scenario default'} s; "
        f"wall time {time.monotonic() - started:.0f} s.",
        "",
    ]
    header = (
        "| policy | TTFT p50 | p95 | p99 | E2E p50 | p99 | loads/1k | evictions/1k | 503s | failed | "
        "cut mid-stream | req/s | TTFT ≤ 2 s |"
    )
    for name in names:
        lines += [f"### {name}", "", header, "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for policy in POLICIES:
            if f"{name}/{policy}" not in table:
                continue
            m = table[f"{name}/{policy}"]
            lines.append(
                f"| {policy} | {m['ttft_p50']:.2f} s | {m['ttft_p95']:.2f} s | {m['ttft_p99']:.2f} s | "
                f"{m['e2e_p50']:.2f} s | {m['e2e_p99']:.2f} s | {m['loads_per_1k']:.1f} | "
                f"{m['evictions_per_1k']:.1f} | {m['rejected_503']:.0f} | {m['failed']:.0f} | {m['cut']:.0f} | "
                f"{m['throughput_rps']:.2f} | {100 * m['slo_share']:.1f}% |"
            )
        lines.append("")
        lines += turns_table(table, name)
    (args.out / "policy_sim.md").write_text("\n".join(lines))
    print("\n".join(lines))
    charts(table, names, args.out)


def turns_table(table: dict[str, dict[str, float]], name: str) -> list[str]:
    """Multi-turn scenarios: the turns after the first, and how much of their prompts slots held."""
    rows = [(p, table[f"{name}/{p}"]) for p in POLICIES if "later_p50" in table.get(f"{name}/{p}", {})]
    if not rows:
        return []
    lines = ["| policy | later turns: TTFT p50 | p99 | prompt tokens cached |", "|---|---|---|---|"]
    for policy, m in rows:
        lines.append(f"| {policy} | {m['later_p50']:.2f} s | {m['later_p99']:.2f} s | {100 * m['cached_share']:.0f}% |")
    return [*lines, ""]


def charts(table: dict[str, dict[str, float]], names: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / len(POLICIES)
    for i, policy in enumerate(POLICIES):
        xs = [j + i * width for j in range(len(names))]
        none = {"ttft_p99": 1e-3, "loads_per_1k": 0.0}
        axes[0].bar(xs, [max(1e-3, table.get(f"{n}/{policy}", none)["ttft_p99"]) for n in names], width, label=policy)
        axes[1].bar(xs, [table.get(f"{n}/{policy}", none)["loads_per_1k"] for n in names], width, label=policy)
    for ax, title in zip(axes, ("p99 time to first token (s, log)", "model loads per 1,000 requests"), strict=True):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "policy_sim.png", dpi=110)


if __name__ == "__main__":
    main()
