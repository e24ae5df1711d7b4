"""The request pipeline: the one place that turns a request into a handler call and any error into a
response in the route's own API shape.

Order: error rendering (outermost) → request id → record for the observers (access log, metrics)
→ guards (auth, limits: later stages plug in here) → route handler.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from time import perf_counter
from typing import TYPE_CHECKING

from corral.app.context import ApiFamily, Observer, RequestRecord, request_id
from corral.app.downstream import Recorded
from corral.app.router import Router
from corral.app.routes import Access, Body, RouteSpec
from corral.domain.cors import ALLOW_HEADERS, ALLOW_METHODS, MAX_AGE, CorsPolicy
from corral.domain.errors import ErrorKind, Forbidden, GatewayError, MethodNotAllowed, UpstreamStatus
from corral.domain.hosts import host_allowed
from corral.net.response import Request, Response
from corral.protocol import wire

if TYPE_CHECKING:
    from corral.adapters.tracing import Tracing

log = logging.getLogger(__name__)

ERROR_LOG_CHARS = 500

Guard = Callable[[Request, RequestRecord, RouteSpec], Awaitable[Recorded | None] | Recorded | None]
"""A pipeline stage before the handler: raises a GatewayError to refuse, returns a `Recorded` answer to
answer in the handler's place (a cache hit), or None to let the request through."""


class ClientAddress:
    """The client's IP: the peer's, or, when the peer is a trusted proxy, the right-most address in
    X-Forwarded-For that is not itself a trusted proxy."""

    def __init__(self, trusted: Sequence[str]) -> None:
        self.trusted = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in trusted)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def __call__(self, request: Request) -> str:
        peer = request.client[0]
        if not self.trusted or not self._is_trusted(peer):
            return peer
        # Every X-Forwarded-For line counts, in order (RFC 9110 §5.3: several lines are one list), so a
        # client cannot hide behind a second line of its own after the trusted proxy's.
        lines = [v for k, v in request.headers if k == b"x-forwarded-for"]
        if not lines:
            return peer
        for hop in reversed(b",".join(lines).decode("latin-1").split(",")):
            hop = hop.strip()
            if hop and not self._is_trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # a malformed header is not believed
        return peer


class HostCheck:
    """Ollama's defence against DNS rebinding, for a gateway bound to a loopback address: a request
    whose Host is not local is refused (corral.domain.hosts). Off when bound elsewhere, as in Ollama."""

    def __init__(self, extra: Collection[str], hostname: str, local_ips: Collection[str]) -> None:
        self.extra = tuple(extra)
        self.hostname = hostname
        self.local_ips = frozenset(local_ips)
        self._seen: dict[bytes | None, bool] = {}  # a client names the same Host on every request

    def __call__(self, request: Request) -> bool:
        host = request.header(b"host")
        allowed = self._seen.get(host)
        if allowed is None:
            allowed = host_allowed(
                host.decode("latin-1") if host is not None else None,
                extra=self.extra,
                hostname=self.hostname,
                local_ips=self.local_ips,
            )
            if len(self._seen) >= 1024:  # bounded: hostile clients may send a new name each time
                self._seen.clear()
            self._seen[host] = allowed
        return allowed


class Gateway:
    def __init__(
        self,
        router: Router,
        observers: Sequence[Observer],
        cors: CorsPolicy | None = None,
        client_ip: ClientAddress | None = None,
        tracing: Tracing | None = None,
        host_check: HostCheck | None = None,
        keys_required: bool = False,
        max_body_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.router = router
        self.max_body_bytes = max_body_bytes
        self.tracing = tracing
        self.client_ip = client_ip or ClientAddress(())
        self.cors = cors
        self.host_check = host_check
        self.keys_required = keys_required
        self.observers = list(observers)
        self.guards: list[Guard] = []
        self.loop = asyncio.get_running_loop()

    async def __call__(self, request: Request, response: Response) -> None:
        record = RequestRecord(
            request_id(request.header(b"x-request-id")),
            request.method,
            request.path,
            self.client_ip(request),
            perf_counter(),
        )
        path = record.path
        if path.startswith("/v1/"):
            record.family = ApiFamily.OPENAI
        try:
            origin = request.header(b"origin")
            if origin is not None and self.cors is not None and self._cors(request, response, record, origin):
                return
            route = self.router.match(path)
            if route is None:
                record.route = "unmatched"
                self._plain(response, record, 404, b"404 page not found")
                return
            spec = route.spec(request.method)
            record.route = spec.path
            record.family = spec.family
            if self.host_check is not None and spec.access is not Access.PUBLIC and not self.host_check(request):
                # Probes (/health, /ready) answer any Host: load balancers and orchestrators name it freely.
                self._plain(response, record, 403, b"")
                return
            if self.tracing is not None:
                record.span = self.tracing.start_request(request.method, spec.path, request.headers)
            if spec.access is Access.ADMIN and origin is not None and not self.keys_required:
                # Without keys, the admin plane is reachable only by local tools, never by a web page.
                raise Forbidden(f"{spec.path} refuses browser requests while API keys are off")
            for guard in self.guards:  # before anything about the route is answered, OPTIONS included
                answer = guard(request, record, spec)
                if answer is not None and not isinstance(answer, Recorded):
                    answer = await answer
                if answer is not None:
                    record.status = answer.status
                    answer.play(response)
                    return
            if record.limit_headers:
                response.extra_headers = [*response.extra_headers, *record.limit_headers]
            handler = route.handlers.get(request.method)
            if handler is None:
                if request.method == "OPTIONS":
                    response.send(204, [(b"allow", ",".join(route.handlers).encode())], b"")
                    record.status = 204
                    return
                raise MethodNotAllowed("405 method not allowed")
            if spec.body is Body.WHOLE:  # STREAM routes send their body on to a node piece by piece
                await request.read_body(self.max_body_bytes)  # 413 from Content-Length before reading
            await handler(request, response, record)
            if not record.status:
                record.status = response.status
        except GatewayError as exc:
            self.render_error(response, record, exc)
        except asyncio.CancelledError:
            record.error_kind = ErrorKind.CLIENT_GONE
            record.status = record.status or 499
            raise
        finally:
            record.finished = perf_counter()
            if record.span is not None:
                record.span.end(record)
            for observe in self.observers:
                try:
                    observe(record)
                except Exception:
                    log.exception("observer failed")

    def _cors(self, request: Request, response: Response, record: RequestRecord, origin: bytes) -> bool:
        """Apply the CORS policy. True when the request has been answered (refused or preflight)."""
        assert self.cors is not None
        text = origin.decode("latin-1")
        host = (request.header(b"host") or b"").decode("latin-1")
        same = host and text.split("://", 1)[-1] == host
        if not (same or self.cors.allowed(text)):
            record.status = 403
            record.error = "origin not allowed"
            response.send(403, [], b"")
            return True
        response.extra_headers = [
            (b"access-control-allow-origin", self.cors.allow_origin_value(text).encode("latin-1")),
            (b"vary", b"Origin"),
        ]
        if request.method == "OPTIONS" and request.header(b"access-control-request-method") is not None:
            record.status = 204
            response.send(
                204,
                [
                    (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                    (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                    (b"access-control-max-age", MAX_AGE.encode()),
                ],
                b"",
            )
            return True
        return False

    def _plain(self, response: Response, record: RequestRecord, status: int, body: bytes) -> None:
        record.status = status
        response.send(status, [(b"content-type", b"text/plain"), (b"x-request-id", record.request_id.encode())], body)

    def render_error(self, response: Response, record: RequestRecord, exc: GatewayError) -> None:
        """The one place an error body is written."""
        record.error_kind = exc.kind
        message = exc.message  # may echo client input (a model name): logs and audit keep its start
        record.error = message if len(message) <= ERROR_LOG_CHARS else message[:ERROR_LOG_CHARS] + "..."
        record.status = exc.status
        if response.started:
            # Streams that break are ended by the proxy; anything else can only be cut off.
            response.abort()
            return
        if isinstance(exc, MethodNotAllowed):
            self._plain(response, record, 405, b"405 method not allowed")
            return
        headers = [(b"content-type", wire.JSON), (b"x-request-id", record.request_id.encode())]
        headers += [(k, v) for k, v in record.limit_headers if k != b"retry-after"]
        if exc.retry_after is not None:
            headers.append((b"retry-after", str(max(1, round(exc.retry_after))).encode()))
        if isinstance(exc, UpstreamStatus):
            # A node's own error answer, passed on as it was (status and body shape kept).
            for name, value in exc.headers:
                if name == b"content-type":
                    headers[0] = (name, value)
            response.send(exc.status, headers, exc.body)
            return
        if record.family is ApiFamily.OPENAI:
            body = wire.openai_error(exc.message, exc.status, exc.kind.value, exc.param)
        elif record.family is ApiFamily.ANTHROPIC:
            body = wire.anthropic_error(exc.message, exc.status, record.request_id)
        else:
            body = wire.ollama_error(exc.message)
        response.send(exc.status, headers, body)
