"""Side by side, in one run: what each way of proxying /v1/chat/completions costs (issue 12, benchmark 1).

    .venv/bin/python -m bench.compare [--seconds 8] [--concurrency 1,16,64] [--only PATHS] [--litellm]
                                      [--out docs/bench/compare]

Backends: nginx returning a fixed chat.completion body (non-streaming; far faster than any proxy, so
the proxy is what is measured) and `corral sim` streaming SSE as fast as it can (streams). Paths:
direct; nginx `proxy_pass`; Corral bare (no access log, audit or metrics); Corral with its defaults
(access log to a file, audit, metrics); Corral with everything on (API key, per-key/per-address/global
limits, metrics, audit, validation caps); with --litellm the LiteLLM proxy (one worker, no database,
installed into .cache/litellm-venv on first use), on uvicorn (`litellm`, its default) and on Granian
(`litellm-granian`, the Rust HTTP server its CLI offers; its Rust core does not serve this route, see
start_litellm). The load is `corral loadtest`'s engine in this
process (closed loop): requests/s and latency p50/p99 at each concurrency, the latency added over
direct at concurrency 1, relayed chunks/s and inter-token latency of 64-token streams at concurrency
16, and the proxy's CPU seconds per 1,000 requests and peak RSS (from /proc). Needs nginx
(scripts/install.sh --system). Writes OUT.md, OUT.json and OUT.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.common import free_port, wait_http
from bench.compare_parts import chart, litellm_python, proc_tree_usage, table
from corral.loadtest.live import Progress
from corral.loadtest.requests import DEFAULT_PROMPT, Prompt, encode_requests, parse_target
from corral.loadtest.run import Plan, execute

FIXED = "bench:1b"  # answered by nginx's fixed body
STREAM = "stream:1b"  # streamed by corral sim
BODY = (
    '{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"bench:1b","choices":[{"index":0,'
    '"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)
TAGS = (
    '{"models":[{"name":"bench:1b","model":"bench:1b","modified_at":"2026-01-01T00:00:00Z","size":1,'
    '"digest":"0","details":{"format":"gguf","family":"llama"}}]}'
)
PATHS = ("direct", "nginx", "corral-bare", "corral-defaults", "corral-all", "litellm", "litellm-granian")
LITELLM_PATHS = ("litellm", "litellm-granian")


def nginx_conf(work: Path, ports: dict[str, int]) -> Path:
    temp = " ".join(f"{k}_temp_path {work}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    proxy = 'proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off;'
    conf = f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  {temp}
  server {{
    listen 127.0.0.1:{ports["backend"]};
    default_type application/json;
    location = /api/version {{ return 200 '{{"version":"0.12.6"}}'; }}
    location = /api/ps {{ return 200 '{{"models":[]}}'; }}
    location = /api/tags {{ return 200 '{TAGS}'; }}
    location / {{ return 200 '{BODY}'; }}
  }}
  upstream backend {{ server 127.0.0.1:{ports["backend"]}; keepalive 128; }}
  upstream sim {{ server 127.0.0.1:{ports["sim"]}; keepalive 128; }}
  server {{ listen 127.0.0.1:{ports["nginx"]}; location / {{ proxy_pass http://backend; {proxy} }} }}
  server {{ listen 127.0.0.1:{ports["nginx_sim"]}; location / {{ proxy_pass http://sim; {proxy} }} }}
}}
"""
    path = work / "nginx.conf"
    path.write_text(conf)
    return path


def corral_config(work: Path, name: str, ports: dict[str, int]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": ports["corral"]},
        "audit": {"path": str(work / f"audit-{name}.log")},
        "backends": [
            {"name": "nginx", "url": f"http://127.0.0.1:{ports['backend']}", "models": [FIXED], "parallel": 256},
            {"name": "sim", "url": f"http://127.0.0.1:{ports['sim']}", "parallel": 256},
        ],
    }
    if name == "corral-bare":
        config |= {"logging": {"access": False}, "audit": {"enabled": False}, "metrics": {"enabled": False}}
    elif name == "corral-all":
        config["auth"] = {"enabled": True, "store_url": f"sqlite:///{work / 'keys.db'}"}
        config["limits"] = {"per_ip_rpm": 10**9, "global_rpm": 10**9, "global_tpm": 10**12}
        config["validation"] = {"max_predict": 4096, "max_ctx": 131072}
    return config


def start(
    args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def measure(url: str, model: str, concurrency: int, seconds: float, stream: bool, key: str | None) -> dict[str, Any]:
    target = parse_target(url, "openai")
    prompt = [Prompt(({"role": "user", "content": DEFAULT_PROMPT},))]
    requests = encode_requests(target, [model], prompt, stream=stream, key=key, max_tokens=64 if stream else None)
    plan = Plan(target, url, (model,), tuple(requests), stream, concurrency=concurrency, duration_s=seconds)
    report = execute(plan, Progress(Console(stderr=True), enabled=False))
    return {
        "requests": report["requests"]["total"],
        "errors": report["requests"]["errors"],
        "error_samples": report["requests"]["error_samples"],
        "rps": report["throughput"]["requests_per_s"] or 0.0,
        "p50_ms": (report["latency_s"]["p50"] or 0.0) * 1000,
        "p99_ms": (report["latency_s"]["p99"] or 0.0) * 1000,
        "chunks_per_s": report["throughput"]["output_tokens_per_s"] or 0.0,
        "itl_p50_ms": (report["inter_token_latency_s"]["p50"] or 0.0) * 1000,
        "itl_p99_ms": (report["inter_token_latency_s"]["p99"] or 0.0) * 1000,
    }


def run_path(
    name: str, urls: tuple[str, str], pids: list[int], args: argparse.Namespace, key: str | None
) -> dict[str, Any]:
    plain, streams = urls
    result: dict[str, Any] = {"non_stream": {}, "stream": {}}
    # Warm up (first-request set-up, connection pools, lazy imports; LiteLLM's first answer takes seconds)
    measure(plain, FIXED, 4, min(1.0, args.seconds), False, key)
    measure(streams, STREAM, 4, min(1.0, args.seconds), True, key)
    cpu_before = proc_tree_usage(pids)[0]
    total = 0
    for c in args.concurrency:
        m = result["non_stream"][str(c)] = measure(plain, FIXED, c, args.seconds, False, key)
        total += m["requests"]
        print(f"{name} c={c}: {m['rps']:,.0f} req/s, p50 {m['p50_ms']:.3f} ms, p99 {m['p99_ms']:.3f} ms", flush=True)
        if m["errors"]:
            print(f"  {m['errors']} errors, e.g. {m['error_samples']}", flush=True)
    cpu_after, _ = proc_tree_usage(pids)
    if pids and total:
        result["cpu_s_per_1k"] = (cpu_after - cpu_before) / total * 1000
    m = result["stream"]["16"] = measure(streams, STREAM, 16, args.seconds, True, key)
    print(f"{name} streams c=16: {m['chunks_per_s']:,.0f} chunks/s, ITL p99 {m['itl_p99_ms']:.2f} ms", flush=True)
    if pids:
        result["peak_rss_mb"] = proc_tree_usage(pids)[1] / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated concurrencies (non-streaming)")
    parser.add_argument("--only", default=",".join(p for p in PATHS if p not in LITELLM_PATHS), help="paths to measure")
    parser.add_argument("--litellm", action="store_true", help="also the LiteLLM proxy (installs it on first use)")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/compare"))
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    paths = [p for p in args.only.split(",") if p]
    paths += [p for p in LITELLM_PATHS if args.litellm and p not in paths]
    if unknown := set(paths) - set(PATHS):
        raise SystemExit(f"unknown paths {sorted(unknown)}: choose from {', '.join(PATHS)}")
    if shutil.which("nginx") is None:
        raise SystemExit("nginx is not installed: run scripts/install.sh --system")
    work = Path(tempfile.mkdtemp(prefix="corral-compare-"))
    ports = {k: free_port() for k in ("backend", "sim", "nginx", "nginx_sim", "corral", "litellm")}
    conf = nginx_conf(work, ports)
    subprocess.run(["nginx", "-t", "-q", "-e", f"{work}/error.log", "-p", str(work), "-c", str(conf)], check=True)
    nginx = start(["nginx", "-e", f"{work}/error.log", "-p", str(work), "-c", str(conf)], work / "nginx.out")
    sim_args = ["sim", "--port", str(ports["sim"]), "--model", STREAM, "--tokens-per-second", "100000"]
    sim = start(
        [sys.executable, "-m", "corral", *sim_args, "--load-seconds", "0", "--parallel", "64"], work / "sim.log"
    )
    results: dict[str, Any] = {}
    load = os.getloadavg()[0]  # other work on the machine skews every figure: say how much there was
    try:
        wait_http(f"http://127.0.0.1:{ports['backend']}/api/version")
        wait_http(f"http://127.0.0.1:{ports['sim']}/")
        local = "http://127.0.0.1:{}".format
        for name in paths:
            key, pids, proc = None, [nginx.pid], None
            if name == "direct":
                urls, pids = (local(ports["backend"]), local(ports["sim"])), []
            elif name == "nginx":
                urls = (local(ports["nginx"]), local(ports["nginx_sim"]))
            elif name in LITELLM_PATHS:
                proc, key = start_litellm(work, ports, granian=name == "litellm-granian")
                urls, pids = (local(ports["litellm"]),) * 2, [proc.pid]
            else:
                proc, key = start_corral(work, name, ports)
                urls, pids = (local(ports["corral"]),) * 2, [proc.pid]
            try:
                results[name] = run_path(name, urls, pids, args, key)
            finally:
                if proc is not None:
                    stop(proc)
    finally:
        stop(sim)
        stop(nginx)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results, args.concurrency, args.seconds, load)
    args.out.with_suffix(".md").write_text(text)
    print("\n" + text)
    chart(results, args.concurrency, args.out.with_suffix(".png"))


def start_corral(work: Path, name: str, ports: dict[str, int]) -> tuple[subprocess.Popen[bytes], str | None]:
    path = work / f"{name}.json"
    path.write_text(json.dumps(corral_config(work, name, ports)))
    key = None
    if name == "corral-all":
        create = [sys.executable, "-m", "corral", "keys", "create", "--name", "bench", "--config", str(path)]
        out = subprocess.run([*create, "--rpm", str(10**9), "--tpm", str(10**12)], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"corral keys create failed: {out.stderr}")
        key = out.stdout.strip().splitlines()[-1]
    env = {"CORRAL_LOGGING__FORMAT": "json"}
    proc = start([sys.executable, "-m", "corral", "serve", "--config", str(path)], work / f"{name}.log", env)
    wait_http(f"http://127.0.0.1:{ports['corral']}/ready")
    return proc, key


def start_litellm(work: Path, ports: dict[str, int], granian: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """One LiteLLM proxy worker, no database, on uvicorn (its default) or, with `granian`, on Granian,
    the Rust HTTP server its CLI offers (`--run_granian`). Its Rust core does not serve
    /v1/chat/completions in the versions checked (bench/compare_parts.py, LITELLM): the route is
    Python-only in the core's rollout table, whatever `LITELLM_RUST` says."""
    python = litellm_python()
    config = work / "litellm.yaml"
    models = [
        (FIXED, f"http://127.0.0.1:{ports['backend']}/v1"),
        (STREAM, f"http://127.0.0.1:{ports['sim']}/v1"),
    ]
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {"model_name": m, "litellm_params": {"model": f"openai/{m}", "api_base": base, "api_key": "none"}}
                    for m, base in models
                ]
            }
        )
    )
    key = "sk-bench-compare"
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MASTER_KEY": key, "LITELLM_LOG": "ERROR"}
    args = [str(python.parent / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port"]
    args += [str(ports["litellm"]), *(["--run_granian"] if granian else [])]
    proc = start(args, work / f"litellm{'-granian' if granian else ''}.log", env)
    wait_http(f"http://127.0.0.1:{ports['litellm']}/health/liveliness", deadline_s=120)
    return proc, key


if __name__ == "__main__":
    main()
