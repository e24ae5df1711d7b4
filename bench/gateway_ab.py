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

from bench.common import free_port, wait_http
from bench.proxy_overhead import cpu_seconds, lua, nginx_conf, wrk

PROMPT = '{"model":"bench:1b","prompt":"hi","stream":false}'
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
) -> tuple[Any, int, Path, Path]:
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
        proc = subprocess.Popen([sys.executable, "-m", *module, "--config", str(path)], cwd=tree, env=env, stderr=out)
    wait_http(f"http://127.0.0.1:{port}/health")
    return proc, port, lua(work, f"{name}-{mode}", PROMPT, headers), lua(work, f"{name}-{mode}-s", STREAM, headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", required=True, help="NAME=TREE or NAME=TREE:uvicorn")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--everything", action="store_true", help="only 'all features', as bench.compare's corral-all")
    parser.add_argument("--c64-only", action="store_true", help="skip the concurrency-1 run")
    parser.add_argument("--nginx", action="store_true", help="also direct and nginx proxy_pass, in every round")
    parser.add_argument("--stream", action="store_true", help="also 64-token streams from corral sim at c=16")
    args = parser.parse_args()
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
                proc, port, script, streams = start(
                    name, tree, edge, work, ports["backend"], keyed, args.everything, sim
                )
                procs.append(proc)
                gateways[(name, keyed)] = (proc.pid, port, script, streams)
        figures: dict[tuple[str, bool], dict[str, list[float]]] = {
            key: {
                "p50_us": [],
                "rps_c64": [],
                "cpu_us": [],
                "writes": [],
                "added_us": [],
                "vs_nginx": [],
                "sps": [],
                "cpu_stream_us": [],
                "stream_writes": [],
            }
            for key in gateways
        }
        names = list(variants)
        plain = lua(work, "plain", PROMPT)
        for rnd in range(args.rounds):
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            if args.nginx:
                direct = wrk(f"http://127.0.0.1:{ports['backend']}/api/generate", plain, 1, args.seconds)
                proxied = f"http://127.0.0.1:{ports['nginx']}/api/generate"
                nginx1, nginx64 = wrk(proxied, plain, 1, args.seconds), wrk(proxied, plain, 64, args.seconds)
                print(f"round {rnd} direct p50 {direct['p50_us']:.0f} µs; nginx p50 {nginx1['p50_us']:.0f} µs, "
                      f"{nginx64['rps']:,.0f} req/s", flush=True)  # fmt: skip
            for keyed in modes:
                for name in order:
                    pid, port, script, streams = gateways[(name, keyed)]
                    url = f"http://127.0.0.1:{port}/api/generate"
                    c1 = {} if args.c64_only else wrk(url, script, 1, args.seconds)
                    before, calls = cpu_seconds(pid), write_calls(pid)
                    c64 = wrk(url, script, 64, args.seconds)
                    cpu_us = (cpu_seconds(pid) - before) / max(1.0, c64["rps"] * args.seconds) * 1e6
                    row = figures[(name, keyed)]
                    row["writes"].append((write_calls(pid) - calls) / max(1.0, c64["rps"] * args.seconds))
                    row["p50_us"].append(c1.get("p50_us", 0.0))
                    row["rps_c64"].append(c64["rps"])
                    row["cpu_us"].append(cpu_us)
                    if args.nginx:
                        row["added_us"].append(c1.get("p50_us", 0.0) - direct["p50_us"])
                        row["vs_nginx"].append(c64["rps"] / nginx64["rps"])
                    label = f"{name}{', all features' if keyed else ''}"
                    print(f"round {rnd} {label}: p50 {c1.get('p50_us', 0):.0f} µs, {c64['rps']:,.0f} req/s, "
                          f"{cpu_us:.0f} µs CPU/req", flush=True)  # fmt: skip
                    if args.stream:
                        before, calls = cpu_seconds(pid), write_calls(pid)
                        s16 = wrk(url, streams, 16, args.seconds)
                        done = max(1.0, s16["rps"] * args.seconds)
                        row["sps"].append(s16["rps"])
                        row["cpu_stream_us"].append((cpu_seconds(pid) - before) / done * 1e6)
                        row["stream_writes"].append((write_calls(pid) - calls) / done)
                        print(f"round {rnd} {label}: {s16['rps']:,.0f} streams/s, "
                              f"{row['cpu_stream_us'][-1]:.0f} µs CPU/stream, "
                              f"{row['stream_writes'][-1]:.1f} write calls/stream", flush=True)  # fmt: skip
        extra = " added p50 at c=1 | c=64 vs nginx |" if args.nginx else ""
        extra += " streams/s at c=16 | CPU per stream | write calls per stream |" if args.stream else ""
        print(f"\n| gateway | p50 at c=1 | req/s at c=64 | CPU per request at c=64 | write calls per request |{extra}")
        print("|---" * (5 + 2 * args.nginx + 3 * args.stream) + "|")
        for (name, keyed), row in figures.items():
            med = {k: statistics.median(v) if v else 0.0 for k, v in row.items()}
            more = f" +{med['added_us'] / 1000:.3f} ms | {med['vs_nginx']:.3f}x |" if args.nginx else ""
            more += (
                f" {med['sps']:,.0f} | {med['cpu_stream_us']:.0f} µs | {med['stream_writes']:.1f} |"
                if args.stream
                else ""
            )
            print(
                f"| {name}{', all features' if keyed else ''} | {med['p50_us'] / 1000:.3f} ms | "
                f"{med['rps_c64']:,.0f} | {med['cpu_us']:.0f} µs | {med['writes']:.2f} |{more}"
            )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
