"""Gateways side by side, taking turns: two source trees of Corral (before and after a change), or
Corral's own server against uvicorn (bench/asgi_edge.py). On a machine shared with other work, single
runs swing by ±20%; interleaved rounds and each gateway's CPU time per request do not.

    .venv/bin/python -m bench.gateway_ab --variant before=/path/to/old/tree --variant after=. [--rounds 6]
    .venv/bin/python -m bench.gateway_ab --variant own=. --variant uvicorn=.:uvicorn

Each variant runs twice, without and with API keys and limits ("all features"), in front of nginx
returning a fixed body. Prints per-round figures and the medians. Needs nginx and wrk.

`--everything` runs only the "all features" gateways, configured as bench.compare's `corral-all` (an API
key with request and token limits, per-address and global request limits, a global token limit,
metrics, the audit log, validation caps and the access log, its JSON lines going to a file), which is
issue 12's "everything on". `--c64-only` skips the concurrency-1 run (for CPU per request alone).
`--nginx` also measures, in every round, the node directly at c=1 and nginx `proxy_pass` at c=1 and 64,
and reports each gateway's added p50 over direct and its c=64 requests/s as a ratio to nginx's in the
same round (issue 12's targets: medians of the per-round figures).
`--stream` also relays, in every round, 64-token NDJSON streams from `corral sim` (as fast as it
generates) through each gateway at concurrency 16, and reports streams/s and the gateway's CPU time
per stream (the relay's per-chunk work: parsing the node's chunks and writing them to the client).
`--routes generate,v1` measures each gateway on `/api/generate` and on `/v1/chat/completions` (the node
answers the latter with an OpenAI chat.completion), in turn within every round, so the two routes'
costs come from the same rounds (default: `generate` alone). Streams (`--stream`) are always NDJSON on
`/api/generate`, shown on the first route's row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import free_port, stop_all, wait_http
from bench.proxy_overhead import cpu_seconds, lua, nginx_conf, wrk

PROMPT = '{"model":"bench:1b","prompt":"hi","stream":false}'
V1_PROMPT = '{"model":"bench:1b","messages":[{"role":"user","content":"hi"}],"stream":false}'
ROUTES = {"generate": ("/api/generate", PROMPT), "v1": ("/v1/chat/completions", V1_PROMPT)}
STREAM = '{"model":"stream:1b","prompt":"hi","options":{"num_predict":64}}'  # streamed by corral sim


def write_calls(pid: int) -> int:
    """Write system calls made so far by a process, all its threads (/proc/PID/io's syscw)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    return 0


def start(
    name: str,
    tree: Path,
    edge: str,
    work: Path,
    backend: int,
    keyed: bool,
    everything: bool = False,
    sim: int | None = None,
    prefix: tuple[str, ...] = (),
    up_s: float = 20,
) -> tuple[Any, int, dict[str, Path], Path]:
    """One gateway from `tree`; `prefix` runs it under another program (bench.instructions: callgrind),
    given `up_s` to answer."""
    port = free_port()
    mode = "keyed" if keyed else "plain"
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port},
        "logging": {"access": everything, "level": "info" if everything else "warning"},
        "audit": {"path": str(work / f"audit-{name}-{mode}.log")},
        "backends": [{"name": "nginx", "url": f"http://127.0.0.1:{backend}", "models": ["bench:1b"]}],
    }
    if sim is not None:
        config["backends"].append({"name": "sim", "url": f"http://127.0.0.1:{sim}", "parallel": 256})
    env = {**os.environ, "PYTHONPATH": str(tree), "CORRAL_LOGGING__FORMAT": "json"}
    headers = {}
    if keyed:
        config["auth"] = {"enabled": True, "store_url": f"sqlite:///{work / f'keys-{name}.db'}"}
        config["limits"] = {"per_ip_rpm": 10**9, "global_rpm": 10**9}
        if everything:
            config["limits"]["global_tpm"] = 10**12
            config["validation"] = {"max_predict": 4096, "max_ctx": 131072}
    path = work / f"{name}-{mode}.json"
    path.write_text(json.dumps(config))
    if keyed:
        limits = ["--rpm", str(10**9), "--tpm", str(10**9)]
        created = subprocess.run(
            [sys.executable, "-m", "corral", "keys", "create", "--name", "bench", *limits, "--config", str(path)],
            capture_output=True,
            text=True,
            check=True,
            cwd=tree,
            env=env,
        )
        headers = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
    module = ["bench.asgi_edge"] if edge == "uvicorn" else ["corral", "serve"]
    with (work / f"{name}-{mode}.out").open("ab") as out:  # the access lines, with --everything
        command = [*prefix, sys.executable, "-m", *module, "--config", str(path)]
        proc = subprocess.Popen(command, cwd=tree, env=env, stderr=out)
    wait_http(f"http://127.0.0.1:{port}/health", up_s)
    scripts = {route: lua(work, f"{name}-{mode}-{route}", body, headers) for route, (_, body) in ROUTES.items()}
    return proc, port, scripts, lua(work, f"{name}-{mode}-s", STREAM, headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", required=True, help="NAME=TREE or NAME=TREE:uvicorn")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--everything", action="store_true", help="only 'all features', as bench.compare's corral-all")
    parser.add_argument("--c64-only", action="store_true", help="skip the concurrency-1 run")
    parser.add_argument("--nginx", action="store_true", help="also direct and nginx proxy_pass, in every round")
    parser.add_argument("--stream", action="store_true", help="also 64-token streams from corral sim at c=16")
    parser.add_argument("--routes", default="generate", help="comma-separated: generate (/api/generate), v1")
    args = parser.parse_args()
    routes = [r for r in args.routes.split(",") if r]
    if unknown := set(routes) - set(ROUTES):
        parser.error(f"unknown routes {sorted(unknown)}: choose from {', '.join(ROUTES)}")
    variants: dict[str, tuple[Path, str]] = {}
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        tree, _, edge = rest.partition(":")
        variants[name] = (Path(tree).resolve(), edge or "own")
    work = Path(tempfile.mkdtemp(prefix="corral-ab-"))
    ports = {k: free_port() for k in ("backend", "nginx", "sim", "nginx_sim")}
    conf = nginx_conf(work, ports["backend"], ports["nginx"], ports["sim"], ports["nginx_sim"])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen(["nginx", "-e", f"{work}/error.log", "-p", str(work), "-c", str(conf)]))
        wait_http(f"http://127.0.0.1:{ports['backend']}/api/version")
        sim = None
        if args.stream:
            sim = ports["sim"]
            sim_args = ["--port", str(sim), "--model", "stream:1b", "--tokens-per-second", "100000"]
            sim_args += ["--load-seconds", "0", "--parallel", "64"]
            procs.append(
                subprocess.Popen([sys.executable, "-m", "corral", "sim", *sim_args], stdout=subprocess.DEVNULL)
            )
            wait_http(f"http://127.0.0.1:{sim}/")
        gateways = {}
        modes = (True,) if args.everything else (False, True)
        for name, (tree, edge) in variants.items():
            for keyed in modes:
                proc, port, scripts, streams = start(
                    name, tree, edge, work, ports["backend"], keyed, args.everything, sim
                )
                procs.append(proc)
                gateways[(name, keyed)] = (proc.pid, port, scripts, streams)
        figures: dict[tuple[str, bool, str], dict[str, list[float]]] = {
            (name, keyed, route): {
                "p50_us": [],
                "cpu1_us": [],
                "rps_c64": [],
                "cpu_us": [],
                "writes": [],
                "added_us": [],
                "vs_nginx": [],
                "sps": [],
                "cpu_stream_us": [],
                "stream_writes": [],
            }
            for name, keyed in gateways
            for route in routes
        }
        names = list(variants)
        plain = {route: lua(work, f"plain-{route}", body) for route, (_, body) in ROUTES.items()}
        baseline: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
        for rnd in range(args.rounds):
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            for route in routes if args.nginx else ():
                path = ROUTES[route][0]
                direct = wrk(f"http://127.0.0.1:{ports['backend']}{path}", plain[route], 1, args.seconds)
                proxied = f"http://127.0.0.1:{ports['nginx']}{path}"
                nginx1 = wrk(proxied, plain[route], 1, args.seconds)
                baseline[route] = direct, wrk(proxied, plain[route], 64, args.seconds)
                print(f"round {rnd} {path} direct p50 {direct['p50_us']:.0f} µs; nginx p50 {nginx1['p50_us']:.0f} µs, "
                      f"{baseline[route][1]['rps']:,.0f} req/s", flush=True)  # fmt: skip
            for keyed, route, name in ((k, r, n) for k in modes for r in routes for n in order):
                pid, port, scripts, streams = gateways[(name, keyed)]
                script = scripts[route]
                url = f"http://127.0.0.1:{port}{ROUTES[route][0]}"
                before = cpu_seconds(pid)
                c1 = {} if args.c64_only else wrk(url, script, 1, args.seconds)
                cpu1_us = (cpu_seconds(pid) - before) / max(1.0, c1.get("rps", 0.0) * args.seconds) * 1e6
                before, calls = cpu_seconds(pid), write_calls(pid)
                c64 = wrk(url, script, 64, args.seconds)
                cpu_us = (cpu_seconds(pid) - before) / max(1.0, c64["rps"] * args.seconds) * 1e6
                row = figures[(name, keyed, route)]
                row["writes"].append((write_calls(pid) - calls) / max(1.0, c64["rps"] * args.seconds))
                row["p50_us"].append(c1.get("p50_us", 0.0))
                if c1:
                    row["cpu1_us"].append(cpu1_us)
                row["rps_c64"].append(c64["rps"])
                row["cpu_us"].append(cpu_us)
                if args.nginx:
                    row["added_us"].append(c1.get("p50_us", 0.0) - baseline[route][0]["p50_us"])
                    row["vs_nginx"].append(c64["rps"] / baseline[route][1]["rps"])
                label = f"{name}{', all features' if keyed else ''}{'' if route == 'generate' else f', {route}'}"
                print(f"round {rnd} {label}: p50 {c1.get('p50_us', 0):.0f} µs, "
                      f"{cpu1_us if c1 else 0:.0f} µs CPU/req at c=1, {c64['rps']:,.0f} req/s, "
                      f"{cpu_us:.0f} µs CPU/req", flush=True)  # fmt: skip
                if args.stream and route == routes[0]:
                    before, calls = cpu_seconds(pid), write_calls(pid)
                    s16 = wrk(f"http://127.0.0.1:{port}/api/generate", streams, 16, args.seconds)
                    done = max(1.0, s16["rps"] * args.seconds)
                    row["sps"].append(s16["rps"])
                    row["cpu_stream_us"].append((cpu_seconds(pid) - before) / done * 1e6)
                    row["stream_writes"].append((write_calls(pid) - calls) / done)
                    print(f"round {rnd} {label}: {s16['rps']:,.0f} streams/s, "
                          f"{row['cpu_stream_us'][-1]:.0f} µs CPU/stream, "
                          f"{row['stream_writes'][-1]:.1f} write calls/stream", flush=True)  # fmt: skip
        extra = " added p50 at c=1 | c=64 vs nginx |" if args.nginx else ""
        extra += " streams/s at c=16 | CPU per stream | write calls per stream |" if args.stream else ""
        print(f"\n| gateway | p50 at c=1 | CPU per request at c=1 | req/s at c=64 | CPU per request at c=64 | "
              f"write calls per request |{extra}")  # fmt: skip
        print("|---" * (6 + 2 * args.nginx + 3 * args.stream) + "|")
        for (name, keyed, route), row in figures.items():
            med = {k: statistics.median(v) if v else 0.0 for k, v in row.items()}
            label = f"{name}{', all features' if keyed else ''}{'' if route == 'generate' else f', {ROUTES[route][0]}'}"
            more = f" +{med['added_us'] / 1000:.3f} ms | {med['vs_nginx']:.3f}x |" if args.nginx else ""
            more += (
                f" {med['sps']:,.0f} | {med['cpu_stream_us']:.0f} µs | {med['stream_writes']:.1f} |"
                if args.stream
                else ""
            )
            print(
                f"| {label} | {med['p50_us'] / 1000:.3f} ms | {med['cpu1_us']:.0f} µs | "
                f"{med['rps_c64']:,.0f} | {med['cpu_us']:.0f} µs | {med['writes']:.2f} |{more}"
            )
    finally:
        stop_all(procs)


if __name__ == "__main__":
    main()
