"""Proxy-path benchmark: direct to a node vs through Corral vs through nginx `proxy_pass`, and Corral's
gateway behind uvicorn instead of its own HTTP server (bench/asgi_edge.py: make or buy).

    .venv/bin/python -m bench.proxy_overhead [--seconds 10] [--out bench/results/proxy.json]

Non-streaming: the node is nginx returning a fixed Ollama-shaped body (far faster than any Python
server, so the proxy is what gets measured); wrk drives it at concurrency 1 (added latency p50/p99)
and 64 (requests/s), for Corral with its own server and with uvicorn's, each with and without keys,
limits and audit. Streams: the node is `corral sim` streaming NDJSON tokens; wrk reads each stream
to its end, so relayed chunks/s = streams/s x chunks per stream. Needs Debian's nginx and wrk
(scripts/install.sh --system).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import free_port, stop_all, wait_http

HERE = Path(__file__).resolve().parent
BODY = '{"model":"bench:1b","created_at":"2026-01-01T00:00:00Z","response":"hello","done":true,"eval_count":1}'
# What the node answers on /v1/chat/completions (bench.gateway_ab --routes v1): an OpenAI chat.completion
V1_BODY = (
    '{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"bench:1b","choices":[{"index":0,'
    '"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)
TAGS = (
    '{"models":[{"name":"bench:1b","model":"bench:1b","modified_at":"2026-01-01T00:00:00Z","size":1,'
    '"digest":"0","details":{"format":"gguf","family":"llama"}}]}'
)


def nginx_conf(work: Path, backend_port: int, proxy_port: int, sim_port: int, sim_proxy_port: int) -> Path:
    temp = " ".join(f"{k}_temp_path {work}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
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
    listen 127.0.0.1:{backend_port};
    default_type application/json;
    location = /api/version {{ return 200 '{{"version":"0.12.6"}}'; }}
    location = /api/tags {{ return 200 '{TAGS}'; }}
    location = /api/ps {{ return 200 '{{"models":[]}}'; }}
    location = /v1/chat/completions {{ return 200 '{V1_BODY}'; }}
    location / {{ return 200 '{BODY}'; }}
  }}
  upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 128; }}
  upstream sim {{ server 127.0.0.1:{sim_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{proxy_port};
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
  server {{
    listen 127.0.0.1:{sim_proxy_port};
    location / {{ proxy_pass http://sim; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_buffering off; }}
  }}
}}
"""
    path = work / "nginx.conf"
    path.write_text(conf)
    return path


def lua(work: Path, name: str, body: str, headers: dict[str, str] | None = None) -> Path:
    path = work / f"{name}.lua"
    escaped = body.replace("'", "\\'")
    extra = "".join(f"wrk.headers['{k}'] = '{v}'\n" for k, v in (headers or {}).items())
    path.write_text(
        f"wrk.method = 'POST'\nwrk.headers['Content-Type'] = 'application/json'\n{extra}wrk.body = '{escaped}'\n"
    )
    return path


def _us(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]


def wrk(url: str, script: Path, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}(?:\.000)?%\s+([\d.]+\w+)", out)
        if m:
            result[f"p{pct}_us"] = _us(m.group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    return result


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, script: Path, seconds: int, pid: int | None = None) -> dict[str, float]:
    """c=1 latency and c=64 throughput; with `pid`, also that process's CPU time per request at c=64,
    which holds steady when other work shares the machine (wall-clock figures do not)."""
    c1 = wrk(url, script, 1, seconds)
    before = cpu_seconds(pid) if pid else 0.0
    c64 = wrk(url, script, 64, seconds)
    result = {
        "p50_us": c1.get("p50_us", 0),
        "p99_us": c1.get("p99_us", 0),
        "rps_c1": c1["rps"],
        "rps_c64": c64["rps"],
        "errors": c1["errors"] + c64["errors"],
    }
    if pid:
        result["cpu_us_per_req_c64"] = (cpu_seconds(pid) - before) / max(1.0, c64["rps"] * seconds) * 1e6
    return result


def start_gateway(edge: str, config: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Corral on its own server (`corral serve`) or on uvicorn (`bench.asgi_edge`), once it answers."""
    module = ["corral", "serve"] if edge == "own" else ["bench.asgi_edge"]
    proc = subprocess.Popen([sys.executable, "-m", *module, "--config", str(config)], env=env)
    wait_http(f"http://127.0.0.1:{port}/health")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "proxy.json")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: run scripts/install.sh --system")
    work = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    ports = {k: free_port() for k in ("backend", "nginx", "sim", "nginx_sim", "corral")}
    conf = nginx_conf(work, ports["backend"], ports["nginx"], ports["sim"], ports["nginx_sim"])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run(["nginx", "-t", "-q", "-e", f"{work}/error.log", "-p", str(work), "-c", str(conf)], check=True)
        procs.append(subprocess.Popen(["nginx", "-e", f"{work}/error.log", "-p", str(work), "-c", str(conf)]))
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "corral",
                    "sim",
                    "--port",
                    str(ports["sim"]),
                    "--model",
                    "bench:1b",
                    "--tokens-per-second",
                    "100000",
                    "--load-seconds",
                    "0",
                    "--parallel",
                    "64",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        config = work / "corral.yaml"
        config.write_text(
            json.dumps(
                {
                    "server": {"host": "127.0.0.1", "port": ports["corral"]},
                    "logging": {"access": False, "level": "warning"},
                    "audit": {"path": str(work / "audit.log")},
                    "backends": [
                        {
                            "name": "nginx",
                            "url": f"http://127.0.0.1:{ports['backend']}",
                            "models": ["bench:1b"],
                        },
                    ],
                }
            )
        )
        sim_config = work / "corral-sim.yaml"
        sim_config.write_text(
            json.dumps(
                {
                    "server": {"host": "127.0.0.1", "port": ports["corral"] + 0},
                    "logging": {"access": False, "level": "warning"},
                    "audit": {"path": str(work / "audit-sim.log")},
                    "backends": [{"name": "sim", "url": f"http://127.0.0.1:{ports['sim']}"}],
                }
            )
        )
        env = {**os.environ, "CORRAL_LOGGING__FORMAT": "json"}
        corral = subprocess.Popen([sys.executable, "-m", "corral", "serve", "--config", str(config)], env=env)
        procs.append(corral)
        for port in (ports["backend"], ports["nginx"], ports["corral"]):
            wait_http(f"http://127.0.0.1:{port}/api/version")
        wait_http(f"http://127.0.0.1:{ports['sim']}/")
        plain = lua(work, "plain", '{"model":"bench:1b","prompt":"hi","stream":false}')
        results: dict[str, dict[str, dict[str, float]]] = {"non_stream": {}, "stream": {}}
        targets = {"direct": ports["backend"], "nginx": ports["nginx"], "corral": ports["corral"]}
        for name, port in targets.items():
            url = f"http://127.0.0.1:{port}/api/generate"
            results["non_stream"][name] = measure(url, plain, args.seconds, corral.pid if name == "corral" else None)
            print(name, results["non_stream"][name], flush=True)
        corral.terminate()
        corral.wait(10)
        url = f"http://127.0.0.1:{ports['corral']}/api/generate"
        corral = start_gateway("uvicorn", config, ports["corral"], env)
        procs.append(corral)
        results["non_stream"]["corral on uvicorn"] = measure(url, plain, args.seconds, corral.pid)
        print("corral on uvicorn", results["non_stream"]["corral on uvicorn"], flush=True)
        # The same with every per-request feature on: API key auth, rate and token limits, audit, metrics.
        corral.terminate()
        corral.wait(10)
        secure = work / "corral-secure.yaml"
        data = json.loads(config.read_text())
        data["auth"] = {"enabled": True, "store_url": f"sqlite:///{work / 'keys.db'}"}
        data["limits"] = {"per_ip_rpm": 10**9, "global_rpm": 10**9}
        secure.write_text(json.dumps(data))
        created = subprocess.run(
            [
                sys.executable,
                "-m",
                "corral",
                "keys",
                "create",
                "--name",
                "bench",
                "--rpm",
                str(10**9),
                "--tpm",
                str(10**9),
                "--config",
                str(secure),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        key = created.stdout.strip().splitlines()[-1]
        keyed = lua(
            work, "keyed", '{"model":"bench:1b","prompt":"hi","stream":false}', {"Authorization": f"Bearer {key}"}
        )
        for edge, name in (("own", "corral, all features"), ("uvicorn", "corral on uvicorn, all features")):
            corral = start_gateway(edge, secure, ports["corral"], env)
            procs.append(corral)
            results["non_stream"][name] = measure(url, keyed, args.seconds, corral.pid)
            print(name, results["non_stream"][name], flush=True)
            corral.terminate()
            corral.wait(10)
        # Streams: restart Corral in front of the simulator.
        corral = subprocess.Popen([sys.executable, "-m", "corral", "serve", "--config", str(sim_config)], env=env)
        procs.append(corral)
        wait_http(f"http://127.0.0.1:{ports['corral']}/ready")
        chunks = 64
        stream = lua(work, "stream", f'{{"model":"bench:1b","prompt":"hi","options":{{"num_predict":{chunks}}}}}')
        for name, port in {
            "direct": ports["sim"],
            "nginx": ports["nginx_sim"],
            "corral": ports["corral"],
        }.items():
            url = f"http://127.0.0.1:{port}/api/generate"
            c1 = wrk(url, stream, 1, args.seconds)
            c16 = wrk(url, stream, 16, args.seconds)
            results["stream"][name] = {
                "p50_us": c1.get("p50_us", 0),
                "p99_us": c1.get("p99_us", 0),
                "streams_per_s_c16": c16["rps"],
                "chunks_per_s_c16": c16["rps"] * (chunks + 1),
                "errors": c1["errors"] + c16["errors"],
            }
            print(name, "stream", results["stream"][name], flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        report(results)
    finally:
        stop_all(procs)


def report(results: dict[str, dict[str, dict[str, float]]]) -> None:
    ns = results["non_stream"]
    direct = ns["direct"]
    print("\nNon-streaming (node: nginx fixed body)")
    print("| path | p50 | p99 | added p50 | added p99 | req/s c=1 | req/s c=64 | vs nginx proxy | CPU/req c=64 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in ns.items():
        print(
            f"| {name} | {r['p50_us'] / 1000:.3f} ms | {r['p99_us'] / 1000:.3f} ms | "
            f"{(r['p50_us'] - direct['p50_us']) / 1000:+.3f} ms | "
            f"{(r['p99_us'] - direct['p99_us']) / 1000:+.3f} ms | "
            f"{r['rps_c1']:,.0f} | {r['rps_c64']:,.0f} | {r['rps_c64'] / ns['nginx']['rps_c64']:.2f}x | "
            + (f"{r['cpu_us_per_req_c64']:.0f} µs |" if "cpu_us_per_req_c64" in r else "— |")
        )
    st = results["stream"]
    print("\nStreams of 64 tokens (node: corral sim)")
    print("| path | p50 whole stream c=1 | p99 | added p50 | streams/s c=16 | relayed chunks/s c=16 |")
    print("|---|---|---|---|---|---|")
    for name, r in st.items():
        print(
            f"| {name} | {r['p50_us'] / 1000:.2f} ms | {r['p99_us'] / 1000:.2f} ms | "
            f"{(r['p50_us'] - st['direct']['p50_us']) / 1000:+.2f} ms | {r['streams_per_s_c16']:,.0f} | "
            f"{r['chunks_per_s_c16']:,.0f} |"
        )


if __name__ == "__main__":
    main()
