"""Instructions per request of `corral-all` (bench.compare's everything-on gateway), counted by
callgrind: user-space instructions, the same whatever else runs on the machine, so that changes of a
few per cent can be told apart where CPU time per request swings by tens of per cent between rounds.

    .venv/bin/python -m bench.instructions --variant before=/path/to/old/tree --variant after=. \\
        [--routes generate,v1,stream] [--concurrency 1,64] [--seconds 10]

Each variant's gateway runs under `valgrind --tool=callgrind --instr-atstart=no` in front of nginx's
fixed body (and `corral sim` for `stream`: 64-token NDJSON streams at c=16, counted per stream).
Instructions are collected only while wrk drives it (`callgrind_control -i on/off`), after a warm-up;
a quiet interval of the same length gives the idle process's own rate (health checks, the key
store's poll), which is subtracted. Under callgrind the gateway runs some 50 times slower, so a run of
--seconds serves about a thousand requests; the counts are per request all the same. Needs valgrind,
nginx and wrk (scripts/install.sh --system).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import free_port, stop_all, wait_http
from bench.gateway_ab import ROUTES, start
from bench.proxy_overhead import nginx_conf


def counted(pid: int, work: Path, label: str, run: list[str] | None, seconds: int) -> tuple[int, int]:
    """(requests wrk completed, instructions the gateway ran) while `run` (or, None, nothing) ran."""
    subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True, check=True)
    subprocess.run(["callgrind_control", "-i", "on", str(pid)], capture_output=True, check=True)
    if run is None:
        time.sleep(seconds)  # the idle process's own work over the same interval
        served = 0
    else:
        out = subprocess.run(run, capture_output=True, text=True, check=True).stdout
        served = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    subprocess.run(["callgrind_control", "-i", "off", str(pid)], capture_output=True, check=True)
    before = set(work.glob(f"cg.{pid}.out*"))
    subprocess.run(["callgrind_control", "-d", label, str(pid)], capture_output=True, check=True)
    total = 0
    for dump in set(work.glob(f"cg.{pid}.out*")) - before:
        for line in dump.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    return served, total


def measure(name: str, tree: Path, args: argparse.Namespace, routes: list[str]) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix=f"corral-instr-{name}-"))
    ports = {k: free_port() for k in ("backend", "nginx", "sim", "nginx_sim")}
    conf = nginx_conf(work, ports["backend"], ports["nginx"], ports["sim"], ports["nginx_sim"])
    procs = [subprocess.Popen(["nginx", "-e", f"{work}/error.log", "-p", str(work), "-c", str(conf)])]
    results: dict[str, float] = {}
    try:
        wait_http(f"http://127.0.0.1:{ports['backend']}/api/version")
        sim = None
        if "stream" in routes:
            sim = ports["sim"]
            flags = ["--model", "stream:1b", "--tokens-per-second", "100000", "--load-seconds", "0", "--parallel", "64"]
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "corral", "sim", "--port", str(sim), *flags], stdout=subprocess.DEVNULL
                )
            )
            wait_http(f"http://127.0.0.1:{sim}/")
        grind = ("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={work}/cg.%p.out")
        proc, port, scripts, streams = start(name, tree, "own", work, ports["backend"], True, True, sim, grind, 300)
        procs.append(proc)
        seconds = args.seconds
        _, idle = counted(proc.pid, work, "idle", None, seconds)
        for route in routes:
            path, script = ("/api/generate", streams) if route == "stream" else (ROUTES[route][0], scripts[route])
            wrk = ["wrk", "-t1", "-d{}s", "-s", str(script), f"http://127.0.0.1:{port}{path}"]
            subprocess.run([w.format(5) for w in wrk] + ["-c4"], capture_output=True, check=True)  # warm-up
            for c in [16] if route == "stream" else args.concurrency:
                served, total = counted(
                    proc.pid, work, f"{route}-{c}", [w.format(seconds) for w in wrk] + [f"-c{c}"], seconds
                )
                each = results[f"{route} c={c}"] = (total - idle) / max(1, served)
                print(f"{name} {route} c={c}: {served} served, {each / 1e3:,.0f} k instructions each", flush=True)
    finally:
        stop_all(procs, 60)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", required=True, help="NAME=TREE")
    parser.add_argument("--routes", default="generate,v1", help="comma-separated: generate, v1, stream")
    parser.add_argument("--concurrency", default="1,64", help="comma-separated, for generate and v1")
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    routes = [r for r in args.routes.split(",") if r]
    if unknown := set(routes) - {*ROUTES, "stream"}:
        parser.error(f"unknown routes {sorted(unknown)}")
    table = {}
    for spec in args.variant:
        name, _, tree = spec.partition("=")
        table[name] = measure(name, Path(tree).resolve(), args, routes)
    points = list(next(iter(table.values())))
    print(
        "\n| variant | "
        + " | ".join(f"{p} (k instructions{' a stream' if 'stream' in p else ''})" for p in points)
        + " |"
    )
    print("|---" * (len(points) + 1) + "|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row.get(p, 0) / 1e3:,.0f}" for p in points) + " |")


if __name__ == "__main__":
    main()
