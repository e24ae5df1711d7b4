"""Properties of the prompt cache's pure parts: the common prefix, the slot choice, the token ids."""

from __future__ import annotations

from array import array

from hypothesis import given
from hypothesis import strategies as st

from corral.sim.prompt_cache import SlotCache, common_prefix
from corral.sim.text import count_tokens, token_ids

sequences = st.lists(st.integers(0, 3), max_size=40).map(lambda xs: array("q", xs))


@given(sequences, sequences)
def test_common_prefix_is_the_longest_equal_start(a: array[int], b: array[int]) -> None:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    assert common_prefix(a, b) == n


@given(st.integers(1, 4), st.booleans(), st.lists(st.tuples(sequences, st.booleans()), min_size=1, max_size=12))
def test_a_slot_is_never_shared_and_a_prompt_always_evaluates_a_token(
    parallel: int, multiuser: bool, requests: list[tuple[array[int], bool]]
) -> None:
    cache, held = SlotCache(parallel, num_ctx=16, multiuser=multiuser), []
    for prompt, finish in requests:
        if len(held) == parallel:  # every slot busy: the runner's semaphore would make this one wait
            cache.release(held.pop(0))
        turn = cache.take(prompt)
        assert all(turn.slot is not other.slot for other in held)
        assert turn.cached == 0 or turn.evaluated >= 1
        assert turn.cached <= common_prefix(turn.slot.tokens, prompt)
        turn.prompt_done = True
        held.append(turn)
        if finish:
            cache.release(held.pop())
    for turn in held:
        cache.release(turn)
    assert all(len(slot.tokens) <= 16 and not slot.in_use for slot in cache.slots)


def test_a_finished_prompt_is_found_again_in_its_slot() -> None:
    cache = SlotCache(2, num_ctx=4096)
    first = cache.take(array("q", token_ids("user: a long question about rivers")))
    first.prompt_done, first.answer = True, ["Bright", " river"]
    cache.release(first)
    follow = array("q", token_ids("user: a long question about rivers Bright river user: more"))
    turn = cache.take(follow)
    assert turn.slot is first.slot and turn.hit and turn.cached == len(follow) - 3


@given(st.text(max_size=60))
def test_token_ids_are_deterministic_and_count_as_count_tokens(text: str) -> None:
    ids = token_ids(text)
    assert ids == token_ids(text) and all(10 <= i < 128_000 for i in ids)
    assert max(1, len(ids)) == count_tokens(text)


def test_multiuser_forks_the_common_prefix_into_the_oldest_idle_slot() -> None:
    cache = SlotCache(2, num_ctx=4096, multiuser=True)
    first = cache.take(array("q", [1, 2, 3, 4]))
    first.prompt_done = True
    cache.release(first)
    other = cache.take(array("q", [1, 2, 3, 9]))  # not a continuation of slot 0: slot 1 gets [1, 2, 3]
    assert other.slot is not first.slot and other.cached == 3
    assert list(first.slot.tokens) == [1, 2, 3, 4]  # the first conversation keeps its slot
