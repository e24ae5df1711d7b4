"""The gateway's mutable view of its nodes: health, breaker, discovered models, in-flight counts.

Routing never sees this directly: `Fleet.snapshot()` hands it immutable `NodeView`s. Runtime changes
(nodes added, removed, drained) live here, never in the settings.

The snapshot is renewed one node at a time, not rebuilt per request (rebuilding cost 0.66 ms at 256
nodes): setting any attribute a view is made of marks that node's view stale, a health change marks
every node (`capacity_changed(None)`), and a node whose view depends on the clock (its breaker is not
closed, or a refusal is about to expire) is viewed anew every time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from corral.config import BackendSettings, HealthSettings
from corral.domain.breaker import BreakerState, CircuitBreaker
from corral.domain.catalog import Catalog
from corral.domain.fit import REFUSAL_TTL_S
from corral.domain.fleet import LoadedModel, NodeKind, NodeView
from corral.domain.health import HealthTracker
from corral.domain.names import normalize
from corral.net.client import ConnectionPool

# Node attributes a view is made of: setting one marks the node's view stale. (`in_flight_by_model`
# changes in place, always together with `in_flight`; health and breaker are checked on each view.)
_VIEWED = frozenset({"loaded", "draining", "settings", "tags", "in_flight", "refused", "_static", "catalog"})


@dataclass
class Node:
    settings: BackendSettings
    health_settings: HealthSettings
    pool: ConnectionPool
    health: HealthTracker
    breaker: CircuitBreaker
    draining: bool = False
    checked: bool = False  # at least one health check has completed
    version: str | None = None
    tags: dict[str, dict[str, Any]] = field(default_factory=dict)  # normalised name -> /api/tags entry
    ps: list[dict[str, Any]] = field(default_factory=list)  # /api/ps entries
    loaded: tuple[LoadedModel, ...] = ()
    in_flight: int = 0
    in_flight_by_model: dict[str, int] = field(default_factory=dict)
    requests_total: int = 0
    failures_total: int = 0
    completion_tokens_total: int = 0
    ttft_sum: float = 0.0
    ttft_count: int = 0
    last_error: str | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    refused: dict[str, float] = field(default_factory=dict)  # model -> kept off this node until (fit.py)
    _static: tuple[frozenset[str] | None, frozenset[str], dict[str, int]] | None = None
    _native: dict[str, str] = field(default_factory=dict)  # catalog key -> the name this node lists
    on_change: Callable[[], None] | None = None  # the fleet's capacity_changed(None)
    catalog: Catalog = field(default_factory=Catalog)  # the fleet's: node-side names to catalog keys
    on_view: Callable[[str], None] | None = None  # the fleet's: this node's view is stale

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in _VIEWED:
            self.__dict__["_view"] = None
            hook = self.__dict__.get("on_view")
            if hook is not None:
                hook(self.settings.name)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def path_prefix(self) -> bytes:
        """The node URL's path (`http://host/ollama` -> b"/ollama"), put before every request's target:
        parsed once per settings object, not per request."""
        cached: tuple[BackendSettings, bytes] | None = self.__dict__.get("_prefix")
        if cached is None or cached[0] is not self.settings:
            cached = self.__dict__["_prefix"] = (self.settings, self.settings.base_path.encode())
        return cached[1]

    @property
    def kind(self) -> NodeKind:
        return NodeKind.OPENAI if self.settings.type == "openai" else NodeKind.OLLAMA

    @property
    def up(self) -> bool:
        return self.health.up

    @property
    def labels(self) -> dict[str, str]:
        return self.settings.labels

    @property
    def breaker_state(self) -> str:
        return str(self.breaker.state.value)

    def loaded_models(self) -> list[tuple[str, int, int]]:
        return [(m.model, m.size, m.size_vram) for m in self.loaded if m.size or m.size_vram] or [
            (m.model, 0, 0) for m in self.loaded
        ]

    def begin(self, model: str) -> None:
        self.in_flight += 1
        self.requests_total += 1
        self.in_flight_by_model[model] = self.in_flight_by_model.get(model, 0) + 1
        self.idle.clear()

    def end(self, model: str) -> None:
        self.in_flight -= 1
        left = self.in_flight_by_model.get(model, 1) - 1
        if left <= 0:
            self.in_flight_by_model.pop(model, None)
        else:
            self.in_flight_by_model[model] = left
        if self.in_flight == 0:
            self.idle.set()

    def set_tags(self, tags: dict[str, dict[str, Any]]) -> None:
        self.tags = tags
        self._static = None
        if self.on_change is not None:
            self.on_change()

    def forget_model(self, model: str) -> None:
        """The node said it lacks `model` (a catalog key): drop it from the view until the next discovery."""
        key_of = self.catalog.key_of
        if any(key_of(name) == model for name in self.tags):
            self.set_tags({name: entry for name, entry in self.tags.items() if key_of(name) != model})

    def refuse(self, model: str, now: float) -> None:
        """The node refused to load `model` (a catalog key) for lack of memory: keep it off for a while."""
        self.refused = {m: t for m, t in self.refused.items() if t > now}
        self.refused[model] = now + REFUSAL_TTL_S
        self.loaded = tuple(m for m in self.loaded if m.model != model)  # our dispatch said it was loading

    def native_name(self, model: str) -> str | None:
        """How this node spells the model a catalog key names (its own listing's spelling), if it has it."""
        self._static_parts()
        return self._native.get(model)

    def _static_parts(self) -> tuple[frozenset[str] | None, frozenset[str], dict[str, int]]:
        # What changes only with discovery, computed once per change instead of once per request.
        # Routing sees catalog keys: a node's own names for a pooled model map to the catalog's one.
        if self._static is None:
            key_of = self.catalog.key_of
            pinned = frozenset(key_of(normalize(m)) for m in self.settings.models) if self.settings.models else None
            sizes: dict[str, int] = {}
            native: dict[str, str] = {}
            for name, entry in self.tags.items():
                key = key_of(name)
                if key not in native:
                    sizes[key] = int(entry.get("size") or 0)
                    native[key] = str(entry.get("model") or entry.get("name") or name)
            self._native = native
            self._static = (pinned, frozenset(native), sizes)
        return self._static

    @property
    def timed(self) -> bool:
        """Its view depends on the clock: a breaker that is not closed, or refusals that expire."""
        return self.breaker.state is not BreakerState.CLOSED or bool(self.refused)

    def view(self, now: float) -> NodeView:
        cached: NodeView | None = self.__dict__.get("_view")
        if cached is not None and cached.up == self.health.up and cached.admits and not self.timed:
            return cached
        view = self._view_now(now)
        self.__dict__["_view"] = view
        return view

    def _view_now(self, now: float) -> NodeView:
        pinned, available, sizes = self._static_parts()
        return NodeView(
            name=self.name,
            kind=self.kind,
            up=self.health.up,
            admits=self.breaker.would_admit(now),
            draining=self.draining,
            priority=self.settings.priority,
            weight=self.settings.weight,
            max_concurrency=self.settings.max_concurrency,
            parallel=self.settings.parallel,
            max_loaded=self.settings.max_loaded,
            vram_bytes=None if self.settings.vram_gb is None else int(self.settings.vram_gb * 2**30),
            pinned=pinned,
            available=available,
            loaded=self.loaded,
            in_flight=self.in_flight,
            in_flight_by_model=dict(self.in_flight_by_model),
            model_sizes=sizes,
            labels=self.settings.labels,
            unfit=frozenset(m for m, until in self.refused.items() if until > now) if self.refused else frozenset(),
        )


class Fleet:
    """All nodes by name, in configuration order."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        self.catalog = catalog or Catalog()
        self._nodes: dict[str, Node] = {}
        self._listeners: list[Callable[[Node | None], None]] = []
        self._known: frozenset[str] | None = None
        self._views: list[NodeView] | None = None  # the last snapshot, in fleet order (None: rebuild)
        self._pos: dict[str, int] = {}  # node name -> its place in _views
        self._stale: set[str] = set()  # nodes whose view must be renewed
        self._timed: set[str] = set()  # nodes whose view depends on the clock: renewed every time

    def set_catalog(self, catalog: Catalog) -> None:
        """Swap the name catalog (a configuration reload): every node's view is recomputed."""
        self.catalog = catalog
        for node in self._nodes.values():
            node.catalog = catalog
            node._static = None
        self.capacity_changed()

    def subscribe(self, listener: Callable[[Node | None], None]) -> None:
        """Call `listener(node)` on every capacity_changed event."""
        self._listeners.append(listener)

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self._nodes.values()))

    def __len__(self) -> int:
        return len(self._nodes)

    def get(self, name: str) -> Node | None:
        return self._nodes.get(name)

    def names(self) -> list[str]:
        return list(self._nodes)

    def add(self, settings: BackendSettings, health: HealthSettings, breaker: CircuitBreaker) -> Node:
        node = self.new_node(settings, health, breaker)
        self.adopt(node)
        return node

    @staticmethod
    def new_node(settings: BackendSettings, health: HealthSettings, breaker: CircuitBreaker) -> Node:
        """A node outside the fleet (it takes no traffic until `adopt`ed): checked first on reloads."""
        pool = ConnectionPool(settings.name, settings.host, settings.port, ssl=settings.tls)
        node = Node(
            settings=settings,
            health_settings=health,
            pool=pool,
            health=HealthTracker(rise=health.rise, fall=health.fall),
            breaker=breaker,
        )
        node.idle.set()
        return node

    def adopt(self, node: Node) -> None:
        """Put `node` in the fleet, in the place of any node of the same name (which keeps serving the
        requests it already has)."""
        node.catalog = self.catalog  # its model names read through the fleet's aliases and pooled names
        node._static = None
        node.on_change = self.capacity_changed
        node.on_view = self._stale.add
        self._nodes[node.name] = node
        self._views = None
        self.capacity_changed()

    def update(self, node: Node, settings: BackendSettings, health: HealthSettings) -> None:
        """Change a node's settings in place (same address and API): routing sees them at once."""
        node.settings = settings
        node.health_settings = health
        node.health.rise, node.health.fall = health.rise, health.fall
        node._static = None
        self.capacity_changed()

    def remove(self, name: str) -> Node | None:
        node = self._nodes.pop(name, None)
        if node is not None:
            self._views = None
            self.capacity_changed()
        return node

    def reorder(self, names: list[str]) -> None:
        """Put the named nodes first, in that order (the stored fleet state's order); others follow."""
        ordered = {name: self._nodes[name] for name in names if name in self._nodes}
        self._nodes = ordered | {name: n for name, n in self._nodes.items() if name not in ordered}
        self._views = None

    def snapshot(self, now: float) -> tuple[NodeView, ...]:
        """Every node's view now, renewing only the views that changed (see the module's docstring)."""
        views = self._views
        if views is None:
            views = self._views = [node.view(now) for node in self._nodes.values()]
            self._pos = {name: i for i, name in enumerate(self._nodes)}
            self._timed = {node.name for node in self._nodes.values() if node.timed}
            self._stale.clear()
            return tuple(views)
        renew = self._stale | self._timed  # a copy: nodes keep adding to this very set
        if renew:
            self._stale.clear()
            for name in renew:
                node = self._nodes.get(name)
                at = self._pos.get(name)
                if node is None or at is None:
                    continue
                views[at] = node.view(now)
                if node.timed:
                    self._timed.add(name)
                else:
                    self._timed.discard(name)
        return tuple(views)

    def capacity_changed(self, node: Node | None = None) -> None:
        """The one capacity event: `node` freed a slot, or (None) the fleet changed (nodes, their
        health, drain state or models), which also forgets cached views."""
        if node is None:
            self._known = None
            self._stale.update(self._nodes)  # health, drain state or models may have changed anywhere
        for listener in self._listeners:
            listener(node)

    def known_models(self) -> frozenset[str]:
        if self._known is None:
            key_of = self.catalog.key_of
            self._known = frozenset(key_of(name) for node in self._nodes.values() for name in node.tags)
        return self._known

    @property
    def any_up(self) -> bool:
        return any(node.health.up and not node.draining for node in self._nodes.values())
