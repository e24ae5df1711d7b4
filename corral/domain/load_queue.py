"""Each node's queue of pending loads: when a further load there could start (issue 17).

Ollama loads one model at a time per node and handles its pending requests first in, first out
(`server/sched.go`, processPending): a request whose model is not loaded waits at the head of the
queue until its victims have finished their requests and been unloaded, and every later request that
needs a load waits behind it, whatever its own model. So a cheap-looking load on a node that is
already swapping a busy model in waits for that swap first: minutes, when the victim has a long queue.

The router keeps, per node, the loads it sent there in order, each as the earliest moment its victims
can have drained (`earliest`: they drain from the moment it was sent, in parallel with the loads
ahead, because the router sends nothing more to a victim) and what it takes once at the head (`tail`:
unloading the victims and the load itself). A load is at the head after the one before it is ready:

    ready[i] = max(ready[i - 1], earliest[i]) + tail[i]

A load whose estimate has passed with no first token is still under way as far as the router knows:
it holds the loader until at least now. A first token of a queued load says that it is done (see
`seen`); with `until_answered` off, that the loads sent before it are done too, first in, first out.
That inference fails whenever the answer did not wait for its load: the model was still resident
when the request arrived (the load that was to evict it had not reached the head of the queue yet),
so Ollama's fast path answered it at once while every load ahead was still pending. In small fleets
that cannot hold their models that is most of the queue (issue 17: a third of the loads the router
dropped on a first token were still pending, by 18-44 s in the median). So each load now waits for
its own first token (Ollama answers it moments after the load). Loads that never send one (their
request failed or went elsewhere) are forgotten once `patience` times their estimated duration, plus
`forget_s`, has passed since they were sent.

Pure bookkeeping, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Key = tuple[str, str]  # (model, load-time options)


@dataclass(slots=True)
class Pending:
    key: Key
    sent_at: float
    earliest: float  # the victims have drained by then, at the earliest
    tail: float  # at the head of the queue: unload the victims, then load


class LoadQueues:
    def __init__(self, forget_s: float = 10.0, patience: float = 3.0, until_answered: bool = False) -> None:
        self.forget_s = forget_s
        # A first token ends only the loads of its own model (`Costs.queue_until_answered`), not those
        # sent before it.
        self.until_answered = until_answered
        # A load with no first token this many times its estimated duration (plus `forget_s`) after it
        # was sent is forgotten: its request failed or went elsewhere.
        self.patience = patience
        self._queues: dict[str, list[Pending]] = {}

    def push(self, node: str, key: Key, now: float, drain_s: float, tail_s: float) -> float:
        """A load was sent to the node: its victims drain for `drain_s`, then unloading them and the load
        take `tail_s`. Returns when the model should be ready there (never before now + tail_s)."""
        queue = self._queues.setdefault(node, [])
        queue.append(Pending(key, now, now + max(0.0, drain_s), max(0.0, tail_s)))
        return self.free_at(node, now)

    def free_at(self, node: str, now: float) -> float:
        """When the node's loader could start another load: now, or after the loads queued there."""
        at = float("-inf")
        for p in self._queues.get(node, ()):
            at = _ready(p, at, now)
        return at if at > now else now

    def ready_at(self, node: str, key: Key, now: float) -> float | None:
        """When the first load of `key` still queued on the node should be done (the later ones of the
        key are served by it: Ollama starts every pending request of a model with its load); None when
        none is queued."""
        at = float("-inf")
        for p in self._queues.get(node, ()):
            at = _ready(p, at, now)
            if p.key == key:
                return at
        return None

    def queued(self, node: str) -> int:
        return len(self._queues.get(node, ()))

    def seen(self, node: str, key: Key, sent_at: float = math.inf) -> bool:
        """The first token of `key` came from the node for a request sent at `sent_at`, and a load of it
        sent no later was queued there: that load is done, and with `until_answered` off, the ones sent
        before it too (Ollama loads first in, first out; but see the module's docstring for when an
        answer did not wait for its load). The loads sent after it stay queued, each still counted from its own earliest
        start (`free_at` chains them from there, not from this first token). (Until issue 17's last round
        a first token freed the whole queue, on the reasoning that the later loads were usually made by
        then too. In a small fleet swapping twenty models through one node they were not: the router saw
        a minute of loads ahead where there were several, and kept sending cold requests there.
        docs/benchmarks.md, "A first token frees only the loads ahead of it".)"""
        queue = self._queues.get(node)
        # The latest load of the key sent no later than the request that answered: a load queued after
        # that request (a reload behind an eviction of the runner still serving it) is not what answered.
        last = _latest(queue, key, sent_at)
        if queue is None or last < 0:
            return False
        if self.until_answered:  # its own loads (a later one of the key was served by the same load)
            queue[: last + 1] = [p for p in queue[: last + 1] if p.key != key]
        else:
            del queue[: last + 1]
        if not queue:
            del self._queues[node]
        return True

    def failed(self, node: str, key: Key, sent_at: float) -> bool:
        """The request sent at `sent_at` that was to load `key` on the node failed before any answer (a
        refusal, a dead connection): the latest load of the key queued there no later is not coming."""
        queue = self._queues.get(node)
        last = _latest(queue, key, sent_at)
        if queue is None or last < 0:
            return False
        del queue[last]
        if not queue:
            del self._queues[node]
        return True

    def prune(self, now: float) -> None:
        """Forget loads that sent no first token long after their estimate."""
        for node in list(self._queues):
            at = float("-inf")
            kept = []
            for p in self._queues[node]:
                at = max(at, p.earliest) + p.tail  # the estimate as first made, not held at now
                if now < p.sent_at + self.patience * (at - p.sent_at) + self.forget_s:
                    kept.append(p)
            if kept:
                self._queues[node] = kept
            else:
                del self._queues[node]

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())


def _latest(queue: list[Pending] | None, key: Key, sent_at: float) -> int:
    """The index of the latest load of `key` in the queue sent no later than `sent_at`; -1 if none."""
    last = -1
    for i, p in enumerate(queue or ()):
        if p.key == key and p.sent_at <= sent_at:
            last = i
    return last


def _ready(p: Pending, before: float, now: float) -> float:
    """When the load is done, after the one before it: at the head once that one is done and its victims
    have drained; past its estimate with no first token, still under way (now) as far as anyone knows."""
    estimate = max(before, p.earliest) + p.tail
    return estimate if estimate > now else now
