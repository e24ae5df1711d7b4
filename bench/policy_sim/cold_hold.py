"""An experiment of issue 17, in the simulator only: holding a cold model's requests at the gateway and
binding them late to a node (`model-aware+hold`). Not in the gateway: on the generated draws it helped
some small fleets and cost others as much (docs/benchmarks.md, "Cold models held at the gateway").

A request for a model that no node holds needs a load. Ollama makes loads one at a time per node and
takes its pending requests first in, first out (`server/sched.go`, processPending): a request sent to
a node whose loader is busy (a load under way, or one waiting for its victims to drain) waits behind
it, bound to that node even when another node's loader frees first, and it blocks every later load
there while its own victims drain. On a fleet that cannot hold its models, most requests are of that
kind, and each early binding adds a load behind another.

So while no node that may serve the model has a free loader, such a request waits here instead:

- a request whose model has a copy (loaded, or loading as far as the router knows) on a node it may
  use is never held: it goes to routing at once;
- a request for a model that already has held requests joins them;
- any other cold request goes to routing at once when some node it may use has a free loader (no load
  pending there, or the last one due within `near_s`: a request sent there now starts about when it
  would from here, and a shorter lead left loaders idle while requests waited in the simulation);
  otherwise it is held;
- when a loader frees, the held model with the most waiting requests goes next (its oldest first),
  and a model whose oldest request has waited `max_age_s` goes before any other, so none starves;
  all its held requests are released together: one load serves them;
- a model that gained a copy meanwhile (another request loaded it) has its requests released at once.

Pure: the caller passes the fleet's views, the router's loaders and the time; the payload is the
caller's (a simulated request).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from corral.domain.candidates import candidates, holds
from corral.domain.fleet import NodeView, NoRoute, RouteRequest

T = TypeVar("T")
Key = tuple[str, str]  # (model, load-time options)


class Loaders(Protocol):
    """What the router knows of each node's serial loader (ModelAware.loader_free_at)."""

    def loader_free_at(self, node: str, now: float) -> float: ...


@dataclass(frozen=True, slots=True)
class HoldSettings:
    near_s: float = 5.0  # a loader whose pending loads are due within this long counts as free
    max_age_s: float = 10.0  # a model whose oldest held request waited this long is loaded next


@dataclass(eq=False, slots=True)
class Held(Generic[T]):
    route: RouteRequest
    since: float
    payload: T


class ColdHold(Generic[T]):
    def __init__(self, settings: HoldSettings | None = None) -> None:
        self.settings = settings or HoldSettings()
        self._batches: dict[Key, list[Held[T]]] = {}
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Held[T]]:
        for waiting in self._batches.values():
            yield from waiting

    def should_hold(self, nodes: Sequence[NodeView], route: RouteRequest, loaders: Loaders, now: float) -> bool:
        """Whether a new request is to wait here rather than go to routing now."""
        if not route.nodes and not route.key_nodes and _copy(nodes, route):
            return False  # the common case, in one cheap pass: a copy on a node it may use
        found = candidates(nodes, route)
        if isinstance(found, NoRoute):
            return False  # routing answers why (or the admission queue waits for a slot)
        if any(holds(n.loaded, route) for n in found):
            return False  # a copy, loaded or loading: never held
        if (route.model, route.options_key) in self._batches:
            return True  # its batch forms here; it leaves with the others
        return not any(self._free(n, loaders, now) for n in found)

    def hold(self, route: RouteRequest, now: float, payload: T) -> Held[T]:
        held = Held(route, now, payload)
        self._batches.setdefault((route.model, route.options_key), []).append(held)
        self._len += 1
        return held

    def remove(self, held: Held[T]) -> bool:
        """Take a request out (its client left, or it waited too long); False if it had left already."""
        key = (held.route.model, held.route.options_key)
        waiting = self._batches.get(key)
        if waiting is None or held not in waiting:
            return False
        waiting.remove(held)
        if not waiting:
            del self._batches[key]
        self._len -= 1
        return True

    def next_batch(self, nodes: Sequence[NodeView], loaders: Loaders, now: float) -> list[Held[T]] | None:
        """The held requests to send to routing now, oldest first, all of one model (removed from the
        hold); None while nothing is to go. Call again after dispatching a batch: the router's loaders
        have changed."""
        if not self._batches:
            return None
        best: tuple[bool, int, float] | None = None
        chosen: Key | None = None
        for key, waiting in self._batches.items():
            found = candidates(nodes, waiting[0].route)
            if isinstance(found, NoRoute) or any(holds(n.loaded, waiting[0].route) for n in found):
                chosen = key  # it gained a copy, or routing must answer it: no reason to wait
                break
            if not any(self._free(n, loaders, now) for n in found):
                continue
            oldest = waiting[0].since
            aged = now - oldest >= self.settings.max_age_s
            rank = (aged, 0 if aged else len(waiting), -oldest)  # among the aged, the oldest
            if best is None or rank > best:
                best, chosen = rank, key
        if chosen is None:
            return None
        batch = self._batches.pop(chosen)
        self._len -= len(batch)
        return batch

    def _free(self, node: NodeView, loaders: Loaders, now: float) -> bool:
        return loaders.loader_free_at(node.name, now) <= now + self.settings.near_s


def _copy(nodes: Sequence[NodeView], route: RouteRequest) -> bool:
    """Some node that may take the request (up, admitting, not draining or excluded, serving the model)
    holds a runner of its model and options, whatever its requests in flight."""
    model, options = route.model, route.options_key
    for n in nodes:
        for m in n.loaded:
            if m.model == model and m.options_key == options:
                if n.eligible and n.name not in route.exclude and n.serves(model):
                    return True
                break
    return False
