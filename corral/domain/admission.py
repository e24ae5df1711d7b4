"""The gateway's admission queue: requests wait here while every suitable node is full.

Fairness: a higher priority class is always offered capacity first; within a class, keys take turns
(round robin over per-key FIFOs), so one key's burst cannot starve another key. Entries whose model
cannot be served right now are skipped without losing their place. Pure: no clock reads.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False)
class Entry(Generic[T]):
    key: str
    priority: int
    enqueued_at: float
    payload: T
    deadline: float = float("inf")


@dataclass
class _Class(Generic[T]):
    keys: OrderedDict[str, deque[Entry[T]]] = field(default_factory=OrderedDict)


class QueueFullError(Exception):
    pass


class FairQueue(Generic[T]):
    def __init__(self, max_len: int, max_wait_s: float) -> None:
        self.max_len = max_len
        self.max_wait_s = max_wait_s
        self._classes: dict[int, _Class[T]] = {}
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def push(self, key: str, priority: int, now: float, payload: T) -> Entry[T]:
        if self._len >= self.max_len:
            raise QueueFullError
        entry = Entry(key, priority, now, payload, now + self.max_wait_s)
        cls = self._classes.setdefault(priority, _Class())
        cls.keys.setdefault(key, deque()).append(entry)
        self._len += 1
        return entry

    def remove(self, entry: Entry[T]) -> bool:
        cls = self._classes.get(entry.priority)
        queue = cls.keys.get(entry.key) if cls else None
        if cls is None or queue is None or entry not in queue:
            return False
        queue.remove(entry)
        if not queue:
            del cls.keys[entry.key]
        self._len -= 1
        return True

    def fair_order(self) -> Iterator[Entry[T]]:
        """Every entry once, in the order capacity should be offered: by priority class (high first),
        then one entry per key in turn, each key's entries oldest first."""
        for priority in sorted(self._classes, reverse=True):
            cls = self._classes[priority]
            queues = [list(q) for q in cls.keys.values()]
            depth = 0
            while True:
                row = [q[depth] for q in queues if depth < len(q)]
                if not row:
                    break
                yield from row
                depth += 1

    def serve(
        self, can_serve: Callable[[Entry[T]], bool], exhausted: Callable[[], bool] | None = None
    ) -> list[Entry[T]]:
        """Offer capacity in fair order; `can_serve` admits an entry (and takes the capacity) or not.
        Admitted entries leave the queue, and a key that was served moves to the back of its class.
        `exhausted()`, checked after each admission, ends the round early (no capacity left to offer)."""
        served: list[Entry[T]] = []
        for entry in self.fair_order():
            if exhausted is not None and served and exhausted():
                break
            if can_serve(entry):
                self.remove(entry)
                served.append(entry)
                cls = self._classes.get(entry.priority)
                if cls is not None and entry.key in cls.keys:
                    cls.keys.move_to_end(entry.key)
        for priority in [p for p, c in self._classes.items() if not c.keys]:
            del self._classes[priority]
        return served

    def expired(self, now: float) -> list[Entry[T]]:
        """Entries past their deadline, removed from the queue."""
        late = [e for e in self.fair_order() if e.deadline <= now]
        for entry in late:
            self.remove(entry)
        return late
