"""The multi-turn workload (issue 13 §1): conversations that resend their history, and the gateway's
prefix affinity as the policy simulator applies it.

Several applications, each with its own shared system prompt of 1,000-8,000 tokens; conversations
start at random (Poisson), last 2-20 turns, and wait a think time after each answer before the next
turn, which resends the system prompt, every earlier question and answer, and a new question. A
node's slots keep their last sequence (bench/policy_sim/fleet.py, Runner.take_slot), so a turn that
reaches a slot holding its history evaluates only the new question.

"50% load" is half of what the fleet serves when nothing is cached: every prompt evaluated whole.

The gateway side is the gateway's own: each request's prefix is hashed at message boundaries (here
over segment ids instead of text, as corral.protocol.prefix does over messages), looked up in
corral.domain.prefix_index.PrefixIndex, and recorded when the request finishes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from bench.policy_sim.fleet import ModelSpec, NodeParams, Request
from corral.domain.prefix_index import Preference, PrefixIndex, slack_s

OUTPUT_MEDIAN = 180.0
QUESTION_MEDIAN = 60.0


@dataclass(frozen=True)
class MultiTurn:
    apps: int = 6
    system_tokens: tuple[int, int] = (1000, 8000)
    turns: tuple[int, int] = (2, 20)
    think_median_s: float = 15.0


@dataclass
class Conversation:
    cid: int
    app: int
    turns: int
    think_median_s: float
    rng: random.Random
    history: tuple[tuple[int, int], ...]  # the system prompt, then each question and answer so far


def _draw_output(rng: random.Random) -> int:
    return min(2048, int(rng.lognormvariate(math.log(OUTPUT_MEDIAN), 0.9)) + 1)


def _draw_question(rng: random.Random) -> int:
    return min(1000, int(rng.lognormvariate(math.log(QUESTION_MEDIAN), 0.8)) + 1)


def turn(conv: Conversation, model: str, num_ctx: int, at: float, rid: int) -> Request:
    """The conversation's next turn, arriving at `at`: its history plus a new question."""
    k = len(conv.history) // 2 + 1  # 1 for the first turn
    question = (conv.cid * 64 + 2 * k, _draw_question(conv.rng))  # its answer is id + 1 (fleet.py)
    segments = (*conv.history, question)
    req = Request(rid, model, num_ctx, sum(t for _, t in segments), _draw_output(conv.rng), at)
    req.segments, req.turn = segments, k
    req.conversation = conv  # type: ignore[attr-defined]
    return req


def next_turn(req: Request, now: float, rid: int) -> Request | None:
    """The turn after `req` (which just finished), after a think time; None when the conversation ends."""
    conv: Conversation | None = getattr(req, "conversation", None)
    if conv is None or req.turn >= conv.turns:
        return None
    conv.history = (*req.segments, (req.segments[-1][0] + 1, req.output))
    think = conv.rng.lognormvariate(math.log(conv.think_median_s), 0.7)
    return turn(conv, req.model, req.num_ctx, now + think, rid)


def _mean_prompt_per_turn(m: MultiTurn) -> tuple[float, float]:
    """Mean prompt tokens of a turn (history resent) and mean turns per conversation, by sampling."""
    rng = random.Random(12345)
    prompts, turns = 0.0, 0
    for _ in range(2000):
        system = rng.randint(*m.system_tokens)
        n = rng.randint(*m.turns)
        history = system
        for _ in range(n):
            history += _draw_question(rng)
            prompts += history
            history += _draw_output(rng)
        turns += n
    return prompts / turns, turns / 2000


def conversation_rate(m: MultiTurn, load: float, nodes: list[NodeParams], spec: ModelSpec) -> float:
    """Conversations per second that make `load` of the fleet's capacity with nothing cached."""
    prompt, turns = _mean_prompt_per_turn(m)
    output = OUTPUT_MEDIAN * math.exp(0.9**2 / 2)
    capacity = 0.0
    for p in nodes:
        aggregate = spec.tg1 * p.parallel / (1 + p.serial_frac * (p.parallel - 1))
        capacity += 1 / (prompt / spec.pp + output / aggregate)
    return load * capacity / turns


def first_turns(m: MultiTurn, rate: float, duration_s: float, spec: ModelSpec, rng: random.Random) -> list[Request]:
    """Every conversation's first turn; the others follow their answers (next_turn)."""
    systems = [rng.randint(*m.system_tokens) for _ in range(m.apps)]
    out: list[Request] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= duration_s:
            return out
        cid = len(out)
        app = rng.randrange(m.apps)
        conv = Conversation(
            cid, app, rng.randint(*m.turns), m.think_median_s, random.Random(rng.random()), ((-1 - app, systems[app]),)
        )
        out.append(turn(conv, spec.name, 4096, t, cid))


class PrefixRouting:
    """The gateway's routing.prefix_affinity, over the simulated requests' segments."""

    def __init__(self, eval_rate: float, size: int = 65_536) -> None:
        self.index = PrefixIndex(size)
        self.eval_rate = eval_rate

    @staticmethod
    def hashes(req: Request) -> tuple[list[int], list[int]]:
        h = hash(("chat", req.model))
        hashes, tokens, total = [], [], 0
        for segment in req.segments:
            h = hash((h, segment[0]))
            total += segment[1]
            hashes.append(h)
            tokens.append(total)
        return hashes, tokens

    def prefer(self, req: Request) -> tuple[str | None, float]:
        if not req.segments:
            return None, 0.0
        found: Preference | None = self.index.find(*self.hashes(req))
        if found is None:
            return None, 0.0
        return found.node, slack_s(found.cached_tokens, self.eval_rate)

    def served(self, req: Request) -> None:
        if req.segments:
            hashes, _ = self.hashes(req)
            self.index.record(hashes[0], str(req.node))  # the application's system prompt
            self.index.record(hashes[-1], str(req.node))  # this conversation's next turn
