"""The simulator's prompt cache, measured: `python -m bench.sim_prompt_cache`.

1. CPU: what the cache adds to one request in `corral sim` (tokenising the prompt into ids, choosing a
   slot by common prefix, keeping the sequence), by prompt length, in process CPU time.
2. Live: `--conversations` chats with a long system prompt (`--system-tokens`), taken in turn (A1 B1
   C1 … A2 B2 …) against one node with `--prompt-eval-rate`, with one slot and with a slot per
   conversation (and that with `--multiuser-cache`); all sharing one application's system prompt, or
   each its own. Per turn: mean TTFT as
   the client saw it, and the uncached prompt tokens the node reports (prompt_eval_duration × rate).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from array import array
from typing import Any

import httpx

from bench.common import free_port, wait_http
from corral.sim.prompt_cache import SlotCache
from corral.sim.text import token_ids

MODEL = "llama3.2:1b"
SENTENCE = "Answer as the operations assistant of the fleet, briefly and with care. "  # 14 tokens
NUM_CTX = 32768  # the default 4096 would cap what a slot keeps below a long system prompt


def cpu_per_request(tokens: int, rounds: int) -> float:
    """Milliseconds of CPU for a follow-up turn of a `tokens`-long conversation, cache held in a slot."""
    text = SENTENCE * (tokens // 14)
    cache = SlotCache(4, 1 << 20)
    first = cache.take(array("q", token_ids(text)))
    first.prompt_done = True
    cache.release(first)
    start = time.process_time()
    for i in range(rounds):
        turn = cache.take(array("q", token_ids(text + f" user: question {i}")))
        turn.prompt_done, turn.answer = True, [" an", " answer"]
        cache.release(turn)
    return (time.process_time() - start) / rounds * 1000


def ask(http: httpx.Client, messages: list[dict[str, Any]], rate: float) -> tuple[float, float, str]:
    body = {"model": MODEL, "messages": messages, "options": {"num_predict": 16, "num_ctx": NUM_CTX}}
    start, ttft, content, final = time.perf_counter(), 0.0, "", {}
    with http.stream("POST", "/api/chat", json=body) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if line:
                chunk = json.loads(line)
                ttft = ttft or time.perf_counter() - start
                content += chunk["message"]["content"]
                final = chunk
    return ttft, final["prompt_eval_duration"] / 1e9 * rate, content


Scenario = tuple[bool, int, bool]  # one system prompt for all, slots, --multiuser-cache


def live(a: argparse.Namespace, scenario: Scenario) -> tuple[list[tuple[float, float]], dict[str, int]]:
    shared, parallel, multiuser = scenario
    port = free_port()
    args = ["--port", str(port), "--model", MODEL, "--parallel", str(parallel), "--load-seconds", "0"]
    args += ["--multiuser-cache"] if multiuser else []
    args += ["--tokens-per-second", "200", "--prompt-eval-rate", str(a.rate)]
    proc = subprocess.Popen([sys.executable, "-m", "corral", "sim", *args], stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        system = SENTENCE * (a.system_tokens // 14)
        own = [f"Application {c}. " if not shared else "" for c in range(a.conversations)]
        chats = [[{"role": "system", "content": own[c] + system}] for c in range(a.conversations)]
        per_turn: list[list[tuple[float, float]]] = [[] for _ in range(a.turns)]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"host": f"localhost:{port}"}) as http:
            http.timeout = 120
            for t in range(a.turns):
                for c, chat in enumerate(chats):
                    chat.append({"role": "user", "content": f"Conversation {c}, question {t}: what next?"})
                    ttft, uncached, answer = ask(http, chat, a.rate)
                    chat.append({"role": "assistant", "content": answer})
                    per_turn[t].append((ttft, uncached))
            stats: dict[str, int] = http.get("/_sim/stats").json()["prompt_cache"]
        means = [(sum(x for x, _ in r) / len(r), sum(y for _, y in r) / len(r)) for r in per_turn]
        return means, stats
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.sim_prompt_cache", description=__doc__.split("\n")[0])
    p.add_argument("--system-tokens", type=int, default=4000)
    p.add_argument("--rate", type=float, default=4000.0, help="--prompt-eval-rate of the node")
    p.add_argument("--conversations", type=int, default=4)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--rounds", type=int, default=200, help="for the CPU figures")
    a = p.parse_args()
    print("| prompt tokens | cache CPU per request (ms) |\n|---|---|")
    for tokens in (1000, 8000, 16000):
        print(f"| {tokens:,} | {cpu_per_request(tokens, a.rounds):.2f} |")
    n = a.conversations
    for shared, parallel, multiuser in (
        (True, 1, False),
        (True, n, False),
        (True, n, True),
        (False, 1, False),
        (False, n, False),
    ):
        means, stats = live(a, (shared, parallel, multiuser))
        system = "one shared system prompt" if shared else "a system prompt each"
        flags = f"--parallel {parallel}" + (" --multiuser-cache" if multiuser else "")
        print(f"\n{flags}, {n} conversations in turn, {system}, rate {a.rate:g}/s")
        print("| turn | mean TTFT (ms) | mean uncached prompt tokens |\n|---|---|---|")
        for t, (ttft, uncached) in enumerate(means, 1):
            print(f"| {t} | {ttft * 1000:.0f} | {uncached:.0f} |")
        print(f"prompt_cache: {json.dumps(stats)}")


if __name__ == "__main__":
    main()
