"""Re-embedding a corpus with the embeddings cache: `python -m bench.embed_cache`.

A RAG pipeline re-embeds its corpus after an edit: most chunks are unchanged. Here a corpus of
`--chunks` chunks (about 160 tokens each) is embedded in batches of `--batch` through Corral, then a
second version of it, in which `--repeat` of the chunks are the same and the rest new, is embedded
again; the figure is the second pass's wall time with the cache against without it (a Corral with
the cache off, same node, same requests). The node is `corral sim` with a realistic encoder speed
(`--embed-tps` prompt tokens per second, one batch at a time, as an Ollama embedding runner).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from bench.common import free_port, wait_http

WORDS = [
    "gateway",
    "fleet",
    "node",
    "model",
    "token",
    "cache",
    "vector",
    "chunk",
    "shard",
    "replica",
    "latency",
    "throughput",
]
MODEL = "nomic-embed-text:latest"


def chunk(rng: random.Random, words: int = 160) -> str:
    return " ".join(rng.choice(WORDS) + str(rng.randrange(1000)) for _ in range(words)) + "."


def embed_all(url: str, port: int, texts: list[str], batch: int) -> float:
    start = time.perf_counter()
    with httpx.Client(base_url=url, headers={"host": f"localhost:{port}"}, timeout=600) as http:
        for i in range(0, len(texts), batch):
            reply = http.post("/api/embed", json={"model": MODEL, "input": texts[i : i + batch]})
            reply.raise_for_status()
            assert len(reply.json()["embeddings"]) == len(texts[i : i + batch])
    return time.perf_counter() - start


def start_corral(work: Path, name: str, sim_port: int, cache: bool) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = {
        "server": {"port": port},
        "backends": [{"name": "sim", "url": f"http://127.0.0.1:{sim_port}"}],
        "routing": {"discovery_interval_s": 0.5},
        "audit": {"path": str(work / f"{name}-audit.log")},
        "logging": {"level": "warning"},
        "cache": {"embeddings": {"enabled": cache}},
    }
    (work / f"{name}.yaml").write_text(yaml.safe_dump(config))
    args = [sys.executable, "-m", "corral", "serve", "--config", str(work / f"{name}.yaml")]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/health")
    deadline = time.monotonic() + 20
    while MODEL not in httpx.get(f"http://127.0.0.1:{port}/api/tags", headers={"host": "localhost"}).text:
        if time.monotonic() > deadline:
            raise SystemExit("Corral never discovered the embedding model")
        time.sleep(0.1)
    return proc, port


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chunks", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeat", type=float, default=0.9, help="share of the second corpus already embedded")
    p.add_argument("--embed-tps", type=float, default=8000, help="the node's encoder speed, prompt tokens/s")
    a = p.parse_args()
    rng = random.Random(7)
    first = [chunk(rng) for _ in range(a.chunks)]
    kept = int(a.chunks * a.repeat)
    second = rng.sample(first, kept) + [chunk(rng) for _ in range(a.chunks - kept)]
    rng.shuffle(second)
    work = Path(tempfile.mkdtemp(prefix="corral-embed-bench-"))
    sim_port = free_port()
    sim_args = ["--port", str(sim_port), "--model", MODEL + "=embed", "--embed-tokens-per-second", str(a.embed_tps)]
    procs = [subprocess.Popen([sys.executable, "-m", "corral", "sim", *sim_args], stdout=subprocess.DEVNULL)]
    try:
        wait_http(f"http://127.0.0.1:{sim_port}/")
        results = {}
        for name, cache in (("without cache", False), ("with cache", True)):
            proc, port = start_corral(work, name.replace(" ", "-"), sim_port, cache)
            procs.append(proc)
            url = f"http://127.0.0.1:{port}"
            cold = embed_all(url, port, first, a.batch)
            again = embed_all(url, port, second, a.batch)
            results[name] = (cold, again)
        base, cached = results["without cache"][1], results["with cache"][1]
        print(
            f"{a.chunks} chunks of ~160 tokens, batches of {a.batch}, {a.repeat:.0%} repeated, "
            f"node {a.embed_tps:g} tokens/s"
        )
        print("| | first pass | second pass |")
        print("|---|---|---|")
        for name, (cold, again) in results.items():
            print(f"| {name} | {cold:.2f} s | {again:.2f} s |")
        print(f"speed-up of the second pass: {base / cached:.1f}x")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
