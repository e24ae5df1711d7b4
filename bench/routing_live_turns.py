"""The multi-turn workload of the live routing benchmark (`python -m bench.routing_live --multi-turn`).

Conversations over /api/chat, streamed, that resend their history each turn: several applications,
each with a shared system prompt of 1,000-8,000 tokens (words, as `corral sim` counts them), conversations of
2-20 turns starting at random, a think time after each answer. The nodes are `corral sim` with
`--prompt-eval-rate`, so a turn that reaches a slot holding its history waits only for its new
tokens, as on Ollama (bench/policy_sim/multiturn.py is the virtual-time version).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx

MODEL = "llama3.1:8b"
NUM_CTX = 32768
Turn = tuple[int, float, float]  # (turn number from 1, TTFT or NaN on failure, end to end)
WORDS = ("fleet", "node", "model", "token", "slot", "cache", "route", "queue", "answer", "prompt")


@dataclass(frozen=True)
class Shape:
    apps: int = 4
    system_tokens: tuple[int, int] = (1000, 8000)
    turns: tuple[int, int] = (2, 20)
    think_median_s: float = 2.0
    output_median: int = 20


def sim_supports_prompt_eval() -> bool:
    """Whether this checkout's `corral sim` models the prompt cache (its --prompt-eval-rate flag)."""
    wide = {**os.environ, "COLUMNS": "300"}  # the help's table would cut the flag's name short
    helped = subprocess.run(
        [sys.executable, "-m", "corral", "sim", "--help"], capture_output=True, text=True, timeout=60, env=wide
    ).stdout
    return "--prompt-eval-rate" in helped


def _text(rng: random.Random, tokens: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(1, tokens)))  # `corral sim` counts a word a token


async def _turn(
    client: httpx.AsyncClient, url: str, messages: list[dict[str, str]], tokens: int
) -> tuple[float, float, str]:
    started = time.monotonic()
    first = math.nan
    content: list[str] = []
    # A context that holds the whole conversation: a slot keeps at most num_ctx tokens, and a longer
    # prompt would be truncated (Ollama's default of 4096 is shorter than most of these).
    body = {"model": MODEL, "messages": messages, "options": {"num_predict": tokens, "num_ctx": NUM_CTX}}
    try:
        async with client.stream("POST", url + "/api/chat", json=body) as reply:
            async for line in reply.aiter_lines():
                if math.isnan(first):
                    first = time.monotonic() - started
                if '"error"' in line:
                    return math.nan, time.monotonic() - started, ""
                if line.startswith("{"):
                    content.append(json.loads(line).get("message", {}).get("content", ""))
    except httpx.HTTPError:
        return math.nan, time.monotonic() - started, ""
    return first, time.monotonic() - started, "".join(content)


async def _conversation(
    client: httpx.AsyncClient, url: str, system: str, shape: Shape, rng: random.Random, results: list[Turn]
) -> None:
    messages = [{"role": "system", "content": system}]
    for k in range(1, rng.randint(*shape.turns) + 1):
        question = _text(rng, min(1000, int(rng.lognormvariate(math.log(60), 0.8)) + 1))
        messages.append({"role": "user", "content": question})
        tokens = min(5 * shape.output_median, int(rng.lognormvariate(math.log(shape.output_median), 0.8)) + 1)
        ttft, e2e, answer = await _turn(client, url, messages, tokens)
        results.append((k, ttft, e2e))
        if math.isnan(ttft):
            return
        messages.append({"role": "assistant", "content": answer})
        await asyncio.sleep(rng.lognormvariate(math.log(shape.think_median_s), 0.7))


async def conversations(url: str, seconds: float, rate: float, seed: int, shape: Shape | None = None) -> list[Turn]:
    """Conversations starting for `seconds` at `rate` requests/s (turns included, on average); every
    conversation runs to its end. One (turn, TTFT, end to end) per request."""
    shape = shape or Shape()
    rng = random.Random(seed)
    systems = [_text(rng, rng.randint(*shape.system_tokens)) for _ in range(shape.apps)]
    mean_turns = (shape.turns[0] + shape.turns[1]) / 2
    results: list[Turn] = []
    tasks = []
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=500)) as client:
        start_at = time.monotonic()
        t = 0.0
        while True:
            t += rng.expovariate(rate / mean_turns)
            if t > seconds:
                break
            await asyncio.sleep(max(0.0, start_at + t - time.monotonic()))
            own = random.Random(rng.random())
            system = systems[rng.randrange(shape.apps)]
            tasks.append(asyncio.create_task(_conversation(client, url, system, shape, own, results)))
        await asyncio.gather(*tasks)
    return results
