"""Per-model indexes of a fleet snapshot, kept up to date one changed node at a time (issue 17).

A routing decision in a fleet of hundreds of nodes cannot afford to look at every node: model-aware
routing needs only the nodes that hold the requested model, a few with room for another runner, and a
few others. The gateway renews a node's view only when something it is made of changed
(`corral/app/fleet.py`), so the index compares each view with the one it saw last by identity and
re-indexes only those that differ: which runners each node holds, and which nodes have room.

`admissible` is `candidates.candidates` for one node, for the common case; the caller falls back to
the full filter whenever a bounded scan finds nothing (so that the reasons a request cannot be routed,
and the fit rules' "fits nowhere: let Ollama decide", stay exactly those of `candidates`).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import is_not

from corral.domain.fleet import NodeView, RouteRequest
from corral.domain.groups import matches

Key = tuple[str, str]  # (model, load-time options)


class FleetIndex:
    def __init__(self) -> None:
        self._views: list[NodeView] = []
        self._keys: list[tuple[Key, ...]] = []  # position -> the runners indexed for it
        self._holders: dict[Key, dict[int, None]] = {}  # (model, options) -> positions, in insertion order
        self._ordered: dict[Key, tuple[int, ...]] = {}  # the same as tuples, built when first asked
        self._roomy: dict[int, None] = {}
        self._roomy_ordered: tuple[int, ...] | None = None
        self.refused = 0  # nodes that refused some model for memory: the full filter's rules apply then
        self.positions: dict[str, int] = {}
        self._memories: dict[int | None, int] = {}  # configured memory -> nodes with it
        self._memory_set: frozenset[int] | None = None  # built when first asked

    def update(self, nodes: Sequence[NodeView]) -> None:
        views = self._views
        if len(nodes) != len(views):
            self._rebuild(nodes)
            return
        if not any(map(is_not, nodes, views)):
            return
        for i, (new, old) in enumerate(zip(nodes, views, strict=True)):
            if new is not old:
                if new.name != old.name:
                    self._rebuild(nodes)
                    return
                self._unindex(i, old)
                self._index(i, new)

    def holders(self, key: Key) -> tuple[int, ...]:
        found = self._ordered.get(key)
        if found is None:
            found = self._ordered[key] = tuple(self._holders.get(key, ()))
        return found

    def roomy(self) -> tuple[int, ...]:
        if self._roomy_ordered is None:
            self._roomy_ordered = tuple(self._roomy)
        return self._roomy_ordered

    def memories(self) -> frozenset[int] | None:
        """The nodes' configured memories (bytes); None when some node's is unknown."""
        if None in self._memories:
            return None
        if self._memory_set is None:
            self._memory_set = frozenset(m for m in self._memories if m is not None)
        return self._memory_set

    @property
    def views(self) -> list[NodeView]:
        return self._views

    def __len__(self) -> int:
        return len(self._views)

    def _rebuild(self, nodes: Sequence[NodeView]) -> None:
        self._views, self._keys = [], []
        self._holders, self._ordered, self._roomy, self._roomy_ordered = {}, {}, {}, None
        self.refused = 0
        self.positions = {}
        self._memories = {}
        self._memory_set = None
        for i, node in enumerate(nodes):
            self._views.append(node)
            self._keys.append(())
            self.positions[node.name] = i
            self._index(i, node)

    def _index(self, i: int, node: NodeView) -> None:
        self._views[i] = node
        keys = tuple((m.model, m.options_key) for m in node.loaded)
        self._keys[i] = keys
        for key in keys:
            self._holders.setdefault(key, {})[i] = None
            self._ordered.pop(key, None)
        if len(node.loaded) < node.max_loaded:
            self._roomy[i] = None
            self._roomy_ordered = None
        self.refused += bool(node.unfit)
        count = self._memories.get(node.vram_bytes, 0)
        self._memories[node.vram_bytes] = count + 1
        if not count:
            self._memory_set = None

    def _unindex(self, i: int, node: NodeView) -> None:
        for key in self._keys[i]:
            positions = self._holders.get(key)
            if positions is not None:
                positions.pop(i, None)
                if not positions:
                    del self._holders[key]
            self._ordered.pop(key, None)
        if self._roomy.pop(i, 0) is None:
            self._roomy_ordered = None
        self.refused -= bool(node.unfit)
        left = self._memories.get(node.vram_bytes, 0) - 1
        if left > 0:
            self._memories[node.vram_bytes] = left
        else:
            self._memories.pop(node.vram_bytes, None)
            self._memory_set = None


def may_serve(node: NodeView, req: RouteRequest) -> bool:
    """The request may use the node at all: up, not draining, not excluded, allowed the model, in the
    model's and the key's node groups (unlike `admissible`, whether it has room now does not count)."""
    if not node.eligible or node.name in req.exclude:
        return False
    if node.pinned is not None and req.model not in node.pinned:
        return False
    if req.nodes and not matches(node.labels, req.nodes):
        return False
    return not (req.key_nodes and not matches(node.labels, req.key_nodes))


def admissible(node: NodeView, req: RouteRequest) -> bool:
    """The node passes `candidates` for the request, as far as it alone can say (its fit by configured
    memory included; refusals are left to the full filter)."""
    if node.pinned is not None and req.model not in node.pinned:
        return False
    if req.model not in node.available or not node.eligible or node.name in req.exclude:
        return False
    if node.max_concurrency is not None and node.in_flight >= node.max_concurrency:
        return False
    if node.vram_bytes is not None and node.model_sizes.get(req.model, 0) > node.vram_bytes:
        return False
    if req.nodes and not matches(node.labels, req.nodes):
        return False
    return not (req.key_nodes and not matches(node.labels, req.key_nodes))
