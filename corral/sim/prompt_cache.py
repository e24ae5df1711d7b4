"""A loaded runner's prompt cache: the tokens each of its `parallel` slots holds, and the slot a request takes.

Ollama keeps, per slot of a runner, the token sequence of the last request that slot served: its prompt
and the tokens generated after it (runner/ollamarunner/cache.go and runner/llamarunner/cache.go before
v0.30; llama-server's slots since Ollama runs GGML models there, llm/llama_server.go sends
`cache_prompt: true`). A new request evaluates only the tokens after the longest common prefix of its
prompt with its slot's tokens; the cache lives in the runner, so an unload or a reload loses it.

Which slot a request takes follows llama-server, what current Ollama runs (its get_available_slot): of
the idle slots holding tokens, the one whose common prefix is the largest share of the new prompt, if
that share is above 0.1 (`--slot-prompt-similarity`, which Ollama leaves at its default); otherwise the
least recently used idle slot. So two conversations interleaved on a runner with two slots keep one slot
each, but conversations that share a long system prompt all take the slot holding it. With `multiuser`
(`corral sim --multiuser-cache`), the choice of the runners before v0.30 under OLLAMA_MULTIUSER_CACHE,
findBestCacheSlot. (Their default, findLongestCacheSlot, took the idle slot with the longest common
prefix, much as llama-server does.) llama-server's host-memory prompt cache, which saves a slot's state
before overwriting most of it, is not modelled.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corral.sim import text as gen

if TYPE_CHECKING:  # request.py imports the scheduler, which imports this module
    from corral.sim.request import Inference

SIMILARITY = 0.1  # llama-server's --slot-prompt-similarity default
_HEADER = gen.token_ids("assistant:")  # the generation prompt a chat template ends with


def prompt_tokens(inf: Inference) -> array[int]:
    """The token sequence the runner evaluates: a chat history as the simulator renders it plus the
    assistant header (so turn N+1 begins with turn N's prompt and answer); for /api/generate the
    tokens of `context` followed by the new prompt (GenerateHandler in server/routes.go prepends the
    detokenised context to the rendered prompt)."""
    ids = array("q", inf.context)
    ids.extend(gen.token_ids(inf.prompt))
    if inf.kind == "chat" and not inf.continues:
        ids.extend(_HEADER)
    return ids


def common_prefix(a: array[int], b: array[int]) -> int:
    """Length of the longest common prefix, by slice comparisons (done in C) and bisection."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n - 1  # a[:lo] == b[:lo] and a[:hi + 1] != b[:hi + 1]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass(eq=False)
class Slot:
    tokens: array[int] = field(default_factory=lambda: array("q"))
    in_use: bool = False
    last_used: int = -1  # a release counter: lower is less recently used


@dataclass(eq=False)
class Turn:
    """One request's use of a slot: what it found cached, and what it generates."""

    slot: Slot
    prompt: array[int]
    cached: int
    hit: bool  # more than a tenth of the prompt came from the slot
    prompt_done: bool = False  # the uncached tokens have been evaluated
    thinking: list[str] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)  # content, and a tool call's arguments

    @property
    def evaluated(self) -> int:
        return len(self.prompt) - self.cached

    def sequence(self) -> array[int]:
        """Prompt plus generated tokens: what the slot holds afterwards, and /api/generate's `context`
        (routes.go tokenises the prompt plus the response for it)."""
        if not self.prompt_done:  # cancelled during prompt evaluation: only the cached part is kept
            return self.prompt[: self.cached]
        out = array("q", self.prompt)
        out.extend(gen.token_ids("".join(self.thinking)))
        out.extend(gen.token_ids("".join(self.answer)))
        return out


class SlotCache:
    def __init__(self, parallel: int, num_ctx: int, multiuser: bool = False) -> None:
        self.slots = [Slot() for _ in range(max(1, parallel))]
        self.num_ctx = num_ctx
        self.multiuser = multiuser
        self._clock = 0

    def take(self, prompt: array[int]) -> Turn:
        """The slot for a request; the caller holds one of the runner's slots, so one is idle."""
        chosen, shared = self._best(prompt) if self.multiuser else self._similar(prompt)
        chosen.in_use = True
        # A fully cached prompt still evaluates its last token, to sample from its logits
        # (LoadCacheSlot's `numPast--` in runner/*/cache.go; llama-server does the same).
        cached = max(0, min(shared, len(prompt) - 1))
        return Turn(chosen, prompt, cached, hit=cached * 10 > len(prompt))

    def _similar(self, prompt: array[int]) -> tuple[Slot, int]:
        """llama-server's choice: the best share above SIMILARITY, else the least recently used."""
        idle = [s for s in self.slots if not s.in_use]
        chosen, best, shared = None, 0.0, 0
        for slot in idle:
            if not slot.tokens or not prompt:
                continue
            lcp = common_prefix(slot.tokens, prompt)
            share = lcp / len(prompt)
            if share > best and share > SIMILARITY:
                chosen, best, shared = slot, share, lcp
        if chosen is None:
            chosen = min(idle, key=lambda s: s.last_used)
            shared = common_prefix(chosen.tokens, prompt)
        return chosen, shared

    def _best(self, prompt: array[int]) -> tuple[Slot, int]:
        """findBestCacheSlot (runner/ollamarunner/cache.go, OLLAMA_MULTIUSER_CACHE): the slot with the
        longest common prefix if the prompt continues all it holds; otherwise the least recently used
        idle slot, with that prefix copied into it ("forking"), so the other slot keeps its tokens."""
        lengths = [common_prefix(s.tokens, prompt) for s in self.slots]
        longest = max(lengths)
        source = self.slots[lengths.index(longest)]
        if longest == len(source.tokens) and not source.in_use:
            return source, longest
        oldest = min((s for s in self.slots if not s.in_use), key=lambda s: s.last_used)
        if longest > 0 and source is not oldest:
            oldest.tokens = source.tokens[:longest]
        return oldest, longest

    def release(self, turn: Turn) -> None:
        # Ollama's slot holds at most num_ctx tokens (the KV cache is num_ctx × parallel); longer
        # prompts are truncated there, which is not modelled beyond keeping the first num_ctx.
        turn.slot.tokens = turn.sequence()[: self.num_ctx]
        turn.slot.in_use = False
        self._clock += 1
        turn.slot.last_used = self._clock
