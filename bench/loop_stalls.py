"""What holds Corral's event loop at concurrency 64 with every feature on (issue 12, "no stalls").

    .venv/bin/python -m bench.loop_stalls [--seconds 5] [--rounds 3] [--gc default,tuned]

Corral with a key, per-key/per-address/global request and token limits, metrics, access log and audit
(bench.compare's corral-all) in front of nginx returning a fixed body, under `corral loadtest`'s engine
at concurrency 64; run through bench.stall_probe, which records every garbage-collector pass and the
event loop's lag. `--gc default` skips Corral's collector tuning at start-up, `tuned` keeps it; the
modes alternate round by round. Prints, per mode, the medians over rounds of: requests/s, latency p50 and
p99 (and their ratio), loop lag p99 and max, lags over 10 ms, collector passes by generation and the
longest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import free_port, wait_http
from bench.compare import FIXED, corral_config, measure, nginx_conf, start, stop


def corral(work: Path, ports: dict[str, int], mode: str, probe: Path) -> tuple[subprocess.Popen[bytes], str]:
    path = work / "corral-all.json"
    if not path.exists():
        path.write_text(json.dumps(corral_config(work, "corral-all", ports)))
    create = [sys.executable, "-m", "corral", "keys", "create", "--name", f"b{probe.stem}", "--config", str(path)]
    out = subprocess.run([*create, "--rpm", str(10**9), "--tpm", str(10**12)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"corral keys create failed: {out.stderr}")
    env = {"CORRAL_LOGGING__FORMAT": "json", "CORRAL_STALL_PROBE": str(probe)}
    if profile := os.environ.get("BENCH_PROFILE"):
        env["CORRAL_STALL_PROBE_PROFILE"] = f"{profile}-{probe.stem}.prof"
    if mode == "default":
        env["CORRAL_STALL_PROBE_GC"] = "default"
    args = [sys.executable, "-m", "bench.stall_probe", "serve", "--config", str(path)]
    proc = start(args, work / "corral.log", env)
    wait_http(f"http://127.0.0.1:{ports['corral']}/ready")
    return proc, out.stdout.strip().splitlines()[-1]


def summary(load: dict[str, Any], probe: dict[str, Any], window: tuple[float, float]) -> dict[str, float]:
    """The load's figures, and the probe's from the measured run only (not start-up or warm-up)."""
    began, ended = window
    lags = sorted(lag for t, lag in probe["lag_s"] if began <= t <= ended) or [0.0]
    passes = [(g, d) for t, g, d in probe["gc"] if began <= t <= ended]
    gens = [g for g, _ in passes]
    return {
        "rps": load["rps"],
        "p50_ms": load["p50_ms"],
        "p99_ms": load["p99_ms"],
        "p99/p50": load["p99_ms"] / load["p50_ms"] if load["p50_ms"] else 0.0,
        "lag_p99_ms": lags[int(0.99 * (len(lags) - 1))] * 1000,
        "lag_max_ms": lags[-1] * 1000,
        "lags_over_10ms": sum(x > 0.010 for x in lags),
        "gc_gen0": gens.count(0),
        "gc_gen1": gens.count(1),
        "gc_gen2": gens.count(2),
        "gc_max_ms": max((d for _, d in passes), default=0.0) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--gc", default="default,tuned", help="modes to alternate: default, tuned")
    args = parser.parse_args()
    modes = args.gc.split(",")
    work = Path(tempfile.mkdtemp(prefix="corral-stalls-"))
    ports = {k: free_port() for k in ("backend", "sim", "nginx", "nginx_sim", "corral")}
    conf = nginx_conf(work, ports)
    nginx = start(["nginx", "-e", f"{work}/error.log", "-p", str(work), "-c", str(conf)], work / "nginx.out")
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    try:
        wait_http(f"http://127.0.0.1:{ports['backend']}/api/version")
        url = f"http://127.0.0.1:{ports['corral']}"
        for n in range(args.rounds):
            for mode in modes:
                probe = work / f"probe-{mode}-{n}.json"
                proc, key = corral(work, ports, mode, probe)
                try:
                    measure(url, FIXED, 4, min(1.0, args.seconds), False, key)  # warm up
                    began = time.time()
                    load = measure(url, FIXED, args.concurrency, args.seconds, False, key)
                    window = (began, time.time())
                finally:
                    stop(proc)
                rows[mode].append(s := summary(load, json.loads(probe.read_text()), window))
                print(mode, {k: round(v, 2) for k, v in s.items()}, flush=True)
    finally:
        stop(nginx)
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    keys = list(next(iter(rows.values()))[0])
    print("| mode | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for mode, runs in rows.items():
        cells = [f"{statistics.median(r[k] for r in runs):,.2f}" for k in keys]
        print(f"| {mode} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
