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
from corral.adapters.cache_store import open_store
from corral.adapters.fleetstore import FleetStore, MemoryFleetStore, SqlFleetStore
from corral.adapters.jwt_auth import ClaimMap, JwtVerifier
from corral.adapters.keystore import KeyCache, SqlKeyStore
from corral.adapters.limits import LimitStore
from corral.adapters.metrics import Metrics
from corral.adapters.metrics_merge import Exposition
from corral.adapters.migrations import open_engine
from corral.app.access_log import access_observer
from corral.app.admin import AdminBackends
from corral.app.admission import Admission
from corral.app.attempts import Forwarder
from corral.app.audit_log import AuditLog
from corral.app.auth import AdminKeys, AuthGuard
from corral.app.cache import CacheContext
from corral.app.config_state import ConfigState, Pipeline
from corral.app.console_api import Console
from corral.app.console_assets import ConsoleAssets
from corral.app.context import Observer, RequestRecord
from corral.app.discovery import Discovery
from corral.app.embed_cache import EmbedCache
from corral.app.fanout import fleet_operations
from corral.app.fleet import Fleet, Node
from corral.app.fleet_sync import FleetSync
from corral.app.gateway import ClientAddress, Gateway
from corral.app.inference import InferenceHandlers
from corral.app.limits_guard import LimitGuard
from corral.app.listeners import console_side, host_check
from corral.app.model_admin import AdminModels, assemble_models_admin
from corral.app.naming import ModelTargets
from corral.app.node_ops import NodeOps
from corral.app.node_sources import NodeSources
from corral.app.node_sync import STATIC, NodeSync
from corral.app.passthrough import Passthrough
from corral.app.replica_status import merge_status
from corral.app.residency_task import ResidencyTask
from corral.app.response_cache import ResponseCache
from corral.app.router import RouteHandler, Router
from corral.app.routes import CONSOLE_HANDLERS, ROUTES, inference_paths, limited_paths
from corral.app.views import FleetViews, send_json
from corral.config import CacheSettings, Settings
from corral.domain.breaker import CircuitBreaker
from corral.domain.cors import CorsPolicy
from corral.domain.prefix_index import PrefixIndex
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
    pipeline: Pipeline  # the server's handler: the current generation of `gateway` (hot reload)
    nodes: NodeSync  # the static and discovered nodes (docs/routing.md)
    sources: NodeSources
    config: ConfigState
    metrics: Metrics | None = None
    tracing: Tracing | None = None
    store: SqlKeyStore | None = None
    audit: AuditLog | None = None
    limits: LimitGuard | None = None
    audit_engine: AsyncEngine | None = None
    metrics_server: HttpServer | None = None
    console: Console | None = None
    cache: CacheContext | None = None
    models_admin: AdminModels | None = None
    fleet_sync: FleetSync | None = None
    exposition: Exposition | None = None  # /metrics; merged over the workers when there are several
    residency: ResidencyTask | None = None
    key_cache: KeyCache | None = None
    prefixes: PrefixIndex | None = None  # routing.prefix_affinity's index, kept across reloads

    @property
    def port(self) -> int:
        return self.server.port


def make_breaker() -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=5, failure_rate=0.5, window=20, min_requests=10, cooldown_s=10.0)


def _fleet_store(settings: Settings, keys: SqlKeyStore | None) -> FleetStore:
    """Run-time fleet changes live in the key store's database when there is one (shared by replicas and
    workers); several workers without keys share them through that database's file all the same; a
    single process keeps them in memory."""
    if keys is not None:
        return SqlFleetStore(keys.engine)
    if settings.server.workers > 1:
        return SqlFleetStore(settings.auth.store_url)
    return MemoryFleetStore()


def _prefixes(settings: Settings, shared: App | None) -> PrefixIndex | None:
    """The prefix index of routing.prefix_affinity (model-aware only); a reload keeps what it knows."""
    r = settings.routing
    if not r.prefix_affinity or r.strategy != "model-aware":
        return None
    old = shared.prefixes if shared else None
    return old if old is not None and old.size == r.prefix_index_size else PrefixIndex(r.prefix_index_size)


def _same_store(a: CacheSettings, b: CacheSettings) -> bool:
    return (a.backend, a.redis_url, a.max_bytes, a.max_entry_bytes, a.ttl_s) == (
        b.backend,
        b.redis_url,
        b.max_bytes,
        b.max_entry_bytes,
        b.ttl_s,
    )


async def build(settings: Settings, shared: App | None = None) -> App:
    """Wire a gateway; with `shared` (a hot reload), a new pipeline generation on `shared`'s long-lived parts."""
    loop = asyncio.get_running_loop()
    fleet = shared.fleet if shared else Fleet(settings.models.catalog())
    if shared:
        fleet.set_catalog(settings.models.catalog())  # aliases and catalog names of the new settings
    metrics_server: HttpServer | None = shared.metrics_server if shared else None
    metrics: Metrics | None = shared.metrics if shared else None
    exposition: Exposition | None = shared.exposition if shared else None
    if settings.metrics.enabled and not shared:
        metrics = Metrics(CollectorRegistry(auto_describe=True), per_key=settings.metrics.per_key)
    discovery = (
        shared.discovery
        if shared
        else Discovery(fleet, settings.routing.discovery_interval_s, metrics.health_check if metrics else None)
    )
    nodes = (
        shared.nodes if shared else NodeSync(fleet, discovery, make_breaker, settings.health, settings.timeouts.total_s)
    )
    if not shared:
        nodes.seed(STATIC, settings.backends)
    strategy = make_strategy(settings.routing.strategy)
    if shared and shared.settings.routing.strategy == settings.routing.strategy:
        strategy = shared.admission.strategy  # what the strategy has learnt lives on
    tracing = shared.tracing if shared else None
    if settings.tracing.enabled and not shared:
        from corral.adapters.tracing import Tracing

        t = settings.tracing
        tracing = Tracing(t.endpoint, t.service_name, t.sample_ratio, t.export_delay_ms)
    q = settings.queue
    admission = shared.admission if shared else Admission(fleet, strategy, q.max_len, q.max_wait_s)
    admission.retune(strategy, q.max_len, q.max_wait_s)  # a reload's queue settings, for new arrivals

    refreshing: set[asyncio.Task[None]] = set()

    def stale(node: Node) -> None:
        # A node said it lacks a model our view listed: re-read its models soon, off the request path.
        task = loop.create_task(discovery.refresh(node))
        refreshing.add(task)
        task.add_done_callback(refreshing.discard)

    forwarder = Forwarder(
        fleet, admission, strategy, settings.routing, settings.timeouts, settings.server.expose_node_header, stale
    )
    views = shared.views if shared else FleetViews(fleet, loop.time())
    targets = ModelTargets(fleet.catalog, settings.models.per_model, q.shed_after_s)
    views.model_groups = targets.node_groups()
    # Long-lived like the strategy it feeds: its settings take effect on restart (config_diff.RESTART_ONLY).
    residency = shared.residency if shared else None
    if (settings.residency.enabled or settings.residency.keep_warm) and not shared:
        residency = ResidencyTask(fleet, strategy, settings.residency, settings.timeouts.total_s)
    audit: AuditLog | None = shared.audit if shared else None
    audit_engine: AsyncEngine | None = shared.audit_engine if shared else None
    if settings.audit.enabled and not shared:
        a = settings.audit
        sinks: list[BufferedSink] = [FileAuditSink(a.path, max_bytes=a.max_bytes, backups=a.backups)]
        if a.database:
            audit_engine = open_engine(settings.auth.store_url)
            sinks.append(SqlAuditSink(audit_engine))
        audit = AuditLog(sinks, a.include_content)
    v = settings.validation
    caps = Caps(v.max_predict, v.max_ctx, tuple(re.compile(p) for p in v.deny_patterns))
    caches: CacheContext | None = None
    if settings.cache.enabled:
        c = settings.cache
        old = shared.cache if shared else None
        if old is not None and _same_store(old.settings, c):
            cache_store = old.store  # a reload keeps what is cached
        else:
            cache_store = open_store(c.backend, c.redis_url, c.max_bytes, c.max_entry_bytes, c.ttl_s)
        caches = CacheContext(cache_store, c, fleet, metrics.cache_counted if metrics is not None else None)
        if metrics is not None:
            metrics.watch_cache(cache_store.size)
    inference = InferenceHandlers(
        fleet,
        forwarder,
        settings.routing.affinity_header,
        audit is not None,
        settings.audit.include_content,
        caps,
        tuple(v.models) if v.models is not None else None,
        (settings.audit.fingerprint_key or "").encode() or os.urandom(32),
        ResponseCache(caches) if caches is not None and settings.cache.responses.enabled else None,
        EmbedCache(caches) if caches is not None and settings.cache.embeddings.enabled else None,
        targets,
        {name: p.num_ctx_policy for name, p in settings.models.per_model.items() if p.num_ctx_policy is not None},
        residency.observe if residency is not None and settings.residency.enabled else None,  # keep-warm needs none
        _prefixes(settings, shared),
        settings.routing.prompt_eval_rate,
    )
    node_ops = NodeOps(fleet, forwarder, discovery, settings.timeouts.total_s)
    node_ops.fanout, inference.fleet_load = fleet_operations(fleet, discovery, settings, audit.admin if audit else None)
    store: SqlKeyStore | None = shared.store if shared else None
    if settings.auth_required:
        store = store or SqlKeyStore(settings.auth.store_url)
    # Nodes of discovery sources are theirs, not the fleet store's.
    sync = (
        shared.fleet_sync
        if shared and shared.fleet_sync
        else FleetSync(
            fleet,
            discovery,
            _fleet_store(settings, store),
            settings.backends,
            settings.health,
            make_breaker,
            settings.auth.fleet_poll_s,
            managed=lambda name: nodes.owner(name) in (None, STATIC),
        )
    )
    admin = AdminBackends(fleet, sync, audit.admin if audit else None, views)
    config = shared.config if shared else ConfigState(settings, metrics.config_reloads if metrics else None)
    models_admin = (  # rollouts in progress and the node-up preloader live on across reloads
        shared.models_admin
        if shared and shared.models_admin
        else assemble_models_admin(settings, fleet, discovery, audit.admin if audit else None)
    )

    async def status(request: Request, response: Response, record: RequestRecord) -> None:
        body = {**views.status(loop.time(), admission.waiting), "config": config.status()}
        body["residency"] = residency.status() if residency is not None else {"enabled": False}
        if views.siblings_status is not None:  # several workers: the replica's view (app/replica_status.py)
            body = merge_status(body, await views.siblings_status())
        send_json(response, record, body)

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
        "reload": config.admin_reload,
        "models_inventory": models_admin.inventory,
        "models_action": models_admin.action,
        "rollouts_list": models_admin.rollout_list,
        "rollouts_start": models_admin.rollout_start,
    }
    observers: list[Observer] = [access_observer()] if settings.logging.access else []
    if metrics is not None and not shared:
        metrics.known_models = fleet.known_models
        metrics.preset(inference_paths())
        metrics.watch_fleet(lambda: list(fleet), lambda: admission.waiting)
    if metrics is not None:
        observers.append(metrics.observe)
        # A reload keeps the exposition: with workers it carries the link to the siblings' samples.
        exposition = expo = exposition if exposition is not None else Exposition(metrics.registry)

        async def scrape(request: Request, response: Response, record: RequestRecord) -> None:
            body = await expo.render()
            record.status = 200
            response.send(200, [(b"content-type", CONTENT_TYPE_LATEST.encode())], body)

        handlers["metrics"] = scrape
        if settings.metrics.listen and not shared:
            # A separate listener for Prometheus (e.g. on an internal interface): /metrics only, no key.
            metrics_router = Router.from_table((r for r in ROUTES if r.path == "/metrics"), {"metrics": scrape})
            metrics_server = HttpServer(Gateway(metrics_router, []))
    if audit is not None:
        observers.append(audit.observe)
    if store is not None:
        # A reload keeps what is cached (and, with workers, the link to the siblings' caches).
        cache = shared.key_cache if shared and shared.key_cache else KeyCache(store, settings.auth.cache_ttl_s)
        cache.ttl_s = settings.auth.cache_ttl_s
        keys = AdminKeys(store, cache, audit.admin if audit is not None else lambda action, detail: None)
        handlers.update(keys_list=keys.list, keys_create=keys.create, keys_by_name=keys.by_name)
    console: Console | None = shared.console if shared else None
    if settings.console.enabled:
        waiting = lambda: admission.waiting  # noqa: E731
        console = console or Console(
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
    pipeline = shared.pipeline if shared else Pipeline(gateway)
    server = shared.server if shared else HttpServer(pipeline, limits)
    if store is not None:
        jwt = None
        if settings.auth.jwt is not None:
            j = settings.auth.jwt
            jwt = JwtVerifier(
                secret=j.secret,
                jwks_url=j.jwks_url,
                issuer=j.issuer,
                audience=j.audience,
                claims=ClaimMap(role=j.role_claim, models=j.models_claim, nodes=j.nodes_claim),
            )
        gateway.guards.append(
            AuthGuard(cache, settings.auth.metrics == "open", metrics.rejected if metrics is not None else None, jwt)
        )
    limit_guard: LimitGuard | None = None
    lim = settings.limits
    if store is not None or lim.per_ip_rpm or lim.global_rpm or lim.global_tpm:
        kept = shared.limits.store if shared and shared.limits else None  # the counters live on
        limit_guard = LimitGuard(
            kept
            or LimitStore(
                lim.redis_url or "memory://", on_store_error=lim.on_store_error, timeout_s=lim.store_timeout_s
            ),
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
    if console_elsewhere and not shared:
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
        pipeline,
        nodes,
        shared.sources if shared else NodeSources(nodes),
        config,
        metrics,
        tracing,
        store,
        audit,
        limit_guard,
        audit_engine,
        metrics_server,
        console,
        caches,
        models_admin,
        sync,
        exposition,
        residency,
        key_cache=cache if store is not None else None,
        prefixes=inference.prefixes,
    )
