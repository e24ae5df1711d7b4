"""Both routing benchmarks in one command (issue 3):

    .venv/bin/python -m bench.routing [--quick]

1. the policy simulation in virtual time (`bench.policy_sim`: 9 scenarios x 5 policies x 5 seeds);
2. the live confirmation (`bench.routing_live`: `corral serve` in front of `corral sim` nodes).

Tables and charts land in docs/bench/ (policy_sim.md/.png/.json, routing_live.md/.png/.json);
docs/benchmarks.md quotes them. `--quick` is a smoke run: one seed, short runs, 20 s live.
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run, not figures to publish")
    parser.add_argument("--out", default="docs/bench")
    args = parser.parse_args()
    sim = [sys.executable, "-m", "bench.policy_sim", "--out", args.out]
    live = [sys.executable, "-m", "bench.routing_live", "--out", f"{args.out}/routing_live.md"]
    if args.quick:
        sim.append("--quick")
        live += ["--seconds", "20"]
    subprocess.run(sim, check=True)
    subprocess.run(live, check=True)


if __name__ == "__main__":
    main()
