"""The attempt loop: send a request to a node, and to another while nothing has reached the client.

What is retried elsewhere: a node that cannot be reached, a 502/503 answer (the node refused the
work), a 500 saying the model does not fit the node's memory, and a 404 "model not found" from a
node whose model list was stale (its list is refreshed).
What is never replayed: a request a node accepted and is still working on (a timeout waiting for its
answer), and anything after the first byte went to the client; a stream that breaks then ends with
an error frame in its own format.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from corral.app.admission import Admission
from corral.app.context import ApiFamily, RequestRecord
from corral.app.downstream import Downstream
from corral.app.fleet import Fleet, Node
from corral.app.headers import DROP_RESPONSE, Outbound, openai_node_headers
from corral.app.naming import choose, for_node
from corral.app.relay import end_broken_stream, framing, read_all, relay, relay_translated
from corral.app.translation import Translation
from corral.config import RoutingSettings, TimeoutSettings
from corral.domain.errors import (
    GatewayError,
    NoHealthyNode,
    NoSuchModel,
    Overloaded,
    UpstreamAnswerTimeout,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
)
from corral.domain.fit import is_fit_refusal
from corral.domain.fleet import LoadedModel, NodeKind, RouteRequest
from corral.domain.routing import Strategy
from corral.net.client import UpstreamConnection, UpstreamResponse, build_head
from corral.net.response import Headers

RETRY_STATUSES = frozenset({502, 503})
BeforeEnd = Callable[[int], Awaitable[None]]


class Forwarder:
    def __init__(
        self,
        fleet: Fleet,
        admission: Admission,
        strategy: Strategy,
        routing: RoutingSettings,
        timeouts: TimeoutSettings,
        expose_node: bool = True,
        on_stale: Callable[[Node], None] | None = None,
    ) -> None:
        self.fleet = fleet
        self.admission = admission
        self.strategy = strategy
        self.routing = routing
        self.timeouts = timeouts
        self.expose_node = expose_node
        self.on_stale = on_stale
        self.loop = asyncio.get_running_loop()

    async def forward(
        self,
        record: RequestRecord,
        route: RouteRequest,
        out: Outbound,
        downstream: Downstream,
        doc: dict[str, Any] | None = None,
        fallbacks: Sequence[RouteRequest] = (),
        requested: str | None = None,
    ) -> None:
        """Send `out` to a node chosen for `route` (or, when none can take it, for the first of
        `fallbacks` that can) and relay the answer into `downstream`. `requested`: the model name
        the client sent, echoed in the answer where a node knows the model by another name."""
        chain = (route, *fallbacks)
        tried: set[str] = set(route.exclude)
        last_error: GatewayError | None = None
        display = self.fleet.catalog.display
        for attempt in range(self.routing.retries + 1):
            if attempt:
                await asyncio.sleep(self.routing.retry_backoff_s * (2 ** (attempt - 1)))
            try:
                node, route, place = await choose(self.admission, chain, frozenset(tried), record)
            except (NoHealthyNode, NoSuchModel, Overloaded) as exc:
                if last_error is not None:  # a retry found no node: the node's own error says more
                    raise last_error from exc
                raise
            if route.model:
                record.served_model = display(route.model)
                record.fallback_from = display(chain[0].model) if place else None
            tried.add(node.name)
            record.node = node.name
            record.attempts = attempt + 1
            error = await self.attempt(node, downstream, record, route, out, doc, requested=requested)
            if error is None:
                return
            last_error = error
            if downstream.started or not error.retryable:
                break
        assert last_error is not None
        raise last_error

    async def forward_to(
        self, node: Node, record: RequestRecord, out: Outbound, downstream: Downstream, before_end: BeforeEnd | None
    ) -> None:
        """One try on the node the client named (model management: no other node is suitable, and
        no gateway timeout shorter than `timeouts.total_s`). `before_end(status)` runs after the
        node's answer is relayed and before the downstream is ended."""
        record.attempts = 1
        node.begin("")
        error = await self.attempt(node, downstream, record, RouteRequest(model=""), out, None, before_end)
        if error is not None:
            raise error

    def _head_timeout(self, record: RequestRecord, route: RouteRequest) -> float:
        if not route.model:
            return self.timeouts.total_s
        return self.timeouts.first_byte_s if record.stream else self.timeouts.answer_s

    def _prepare(self, node: Node, record: RequestRecord, out: Outbound, doc: dict[str, Any] | None) -> Any:
        """What this node is sent: a native request translated for an OpenAI-type node."""
        if node.kind is not NodeKind.OPENAI:
            return out, None
        if record.family is ApiFamily.OLLAMA and doc is not None:
            translation = Translation(record.route, doc, time.time_ns())
            return translation.outbound(openai_node_headers(out.headers)), translation
        body = out.canonical if out.canonical is not None else out.body
        headers = openai_node_headers(out.headers)
        return Outbound(out.method, out.target, headers, body), None

    async def attempt(
        self,
        node: Node,
        downstream: Downstream,
        record: RequestRecord,
        route: RouteRequest,
        out: Outbound,
        doc: dict[str, Any] | None = None,
        before_end: BeforeEnd | None = None,
        requested: str | None = None,
    ) -> UpstreamError | None:
        """One try on one node (its slot already taken). Returns the error if another node may be
        tried, None when the request is finished (answered, or its stream ended with an error frame)."""
        model = route.model
        cold = self._note_dispatch(node, route) if model else False
        sent_at = self.loop.time()
        out, doc, echo = for_node(node, model, requested, out, doc)
        prepared: tuple[Outbound, Translation | None] = self._prepare(node, record, out, doc)
        out, translation = prepared
        if translation is not None and echo is not None:
            translation.model, echo = requested or translation.model, None  # it writes the name itself
        trace = None
        if record.span is not None:
            trace, trace_headers = record.span.attempt(node.name, record.attempts)
            out = Outbound(out.method, out.target, [*out.headers, *trace_headers], out.body)
        conn: UpstreamConnection | None = None
        frames: str | None = None
        head_at: float | None = None
        head_status = 0
        learnt = failed = False
        try:
            conn, upstream = await self._exchange(node, out, self._head_timeout(record, route))
            head_at = self.loop.time()
            head_status = upstream.status
            if model and upstream.status < 400:
                self.strategy.first_token(
                    node.name, model, route.options_key, head_at, timed=record.stream, sent_at=sent_at
                )
            refused = await self._refused(node, conn, upstream, route, translation)
            if isinstance(refused, UpstreamStatus):
                return refused
            if refused is not None:  # read to look at it, and not for another node: passed on as it is
                headers = [(k, v) for k, v in upstream.headers if k not in DROP_RESPONSE]
                record.status = upstream.status
                downstream.send(upstream.status, [*headers, *self._own_headers(record, node)], refused)
                learnt = True
                self._learn(node, record, route, upstream.status, cold, sent_at, head_at)
                return None
            frames = framing(upstream)
            conn.watch(self.timeouts.idle_s, self.timeouts.total_s)
            own = self._own_headers(record, node)
            if translation is not None:
                await relay_translated(conn, upstream, own, downstream, record, translation, self.timeouts.idle_s)
            else:
                await relay(conn, upstream, own, downstream, record, echo)
                if before_end is not None:
                    await before_end(upstream.status)
                downstream.end()
            learnt = True
            self._learn(node, record, route, upstream.status, cold, sent_at, head_at)
            return None
        except UpstreamError as exc:
            failed = head_at is None  # no answer at all (with one, head_status says how it went)
            node.breaker.record_failure(self.loop.time())
            node.failures_total += 1
            node.last_error = exc.message
            if downstream.started:
                end_broken_stream(downstream, record, exc, frames)
                return None
            return exc
        finally:
            if trace is not None:
                trace.end(record.status or None, record.error)
            if conn is not None:
                conn.release()
            if model and (head_at is not None or failed) and not learnt:
                # Cut short (the client left, the stream broke) or never answered: the strategy forgets
                # the request without learning from it, or the next answer to end there is taken for it
                # and teaches its whole expected output in that time, a rate far too fast
                # (queue.shed_after_s then sees no wait behind a long generation).
                self.strategy.finished(
                    node.name, model, 0.0, self.loop.time(), output=route.est_output, started=0 < head_status < 400
                )
            if model and cold and (failed or head_status >= 400):
                self.strategy.load_failed(node.name, model, route.options_key, sent_at)
            node.end(model)
            self.fleet.capacity_changed(node)

    async def _refused(
        self,
        node: Node,
        conn: UpstreamConnection,
        upstream: UpstreamResponse,
        route: RouteRequest,
        translation: Translation | None,
    ) -> UpstreamStatus | bytes | None:
        """An answer another node should get a chance at: the node refused the work (502/503), cannot
        fit the model (a 500 saying so, corral/domain/fit.py), or says it lacks a model our view said
        it had (its list was stale). Its body is kept, to be passed on
        if no other node can serve. A 404 read for nothing of the kind comes back as its body."""
        status = upstream.status
        if status == 500 and route.model:
            body = await read_all(conn, self.timeouts.idle_s)
            if not is_fit_refusal(status, body):
                return translation.error_body(status, body) if translation is not None else body
            # The model does not fit this node: keep it off, and let a node it fits load it.
            node.refuse(route.model, self.loop.time())
            node.last_error = f"HTTP {status}: {route.model} does not fit"
            if not self.routing.retries:
                return translation.error_body(status, body) if translation is not None else body
            return _as_refusal(node, status, body, upstream, translation)
        if not self.routing.retries:
            return None
        if status in RETRY_STATUSES:
            body = await read_all(conn, self.timeouts.idle_s)
            if status == 502:
                node.breaker.record_failure(self.loop.time())
            node.failures_total += 1
            node.last_error = f"HTTP {status}"
        elif status == 404 and route.model:
            body = await read_all(conn, self.timeouts.idle_s)
            if b"model" not in body or b"not found" not in body:  # e.g. "404 page not found": no such route
                return translation.error_body(status, body) if translation is not None else body
            node.forget_model(route.model)
            if self.on_stale is not None:
                self.on_stale(node)
        else:
            return None
        return _as_refusal(node, status, body, upstream, translation)

    async def _exchange(
        self, node: Node, out: Outbound, head_timeout_s: float
    ) -> tuple[UpstreamConnection, UpstreamResponse]:
        pool = node.pool
        prefix = node.path_prefix
        target = prefix + out.target if prefix else out.target
        body_len = len(out.body) if out.body or out.method in ("POST", "PUT", "DELETE") else None
        head = build_head(out.method, target, pool.host_header, out.headers, body_len)
        for fresh in (False, True):
            conn = await pool.acquire(self.timeouts.connect_s)
            conn.head_request = out.method == "HEAD"
            conn.send(head, out.body, head_timeout_s)
            try:
                return conn, await conn.response()
            except UpstreamTimeout as exc:
                conn.close()
                # The node has the request and may be working on it: never replay it elsewhere.
                raise UpstreamAnswerTimeout(exc.message) from exc
            except UpstreamError:
                conn.close()
                # A reused keep-alive connection the node had already closed: try once on a new one.
                if conn.reused and not fresh:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def _own_headers(self, record: RequestRecord, node: Node) -> Headers:
        own = [(b"x-request-id", record.request_id.encode())]
        if self.expose_node:
            own.append((b"x-corral-node", node.name.encode()))
        if record.served_model is not None:
            own.append((b"x-corral-model", record.served_model.encode()))
        return own

    def _learn(
        self, node: Node, record: RequestRecord, route: RouteRequest, status: int, cold: bool, sent: float, head: float
    ) -> None:
        """Feed what this exchange showed to the breaker, the strategy and the node's counters."""
        ended_at = self.loop.time()
        node.breaker.record_success(ended_at)
        if route.model and status < 400 and (record.stream or not cold):
            self.strategy.finished(node.name, route.model, ended_at - (head if record.stream else sent), ended_at)
        elif route.model:  # an error answer, or a cold one whose time is mostly the load: forgotten only
            self.strategy.finished(node.name, route.model, 0.0, ended_at, output=route.est_output, started=status < 400)
        if record.completion_tokens:
            node.completion_tokens_total += record.completion_tokens
        if record.ttft is not None and record.stream:
            node.ttft_sum += record.ttft
            node.ttft_count += 1

    def _note_dispatch(self, node: Node, route: RouteRequest) -> bool:
        """Apply our own dispatch to the residency view at once (polls lag; see docs/routing.md).
        True when the model was not loaded there with these options (the request waits for a load)."""
        for loaded in node.loaded:
            if loaded.model == route.model and loaded.options_key == route.options_key:
                return False
        kept = tuple(m for m in node.loaded if m.model != route.model)
        node.loaded = (*kept, LoadedModel(route.model, route.options_key))
        return True


def _as_refusal(
    node: Node, status: int, body: bytes, upstream: UpstreamResponse, translation: Translation | None
) -> UpstreamStatus:
    if translation is not None:
        body = translation.error_body(status, body)
    return UpstreamStatus(f"node {node.name} answered {status}", status, body, upstream.headers)
