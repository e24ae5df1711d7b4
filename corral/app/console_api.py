"""The console's JSON API (`/ui/api/*`) and the traffic figures behind its charts.

`Console.observe` is a request observer (like the metrics one): each finished inference request
feeds the in-process ring (corral.domain.traffic), and each request charged to an API key feeds that
key's use. A sampler reads the queue and in-flight gauges once a second. The page only reads here;
every change it makes goes through the admin API (`/admin/backends`, `/admin/keys`), so it is
authorised and audited exactly as the same call from any other client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any
from urllib.parse import parse_qs

from corral import __version__
from corral.adapters.keystore import SqlKeyStore
from corral.app.auth import key_view
from corral.app.console_assets import SECURITY_HEADERS
from corral.app.console_views import model_matrix, node_view
from corral.app.fleet import Fleet
from corral.app.scopes import visible
from corral.app.views import send_json
from corral.domain.errors import Forbidden, InvalidRequest
from corral.domain.names import normalize
from corral.domain.record import RequestRecord
from corral.domain.traffic import WINDOW_S, TrafficRing, add_keys, add_routes, key_rows
from corral.net.response import Request, Response

_NO_STORE = (b"cache-control", b"no-store")


def _int_param(query: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        value = int(values[-1])
    except ValueError:
        raise InvalidRequest(f"{name}: must be an integer", param=name) from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name}: must be between {low} and {high}", param=name)
    return value


def _rounded(values: list[float | None]) -> list[float | None]:
    return [None if v is None else round(v, 4) for v in values]


class Console:
    def __init__(
        self,
        fleet: Fleet,
        queue_len: Callable[[], int],
        queue_max: int,
        keys_on: bool,
        inference_routes: Collection[str],
        limited_routes: Collection[str],
        store: SqlKeyStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fleet = fleet
        self.queue_len = queue_len
        self.queue_max = queue_max
        self.keys_on = keys_on
        self.inference_routes = frozenset(inference_routes)
        self.limited_routes = frozenset(limited_routes)
        self.store = store
        self.clock = clock
        self.started_at = clock()
        self.ring = TrafficRing()
        self._sampler: asyncio.Task[None] | None = None
        # With several workers: the other workers' answers to a `console` question (app/worker_links.py),
        # added to this one's so the console shows the replica's traffic, not one worker's part of it.
        self.siblings: Callable[..., Awaitable[list[Any]]] | None = None

    # -- feeding the ring -------------------------------------------------------------------------

    def _model(self, record: RequestRecord) -> str | None:
        if record.model is None:
            return None
        name = normalize(record.model)
        # As the metrics' model label: a closed set (what the fleet lists), anything else is "other".
        return name if name in self.fleet.known_models() else "other"

    def observe(self, record: RequestRecord) -> None:
        route = record.route
        inference = route in self.inference_routes
        principal = record.principal
        keyed = principal is not None and principal.source == "key" and route in self.limited_routes
        if not (inference or keyed):
            return  # probes, scrapes and the console's own polling leave no trace in the figures
        now = self.clock()
        error = record.error_kind is not None
        if inference:
            self.ring.request(
                now,
                model=self._model(record),
                node=record.node,
                error=error,
                ttft=record.ttft if record.stream else None,
                tokens=record.completion_tokens or 0,
            )
        if keyed:
            assert principal is not None
            used = (record.prompt_tokens or 0) + (record.completion_tokens or 0)
            self.ring.key_use(now, principal.name, tokens=used, status=record.status, error=error)

    def sample(self) -> None:
        in_flight: dict[str, int] = {}
        total = 0
        for node in self.fleet:
            total += node.in_flight
            if node.in_flight:
                in_flight[f"node:{node.name}"] = node.in_flight
            for model, n in node.in_flight_by_model.items():
                in_flight[f"model:{model}"] = in_flight.get(f"model:{model}", 0) + n
        in_flight["all"] = total
        self.ring.sample(self.clock(), self.queue_len(), in_flight)

    async def _sample_forever(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(max(0.05, 1.0 - self.clock() % 1.0))  # once in every wall-clock second

    def start(self) -> None:
        if self._sampler is None:
            self._sampler = asyncio.get_running_loop().create_task(self._sample_forever())

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None

    # -- the API --------------------------------------------------------------------------------

    def _admin(self, record: RequestRecord) -> bool:
        """Whether the caller may see the whole fleet's figures: an admin key, or anyone while keys
        are off (the console is then read-only: the admin API refuses browser requests)."""
        principal = record.principal
        return not self.keys_on or (principal is not None and principal.is_admin)

    def _send(self, response: Response, record: RequestRecord, doc: object) -> None:
        response.extra_headers = [*response.extra_headers, *SECURITY_HEADERS, _NO_STORE]
        send_json(response, record, doc)

    async def session(self, request: Request, response: Response, record: RequestRecord) -> None:
        """Public: whether the page must ask for a key before it can show anything."""
        self._send(response, record, {"keys": self.keys_on})

    def _auth(self, record: RequestRecord) -> dict[str, Any]:
        p = record.principal
        return {
            "keys": self.keys_on,
            "name": p.name if p else None,
            "role": p.role.value if p else None,
            "models": list(p.models) if p else None,
            "admin": self.keys_on and p is not None and p.is_admin,
        }

    async def overview(self, request: Request, response: Response, record: RequestRecord) -> None:
        now = self.clock()
        doc = {
            "version": __version__,
            "now": now,
            "uptime_s": round(now - self.started_at, 1),
            "ready": self.fleet.any_up,
            "queue": {"waiting": self.queue_len(), "max": self.queue_max},
            "auth": self._auth(record),
            "nodes": [node_view(n, record) for n in self.fleet],
            "models": model_matrix(self.fleet, record, await self._routes(now)),
        }
        self._send(response, record, doc)

    def _scopes(self, record: RequestRecord, now: float) -> list[str]:
        seen = self.ring.scopes(now)
        models = {s[len("model:") :] for s in seen if s.startswith("model:")} | set(self.fleet.known_models())
        if self._admin(record):
            nodes = {s[len("node:") :] for s in seen if s.startswith("node:")} | set(self.fleet.names())
            return ["all", *(f"model:{m}" for m in sorted(models)), *(f"node:{n}" for n in sorted(nodes))]
        return ["all", *(f"model:{m}" for m in sorted(models) if m != "other" and visible(record, m))]

    async def traffic(self, request: Request, response: Response, record: RequestRecord) -> None:
        query = parse_qs(request.query.decode("latin-1"))
        window = _int_param(query, "window", WINDOW_S, 10, WINDOW_S)
        step = _int_param(query, "step", 5, 1, 60)
        scope = (query.get("scope") or ["all"])[-1]
        now = self.clock()
        allowed = self._scopes(record, now)
        if scope not in allowed:
            if not scope.startswith(("model:", "node:")) and scope != "all":
                raise InvalidRequest("scope: use all, model:NAME or node:NAME", param="scope")
            if scope.startswith("node:") and not self._admin(record):
                raise Forbidden("scope: per-node traffic needs an admin key", param="scope")
            if scope.startswith("model:") and not visible(record, scope[len("model:") :]):
                raise Forbidden(f"scope: this key may not see {scope}", param="scope")
        summed = [scope]
        if scope == "all" and not self._admin(record):
            summed = [s for s in allowed if s != "all"]  # a user key's traffic is that of its models
        steps = self.ring.steps(now, summed, window, step)
        if self.siblings is not None:
            for rows in await self.siblings("console", part="steps", now=now, scopes=summed, window=window, step=step):
                if isinstance(rows, list):
                    steps.add(rows)
        series = steps.series()
        doc = {
            "scope": scope,
            "scopes": allowed,
            "window_s": window,
            "step_s": step,
            "now": now,
            "t": series.t,
            "requests_s": _rounded(list(series.requests_s)),
            "errors_s": _rounded(list(series.errors_s)),
            "tokens_s": _rounded(list(series.tokens_s)),
            "ttft_p50_s": _rounded(series.ttft_p50),
            "ttft_p99_s": _rounded(series.ttft_p99),
            "queue": series.queue,
            "in_flight": series.in_flight,
        }
        self._send(response, record, doc)

    async def _routes(self, now: float) -> dict[str, dict[str, int]]:
        routes = self.ring.routes(now)
        if self.siblings is not None:
            for other in await self.siblings("console", part="routes", now=now):
                if isinstance(other, dict):
                    add_routes(routes, other)
        return routes

    def answer_sibling(self, message: dict[str, Any]) -> object:
        """This worker's part of the figures another worker of the replica was asked for."""
        now = float(message.get("now") or self.clock())
        part = message.get("part")
        if part == "steps":
            scopes = [str(s) for s in message.get("scopes") or []]
            window, step = int(message.get("window") or WINDOW_S), int(message.get("step") or 5)
            return self.ring.steps(now, scopes, window, step).rows()
        if part == "routes":
            return self.ring.routes(now)
        if part == "keys":
            return [key_rows(self.ring.keys(now, 60)), key_rows(self.ring.keys(now, 300))]
        return None

    async def keys(self, request: Request, response: Response, record: RequestRecord) -> None:
        """Admin: every key with its limits and its use of them on this replica (requests and tokens
        over the last minute, against rpm and tpm; refusals over the last five)."""
        assert self.store is not None  # bound only with a key store
        now = self.clock()
        minute, five = self.ring.keys(now, 60), self.ring.keys(now, 300)
        if self.siblings is not None:
            for answer in await self.siblings("console", part="keys", now=now):
                if isinstance(answer, list) and len(answer) == 2:
                    add_keys(minute, answer[0])
                    add_keys(five, answer[1])
        out = []
        for key in await self.store.list(include_revoked=True):
            view = key_view(key)
            last, recent = minute.get(key.name), five.get(key.name)
            view["usage"] = {
                "requests_1m": last.requests if last else 0,
                "tokens_1m": last.tokens if last else 0,
                "throttled_5m": recent.throttled if recent else 0,
                "errors_5m": recent.errors if recent else 0,
            }
            out.append(view)
        self._send(response, record, {"keys": out, "now": now})
