"""The proxy: pick a node, send the request's bytes, relay the answer's bytes as they arrive.

Bodies are passed through untouched. Only `model` and a few routing fields are read (by the caller);
nothing is re-encoded. Before the first byte reaches the client, connection errors, timeouts and
502/503 answers are retried on another node; after it, a failure ends the stream with an error frame
in the stream's own format.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

from corral.adapters.metrics import load_seconds
from corral.app.context import ApiFamily, RequestRecord, is_uuid
from corral.app.fleet import Fleet, Node
from corral.app.translation import Translation
from corral.config import RoutingSettings, TimeoutSettings
from corral.domain.admission import Entry, FairQueue, QueueFullError
from corral.domain.errors import (
    GatewayError,
    NoHealthyNode,
    NoSuchModel,
    QueueFull,
    QueueTimeout,
    UpstreamError,
    UpstreamMidstream,
    UpstreamTimeout,
)
from corral.domain.fleet import LoadedModel, NodeKind, NoRoute, NoRouteReason, RouteRequest
from corral.domain.routing import Strategy
from corral.net.client import UpstreamConnection, UpstreamResponse, build_head
from corral.net.response import Headers, Request, Response
from corral.protocol import wire

if TYPE_CHECKING:
    from corral.adapters.tracing import Tracing

log = logging.getLogger(__name__)

# Never forwarded to a node: hop-by-hop headers, the client's credentials, browser origin, our own.
DROP_REQUEST = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
        b"authorization",
        b"x-api-key",
        b"proxy-authorization",
        b"cookie",
        b"origin",
        b"x-corral-node",
        b"x-request-id",
    }
)
DROP_RESPONSE = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"trailer",
        b"upgrade",
        b"content-length",
        b"server",
        b"date",
        b"x-request-id",
        b"x-corral-node",
        b"access-control-allow-origin",
        b"vary",
    }
)
RETRY_STATUSES = frozenset({502, 503})
_TAIL = 4096
_NATIVE_COUNTS = (re.compile(rb'"prompt_eval_count":(\d+)'), re.compile(rb'"eval_count":(\d+)'))
_OPENAI_COUNTS = (re.compile(rb'"prompt_tokens":(\d+)'), re.compile(rb'"completion_tokens":(\d+)'))


@dataclass(frozen=True, slots=True)
class Outbound:
    """What to send to the chosen node."""

    method: str
    target: bytes  # path and query, as received (raw, not re-encoded)
    headers: Headers
    body: bytes


class Relay:
    """Copies one node response to the client as it arrives, keeping the last bytes for accounting."""

    __slots__ = ("conn", "first_at", "response", "tail")

    def __init__(self, conn: UpstreamConnection, response: Response) -> None:
        self.conn = conn
        self.response = response
        self.tail = b""
        self.first_at = 0.0

    def __call__(self, data: bytes) -> None:
        if not self.first_at:
            self.first_at = perf_counter()
        tail = self.tail + data if len(data) < _TAIL else data
        self.tail = tail[-_TAIL:]
        if not self.response.write_nowait(data):
            self.conn.pause()
            self.response.on_writable(self.conn.resume)


def forward_headers(request: Request, request_id: str) -> Headers:
    out = [(k, v) for k, v in request.headers if k not in DROP_REQUEST]
    out.append((b"x-request-id", request_id.encode()))
    return out


def openai_node_headers(headers: Headers) -> Headers:
    """OpenAI-compatible servers may insist that X-Request-ID be a UUID (llama-cpp-python does)."""
    return [(k, v) for k, v in headers if k != b"x-request-id" or is_uuid(v.decode("latin-1"))]


def count_tokens(tail: bytes, family: ApiFamily, record: RequestRecord) -> None:
    patterns = _OPENAI_COUNTS if family is ApiFamily.OPENAI else _NATIVE_COUNTS
    prompt = patterns[0].findall(tail)
    completion = patterns[1].findall(tail)
    if prompt:
        record.prompt_tokens = int(prompt[-1])
    if completion:
        record.completion_tokens = int(completion[-1])


class Proxy:
    def __init__(
        self,
        fleet: Fleet,
        strategy: Strategy,
        routing: RoutingSettings,
        timeouts: TimeoutSettings,
        queue_max: int,
        queue_wait_s: float,
        expose_node: bool = True,
        tracing: Tracing | None = None,
    ) -> None:
        self.fleet = fleet
        self.tracing = tracing
        self.strategy = strategy
        self.routing = routing
        self.timeouts = timeouts
        self.queue_max = queue_max
        self.queue_wait_s = queue_wait_s
        self.expose_node = expose_node
        self.queue: FairQueue[tuple[RouteRequest, asyncio.Future[Node]]] = FairQueue(queue_max, queue_wait_s)
        self.loop = asyncio.get_running_loop()
        fleet.on_capacity = self.dispatch

    # choosing a node

    def _try_pick(self, route: RouteRequest, now: float) -> Node | NoRoute:
        """A node for `route` now, with its slot taken (node.begin), or why not."""
        snapshot = self.fleet.snapshot(now)
        while True:
            decision = self.strategy.pick(snapshot, route, now)
            if isinstance(decision, NoRoute):
                return decision
            node = self.fleet.get(decision.node)
            if node is not None and node.breaker.admit(now):
                node.begin(route.model)
                return node
            # The breaker refused its half-open trial to this request: try the others.
            route = RouteRequest(
                route.model, route.options_key, route.affinity, route.exclude | {decision.node}, route.est_tokens
            )

    async def choose(self, route: RouteRequest, record: RequestRecord) -> Node:
        """A node for the request, its slot taken. While every suitable node is full, the request waits
        in the fair admission queue (bounded in length and wait)."""
        now = self.loop.time()
        found = self._try_pick(route, now)
        if isinstance(found, Node):
            return found
        if found.reason is NoRouteReason.NO_SUCH_MODEL:
            raise NoSuchModel(f"model '{record.model}' not found")
        if found.reason is NoRouteReason.NO_HEALTHY_NODE:
            raise NoHealthyNode(f"no healthy node can serve model '{record.model}'", retry_after=5)
        future: asyncio.Future[Node] = self.loop.create_future()
        try:
            entry = self.queue.push(record.key_name or record.client_ip, record.priority, now, (route, future))
        except QueueFullError:
            raise QueueFull(
                "server busy, please try again.  maximum pending requests exceeded", retry_after=1
            ) from None
        timer = self.loop.call_at(entry.deadline, self._expire, entry)
        waited_from = perf_counter()
        try:
            return await future
        except asyncio.CancelledError:
            # The client left just as a slot was handed over: give the slot back.
            if future.done() and not future.cancelled() and future.exception() is None:
                future.result().end(route.model)
                self.fleet.slot_freed()
            raise
        finally:
            timer.cancel()
            self.queue.remove(entry)
            record.queued_s += perf_counter() - waited_from

    @property
    def waiting(self) -> int:
        return len(self.queue)

    def _expire(self, entry: Entry[tuple[RouteRequest, asyncio.Future[Node]]]) -> None:
        if self.queue.remove(entry):
            _, future = entry.payload
            if not future.done():
                future.set_exception(
                    QueueTimeout(
                        f"server busy, please try again.  no node had a free slot within {self.queue_wait_s:g}s",
                        retry_after=2,
                    )
                )

    def dispatch(self) -> None:
        """Capacity may have freed: hand it to waiting requests in fair order."""
        if not len(self.queue):
            return
        now = self.loop.time()

        def admit(entry: Entry[tuple[RouteRequest, asyncio.Future[Node]]]) -> bool:
            route, future = entry.payload
            if future.done():
                return True  # the client left; drop the entry
            found = self._try_pick(route, now)
            if isinstance(found, Node):
                future.set_result(found)
                return True
            if found.reason is not NoRouteReason.ALL_FULL:
                # The model's nodes went away while it waited: answer now rather than at the deadline.
                error: GatewayError = (
                    NoSuchModel(f"model '{route.model}' not found")
                    if found.reason is NoRouteReason.NO_SUCH_MODEL
                    else NoHealthyNode(f"no healthy node can serve model '{route.model}'", retry_after=5)
                )
                future.set_exception(error)
                return True
            return False

        self.queue.serve(admit)

    # the exchange

    async def forward_to(
        self,
        node: Node,
        request: Request,
        response: Response,
        record: RequestRecord,
        out: Outbound,
        before_end: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        """One try on a node the client named; no other node is suitable. `before_end(status)` runs
        after the node's answer is relayed and before the response is closed."""
        record.attempts = 1
        node.begin("")
        error = await self._attempt(node, response, record, RouteRequest(model=""), out, before_end=before_end)
        if error is not None:
            raise error

    async def forward(
        self,
        request: Request,
        response: Response,
        record: RequestRecord,
        route: RouteRequest,
        out: Outbound,
        doc: dict[str, Any] | None = None,
    ) -> None:
        """Send `out` to a node chosen for `route` and relay the answer to the client."""
        tried: set[str] = set(route.exclude)
        last_error: GatewayError | None = None
        for attempt in range(self.routing.retries + 1):
            if attempt:
                await asyncio.sleep(self.routing.retry_backoff_s * (2 ** (attempt - 1)))
                route = RouteRequest(route.model, route.options_key, route.affinity, frozenset(tried), route.est_tokens)
            try:
                node = await self.choose(route, record)
            except (NoHealthyNode, NoSuchModel) as exc:
                if last_error is not None:
                    raise last_error from exc
                raise
            tried.add(node.name)
            record.node = node.name
            record.attempts = attempt + 1
            done = await self._attempt(node, response, record, route, out, doc)
            if done is None:
                return
            last_error = done
            if response.started or not done.retryable:
                return
        assert last_error is not None
        raise last_error

    async def _attempt(
        self,
        node: Node,
        response: Response,
        record: RequestRecord,
        route: RouteRequest,
        out: Outbound,
        doc: dict[str, Any] | None = None,
        before_end: Callable[[int], Awaitable[None]] | None = None,
    ) -> UpstreamError | None:
        """One try on one node. Returns the error if another node may be tried, None when finished."""
        model = route.model
        cold = self._note_dispatch(node, route) if model else False
        sent_at = self.loop.time()
        translation: Translation | None = None
        if node.kind is NodeKind.OPENAI and record.family is ApiFamily.OLLAMA and doc is not None:
            translation = Translation(record.route, doc, time.time_ns())
            out = translation.outbound(openai_node_headers(out.headers))
        elif node.kind is NodeKind.OPENAI:
            out = Outbound(out.method, out.target, openai_node_headers(out.headers), out.body)
        conn: UpstreamConnection | None = None
        span = None
        if self.tracing is not None and record.span is not None:
            span, trace_headers = self.tracing.start_attempt(record.span, node.name, record.attempts)  # type: ignore[arg-type]
            out = Outbound(out.method, out.target, [*out.headers, *trace_headers], out.body)
        try:
            conn, upstream = await self._exchange(node, out)
            head_at = self.loop.time()
            if model and upstream.status < 400:
                self.strategy.first_token(node.name, model, route.options_key, head_at, timed=record.stream)
            if upstream.status in RETRY_STATUSES and self.routing.retries:
                body = await self._read_all(conn)
                if upstream.status == 502:
                    node.breaker.record_failure(self.loop.time())
                node.failures_total += 1
                node.last_error = f"HTTP {upstream.status}"
                err = UpstreamError(f"node {node.name} answered {upstream.status}")
                err.status = upstream.status
                if translation is not None:
                    body = translation.error_body(upstream.status, body)
                self._remember_body(err, upstream, body)
                return err
            if translation is not None:
                await self._relay_translated(conn, upstream, node, response, record, translation)
            else:
                await self._relay(conn, upstream, node, response, record, before_end)
            ended_at = self.loop.time()
            node.breaker.record_success(ended_at)
            if model and upstream.status < 400 and (record.stream or not cold):
                self.strategy.finished(node.name, model, ended_at - (head_at if record.stream else sent_at), ended_at)
            if record.completion_tokens:
                node.completion_tokens_total += record.completion_tokens
            if record.ttft is not None and record.stream:
                node.ttft_sum += record.ttft
                node.ttft_count += 1
            return None
        except UpstreamError as exc:
            node.breaker.record_failure(self.loop.time())
            node.failures_total += 1
            node.last_error = exc.message
            if response.started:
                self._end_broken_stream(response, record, exc)
                return None
            return exc
        finally:
            if span is not None and self.tracing is not None:
                self.tracing.end_attempt(span, record.status or None, record.error)
            if conn is not None:
                conn.release()
            node.end(model)
            self.fleet.slot_freed()

    async def _exchange(self, node: Node, out: Outbound) -> tuple[UpstreamConnection, UpstreamResponse]:
        pool = node.pool
        target = node.settings.base_path.encode() + out.target if node.settings.base_path else out.target
        head = build_head(
            out.method,
            target,
            pool.host_header,
            out.headers,
            len(out.body) if out.body or out.method in ("POST", "PUT", "DELETE") else None,
        )
        for fresh in (False, True):
            conn = await pool.acquire(self.timeouts.connect_s)
            conn.head_request = out.method == "HEAD"
            conn.send(head, out.body, self.timeouts.first_byte_s)
            try:
                return conn, await conn.response()
            except UpstreamTimeout:
                conn.close()
                raise
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

    async def _read_all(self, conn: UpstreamConnection) -> bytes:
        chunks: list[bytes] = []
        conn.attach(chunks.append)
        try:
            async with asyncio.timeout(self.timeouts.idle_s):
                await conn.finished()
        except (TimeoutError, UpstreamError):
            conn.close()
        return b"".join(chunks)

    def _remember_body(self, err: UpstreamError, upstream: UpstreamResponse, body: bytes) -> None:
        err.upstream_body = body  # type: ignore[attr-defined]
        err.upstream_headers = upstream.headers  # type: ignore[attr-defined]

    def _own_headers(self, record: RequestRecord, node: Node) -> Headers:
        own = [(b"x-request-id", record.request_id.encode())]
        if self.expose_node:
            own.append((b"x-corral-node", node.name.encode()))
        return own

    async def _relay(
        self,
        conn: UpstreamConnection,
        upstream: UpstreamResponse,
        node: Node,
        response: Response,
        record: RequestRecord,
        before_end: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        headers = [(k, v) for k, v in upstream.headers if k not in DROP_RESPONSE]
        headers += self._own_headers(record, node)
        length = None if upstream.chunked else upstream.content_length
        response.start(upstream.status, headers, length, hold=True)
        record.status = upstream.status
        relay = Relay(conn, response)
        conn.watch(self.timeouts.idle_s, self.timeouts.total_s)
        conn.attach(relay)
        response.flush()  # the head, if no body had arrived with it
        try:
            await conn.finished()
        finally:
            if relay.first_at:
                record.ttft = relay.first_at - record.started
            count_tokens(relay.tail, record.family, record)
            record.load_s = load_seconds(relay.tail)
        if before_end is not None:
            await before_end(upstream.status)
        response.end()

    async def _relay_translated(
        self,
        conn: UpstreamConnection,
        upstream: UpstreamResponse,
        node: Node,
        response: Response,
        record: RequestRecord,
        translation: Translation,
    ) -> None:
        """An OpenAI-type node answering a native request: SSE or JSON in, Ollama's NDJSON or JSON out."""
        headers = self._own_headers(record, node)
        if upstream.status != 200:
            body = translation.error_body(upstream.status, await self._read_all(conn))
            record.status = upstream.status
            response.send(upstream.status, [(b"content-type", wire.JSON), *headers], body)
            return
        conn.watch(self.timeouts.idle_s, self.timeouts.total_s)
        if not translation.stream:
            body = await self._read_all_checked(conn)
            record.status = 200
            response.send(200, [(b"content-type", wire.JSON), *headers], translation.whole(body, time.time_ns()))
            translation.count(record)
            return
        response.start(200, [(b"content-type", wire.NDJSON), *headers], hold=True)
        record.status = 200
        stream = translation.streamer()

        def sink(data: bytes) -> None:
            out = stream.feed(data, time.time_ns())
            if out:
                if record.ttft is None:
                    record.ttft = perf_counter() - record.started
                if not response.write_nowait(out):
                    conn.pause()
                    response.on_writable(conn.resume)

        conn.attach(sink)
        response.flush()
        try:
            await conn.finished()
        except UpstreamError as exc:
            response.write_nowait(stream.error_line(f"node {node.name} failed mid-stream: {exc.message}"))
            response.end()
            translation.count(record, stream)
            raise UpstreamMidstream(exc.message) from exc
        response.write_nowait(stream.finish(time.time_ns()))
        response.end()
        translation.count(record, stream)

    async def _read_all_checked(self, conn: UpstreamConnection) -> bytes:
        chunks: list[bytes] = []
        conn.attach(chunks.append)
        await conn.finished()
        return b"".join(chunks)

    def _end_broken_stream(self, response: Response, record: RequestRecord, exc: UpstreamError) -> None:
        message = f"node {record.node} failed mid-stream: {exc.message}"
        record.error_kind = UpstreamMidstream.kind
        record.error = message
        if not response.started or response.finished:
            return
        if response.content_type_sse:
            response.write_nowait(wire.sse_error_event(message, UpstreamMidstream.kind.value))
            response.end()
        elif response.chunked:
            response.write_nowait(wire.ndjson_error_line(message))
            response.end()
        else:
            response.abort()

    def _note_dispatch(self, node: Node, route: RouteRequest) -> bool:
        """Apply our own dispatch to the residency view at once (polls lag; see fleet-model.md §9).
        True when the model was not loaded there with these options (the request waits for a load)."""
        for loaded in node.loaded:
            if loaded.model == route.model and loaded.options_key == route.options_key:
                return False
        kept = tuple(m for m in node.loaded if m.model != route.model)
        node.loaded = (*kept, LoadedModel(route.model, route.options_key))
        return True
