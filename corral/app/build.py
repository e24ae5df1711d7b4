"""Assembly: the only place that wires settings, fleet, proxy, handlers and server together."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine

from corral.adapters.audit import BufferedSink, FileAuditSink, SqlAuditSink
from corral.adapters.jwt_auth import ClaimMap, JwtVerifier
from corral.adapters.keystore import KeyCache, SqlKeyStore
from corral.adapters.limits import LimitStore
from corral.adapters.metrics import Metrics
from corral.adapters.migrations import open_engine, upgrade
from corral.app.admin import AdminBackends
from corral.app.audit_log import AuditLog
from corral.app.auth import AdminKeys, AuthGuard
from corral.app.context import ApiFamily, Observer, RequestRecord
from corral.app.discovery import Discovery
from corral.app.fleet import Fleet
from corral.app.gateway import ClientAddress, Gateway, Router
from corral.app.inference import InferenceHandlers
from corral.app.limits_guard import LimitGuard
from corral.app.logs import access_observer
from corral.app.node_ops import NodeOps
from corral.app.proxy import Proxy
from corral.app.views import FleetViews, send_json
from corral.config import Settings, is_loopback
from corral.domain.breaker import CircuitBreaker
from corral.domain.cors import CorsPolicy
from corral.domain.routing import make_strategy
from corral.net.response import Request, Response
from corral.net.server import HttpServer, ServerLimits
from corral.protocol.validation import Caps

if TYPE_CHECKING:
    from corral.adapters.tracing import Tracing

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: Settings
    fleet: Fleet
    discovery: Discovery
    proxy: Proxy
    views: FleetViews
    gateway: Gateway
    server: HttpServer
    metrics: Metrics | None = None
    tracing: Tracing | None = None
    store: SqlKeyStore | None = None
    audit: AuditLog | None = None
    limits: LimitGuard | None = None
    audit_engine: AsyncEngine | None = None
    metrics_server: HttpServer | None = None

    @property
    def port(self) -> int:
        return self.server.port


def make_breaker() -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=5, failure_rate=0.5, window=20, min_requests=10, cooldown_s=10.0)


INFERENCE_ROUTES = (
    "/api/generate",
    "/api/chat",
    "/api/embed",
    "/api/embeddings",
    "/api/show",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
)


def build_router(
    views: FleetViews,
    inference: InferenceHandlers,
    node_ops: NodeOps,
    admin: AdminBackends,
    status: Callable[[Request, Response, RequestRecord], Any],
) -> Router:
    r = Router()
    r.add("GET,HEAD", "/", views.root)
    r.add("GET,HEAD", "/api/version", views.version)
    r.add("GET,HEAD", "/api/tags", views.tags)
    r.add("GET", "/api/ps", views.ps)
    for path in INFERENCE_ROUTES:
        r.add("POST", path, inference)
    for path in ("/api/pull", "/api/push", "/api/create", "/api/copy"):
        r.add("POST", path, node_ops)
    r.add("DELETE", "/api/delete", node_ops)
    r.add("HEAD,POST", "/api/blobs/{digest}", node_ops)
    r.add("GET", "/v1/models", views.v1_models)
    r.add("GET", "/v1/models/{model}", views.v1_model)
    r.add("GET,HEAD", "/health", views.health, ApiFamily.OLLAMA)
    r.add("GET,HEAD", "/ready", views.ready, ApiFamily.OLLAMA)
    r.add("GET", "/internal/status", status, ApiFamily.OLLAMA)
    r.add("GET,POST", "/admin/backends", admin.list, ApiFamily.OLLAMA)
    r.exact["/admin/backends"].handlers["POST"] = admin.add
    r.add("GET,POST,DELETE", "/admin/backends/{name}", admin.by_name, ApiFamily.OLLAMA)
    return r


async def build(settings: Settings) -> App:
    loop = asyncio.get_running_loop()
    fleet = Fleet()
    for backend in settings.backends:
        fleet.add(backend, settings.health_for(backend), make_breaker())
    metrics_server: HttpServer | None = None
    metrics: Metrics | None = None
    if settings.metrics.enabled:
        metrics = Metrics(CollectorRegistry(auto_describe=True), per_key=settings.metrics.per_key)
    discovery = Discovery(fleet, settings.routing.discovery_interval_s, metrics.health_check if metrics else None)
    strategy = make_strategy(settings.routing.strategy)
    tracing = None
    if settings.tracing.enabled:
        from corral.adapters.tracing import Tracing

        t = settings.tracing
        tracing = Tracing(t.endpoint, t.service_name, t.sample_ratio, t.export_delay_ms)
    proxy = Proxy(
        fleet,
        strategy,
        settings.routing,
        settings.timeouts,
        settings.queue.max_len,
        settings.queue.max_wait_s,
        settings.server.expose_node_header,
        tracing,
    )
    views = FleetViews(fleet, loop.time())
    audit: AuditLog | None = None
    audit_engine: AsyncEngine | None = None
    if settings.audit.enabled:
        a = settings.audit
        sinks: list[BufferedSink] = [FileAuditSink(a.path, max_bytes=a.max_bytes, backups=a.backups)]
        if a.database:
            audit_engine = open_engine(settings.auth.store_url)
            sinks.append(SqlAuditSink(audit_engine))
        audit = AuditLog(sinks, a.include_content)
    v = settings.validation
    caps = Caps(v.max_predict, v.max_ctx, tuple(re.compile(p) for p in v.deny_patterns))
    inference = InferenceHandlers(
        fleet,
        proxy,
        settings.routing.affinity_header,
        audit is not None,
        settings.audit.include_content,
        caps,
        tuple(v.models) if v.models is not None else None,
    )
    node_ops = NodeOps(fleet, proxy, discovery, settings.timeouts.first_byte_s)
    admin = AdminBackends(fleet, discovery, settings.health, make_breaker, audit.admin if audit else None)

    async def status(request: Request, response: Response, record: RequestRecord) -> None:
        send_json(response, record, views.status(loop.time(), proxy.waiting))

    router = build_router(views, inference, node_ops, admin, status)
    observers: list[Observer] = [access_observer] if settings.logging.access else []
    if metrics is not None:
        metrics.known_models = fleet.known_models
        metrics.preset(INFERENCE_ROUTES)
        metrics.watch_fleet(lambda: list(fleet), lambda: proxy.waiting)
        observers.append(metrics.observe)
        exposition = metrics.registry

        async def scrape(request: Request, response: Response, record: RequestRecord) -> None:
            record.status = 200
            response.send(200, [(b"content-type", CONTENT_TYPE_LATEST.encode())], generate_latest(exposition))

        router.add("GET", "/metrics", scrape, ApiFamily.OLLAMA)
        if settings.metrics.listen:
            # A separate listener for Prometheus (e.g. on an internal interface): /metrics only, no key.
            metrics_router = Router()
            metrics_router.add("GET", "/metrics", scrape, ApiFamily.OLLAMA)
            metrics_server = HttpServer(Gateway(metrics_router, []))
    if audit is not None:
        observers.append(audit.observe)
    store: SqlKeyStore | None = None
    if settings.auth_required:
        store = SqlKeyStore(settings.auth.store_url)
        cache = KeyCache(store, settings.auth.cache_ttl_s)
        keys = AdminKeys(store, cache, audit.admin if audit is not None else lambda action, detail: None)
        router.add("GET,POST", "/admin/keys", keys.list, ApiFamily.OLLAMA)
        router.exact["/admin/keys"].handlers["POST"] = keys.create
        router.add("POST,DELETE", "/admin/keys/{name}", keys.by_name, ApiFamily.OLLAMA)
    gateway = Gateway(
        router,
        observers,
        CorsPolicy(tuple(settings.server.cors.allow_origins)),
        ClientAddress(settings.server.trusted_proxies),
        tracing,
        settings.server.max_body_bytes,
    )
    srv = settings.server
    limits = ServerLimits(
        max_header_bytes=srv.max_header_bytes,
        max_header_count=srv.max_header_count,
        keepalive_timeout_s=srv.keepalive_timeout_s,
        header_timeout_s=srv.header_timeout_s,
        body_timeout_s=srv.body_timeout_s,
        max_connections=srv.max_connections,
        max_connections_per_client=srv.max_connections_per_client,
    )
    server = HttpServer(gateway, limits)
    if store is not None:
        jwt = None
        if settings.auth.jwt is not None:
            j = settings.auth.jwt
            jwt = JwtVerifier(
                secret=j.secret,
                jwks_url=j.jwks_url,
                issuer=j.issuer,
                audience=j.audience,
                claims=ClaimMap(role=j.role_claim, models=j.models_claim),
            )
        gateway.guards.append(
            AuthGuard(cache, settings.auth.metrics == "open", metrics.rejected if metrics is not None else None, jwt)
        )
    limit_guard: LimitGuard | None = None
    lim = settings.limits
    if store is not None or lim.per_ip_rpm or lim.global_rpm or lim.global_tpm:
        limit_guard = LimitGuard(
            LimitStore(lim.redis_url or "memory://", on_store_error=lim.on_store_error),
            lim.per_ip_rpm,
            lim.global_rpm,
            lim.global_tpm,
            lim.estimate_tokens,
            lim.burst_share,
            metrics.rejected if metrics is not None else None,
            metrics.limit_store_errors.inc if metrics is not None else None,
        )
        gateway.guards.append(limit_guard)
        gateway.observers.insert(0, limit_guard.settle)
    return App(
        settings,
        fleet,
        discovery,
        proxy,
        views,
        gateway,
        server,
        metrics,
        tracing,
        store,
        audit,
        limit_guard,
        audit_engine,
        metrics_server,
    )


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    tls = settings.server.tls
    if tls.cert_file is None or tls.key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return context


async def run(settings: Settings, on_ready: Callable[[App], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting, finish in-flight work (up to the grace period)."""
    app = await build(settings)
    if app.store is not None:
        await app.store.migrate()
    if app.audit_engine is not None:
        await upgrade(app.audit_engine)  # the audit_log table
    elif settings.auth.enabled is False and not is_loopback(settings.server.host):
        log.warning("auth.enabled is false on %s: anyone who can reach Corral can use every node", settings.server.host)
    await app.discovery.initial(timeout_s=max(settings.health.timeout_s, 1.0) + 1.0)
    for node in app.fleet:
        app.discovery.start(node)
    await app.server.start(settings.server.host, settings.server.port, ssl=_ssl_context(settings))
    if app.metrics_server is not None and settings.metrics.listen:
        host, _, port = settings.metrics.listen.rpartition(":")
        await app.metrics_server.start(host, int(port))
    log.info("corral listening on %s:%d with %d node(s)", settings.server.host, app.port, len(app.fleet))
    if on_ready is not None:
        on_ready(app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: finishing in-flight requests (up to %ss)", settings.server.shutdown_grace_s)
    app.views.shutting_down = True
    app.server.stop_accepting()
    if app.metrics_server is not None:
        app.metrics_server.stop_accepting()
    drained = await app.server.drain(settings.server.shutdown_grace_s)
    if not drained:
        log.warning("grace period over; closing %d connection(s)", len(app.server.connections))
        app.server.close_all()
    app.discovery.stop_all()
    for node in app.fleet:
        node.pool.close()
    if app.limits is not None:
        await app.limits.close()
    if app.audit is not None:
        await app.audit.close()  # every record of the finished requests reaches its sinks
    if app.audit_engine is not None:
        await app.audit_engine.dispose()
    if app.store is not None:
        await app.store.close()
    if app.tracing is not None:
        app.tracing.shutdown()  # flushes the spans still batched
