"""Many open slow streams through one Corral process: its RSS and the latency it adds to each chunk
(issue 12, benchmark 2).

    .venv/bin/python -m bench.open_streams [--streams 1000] [--chunks 20] [--interval 0.5] [--tree PATH]

The backend is a minimal asyncio Ollama stand-in in this file (the floor: it does nothing but stream),
which stamps each /api/chat chunk with the wall-clock nanosecond it was written. A lean asyncio client
opens every stream at once (spread over --ramp seconds), first directly to the backend and then through
Corral with everything on (a key, request and token limits, metrics, access log, audit), and records for
every chunk how long after its stamp it arrived. The added per-chunk latency is the difference between
the two runs' percentiles. Corral's RSS is sampled from /proc while the streams are open, and its CPU
time over the streams' run is reported per relayed chunk (each stream's request included: at one chunk
per read, the relay's cost per token of a real node). `--tree` runs Corral from another source tree
(the one before a change, say), the backend and the client from this one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import free_port, wait_http
from bench.compare import start, stop
from bench.proxy_overhead import cpu_seconds

MODEL = "slow:1b"
TAGS = json.dumps(
    {
        "models": [
            {
                "name": MODEL,
                "model": MODEL,
                "modified_at": "2026-01-01T00:00:00Z",
                "size": 1,
                "digest": "0",
                "details": {"format": "gguf", "family": "llama"},
            }
        ]
    }
).encode()
FIXED = {b"/api/version": b'{"version":"0.12.6"}', b"/api/tags": TAGS, b"/api/ps": b'{"models":[]}'}


async def serve_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunks: int, interval: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *fields = head.split(b"\r\n")
            path = line.split(b" ")[1]
            length = next((int(f.split(b":")[1]) for f in fields if f.lower().startswith(b"content-length:")), 0)
            if length:
                await reader.readexactly(length)
            if path in FIXED:
                body = FIXED[path]
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )
                continue
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(chunks):
                await asyncio.sleep(interval)
                frame = (
                    b'{"model":"%s","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":"%d"},"done":false}\n'
                    % (MODEL.encode(), time.time_ns())
                )
                writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            done = (
                b'{"model":"%s","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":1,"eval_count":%d}\n'
                % (MODEL.encode(), chunks)
            )
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def backend(port: int, chunks: int, interval: float) -> None:
    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: serve_conn(r, w, chunks, interval), "127.0.0.1", port, backlog=4096
        )
        await server.serve_forever()

    asyncio.run(main())


async def one_stream(port: int, key: str | None, delay: float, lags: list[int], errors: list[str]) -> None:
    await asyncio.sleep(delay)
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
    auth = b"Authorization: Bearer %s\r\n" % key.encode() if key else b""
    request = (
        b"POST /api/chat HTTP/1.1\r\nHost: localhost:%d\r\nContent-Type: application/json\r\n%s"
        b"Content-Length: %d\r\n\r\n%s" % (port, auth, len(body), body)
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n")[0]:
            errors.append(head.split(b"\r\n")[0].decode())
            writer.close()
            return
        buffered = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                break
            data = (await reader.readexactly(size + 2))[:-2]
            now = time.time_ns()
            buffered += data
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                frame = json.loads(line)
                if not frame.get("done"):
                    lags.append(now - int(frame["message"]["content"]))
        writer.close()
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run_streams(port: int, key: str | None, args: argparse.Namespace, pid: int | None) -> dict[str, Any]:
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    lags: list[int] = []
    errors: list[str] = []
    rss: list[float] = []

    async def sample() -> None:
        while pid is not None:
            rss.append(rss_mb(pid))
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample())
    began = time.monotonic()
    delays = [args.ramp * n / args.streams for n in range(args.streams)]
    await asyncio.gather(*(one_stream(port, key, d, lags, errors) for d in delays))
    sampler.cancel()
    cpu = cpu_seconds(pid) - cpu_before if pid is not None else 0.0
    lags.sort()

    def pick(q: float) -> float:
        return lags[int(q * (len(lags) - 1))] / 1e6 if lags else 0.0

    return {
        "chunks": len(lags),
        "errors": len(errors),
        "error_samples": errors[:3],
        "chunks_per_s": len(lags) / (time.monotonic() - began),
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
        "max_ms": pick(1.0),
        "peak_rss_mb": max(rss, default=0.0),
        "cpu_us_per_chunk": cpu / max(1, len(lags)) * 1e6,
    }


def corral_config(work: Path, ports: dict[str, int]) -> Path:
    config = {
        "server": {"host": "127.0.0.1", "port": ports["corral"], "max_connections_per_client": 4096},
        "audit": {"path": str(work / "audit.log")},
        "auth": {"enabled": True, "store_url": f"sqlite:///{work / 'keys.db'}"},
        "limits": {"per_ip_rpm": 10**9, "global_rpm": 10**9, "global_tpm": 10**12},
        "backends": [
            {"name": "slow", "url": f"http://127.0.0.1:{ports['backend']}", "models": [MODEL], "parallel": 4096}
        ],
    }
    path = work / "corral.json"
    path.write_text(json.dumps(config))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--chunks", type=int, default=20, help="chunks per stream")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between a stream's chunks")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds over which the streams open")
    parser.add_argument("--tree", type=Path, help="run Corral from this source tree (default: this one)")
    parser.add_argument("--serve-backend", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_backend:
        return backend(args.serve_backend, args.chunks, args.interval)
    work = Path(tempfile.mkdtemp(prefix="corral-streams-"))
    ports = {"backend": free_port(), "corral": free_port()}
    me = [sys.executable, "-m", "bench.open_streams", "--chunks", str(args.chunks), "--interval", str(args.interval)]
    back = start([*me, "--serve-backend", str(ports["backend"])], work / "backend.log")
    proc = None
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    try:
        wait_http(f"http://127.0.0.1:{ports['backend']}/api/version")
        direct = asyncio.run(run_streams(ports["backend"], None, args, None))
        print("direct", direct, flush=True)
        path = corral_config(work, ports)
        # `python -m` puts the working directory first on the path: the tree's own, for its corral
        cwd = args.tree.resolve() if args.tree else None
        tree = {"PYTHONPATH": str(cwd)} if cwd else {}
        create = [sys.executable, "-m", "corral", "keys", "create", "--name", "bench", "--config", str(path)]
        out = subprocess.run(
            [*create, "--rpm", str(10**9), "--tpm", str(10**12)],
            capture_output=True,
            text=True,
            env={**os.environ, **tree},
            cwd=cwd,
        )
        key = out.stdout.strip().splitlines()[-1]
        proc = start(
            [sys.executable, "-m", "corral", "serve", "--config", str(path)],
            work / "corral.log",
            {"CORRAL_LOGGING__FORMAT": "json", **tree},
            cwd,
        )
        wait_http(f"http://127.0.0.1:{ports['corral']}/ready")
        idle = rss_mb(proc.pid)
        via = asyncio.run(run_streams(ports["corral"], key, args, proc.pid))
        print("corral", via, flush=True)
    finally:
        if proc is not None:
            stop(proc)
        stop(back)
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    heads = "path, streams, chunks, errors, chunks/s, chunk p50 ms, chunk p99 ms, max ms, RSS idle MB, RSS peak MB"
    print("| " + " | ".join(heads.split(", ")) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r, rss in (("direct", direct, "-"), ("corral, all features", via, f"{idle:.0f}")):
        peak = f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] else "-"
        print(
            f"| {name} | {args.streams} | {r['chunks']} | {r['errors']} | {r['chunks_per_s']:,.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} | {rss} | {peak} |"
        )
    added = {q: via[f"{q}_ms"] - direct[f"{q}_ms"] for q in ("p50", "p99")}
    print(f"\nadded per chunk: p50 {added['p50']:.2f} ms, p99 {added['p99']:.2f} ms")
    print(f"Corral's CPU per relayed chunk: {via['cpu_us_per_chunk']:.1f} µs")
    if via["errors"] or direct["errors"]:
        raise SystemExit(f"errors: direct {direct['error_samples']}, corral {via['error_samples']}")


if __name__ == "__main__":
    main()
