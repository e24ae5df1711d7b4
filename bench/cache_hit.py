"""What a response-cache hit costs: `python -m bench.cache_hit`.

Corral (in-memory cache, the default features: access log, audit file, metrics) in front of one
`corral sim` node. One deterministic request fills the cache, then the same request is sent again and
again at concurrency 1 over one keep-alive connection, by a raw-socket client (no HTTP library's own
cost in the figure). The floor is a bare asyncio server (a subprocess) sending the same response
bytes for every request: "added" is Corral's hit latency minus that floor, i.e. what the gateway
spends to answer from its cache. Both a whole answer (Content-Length) and an NDJSON stream (chunked)
are measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import free_port, wait_http


def read_answer(sock: socket.socket, buf: bytearray) -> bytes:
    """One HTTP/1.1 response from `sock` (Content-Length or chunked); what follows stays in `buf`."""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head_end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:head_end]).lower()
    if b"content-length:" in head:
        length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        while len(buf) < head_end + length:
            buf += sock.recv(65536)
        end = head_end + length
    else:
        while b"\r\n0\r\n\r\n" not in buf[head_end - 2 :]:
            buf += sock.recv(65536)
        end = buf.index(b"\r\n0\r\n\r\n", head_end - 2) + 7
    answer = bytes(buf[:end])
    del buf[:end]
    return answer


def timed(port: int, request: bytes, n: int) -> list[float]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        for _ in range(50):  # warm-up
            sock.sendall(request)
            read_answer(sock, buf)
        out = []
        for _ in range(n):
            start = time.perf_counter()
            sock.sendall(request)
            read_answer(sock, buf)
            out.append(time.perf_counter() - start)
    return out


def floor_server(port: int, answer_file: str) -> None:
    """Answer every request on a connection with the same bytes (the bench's floor)."""
    answer = Path(answer_file).read_bytes()

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while b"\r\n\r\n" in self.buf:
                head, _, rest = self.buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if len(rest) < length:
                    return
                self.buf = rest[length:]
                self.transport.write(answer)  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


def post(path: str, body: dict[str, object], port: int) -> bytes:
    data = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data


def ms(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if q < 100 else max(values) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--floor-server", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.floor_server:
        floor_server(int(a.floor_server[0]), a.floor_server[1])
        return
    work = Path(tempfile.mkdtemp(prefix="corral-cache-bench-"))
    sim_port, corral_port, floor_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    try:
        sim_args = ["--port", str(sim_port), "--model", "llama3.2:1b", "--tokens-per-second", "5000"]
        procs.append(subprocess.Popen([sys.executable, "-m", "corral", "sim", *sim_args], **quiet))  # type: ignore[call-overload]
        config = {
            "server": {"port": corral_port},
            "backends": [{"name": "sim", "url": f"http://127.0.0.1:{sim_port}"}],
            "routing": {"discovery_interval_s": 0.5},
            "audit": {"path": str(work / "audit.log")},
            "logging": {"level": "warning"},
            "cache": {"responses": {"enabled": True}},
        }
        (work / "corral.yaml").write_text(yaml.safe_dump(config))
        args = [sys.executable, "-m", "corral", "serve", "--config", str(work / "corral.yaml")]
        procs.append(subprocess.Popen(args, **quiet))  # type: ignore[call-overload]
        wait_http(f"http://127.0.0.1:{sim_port}/")
        wait_http(f"http://127.0.0.1:{corral_port}/health")
        rows = []
        for name, stream in (("whole answer", False), ("NDJSON stream", True)):
            body = {"model": "llama3.2:1b", "prompt": f"bench {name}", "stream": stream, "options": {"temperature": 0}}
            request = post("/api/generate", body, corral_port)
            deadline = time.monotonic() + 20
            while True:  # until discovery has the model's digest and the answer is cached
                with socket.create_connection(("127.0.0.1", corral_port)) as sock:
                    sock.sendall(request)
                    answer = read_answer(sock, bytearray())
                if b"x-corral-cache: hit" in answer:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("the answer never became a cache hit:\n" + answer[:500].decode(errors="replace"))
            (work / "answer").write_bytes(answer)
            floor = subprocess.Popen(
                [sys.executable, "-m", "bench.cache_hit", "--floor-server", str(floor_port), str(work / "answer")]
            )
            try:
                wait_for_port(floor_port)
                hits = timed(corral_port, request, a.requests)
                base = timed(floor_port, request, a.requests)
            finally:
                floor.terminate()
                floor.wait(5)
            rows.append((name, len(answer), hits, base))
        print("| answer | bytes | hit p50 | hit p99 | floor p50 | added p50 | added p99 |")
        print("|---|---|---|---|---|---|---|")
        for name, size, hits, base in rows:
            print(
                f"| {name} | {size} | {ms(hits, 50):.3f} ms | {ms(hits, 99):.3f} ms | {ms(base, 50):.3f} ms "
                f"| {ms(hits, 50) - ms(base, 50):.3f} ms | {ms(hits, 99) - ms(base, 99):.3f} ms |"
            )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def wait_for_port(port: int, deadline_s: float = 10) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"port {port} never opened")


if __name__ == "__main__":
    main()
