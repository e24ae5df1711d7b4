"""Conversation prefix hashes (corral.protocol.prefix): the next turn shares the boundary its last turn
recorded, any change before a boundary changes it, and a huge history costs bounded work."""

from __future__ import annotations

import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from corral.protocol.body import read_body
from corral.protocol.prefix import BLOCK_CHARS, BLOCK_TOKENS, MAX_BOUNDARIES, prefix_hashes

texts = st.text(max_size=40)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": texts}),
    min_size=1,
    max_size=12,
)


def chat(msgs: list[dict[str, Any]], model: str = "m", route: str = "/api/chat", **doc: Any) -> Any:
    prefix = prefix_hashes(route, {"model": model, "messages": msgs, **doc}, model)
    assert prefix is not None
    return prefix


@given(messages, messages)
def test_the_next_turn_shares_the_boundary_the_last_one_recorded(history: Any, more: Any) -> None:
    last = chat(history)
    assert last.full == last.hashes[-1]
    nxt = chat(history + more)
    assert last.full in nxt.hashes or len(more) >= MAX_BOUNDARIES
    assert nxt.hashes[len(history) - 1] == last.full  # at the same boundary
    assert nxt.first == last.first


@given(messages, st.integers(0, 11), texts)
def test_a_changed_earlier_message_changes_every_later_hash(history: Any, at: int, text: str) -> None:
    at %= len(history)
    changed = [dict(m) for m in history]
    changed[at]["content"] += text + "!"
    a, b = chat(history), chat(changed)
    assert a.hashes[:at] == b.hashes[:at]
    assert all(x != y for x, y in zip(a.hashes[at:], b.hashes[at:], strict=True))


def test_the_model_the_options_and_the_tools_are_part_of_the_prefix() -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    base = chat(msgs).hashes
    assert chat(msgs, model="other").hashes[0] != base[0]
    other_opts = prefix_hashes("/api/chat", {"messages": msgs}, "m", "num_ctx=8192")
    assert other_opts is not None and other_opts.hashes[0] != base[0]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert chat(msgs, tools=tools).hashes[0] != base[0]


def test_native_and_openai_chat_of_the_same_messages_match() -> None:
    # Both routes render the same messages through the model's template: one cache.
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert chat(msgs).hashes == chat(msgs, route="/v1/chat/completions").hashes


def test_tokens_before_each_boundary_count_the_text_so_far() -> None:
    msgs = [{"role": "system", "content": "x" * 4000}, {"role": "user", "content": "y" * 400}]
    assert chat(msgs).tokens == (1000, 1100)
    parts = [{"role": "user", "content": [{"type": "text", "text": "z" * 80}]}]
    assert chat(parts, route="/v1/chat/completions").tokens == (20,)


def test_a_huge_history_keeps_only_the_last_boundaries_and_costs_little() -> None:
    msgs = [{"role": "user" if i % 2 else "assistant", "content": f"turn {i} " * 20} for i in range(5000)]
    started = time.process_time()
    prefix = chat(msgs)
    spent = time.process_time() - started
    assert len(prefix.hashes) == MAX_BOUNDARIES
    assert prefix.full == prefix.hashes[-1] and prefix.first is not None
    assert spent < 0.5, spent  # about 5 ms here: a pass over what the JSON parse already walked
    assert chat(msgs + msgs[:2]).hashes[MAX_BOUNDARIES - 3] == prefix.full


def test_generate_shares_the_system_prompt_and_the_leading_blocks_of_a_growing_prompt() -> None:
    def gen(**doc: Any) -> Any:
        return prefix_hashes("/api/generate", {"model": "m", **doc}, "m")

    transcript = "q: hello\na: hi\n" * 200  # 3,000 characters: two whole blocks
    last = gen(system="sys", prompt=transcript)
    nxt = gen(system="sys", prompt=transcript + "q: more\n")
    assert last.full is not None and last.full in nxt.hashes
    assert last.first == nxt.first
    assert last.tokens[last.hashes.index(last.full)] == (3 + 2 * BLOCK_CHARS) // 4
    assert gen(system="other", prompt=transcript).first != last.first
    assert gen(prompt="short") is None  # no boundary a next request could share
    assert gen() is None


def test_generate_with_context_keys_on_the_context_it_extends() -> None:
    ctx = list(range(3 * BLOCK_TOKENS + 10))
    last = prefix_hashes("/api/generate", {"context": ctx, "prompt": "next?"}, "m")
    nxt = prefix_hashes("/api/generate", {"context": ctx + [7] * 300, "prompt": "and?"}, "m")
    assert last is not None and nxt is not None
    assert last.full == last.hashes[2] and last.full in nxt.hashes
    assert last.tokens[2] == 3 * BLOCK_TOKENS


def test_routes_without_a_conversation_have_no_prefix() -> None:
    assert prefix_hashes("/api/embed", {"input": "x"}, "m") is None
    assert prefix_hashes("/api/chat", {"messages": []}, "m") is None
    assert prefix_hashes("/api/chat", {}, "m") is None


def test_it_reads_the_document_the_gateway_already_parsed() -> None:
    body = b'{"model":"m","messages":[{"role":"user","content":"hi","images":["aGk="]}]}'
    doc = read_body(body, "/api/chat").doc
    with_image = prefix_hashes("/api/chat", doc, "m")
    without = prefix_hashes("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "m")
    assert with_image is not None and without is not None and with_image.full != without.full
