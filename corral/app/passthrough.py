"""Routes that name no model (account, web search, status, recommendations): to one healthy node."""

from __future__ import annotations

from corral.app.attempts import Forwarder
from corral.app.context import RequestRecord
from corral.app.fleet import Fleet, Node
from corral.app.headers import outbound
from corral.domain.errors import NoHealthyNode
from corral.domain.fleet import NodeKind
from corral.net.response import Request, Response


class Passthrough:
    def __init__(self, fleet: Fleet, forwarder: Forwarder) -> None:
        self.fleet = fleet
        self.forwarder = forwarder

    def _pick(self, now: float) -> Node:
        ready = [
            n
            for n in self.fleet
            if n.kind is NodeKind.OLLAMA and n.health.up and not n.draining and n.breaker.would_admit(now)
        ]
        if not ready:
            raise NoHealthyNode("no healthy node to serve this request", retry_after=5)
        return min(ready, key=lambda n: n.in_flight)

    async def __call__(self, request: Request, response: Response, record: RequestRecord) -> None:
        node = self._pick(self.forwarder.loop.time())
        record.node = node.name
        await self.forwarder.forward_to(node, record, outbound(request, record.request_id), response, None)
