"""Admission: a node for each request, or a fair wait for one while every suitable node is full.

Capacity events have one name, `capacity_changed(node)`: a node's slot freed (`node` given), or the
fleet changed (None: nodes added, removed, drained, their models or health changed). A freed slot is
offered only to the waiting requests that node can take, one node view per round, so its cost grows
with the queue and not with the fleet; a fleet change runs one full round over one snapshot.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from time import perf_counter

from corral.app.context import RequestRecord
from corral.app.fleet import Fleet, Node
from corral.domain.admission import Entry, FairQueue, QueueFullError
from corral.domain.candidates import candidates, holds
from corral.domain.errors import GatewayError, NoHealthyNode, NoSuchModel, Overloaded, QueueFull, QueueTimeout
from corral.domain.fleet import NodeView, NoRoute, NoRouteReason, RouteRequest
from corral.domain.fleet_index import may_serve
from corral.domain.groups import format_selector
from corral.domain.routing import Strategy

Waiting = Entry[tuple[RouteRequest, "asyncio.Future[Node]"]]


class OutsideKeyGroup(NoSuchModel):
    """Nodes have the model, but none in the key's node group: a 404 that says so."""


def no_route_error(found: NoRoute, model: str, route: RouteRequest | None = None) -> GatewayError:
    """The error for a request no node can take, or take in time (`found.wait_s`)."""
    reason = found.reason
    if reason is NoRouteReason.NO_SUCH_MODEL:
        return NoSuchModel(f"model '{model}' not found")
    if reason is NoRouteReason.OUTSIDE_KEY_GROUP:
        group = format_selector(route.key_nodes if route else None)
        return OutsideKeyGroup(f"model '{model}' not found on the nodes this key may use ({group})")
    if reason is NoRouteReason.OUTSIDE_MODEL_GROUP:
        group = format_selector(route.nodes if route else None)
        return NoHealthyNode(f"no node in the model's node group ({group}) has model '{model}'", retry_after=5)
    if reason is NoRouteReason.SHED and route is not None and route.shed_after_s is not None:
        return overloaded(model, found.wait_s, route.shed_after_s)
    if reason is NoRouteReason.TOO_SLOW:
        return NoHealthyNode(f"no node can start model '{model}' within its fallback_after_s", retry_after=5)
    return NoHealthyNode(f"no healthy node can serve model '{model}'", retry_after=5)


# Retry-After of a shed request: the estimate's excess over the bound, when the work ahead has drained
# enough for a new request to fit; never more than a minute (an estimate that far out is a guess).
RETRY_AFTER_MAX_S = 60


def overloaded(model: str, wait_s: float | None, shed_after_s: float) -> Overloaded:
    """The 503 of a request shed by queue.shed_after_s. The message starts as Ollama's own when its
    queue is full (server/sched.go, ErrMaxQueue), which clients may already match on."""
    if wait_s is None or not math.isfinite(wait_s):
        about, retry = "longer", RETRY_AFTER_MAX_S
    else:
        about = f"about {math.ceil(wait_s)}s"
        retry = min(RETRY_AFTER_MAX_S, max(1, math.ceil(wait_s - shed_after_s)))
    message = (
        f"server busy, please try again.  model '{model}' would wait {about} for a node "
        f"(queue.shed_after_s is {shed_after_s:g}s)"
    )
    return Overloaded(message, retry_after=retry)


class Admission:
    def __init__(self, fleet: Fleet, strategy: Strategy, queue_max: int, queue_wait_s: float) -> None:
        self.fleet = fleet
        self.strategy = strategy
        self.queue_wait_s = queue_wait_s
        self.queue: FairQueue[tuple[RouteRequest, asyncio.Future[Node]]] = FairQueue(queue_max, queue_wait_s)
        self.loop = asyncio.get_running_loop()
        fleet.subscribe(self.capacity_changed)

    def retune(self, strategy: Strategy, queue_max: int, queue_wait_s: float) -> None:
        """New settings on a hot reload: for the requests that arrive from now on."""
        self.strategy = strategy
        self.queue_wait_s = queue_wait_s
        self.queue.max_len = queue_max
        self.queue.max_wait_s = queue_wait_s

    @property
    def waiting(self) -> int:
        return len(self.queue)

    def _take(
        self, views: list[NodeView], route: RouteRequest, now: float, update: bool = False, partial: bool = False
    ) -> Node | NoRoute:
        """A node for `route` among `views`, its slot taken (node.begin), or why not. With `update`,
        `views` is updated in place for the node that took the request (a dispatch round goes on);
        `partial`: `views` is not the whole fleet (whether another node holds the model is looked up)."""
        if partial and route.shed_after_s is not None and self._held_elsewhere(views, route, now):
            route = replace(route, held_elsewhere=True)
        while True:
            decision = self.strategy.pick(views, route, now)
            if isinstance(decision, NoRoute):
                return decision
            node = self.fleet.get(decision.node)
            if node is not None and node.breaker.admit(now):
                node.begin(route.model)
                if update:
                    for i, view in enumerate(views):
                        if view.name == node.name:
                            views[i] = node.view(now)
                return node
            # The breaker refused its half-open trial to this request: try the others.
            route = replace(route, exclude=route.exclude | {decision.node})

    def _held_elsewhere(self, views: list[NodeView], route: RouteRequest, now: float) -> bool:
        """A node outside `views` that the request may use holds the model (the gateway's view of its
        own dispatches included: a load it sent shows there at once)."""
        inside = {v.name for v in views}
        return any(
            v.name not in inside and may_serve(v, route) and holds(v.loaded, route) for v in self.fleet.snapshot(now)
        )

    async def choose(self, route: RouteRequest, record: RequestRecord) -> Node:
        """A node for the request, its slot taken. While every suitable node is full, the request waits
        in the fair admission queue (bounded in length and wait)."""
        now = self.loop.time()
        found = self._take(list(self.fleet.snapshot(now)), route, now)
        if isinstance(found, Node):
            return found
        if found.reason is not NoRouteReason.ALL_FULL:
            raise no_route_error(found, record.model or route.model, route)
        future: asyncio.Future[Node] = self.loop.create_future()
        turn = record.principal.bucket if record.principal is not None else record.client_ip
        try:
            entry = self.queue.push(turn, record.priority, now, (route, future))
        except QueueFullError:
            message = "server busy, please try again.  maximum pending requests exceeded"
            raise QueueFull(message, retry_after=1) from None
        # A request with a fallback waits no longer than its model's fallback_after_s, nor any request
        # longer than queue.shed_after_s: both bound the wait for a node.
        deadline = min([entry.deadline, *(now + b for b in (route.max_wait_s, route.shed_after_s) if b is not None)])
        timer = self.loop.call_at(deadline, self._expire, entry, deadline - now)
        waited_from = perf_counter()
        try:
            return await future
        except asyncio.CancelledError:
            # The client left just as a slot was handed over: give the slot back.
            if future.done() and not future.cancelled() and future.exception() is None:
                node = future.result()
                node.end(route.model)
                self.capacity_changed(node)
            raise
        finally:
            timer.cancel()
            self.queue.remove(entry)
            record.queued_s += perf_counter() - waited_from

    def _expire(self, entry: Waiting, waited_s: float) -> None:
        if self.queue.remove(entry):
            _, future = entry.payload
            if not future.done():
                message = f"server busy, please try again.  no node had a free slot within {waited_s:g}s"
                future.set_exception(QueueTimeout(message, retry_after=2))

    def capacity_changed(self, node: Node | None = None) -> None:
        """Offer capacity to waiting requests in fair order: the freed slot of `node`, or (None) whatever
        the changed fleet now has."""
        if not len(self.queue):
            return
        now = self.loop.time()
        if node is not None and self.fleet.get(node.name) is node:
            self._offer_node(node, now)
        else:
            self._offer_fleet(now)

    def _offer_node(self, node: Node, now: float) -> None:
        views = [node.view(now)]

        def admit(entry: Waiting) -> bool:
            route, future = entry.payload
            if future.done():
                return True  # the client left; drop the entry
            if isinstance(candidates(views, route), NoRoute):
                return False  # this node cannot take it: keep its place
            # One node's view: whether another node holds the model is looked up (held_elsewhere).
            found = self._take(views, route, now, update=True, partial=True)
            if isinstance(found, Node):
                future.set_result(found)
                return True
            if found.reason in (NoRouteReason.TOO_SLOW, NoRouteReason.SHED) and holds(views[0].loaded, route):
                # The slot is free at the gateway, but the model's copy here has more work queued than
                # the request may wait for: answered now, as on arrival. (Without a copy here, another
                # node's slot may still do: it keeps its place, until its deadline.)
                future.set_exception(no_route_error(found, route.model, route))
                return True
            return False

        cap = node.settings.max_concurrency
        self.queue.serve(admit, (lambda: node.in_flight >= cap) if cap is not None else None)

    def _offer_fleet(self, now: float) -> None:
        views = list(self.fleet.snapshot(now))

        def admit(entry: Waiting) -> bool:
            route, future = entry.payload
            if future.done():
                return True
            found = self._take(views, route, now, update=True)
            if isinstance(found, Node):
                future.set_result(found)
                return True
            if found.reason is not NoRouteReason.ALL_FULL:
                # The model's nodes went away while it waited: answer now rather than at the deadline.
                future.set_exception(no_route_error(found, route.model, route))
                return True
            return False

        self.queue.serve(admit)
