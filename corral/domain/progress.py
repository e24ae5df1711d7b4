"""Merging the progress streams of one pull (or create) running on several nodes into one stream in
Ollama's own format (api.ProgressResponse in api/types.go: status, digest, total, completed).

How the `ollama` CLI draws it (cmd/cmd.go, pullModelWithProgress; progress/bar.go): a line with a
`digest` and `completed` > 0 creates that digest's bar the first time, with its maximum fixed at that
line's `total`, and later lines only move the bar (`Set(completed)`, clamped to the maximum); a line
without a digest shows its `status` as a spinner when it differs from the last one. So, per digest:

- `total` is the layer's size times the number of nodes in the operation, the same on every line from
  the first (all nodes fetch the same layer, so its size is known from the first node that reports it);
- `completed` is the sum of the nodes' `completed`, where a node that has finished (or failed) counts
  as complete, so the bar never moves back and ends full; the failure is told in the final line.

A status without a digest ("pulling manifest", "verifying sha256 digest", "writing manifest") is passed
on once, when every node still running has reached it. "success" is never passed on from a node: the
merged stream ends with `outcome()`, which is success only if every node succeeded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Frame = dict[str, Any]


@dataclass
class _Layer:
    status: str
    size: int = 0
    completed: dict[str, int] = field(default_factory=dict)  # node -> the most it has reported
    last: tuple[int, int] | None = None  # (total, completed) last sent


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def progress_frame(status: str, digest: str | None = None, total: int = 0, completed: int = 0) -> Frame:
    """One line as Ollama writes it: digest, total and completed are left out when empty (omitempty)."""
    frame: Frame = {"status": status}
    if digest:
        frame["digest"] = digest
    if total:
        frame["total"] = total
    if completed:
        frame["completed"] = completed
    return frame


class ProgressMerger:
    """Feed it each node's lines (`feed`), and `succeed`/`fail` when a node's stream ends; each call
    returns the merged lines to send now. `verb` names the operation in the final error ("pull")."""

    def __init__(self, nodes: Sequence[str], verb: str = "pull") -> None:
        if not nodes:
            raise ValueError("a merged progress needs at least one node")
        self.nodes = tuple(dict.fromkeys(nodes))
        self.verb = verb
        self._layers: dict[str, _Layer] = {}
        self._statuses: dict[str, set[str]] = {}  # status -> nodes that sent it (first-seen order)
        self._sent: set[str] = set()
        self.succeeded: set[str] = set()
        self.failures: dict[str, str] = {}

    @property
    def finished(self) -> bool:
        return len(self.succeeded) + len(self.failures) == len(self.nodes)

    def _running(self) -> list[str]:
        return [n for n in self.nodes if n not in self.succeeded and n not in self.failures]

    def _layer_frame(self, digest: str, layer: _Layer) -> Frame | None:
        total = layer.size * len(self.nodes)
        done = 0
        for node in self.nodes:
            if node in self.succeeded or node in self.failures:
                done += layer.size
            else:
                done += min(layer.completed.get(node, 0), layer.size)
        now = (total, done)
        if now == layer.last:
            return None
        layer.last = now
        return progress_frame(layer.status, digest, total, done)

    def _ready_statuses(self) -> list[Frame]:
        running = set(self._running())
        out = []
        for status, seen in self._statuses.items():
            if status not in self._sent and running and running <= seen:
                self._sent.add(status)
                out.append(progress_frame(status))
        return out

    def feed(self, node: str, frame: Mapping[str, Any]) -> list[Frame]:
        """A line from `node`'s stream (not an error line: pass those to `fail`)."""
        if node not in self.nodes or node in self.succeeded or node in self.failures:
            return []
        status = frame.get("status")
        status = status if isinstance(status, str) else ""
        digest = frame.get("digest")
        if isinstance(digest, str) and digest:
            layer = self._layers.get(digest)
            if layer is None:
                layer = self._layers[digest] = _Layer(status)
            layer.size = max(layer.size, _int(frame.get("total")))
            completed = _int(frame.get("completed"))
            layer.completed[node] = max(layer.completed.get(node, 0), completed)
            if layer.size == 0:
                return []  # nothing to draw until the layer's size is known
            merged = self._layer_frame(digest, layer)
            return [merged] if merged is not None else []
        if not status or status == "success":
            return []
        self._statuses.setdefault(status, set()).add(node)
        return self._ready_statuses()

    def _ended(self) -> list[Frame]:
        out = []
        for digest, layer in self._layers.items():
            if layer.size:
                merged = self._layer_frame(digest, layer)
                if merged is not None:
                    out.append(merged)
        return out + self._ready_statuses()

    def succeed(self, node: str) -> list[Frame]:
        if node not in self.nodes or node in self.failures:
            return []
        self.succeeded.add(node)
        return self._ended()

    def fail(self, node: str, error: str) -> list[Frame]:
        if node not in self.nodes or node in self.succeeded or node in self.failures:
            return []
        self.failures[node] = error or "failed"
        return self._ended()

    def error_message(self) -> str | None:
        """None when no node failed; the same message as the nodes' when every node failed alike (the
        fleet then answers as one Ollama would); else one that names each node that failed."""
        if not self.failures:
            return None
        messages = set(self.failures.values())
        if len(self.failures) == len(self.nodes) and len(messages) == 1:
            return messages.pop()
        failed = [n for n in self.nodes if n in self.failures]
        if len(failed) == 1:
            return f"the {self.verb} failed on node {failed[0]}: {self.failures[failed[0]]}"
        detail = "; ".join(f"{n}: {self.failures[n]}" for n in failed)
        return f"the {self.verb} failed on nodes {', '.join(failed)}: {detail}"

    def outcome(self) -> Frame:
        """The last line of the merged stream (once `finished`)."""
        message = self.error_message()
        return {"error": message} if message is not None else {"status": "success"}
