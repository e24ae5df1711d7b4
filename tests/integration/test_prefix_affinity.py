"""Prompt-cache-aware routing against real processes: two `corral sim` nodes with the model loaded on
both behind `model-aware`; a conversation's next turn goes to the node that served its last one
(X-Corral-Node says which), other conversations spread, and X-Session-ID still wins."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from procs import Proc, single_process, start_corral, start_sim

FAST = ["--tokens-per-second", "2000", "--load-seconds", "0.05", "--parallel", "4"]
SYSTEM = "You answer questions about the fleet. " * 40  # a shared prefix worth keeping (~400 tokens)

# Each worker keeps its own index: with several, a next turn may reach one that never saw the last.
pytestmark = single_process("the prefix index is per process")


def _fleet(prefix_affinity: bool) -> tuple[Proc, Proc, Proc]:
    a = start_sim("m:1b", extra=FAST)
    b = start_sim("m:1b", extra=FAST)
    corral = start_corral(
        {
            "backends": [{"name": "a", "url": a.url, "parallel": 4}, {"name": "b", "url": b.url, "parallel": 4}],
            "routing": {"strategy": "model-aware", "prefix_affinity": prefix_affinity},
        }
    )
    for node in ("a", "b"):  # the model loaded on both: every pick has two free copies to choose from
        assert chat(corral, [{"role": "user", "content": f"warm {node}"}], node=node)[0] == node
    return corral, a, b


@pytest.fixture
def fleet() -> Iterator[Proc]:
    procs = _fleet(True)
    yield procs[0]
    for proc in procs:
        proc.stop()


def chat(
    corral: Proc,
    messages: list[dict[str, Any]],
    node: str | None = None,
    session: str | None = None,
    path: str = "/api/chat",
) -> tuple[str, dict[str, Any]]:
    """The node that answered, and the assistant's message."""
    headers = {"Host": f"localhost:{corral.port}"}
    if node:
        headers["X-Corral-Node"] = node
    if session:
        headers["X-Session-ID"] = session
    body = {"model": "m:1b", "messages": messages, "stream": False, "options": {"num_predict": 4}}
    if path == "/v1/chat/completions":
        body = {"model": "m:1b", "messages": messages, "max_tokens": 4}
    r = httpx.post(corral.url + path, json=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    answer = r.json()["message"] if path == "/api/chat" else r.json()["choices"][0]["message"]
    return r.headers["x-corral-node"], {"role": "assistant", "content": answer["content"]}


def converse(corral: Proc, name: str, turns: int, first_node: str | None = None, path: str = "/api/chat") -> list[str]:
    """A conversation of `turns` turns, each sending the whole history; the node of each turn."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": f"{name}: {SYSTEM}"}]
    nodes = []
    for turn in range(turns):
        messages.append({"role": "user", "content": f"question {turn} of {name}"})
        node, answer = chat(corral, messages, node=first_node if turn == 0 else None, path=path)
        nodes.append(node)
        messages.append(answer)
    return nodes


def test_each_next_turn_goes_to_the_node_of_the_last(fleet: Proc) -> None:
    # The first turn placed on each node in turn: the rest follow it, whichever it was.
    assert converse(fleet, "alpha", 6, first_node="b") == ["b"] * 6
    assert converse(fleet, "beta", 6, first_node="a") == ["a"] * 6
    assert converse(fleet, "gamma", 4, first_node="b", path="/v1/chat/completions") == ["b"] * 4


def test_other_conversations_are_free_to_go_elsewhere(fleet: Proc) -> None:
    firsts = {converse(fleet, f"app {i}", 1)[0] for i in range(6)}
    assert firsts == {"a", "b"}  # both idle copies: new prefixes spread over them


def test_an_explicit_session_wins_over_the_prefix(fleet: Proc) -> None:
    # Session s1 lives on a; the conversation on b.
    assert chat(fleet, [{"role": "user", "content": "hello"}], node="a", session="s1")[0] == "a"
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "one"}]
    node, answer = chat(fleet, messages, node="b")
    assert node == "b"
    messages += [answer, {"role": "user", "content": "two"}]
    node, answer = chat(fleet, messages)
    assert node == "b"  # without the header, the prefix's node
    messages += [answer, {"role": "user", "content": "three"}]
    assert chat(fleet, messages, session="s1")[0] == "a"  # with it, the session's


def test_without_prefix_affinity_turns_spread() -> None:
    procs = _fleet(False)
    try:
        assert set(converse(procs[0], "alpha", 6, first_node="b")) == {"a", "b"}
    finally:
        for proc in procs:
            proc.stop()
