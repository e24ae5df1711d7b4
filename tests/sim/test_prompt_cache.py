"""The simulator's per-slot prompt cache (issue 13 §1): a request evaluates only the prompt tokens after
what its slot already holds, TTFT and prompt_eval_duration follow, and an unload or reload loses it.

Durations are asserted as the node reports them (uncached tokens ÷ --prompt-eval-rate, exactly) and the
wait only as a lower bound, which no scheduling delay can break."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from corral.cli.main import app
from corral.sim.__main__ import parse
from tests.procs import Proc, running, sim_stats, start_sim

MODEL = "llama3.2:1b"
RATE = 2000.0  # prompt tokens per second
SYSTEM = "You answer questions about the fleet. " * 250  # 1,750 tokens: 0.9 s to evaluate at RATE
NS = 1e9


def node(*extra: str) -> Proc:
    args = ["--tokens-per-second", "1000", "--load-seconds", "0.05", "--prompt-eval-rate", str(RATE), *extra]
    return start_sim(MODEL, extra=args)


@pytest.fixture(scope="module")
def one_slot() -> Iterator[Proc]:
    with running(node()) as (sim,):
        yield sim


def cache(sim: Proc) -> dict[str, int]:
    counts: dict[str, int] = sim_stats(sim)["prompt_cache"]
    return counts


def chat(sim: Proc, messages: list[dict[str, Any]], **extra: Any) -> tuple[dict[str, Any], float]:
    """A streamed /api/chat: the final chunk with the whole answer in `message`, and the client's TTFT."""
    body = {"model": MODEL, "messages": messages, "options": {"num_predict": 8}, **extra}
    started = time.monotonic()
    ttft, content, final = 0.0, "", {}
    headers = {"Host": f"localhost:{sim.port}"}
    with httpx.stream("POST", sim.url + "/api/chat", json=body, headers=headers, timeout=30) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if not line:
                continue
            chunk = json.loads(line)
            ttft = ttft or time.monotonic() - started
            content += chunk["message"]["content"]
            final = chunk
    final["message"]["content"] = content
    return final, ttft


def generate(sim: Proc, **body: Any) -> dict[str, Any]:
    doc = {"model": MODEL, "stream": False, "options": {"num_predict": 8}, **body}
    reply = httpx.post(sim.url + "/api/generate", json=doc, headers={"Host": f"localhost:{sim.port}"}, timeout=30)
    assert reply.status_code == 200, reply.text
    data: dict[str, Any] = reply.json()
    return data


def evaluated(final: dict[str, Any]) -> float:
    """Uncached prompt tokens, from the reported duration (the node evaluates RATE tokens per second)."""
    return float(final["prompt_eval_duration"]) / NS * RATE


def conversation(topic: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": f"{topic}: {SYSTEM}"}, {"role": "user", "content": f"Tell me about {topic}."}]


def test_second_turn_evaluates_only_its_new_tokens(one_slot: Proc) -> None:
    sim = one_slot
    history = conversation("rivers")
    start = cache(sim)
    first, ttft1 = chat(sim, history)
    before = cache(sim)
    history += [first["message"], {"role": "user", "content": "And the lakes?"}]
    second, ttft2 = chat(sim, history)
    after = cache(sim)

    # Ollama counts the whole prompt either way; only the evaluation (its duration) shrinks.
    assert second["prompt_eval_count"] > first["prompt_eval_count"] > 1000
    assert evaluated(first) == pytest.approx(before["evaluated_tokens"] - start["evaluated_tokens"], abs=0.01)
    assert evaluated(first) >= first["prompt_eval_count"] - 2  # at most "system:" was in the slot
    new = after["evaluated_tokens"] - before["evaluated_tokens"]
    assert new == len(["user", ":", "And", "the", "lakes", "?", "assistant", ":"])
    assert evaluated(second) == pytest.approx(new, abs=0.01)
    # The cache held turn one's prompt and its answer: all of turn two up to the new user message.
    assert after["cached_tokens"] - before["cached_tokens"] == second["prompt_eval_count"] - new
    assert after["hits"] == before["hits"] + 1
    # The first token waits for the prompt evaluation (a lower bound no scheduling delay can break), and
    # the second turn's evaluation, so its wait, is a small fraction of the first's.
    assert ttft1 >= first["prompt_eval_duration"] / NS and ttft2 >= second["prompt_eval_duration"] / NS
    assert second["prompt_eval_duration"] * 100 < first["prompt_eval_duration"]


def test_another_conversation_does_not_hit(one_slot: Proc) -> None:
    sim = one_slot
    chat(sim, conversation("forests"))
    before = cache(sim)
    other, _ = chat(sim, conversation("oceans"))
    after = cache(sim)
    assert after["misses"] == before["misses"] + 1 and after["hits"] == before["hits"]
    # Only the template's first tokens ("system:") are shared; everything else is evaluated.
    assert after["cached_tokens"] - before["cached_tokens"] <= 2
    assert evaluated(other) >= other["prompt_eval_count"] - 2


def test_generate_with_context_and_a_shared_system_prompt_hit(one_slot: Proc) -> None:
    sim = one_slot
    first = generate(sim, system=SYSTEM, prompt="Name a river.")
    assert len(first["context"]) > first["prompt_eval_count"]  # the prompt and the answer
    before = cache(sim)
    follow = generate(sim, prompt="Another one", context=first["context"])
    after = cache(sim)
    # routes.go prepends the context's tokens to the new prompt: all of them are counted, none re-evaluated.
    assert follow["prompt_eval_count"] == len(first["context"]) + 2
    assert after["evaluated_tokens"] - before["evaluated_tokens"] == 2 and after["hits"] == before["hits"] + 1
    assert follow["context"][: len(first["context"])] == first["context"]
    # A plain prompt with the same long system prompt reuses that prefix.
    again = generate(sim, system=SYSTEM, prompt="Name a mountain.")
    assert again["prompt_eval_count"] == first["prompt_eval_count"]
    assert evaluated(again) == pytest.approx(2, abs=0.01)  # "mountain", "."
    assert cache(sim)["hits"] == after["hits"] + 1


def test_reload_and_unload_lose_the_cache(one_slot: Proc) -> None:
    sim = one_slot
    history = conversation("bridges")
    first, _ = chat(sim, history)
    history += [first["message"], {"role": "user", "content": "Which is the longest?"}]
    # Other load-time options (num_ctx) reload the runner: its slots start empty.
    reloads = sim_stats(sim)["reloads"]
    other, _ = chat(sim, history, options={"num_predict": 8, "num_ctx": 2048})
    assert sim_stats(sim)["reloads"] == reloads + 1
    assert evaluated(other) == pytest.approx(other["prompt_eval_count"], abs=0.01)
    # Back to the default options: another reload, so again nothing is cached.
    back, _ = chat(sim, history)
    assert evaluated(back) == pytest.approx(back["prompt_eval_count"], abs=0.01)
    # An unload (keep_alive 0, no messages) drops it too; the next load starts empty.
    warm, _ = chat(sim, history)
    assert evaluated(warm) == pytest.approx(1, abs=0.01)  # all cached: the last token is evaluated again
    body = {"model": MODEL, "messages": [], "keep_alive": 0}
    assert httpx.post(sim.url + "/api/chat", json=body, timeout=30).json()["done_reason"] == "unload"
    cold, _ = chat(sim, history)
    assert evaluated(cold) == pytest.approx(cold["prompt_eval_count"], abs=0.01)


def openai_chat(sim: Proc, messages: list[dict[str, Any]]) -> dict[str, Any]:
    body = {"model": MODEL, "messages": messages, "max_tokens": 8}
    reply = httpx.post(sim.url + "/v1/chat/completions", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    data: dict[str, Any] = reply.json()
    return data


def test_openai_chat_turns_hit_and_report_the_whole_prompt(one_slot: Proc) -> None:
    sim = one_slot
    history = conversation("harbors")
    first = openai_chat(sim, history)
    before = cache(sim)
    history += [first["choices"][0]["message"], {"role": "user", "content": "Which is deepest?"}]
    second = openai_chat(sim, history)
    after = cache(sim)
    new = after["evaluated_tokens"] - before["evaluated_tokens"]
    assert after["hits"] == before["hits"] + 1 and 0 < new < 20
    # usage.prompt_tokens is prompt_eval_count (openai/openai.go): the whole prompt, cached or not.
    assert second["usage"]["prompt_tokens"] == after["cached_tokens"] - before["cached_tokens"] + new


def turn(sim: Proc, history: list[dict[str, Any]], text: str) -> dict[str, Any]:
    final, _ = chat(sim, history)
    history += [final["message"], {"role": "user", "content": text}]
    return final


def test_two_slots_keep_two_interleaved_conversations() -> None:
    a, b = conversation("gardens"), conversation("glaciers")
    with running(node("--parallel", "2")) as (sim,):
        turn(sim, a, "More?")
        turn(sim, b, "More?")
        before = cache(sim)
        second_a = turn(sim, a, "Why?")
        second_b = turn(sim, b, "Why?")
        after = cache(sim)
    assert after["hits"] == before["hits"] + 2 and after["misses"] == before["misses"]
    # Each evaluates only its new user message and the assistant header.
    new = len(["user", ":", "More", "?", "assistant", ":"])
    assert evaluated(second_a) == evaluated(second_b) == pytest.approx(new)


def test_one_slot_loses_a_conversation_to_the_next(one_slot: Proc) -> None:
    """What prefix affinity is for: with one slot, another conversation in between evicts the first."""
    sim = one_slot
    a, b = conversation("winter"), conversation("summer")
    turn(sim, a, "More?")
    turn(sim, b, "More?")
    again = turn(sim, a, "Why?")
    assert evaluated(again) == pytest.approx(again["prompt_eval_count"] - 2, abs=0.01)  # all but "system:"


def test_the_module_entry_point_takes_the_rate_too() -> None:
    assert parse(["--prompt-eval-rate", "2500"]).prompt_eval_rate == 2500
    assert parse([]).prompt_eval_rate is None  # no wait unless asked for


def test_a_rate_below_one_token_a_second_is_refused_by_name() -> None:
    with pytest.raises(SystemExit):
        parse(["--prompt-eval-rate", "0"])
    result = CliRunner().invoke(app, ["sim", "--model", "m:1b", "--prompt-eval-rate", "-5"])
    assert result.exit_code == 2 and "--prompt-eval-rate" in result.output


def same_app(question: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


@pytest.mark.parametrize("multiuser", [False, True])
def test_conversations_sharing_a_system_prompt(multiuser: bool) -> None:
    """llama-server (today's Ollama) gives both conversations the slot holding the system prompt, so the
    first loses its own turns; OLLAMA_MULTIUSER_CACHE's choice copies the prefix into a free slot."""
    a, b = same_app("Tell me about rivers."), same_app("Tell me about lakes.")
    with running(node("--parallel", "2", *(["--multiuser-cache"] if multiuser else []))) as (sim,):
        turn(sim, a, "Why?")
        before = cache(sim)
        turn(sim, b, "Why?")
        shared = cache(sim)["cached_tokens"] - before["cached_tokens"]
        second_a = turn(sim, a, "Where?")
    assert shared >= len(SYSTEM.split()) + 3  # b reused the system prompt either way
    own_turns = len(["rivers", ".", "assistant", ":"]) + 8 + len(["user", ":", "Why", "?", "assistant", ":"])
    if multiuser:
        assert evaluated(second_a) == pytest.approx(len(["user", ":", "Why", "?", "assistant", ":"]))
    else:
        assert evaluated(second_a) == pytest.approx(own_turns)
