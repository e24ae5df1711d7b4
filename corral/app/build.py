"""Assembly: the only place that wires settings, fleet, proxy, handlers and server together."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from corral.adapters.audit import BufferedSink, FileAuditSink, SqlAuditSink
from corral.adapters.jwt_auth import ClaimMap, JwtVerifier
from corral.adapters.keystore import KeyCache, SqlKeyStore
from corral.adapters.limits import LimitStore
from corral.adapters.metrics import Metrics
from corral.adapters.metrics_merge import Exposition
from corral.adapters.migrations import open_engine
from corral.app.admin import AdminBackends
from corral.app.admission import Admission
from corral.app.attempts import Forwarder
from corral.app.audit_log import AuditLog
from corral.app.auth import AdminKeys, AuthGuard
from corral.app.console_api import Console
from corral.app.console_assets import ConsoleAssets
from corral.app.context import Observer, RequestRecord
from corral.app.discovery import Discovery
from corral.app.fleet import Fleet, Node
from corral.app.gateway import ClientAddress, Gateway
from corral.app.inference import InferenceHandlers
from corral.app.limits_guard import LimitGuard
from corral.app.listeners import console_side, host_check
from corral.app.logs import access_observer
from corral.app.node_ops import NodeOps
from corral.app.passthrough import Passthrough
from corral.app.router import RouteHandler, Router
from corral.app.routes import CONSOLE_HANDLERS, ROUTES, inference_paths, limited_paths
from corral.app.views import FleetViews, send_json
from corral.config import Settings
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
    admission: Admission
    forwarder: Forwarder
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
    console: Console | None = None
    exposition: Exposition | None = None  # /metrics; merged over the workers when there are several

    @property
    def port(self) -> int:
        return self.server.port


def make_breaker() -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=5, failure_rate=0.5, window=20, min_requests=10, cooldown_s=10.0)


async def build(settings: Settings) -> App:
    loop = asyncio.get_running_loop()
    fleet = Fleet()
    for backend in settings.backends:
        fleet.add(backend, settings.health_for(backend), make_breaker())
    metrics_server: HttpServer | None = None
    metrics: Metrics | None = None
    exposition: Exposition | None = None
    if settings.metrics.enabled:
        metrics = Metrics(CollectorRegistry(auto_describe=True), per_key=settings.metrics.per_key)
    discovery = Discovery(fleet, settings.routing.discovery_interval_s, metrics.health_check if metrics else None)
    strategy = make_strategy(settings.routing.strategy)
    tracing = None
    if settings.tracing.enabled:
        from corral.adapters.tracing import Tracing

        t = settings.tracing
        tracing = Tracing(t.endpoint, t.service_name, t.sample_ratio, t.export_delay_ms)
    admission = Admission(fleet, strategy, settings.queue.max_len, settings.queue.max_wait_s)

    refreshing: set[asyncio.Task[None]] = set()

    def stale(node: Node) -> None:
        # A node said it lacks a model our view listed: re-read its models soon, off the request path.
        task = loop.create_task(discovery.refresh(node))
        refreshing.add(task)
        task.add_done_callback(refreshing.discard)

    forwarder = Forwarder(
        fleet, admission, strategy, settings.routing, settings.timeouts, settings.server.expose_node_header, stale
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
        forwarder,
        settings.routing.affinity_header,
        audit is not None,
        settings.audit.include_content,
        caps,
        tuple(v.models) if v.models is not None else None,
        (settings.audit.fingerprint_key or "").encode() or os.urandom(32),
    )
    node_ops = NodeOps(fleet, forwarder, discovery, settings.timeouts.total_s)
    admin = AdminBackends(fleet, discovery, settings.health, make_breaker, audit.admin if audit else None)

    async def status(request: Request, response: Response, record: RequestRecord) -> None:
        send_json(response, record, views.status(loop.time(), admission.waiting))

    handlers: dict[str, RouteHandler] = {
        "root": views.root,
        "version": views.version,
        "tags": views.tags,
        "ps": views.ps,
        "v1_models": views.v1_models,
        "v1_model": views.v1_model,
        "inference": inference,
        "node_ops": node_ops,
        "passthrough": Passthrough(fleet, forwarder),
        "health": views.health,
        "ready": views.ready,
        "status": status,
        "backends_list": admin.list,
        "backends_add": admin.add,
        "backends_by_name": admin.by_name,
    }
    observers: list[Observer] = [access_observer] if settings.logging.access else []
    if metrics is not None:
        metrics.known_models = fleet.known_models
        metrics.preset(inference_paths())
        metrics.watch_fleet(lambda: list(fleet), lambda: admission.waiting)
        observers.append(metrics.observe)
        exposition = expo = Exposition(metrics.registry)

        async def scrape(request: Request, response: Response, record: RequestRecord) -> None:
            body = await expo.render()
            record.status = 200
            response.send(200, [(b"content-type", CONTENT_TYPE_LATEST.encode())], body)

        handlers["metrics"] = scrape
        if settings.metrics.listen:
            # A separate listener for Prometheus (e.g. on an internal interface): /metrics only, no key.
            metrics_router = Router.from_table((r for r in ROUTES if r.path == "/metrics"), {"metrics": scrape})
            metrics_server = HttpServer(Gateway(metrics_router, []))
    if audit is not None:
        observers.append(audit.observe)
    store: SqlKeyStore | None = None
    if settings.auth_required:
        store = SqlKeyStore(settings.auth.store_url)
        cache = KeyCache(store, settings.auth.cache_ttl_s)
        keys = AdminKeys(store, cache, audit.admin if audit is not None else lambda action, detail: None)
        handlers.update(keys_list=keys.list, keys_create=keys.create, keys_by_name=keys.by_name)
    console: Console | None = None
    if settings.console.enabled:
        waiting = lambda: admission.waiting  # noqa: E731
        console = Console(
            fleet, waiting, settings.queue.max_len, settings.auth_required, inference_paths(), limited_paths(), store
        )
        assets = ConsoleAssets()
        handlers.update(
            console_page=assets.page,
            console_file=assets.file,
            console_session=console.session,
            console_overview=console.overview,
            console_traffic=console.traffic,
        )
        if store is not None:
            handlers["console_keys"] = console.keys
        observers.append(console.observe)
    console_elsewhere = console is not None and settings.console.listen == "metrics"
    main_handlers = {k: v for k, v in handlers.items() if not (console_elsewhere and k in CONSOLE_HANDLERS)}
    gateway = Gateway(
        Router.from_table(ROUTES, main_handlers),
        observers,
        CorsPolicy(tuple(settings.server.cors.allow_origins)),
        ClientAddress(settings.server.trusted_proxies),
        tracing,
        host_check(settings.server.host, settings.server.allowed_hosts),
        settings.auth_required,
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
    if console_elsewhere:
        metrics_server = HttpServer(console_side(gateway, handlers, settings), limits)
    return App(
        settings,
        fleet,
        discovery,
        admission,
        forwarder,
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
        console,
        exposition,
    )
