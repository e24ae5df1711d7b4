"""Live confirmation of the routing benchmark: real `corral serve` in front of real `corral sim` nodes.

    .venv/bin/python -m bench.routing_live [--seconds 60] [--rate 3] [--out docs/bench/routing_live.md]
    .venv/bin/python -m bench.routing_live --burst --policies model-aware,model-aware+residency \
        --out docs/bench/routing_live_burst.md
    .venv/bin/python -m bench.routing_live --burst --repeat 2 --policies model-aware,model-aware+residency ...

A smaller, time-scaled version of the thrash regime: 3 nodes that each keep 2 of 5 models loaded
(1.5 s loads, 2 slots per model, 100 tokens/s), Poisson arrivals with Zipf(1.0) model popularity and
short streamed generations. Each policy gets fresh nodes and a fresh Corral. TTFT is measured at the
client (first NDJSON line); model loads are read from the nodes' /_sim/stats. `--burst`: for the
middle third of the run the least popular model takes 60% of the requests (the hot-burst scenario).
`model-aware+residency` is model-aware with `residency.enabled`. `--repeat N` runs the policies in turn N
times (A, B, A, B: an A/B comparison interleaved, so that the machine's load drifts alike for both), run
r with seed `--seed` + r for every policy.

    .venv/bin/python -m bench.routing_live --multi-turn --seconds 120 --rate 2 \
        --out docs/bench/routing_live_turns.md

`--multi-turn`: conversations that resend their history (bench/routing_live_turns.py) to one model on
nodes with a prompt cache (`corral sim --prompt-eval-rate`); it compares least-connections,
model-aware without and with `routing.prefix_affinity` (`model-aware+prefix`), and adds the TTFT of
the turns after the first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import free_port, wait_http
from bench.routing_live_turns import MODEL, conversations, sim_supports_prompt_eval

MODELS = ["llama3.2:1b", "llama3.2:3b", "qwen2.5:7b", "llama3.1:8b", "gemma2:9b"]
POLICIES = ("round-robin", "least-connections", "model-aware")
RESIDENCY = "model-aware+residency"
PREFIX = "model-aware+prefix"  # model-aware with routing.prefix_affinity (the others run without it)
TURN_POLICIES = ("least-connections", "model-aware", PREFIX)


def start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "corral", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def one(
    client: httpx.AsyncClient, url: str, model: str, tokens: int, results: list[tuple[float, float]] | None
) -> None:
    started = time.monotonic()
    first = math.nan
    body = {"model": model, "prompt": "go", "options": {"num_predict": tokens}}
    try:
        async with client.stream("POST", url + "/api/generate", json=body) as reply:
            async for line in reply.aiter_lines():
                if math.isnan(first):
                    first = time.monotonic() - started
                if '"error"' in line:
                    first = math.nan
                    break
    except httpx.HTTPError:
        pass
    if results is not None:  # None: a warm-up request, not counted
        results.append((first, time.monotonic() - started))


async def workload(
    url: str, seconds: float, rate: float, seed: int, burst: bool, warmup: float = 0.0, tokens: int = 20
) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(MODELS))]
    results: list[tuple[float, float]] = []
    tasks = []
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=500)) as client:
        start_at = time.monotonic()
        t = 0.0
        while True:
            t += rng.expovariate(rate)
            if t > seconds:
                break
            await asyncio.sleep(max(0.0, start_at + t - time.monotonic()))
            model = rng.choices(MODELS, weights)[0]
            if burst and seconds / 3 <= t < 2 * seconds / 3 and rng.random() < 0.6:
                model = MODELS[-1]
            length = min(5 * tokens, int(rng.lognormvariate(math.log(tokens), 0.8)) + 1)
            counted = results if t >= warmup else None
            tasks.append(asyncio.create_task(one(client, url, model, length, counted)))
        await asyncio.gather(*tasks)
    return results


def run_policy(
    policy: str,
    seconds: float,
    rate: float,
    seed: int,
    burst: bool = False,
    warmup: float = 0.0,
    tokens: int = 20,
    eval_rate: float | None = None,
    parallel: int = 2,
) -> dict[str, float]:
    """One policy on fresh nodes; `eval_rate` (prompt tokens/s): the multi-turn workload instead."""
    later: list[float] = []
    sims = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(3):
            port = free_port()
            args = [
                "sim",
                "--port",
                str(port),
                "--max-loaded",
                "2",
                "--parallel",
                str(parallel),
                "--load-seconds",
                "1.5",
                "--tokens-per-second",
                "100",
            ]
            if eval_rate is not None:
                args += ["--prompt-eval-rate", str(eval_rate), "--model", MODEL]
            for model in MODELS if eval_rate is None else ():
                args += ["--model", model]
            procs.append(start(args))
            sims.append(f"http://127.0.0.1:{port}")
        for url in sims:
            wait_http(url + "/", 60)  # a shared machine under load starts processes slowly
        port = free_port()
        config = Path(tempfile.mkdtemp()) / "corral.yaml"
        config.write_text(
            json.dumps(
                {
                    "server": {"port": port},
                    "logging": {"access": False, "level": "warning"},
                    "audit": {"path": str(config.parent / "audit.log")},
                    "routing": {
                        "strategy": policy.split("+")[0],
                        "discovery_interval_s": 1,
                        "prefix_affinity": policy == PREFIX,
                        "prompt_eval_rate": eval_rate or 2000.0,
                    },
                    "residency": {"enabled": policy == RESIDENCY},
                    "backends": [
                        {"name": f"n{i}", "url": url, "parallel": parallel, "max_loaded": 2}
                        for i, url in enumerate(sims)
                    ],
                }
            )
        )
        procs.append(start(["serve", "--config", str(config)]))
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/ready", 60)
        if eval_rate is None:
            results = asyncio.run(workload(url, seconds, rate, seed, burst, warmup, tokens))
        else:
            turns = asyncio.run(conversations(url, seconds, rate, seed))
            results = [(ttft, e2e) for _, ttft, e2e in turns]
            later = sorted(ttft for k, ttft, _ in turns if k > 1 and not math.isnan(ttft))
        stats = [httpx.get(s + "/_sim/stats").json() for s in sims]
        loads = sum(s["loads"] for s in stats)
        caches = [s["prompt_cache"] for s in stats if "prompt_cache" in s]
        cached = sum(c["cached_tokens"] for c in caches)
        cached_share = cached / max(1, cached + sum(c["evaluated_tokens"] for c in caches))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
    ttft = sorted(x for x, _ in results if not math.isnan(x))
    e2e = sorted(y for x, y in results if not math.isnan(x))
    failed = sum(1 for x, _ in results if math.isnan(x))

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] if values else math.nan

    return {
        **(
            {"later_p50": pct(later, 0.5), "later_p99": pct(later, 0.99), "cached_share": cached_share} if later else {}
        ),
        "requests": len(results),
        "ttft_p50": pct(ttft, 0.5),
        "ttft_p95": pct(ttft, 0.95),
        "ttft_p99": pct(ttft, 0.99),
        "e2e_p50": pct(e2e, 0.5),
        "e2e_p99": pct(e2e, 0.99),
        "loads_per_1k": 1000 * loads / max(1, len(results)),
        "failed": failed,
        "slo_share": sum(1 for x in ttft if x <= 2.0) / max(1, len(results)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/routing_live.md"))
    parser.add_argument("--burst", action="store_true", help="the least popular model takes 60%% mid-run")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--tokens", type=int, default=20, help="median generated tokens per request")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds of arrivals not counted (cold start)")
    parser.add_argument("--multi-turn", action="store_true", help="conversations over a prompt cache (see above)")
    parser.add_argument("--prompt-eval-rate", type=float, default=8000.0, help="the nodes' prompt tokens/s")
    parser.add_argument("--parallel", type=int, default=2, help="slots per model on each node")
    parser.add_argument("--repeat", type=int, default=1, help="run the policies in turn this many times")
    args = parser.parse_args()
    if args.multi_turn and not sim_supports_prompt_eval():
        parser.exit(2, "--multi-turn needs `corral sim --prompt-eval-rate` (the simulator's prompt cache)\n")
    if args.multi_turn and args.policies == ",".join(POLICIES):
        args.policies = ",".join(TURN_POLICIES)
    policies = tuple(args.policies.split(","))
    eval_rate = args.prompt_eval_rate if args.multi_turn else None
    burst = ", the least popular model taking 60% of requests in the middle third" if args.burst else ""
    burst += f", the first {args.warmup:g} s not counted" if args.warmup else ""
    burst += f", median {args.tokens} tokens" if args.tokens != 20 else ""
    burst += f", multi-turn conversations, prompt evaluation {args.prompt_eval_rate:g} tokens/s" if eval_rate else ""
    burst += f", {args.parallel} slots per model" if args.parallel != 2 else ""
    last = args.seed + args.repeat - 1
    turns = f"; the policies in turn, {args.repeat} times (seeds {args.seed}-{last})" if args.repeat > 1 else ""
    lines = [
        f"Live run: {args.seconds:g} s of arrivals at {args.rate:g} req/s per policy, seed {args.seed}{burst}{turns}.",
        "",
        "| policy | requests | TTFT p50 | p95 | p99 | E2E p50 | p99 | loads/1k | failed | TTFT ≤ 2 s |"
        + (" later turns: TTFT p50 | p99 | prompt tokens cached |" if eval_rate else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if eval_rate else ""),
    ]
    table: dict[str, dict[str, float]] = {}
    runs = [(r, policy) for r in range(args.repeat) for policy in policies]
    for r, policy in runs:
        name = policy if args.repeat == 1 else f"{policy} #{r + 1}"
        m = table[name] = run_policy(
            policy,
            args.seconds,
            args.rate,
            args.seed + r,
            args.burst,
            args.warmup,
            args.tokens,
            eval_rate,
            args.parallel,
        )
        lines.append(
            f"| {name} | {m['requests']:.0f} | {m['ttft_p50']:.2f} s | {m['ttft_p95']:.2f} s | "
            f"{m['ttft_p99']:.2f} s | {m['e2e_p50']:.2f} s | {m['e2e_p99']:.2f} s | "
            f"{m['loads_per_1k']:.0f} | {m['failed']:.0f} | {100 * m['slo_share']:.0f}% |"
        )
        if "later_p50" in m:
            lines[-1] += f" {m['later_p50']:.2f} s | {m['later_p99']:.2f} s | {100 * m['cached_share']:.0f}% |"
        print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(table, indent=2))
    if args.repeat == 1:
        chart(table, args.out.with_suffix(".png"), policies)


def chart(table: dict[str, dict[str, float]], path: Path, policies: tuple[str, ...] = POLICIES) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    quantiles = (("ttft_p50", "p50"), ("ttft_p95", "p95"), ("ttft_p99", "p99"))
    width = 0.8 / len(policies)
    for i, policy in enumerate(policies):
        xs = [j + i * width for j in range(len(quantiles))]
        axes[0].bar(xs, [max(1e-3, table[policy][key]) for key, _ in quantiles], width, label=policy)
    axes[0].set_xticks([j + 0.4 - width / 2 for j in range(len(quantiles))], [label for _, label in quantiles])
    axes[0].set_title("time to first token, live (s, log)")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    axes[1].bar(
        list(policies), [table[p]["loads_per_1k"] for p in policies], color=[f"C{i}" for i in range(len(policies))]
    )
    axes[1].set_title("model loads per 1,000 requests, live")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
