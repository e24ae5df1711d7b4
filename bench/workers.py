"""Worker processes (`corral serve --workers N`): what they cost and what they give.

    .venv/bin/python -m bench.workers [--seconds 10] [--workers 1,2,4] [--all] [--out bench/results/workers.json]

1. Metrics across workers, the hot-path price of each option: µs per `Metrics.observe(record)` (one
   finished streamed request: 6 series touched) with the registry in memory (the aggregating scrape
   Corral uses) and with prometheus_client's multiprocess mode (every update written into a per-process
   mmap file under PROMETHEUS_MULTIPROC_DIR). Each mode runs in a fresh interpreter, as the mode is
   fixed when prometheus_client is imported.
2. The proxy path with 1, 2 and 4 workers (with --all: an API key, request and token limits in a
   real Redis shared by the workers, validation caps, as well as the metrics and audit always on):
   nginx returning a fixed Ollama body is the node, wrk drives
   /api/generate at concurrency 64. Per worker count: requests/s, the CPU seconds the parent and all
   its workers used per 1,000 requests (from /proc, steadier than wall-clock figures when other work
   shares the machine), and the time of one /metrics scrape (the answering worker asks its siblings).
   With --all, also the limits' Redis round trips (script calls) per 1,000 requests, counted by Redis.
   Worker counts take turns, `--rounds` times; the medians are reported.
Needs Debian's nginx and wrk (scripts/install.sh --system).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import free_port, wait_http
from bench.limiter_cost import script_calls as limiter_script_calls
from bench.proxy_overhead import cpu_seconds, lua, nginx_conf, wrk
from tests.contract.servers import start_redis

HERE = Path(__file__).resolve().parent


def observe_cost(mode: str, count: int) -> float:
    """µs per observe() in a fresh interpreter with `mode` ('memory' or 'multiprocess')."""
    env = dict(os.environ)
    folder = tempfile.mkdtemp(prefix="corral-prom-")
    if mode == "multiprocess":
        env["PROMETHEUS_MULTIPROC_DIR"] = folder
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.workers", "--observe-child", str(count)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return float(out.strip().splitlines()[-1])


def observe_child(count: int) -> None:
    from prometheus_client import CollectorRegistry

    from corral.adapters.metrics import Metrics
    from corral.domain.record import RequestRecord

    metrics = Metrics(CollectorRegistry())
    metrics.known_models = lambda: frozenset({"bench:1b"})
    record = RequestRecord("id", "POST", "/api/generate", "127.0.0.1", 0.0)
    record.route, record.model, record.node, record.status, record.stream = "/api/generate", "bench:1b", "n", 200, True
    record.finished, record.ttft, record.prompt_tokens, record.completion_tokens = 0.5, 0.05, 12, 40
    for _ in range(1000):  # warm: children created
        metrics.observe(record)
    began = time.process_time()  # CPU time: steady when other work shares the machine
    for _ in range(count):
        metrics.observe(record)
    print((time.process_time() - began) / count * 1e6)


def family_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its children (the workers)."""
    total = cpu_seconds(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return total + sum(cpu_seconds(int(child)) for child in children)


def family_switches(pid: int) -> int:
    """Involuntary context switches of `pid` and its children: a process preempted mid-work (more
    runnable processes than cores) pays for it in cache refills, counted as its CPU time."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0
    for each in [pid, *map(int, children)]:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("nonvoluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def script_calls(redis_url: str | None) -> int:
    """Script calls (EVALSHA, EVAL) the limits' Redis has run so far: its round trips from the workers."""
    return 0 if redis_url is None else limiter_script_calls(redis_url)


def scrape_ms(url: str, times: int = 20) -> float:
    began = time.perf_counter()
    for _ in range(times):
        with urllib.request.urlopen(url, timeout=10) as reply:
            reply.read()
    return (time.perf_counter() - began) / times * 1000


def proxy(
    work: Path, workers: list[int], seconds: int, rounds: int, redis_url: str | None = None
) -> dict[str, dict[str, float]]:
    """The median of `rounds` runs per worker count, the counts taking turns in each round."""
    runs: dict[str, list[dict[str, float]]] = {}
    for _ in range(rounds):
        for count, result in proxy_round(work, workers, seconds, redis_url).items():
            runs.setdefault(count, []).append(result)
    return {count: {k: statistics.median(r[k] for r in results) for k in results[0]} for count, results in runs.items()}


def all_features(work: Path, config: dict[str, Any], redis_url: str) -> str:
    """--all: an API key with request and token limits, per-address and global limits shared by every
    worker through Redis, validation caps (metrics and audit are on in both modes). Returns the key."""
    config["auth"] = {"enabled": True, "store_url": f"sqlite:///{work / 'keys.db'}"}
    config["limits"] = {"redis_url": redis_url, "per_ip_rpm": 10**9, "global_rpm": 10**9, "global_tpm": 10**12}
    config["validation"] = {"max_predict": 4096, "max_ctx": 131072}
    path = work / "keys-config.json"
    path.write_text(json.dumps(config))
    create = [sys.executable, "-m", "corral", "keys", "create", "--name", f"w{time.monotonic_ns()}", "--config"]
    out = subprocess.run(
        [*create, str(path), "--rpm", str(10**9), "--tpm", str(10**12)], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"corral keys create failed: {out.stderr}")
    return out.stdout.strip().splitlines()[-1]


def proxy_round(
    work: Path, workers: list[int], seconds: int, redis_url: str | None = None
) -> dict[str, dict[str, float]]:
    """Each worker count at c=64; then, as a control, one worker at 64/N connections, the share each
    of N workers gets (what the event loop's batching alone does to the CPU per request)."""
    points = [(str(n), n, 64) for n in workers] + [(f"1 at c={64 // n}", 1, 64 // n) for n in workers if n > 1]
    ports = {k: free_port() for k in ("backend", "nginx", "sim", "nginx_sim")}
    conf = nginx_conf(work, ports["backend"], ports["nginx"], ports["sim"], ports["nginx_sim"])
    nginx = subprocess.Popen(["nginx", "-e", f"{work}/error.log", "-p", str(work), "-c", str(conf)])
    results: dict[str, dict[str, float]] = {}
    try:
        wait_http(f"http://127.0.0.1:{ports['backend']}/api/version")
        for label, count, connections in points:
            port = free_port()
            config = work / f"corral-{count}.yaml"
            settings: dict[str, Any] = {
                "server": {"host": "127.0.0.1", "port": port, "workers": count},
                "logging": {"access": False, "level": "warning"},
                "audit": {"path": str(work / "audit.log")},
                "backends": [{"name": "nginx", "url": f"http://127.0.0.1:{ports['backend']}", "models": ["bench:1b"]}],
            }
            headers = {"Authorization": f"Bearer {all_features(work, settings, redis_url)}"} if redis_url else None
            plain = lua(work, "plain", '{"model":"bench:1b","prompt":"hi","stream":false}', headers)
            config.write_text(json.dumps(settings))
            corral = subprocess.Popen([sys.executable, "-m", "corral", "serve", "--config", str(config)])
            try:
                base = f"http://127.0.0.1:{port}"
                wait_http(base + "/ready")
                wrk(base + "/api/generate", plain, 64, 1)  # warm every worker's pool
                before, switched = family_cpu(corral.pid), family_switches(corral.pid)
                calls = script_calls(redis_url)
                c64 = wrk(base + "/api/generate", plain, connections, seconds)
                used = family_cpu(corral.pid) - before
                switched = family_switches(corral.pid) - switched
                calls = script_calls(redis_url) - calls
                requests = c64["rps"] * seconds
                results[label] = {
                    "rps": c64["rps"],
                    "cpu_s_per_1k": used / max(1.0, requests) * 1000,
                    "preempted_per_1k": switched / max(1.0, requests) * 1000,
                    "p50_ms": c64.get("p50_us", 0) / 1000,
                    "errors": c64["errors"],
                    "scrape_ms": scrape_ms(base + "/metrics"),
                    "redis_calls_per_1k": calls / max(1.0, requests) * 1000,
                }
                print(label, "worker(s)", results[label], flush=True)
            finally:
                corral.terminate()
                corral.wait(30)
    finally:
        nginx.terminate()
        nginx.wait(10)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--observations", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs per worker count (the median is kept)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "workers.json")
    parser.add_argument("--observe-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--all", action="store_true", help="every feature on: a key, limits in Redis (issue 12)")
    args = parser.parse_args()
    if args.observe_child is not None:
        observe_child(args.observe_child)
        return
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: run scripts/install.sh --system")
    observe = {mode: observe_cost(mode, args.observations) for mode in ("memory", "multiprocess")}
    print("observe µs", observe, flush=True)
    work = Path(tempfile.mkdtemp(prefix="corral-bench-workers-"))
    redis = start_redis() if args.all else None
    try:
        url = redis.__enter__().url if redis is not None else None
        runs = proxy(work, [int(n) for n in args.workers.split(",")], args.seconds, args.rounds, url)
    finally:
        if redis is not None:
            redis.__exit__(None, None, None)
        shutil.rmtree(work, ignore_errors=True)
    results = {"observe_us": observe, "proxy": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print("| workers | req/s | CPU s per 1,000 requests | preempted per 1,000 | p50 | one scrape ", end="")
    print("| Redis calls per 1,000 |")
    print("|---|---|---|---|---|---|---|")
    for count, r in runs.items():
        print(
            f"| {count} | {r['rps']:,.0f} | {r['cpu_s_per_1k']:.3f} | {r['preempted_per_1k']:.0f} "
            f"| {r['p50_ms']:.1f} ms | {r['scrape_ms']:.1f} ms | {r['redis_calls_per_1k']:.0f} |"
        )
    print(f"observe(): {observe['memory']:.2f} µs in memory, {observe['multiprocess']:.2f} µs multiprocess")


if __name__ == "__main__":
    main()
