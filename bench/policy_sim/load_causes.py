"""Why models load, over generated draws (issue 17: loads per 1,000).

`python -m bench.policy_sim.load_causes --set tuning --draws 24` runs least-connections, model-aware
and model-aware with keep-warm (`residency.keep_warm`, corral/domain/keep_warm.py) on each draw of
bench/policy_sim/generate.py and counts every load by its cause on its node: the model's runner there
had expired idle past its keep-alive, was evicted for another model (or reloaded for another num_ctx),
or the model had never been loaded there. Prints one line per draw and the shares, and the keep-warm
variant's loads and TTFT percentiles against least-connections.
"""

from __future__ import annotations

import argparse
import statistics
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from bench.policy_sim.fleet import CAUSES
from bench.policy_sim.generate import chosen_seeds, draw, draw_options, ratio, worse_than_lc
from bench.policy_sim.run import WARM, simulate, summarize

POLICIES = ("least-connections", "model-aware", WARM)


def _one(job: tuple[int, str, float]) -> tuple[int, str, dict[str, Any]]:
    seed, policy, duration = job
    scenario, _ = draw(seed, duration)
    result = simulate(scenario, policy, seed)
    return seed, policy, {**summarize([result]), "causes": result.load_causes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    draw_options(parser)
    parser.add_argument("--policies", default=",".join(POLICIES))
    args = parser.parse_args()
    policies = args.policies.split(",")
    jobs = [(seed, p, args.duration) for seed in chosen_seeds(parser, args) for p in policies]
    rows: dict[int, dict[str, dict[str, Any]]] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for seed, policy, summary in pool.map(_one, jobs):
            rows.setdefault(seed, {})[policy] = summary
    print(report(rows, policies))


def shares(causes: dict[str, int]) -> str:
    total = max(1, sum(causes.values()))
    return " | ".join(f"{100 * causes.get(c, 0) / total:.0f}%" for c in CAUSES)


def report(rows: dict[int, dict[str, dict[str, Any]]], policies: list[str]) -> str:
    head = "| " + " | ".join(CAUSES) + " |"
    rule = "|---" * len(CAUSES) + "|"
    lines = ["| draw | policy | loads/1k " + head, "|---|---|---" + rule]
    for seed in sorted(rows):
        for p in policies:
            m = rows[seed][p]
            lines.append(f"| {seed} | {p} | {m['loads_per_1k']:.1f} | {shares(m['causes'])} |")
    lines += ["", "All draws, and the draws where the policy loads 10-60 times per 1,000:", ""]
    lines += ["| policy | draws | loads/1k (median) " + head, "|---|---|---" + rule]
    for p in policies:
        for label, keep in (("all", lambda _: True), ("10-60", lambda x: 10 <= x <= 60)):
            got = [rows[s][p] for s in rows if keep(rows[s][p]["loads_per_1k"])]
            if not got:
                continue
            summed = {c: sum(m["causes"].get(c, 0) for m in got) for c in CAUSES}
            median = statistics.median(m["loads_per_1k"] for m in got)
            lines.append(f"| {p} | {label}: {len(got)} | {median:.1f} | {shares(summed)} |")
    if "least-connections" in policies:
        lines += ["", "| policy | median loads/1k | median p50 / p95 / p99 ratio vs LC | > 10% worse than LC |"]
        lines += ["|---|---|---|---|"]
        for p in policies[1:]:
            lc = [rows[s]["least-connections"] for s in sorted(rows)]
            got = [rows[s][p] for s in sorted(rows)]
            r = {
                q: statistics.median(ratio(a[f"ttft_{q}"], b[f"ttft_{q}"]) for a, b in zip(lc, got, strict=True))
                for q in ("p50", "p95", "p99")
            }
            worse = [s for s in sorted(rows) if worse_than_lc(rows[s]["least-connections"], rows[s][p])]
            lines.append(
                f"| {p} | {statistics.median(m['loads_per_1k'] for m in got):.1f} "
                f"| {r['p50']:.2f} / {r['p95']:.2f} / {r['p99']:.2f} | {len(worse)} {worse} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
