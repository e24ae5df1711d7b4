"""Running the assembled gateway: listen, serve until SIGTERM/SIGINT, then shut down gracefully.

The same function runs one of several worker processes (`server.workers` > 1, app/workers.py): then it
listens on the socket its parent bound, joins its siblings' channel (app/worker_links.py: fleet-wide
/metrics and status, shared health probes, fleet changes and rollouts seen by all) and applies the reload
its parent orders on SIGHUP (app/worker_reload.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
from collections.abc import Callable

from corral.adapters.migrations import open_engine, upgrade
from corral.app import access_log
from corral.app.build import App, build
from corral.app.config_state import ConfigSource
from corral.app.reload import load_and_reload, watch
from corral.app.siblings import WorkerContext
from corral.app.worker_links import join_siblings
from corral.app.worker_reload import WorkerReloads
from corral.config import Settings, is_loopback

log = logging.getLogger(__name__)


GC_GEN0_THRESHOLD = 50_000


def settle_heap() -> None:
    """Once start-up is done: collect, then move every object alive now (modules, settings, pydantic
    schemas, SQLAlchemy's tables: some hundreds of thousands) out of the collector's sight with
    `gc.freeze()`, so that a full collection under load walks only what requests made since; and let
    the youngest generation grow to GC_GEN0_THRESHOLD allocations before a pass, not 700, so that
    objects a request frees by reference counting are gone before any pass looks at them. Measured
    (bench/loop_stalls.py, docs/benchmarks.md "The hot path with every feature on"): without it a full
    pass under load held the event loop for 110-190 ms."""
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, GC_GEN0_THRESHOLD), gen1, gen2)


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    tls = settings.server.tls
    if tls.cert_file is None or tls.key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return context


async def migrate(settings: Settings) -> None:
    """Bring the key and audit tables up to date (before serving; once, in the parent, for workers)."""
    if settings.auth_required or (settings.audit.enabled and settings.audit.database) or settings.server.workers > 1:
        engine = open_engine(settings.auth.store_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()


async def run(
    settings: Settings,
    on_ready: Callable[[App], None] | None = None,
    source: ConfigSource | None = None,
    watch_file: bool = False,
    worker: WorkerContext | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting, finish in-flight work (up to the grace period).
    SIGHUP, POST /admin/reload and (with `watch_file`) an edited file reload the configuration from
    `source` (app/reload.py); a worker reloads what its parent validated."""
    app = await build(settings)
    source = source or ConfigSource()
    reloads = WorkerReloads(app, worker) if worker is not None else None
    if reloads is not None:  # the whole replica reloads, through the parent (app/worker_reload.py)
        app.config.reloader = reloads.through_parent
    else:
        app.config.reloader = lambda trigger: load_and_reload(app, source, trigger)
    loop = asyncio.get_running_loop()
    background: set[asyncio.Task[object]] = set()
    hup = {"ready": False, "pending": False}

    def hangup() -> None:
        if not hup["ready"]:  # during start-up: applied once serving (SIGHUP's default would kill us)
            hup["pending"] = True
            return
        job = reloads.apply() if reloads is not None else load_and_reload(app, source, "signal")
        task: asyncio.Task[object] = loop.create_task(job)
        background.add(task)
        task.add_done_callback(background.discard)

    loop.add_signal_handler(signal.SIGHUP, hangup)
    if worker is None:
        await migrate(settings)
    if settings.auth.enabled is False and not is_loopback(settings.server.host):
        log.warning("auth.enabled is false on %s: anyone who can reach Corral can use every node", settings.server.host)
    siblings = join_siblings(app, worker, reloads) if worker is not None and reloads is not None else None
    if siblings is not None:
        await siblings.start()
    if app.fleet_sync is not None:
        await app.fleet_sync.sync()  # the stored run-time changes over the YAML, before the first checks
    await app.discovery.initial(timeout_s=max(settings.health.timeout_s, 1.0) + 1.0)
    for node in app.fleet:
        app.discovery.start(node)
    if app.residency is not None and (worker is None or worker.index == 0):
        # One controller per replica: with workers, the first one acts (seeing its share of the traffic);
        # the others only count (docs/routing.md, Residency).
        app.residency.start()
    await app.sources.configure(app.settings.discovery)
    if app.fleet_sync is not None:
        app.fleet_sync.start()
    tls = _ssl_context(settings)
    if worker is not None:
        await app.server.start(settings.server.host, settings.server.port, ssl=tls, sock=worker.listener)
    else:
        await app.server.start(settings.server.host, settings.server.port, ssl=tls)
    if app.metrics_server is not None and settings.metrics.listen:
        host, _, port = settings.metrics.listen.rpartition(":")
        if worker is not None and worker.metrics_listener is not None:
            await app.metrics_server.start(host, int(port), sock=worker.metrics_listener)
        else:
            await app.metrics_server.start(host, int(port))
    log.info("corral listening on %s:%d with %d node(s)", settings.server.host, app.port, len(app.fleet))
    if app.console is not None:
        app.console.start()
        where = f"{settings.server.host}:{app.port}"
        if settings.console.listen == "metrics":
            where = str(settings.metrics.listen)
        log.info("web console at http://%s/ui", where)
    settle_heap()
    if on_ready is not None:
        on_ready(app)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    hup["ready"] = True
    if hup["pending"]:
        hangup()
    if watch_file and source.path is not None and worker is None:
        background.add(loop.create_task(watch(app, source)))
    await stop.wait()
    for task in background:
        task.cancel()
    log.info("shutting down: finishing in-flight requests (up to %ss)", settings.server.shutdown_grace_s)
    app.views.shutting_down = True
    app.server.stop_accepting()
    if app.metrics_server is not None:
        app.metrics_server.stop_accepting()
    grace_until = loop.time() + settings.server.shutdown_grace_s
    if siblings is not None:
        # The replica drains as one: a worker done early keeps its kept-alive connections (a load
        # balancer's among them, reading /ready answer 503) until its siblings are done too.
        await app.server.drain(settings.server.shutdown_grace_s, close_idle=False)
        await siblings.drained(max(0.0, grace_until - loop.time()))
    drained = await app.server.drain(max(0.0, grace_until - loop.time()))
    if not drained:
        log.warning("grace period over; closing %d connection(s)", len(app.server.connections))
        app.server.close_all()
    app.sources.stop()
    app.nodes.stop()
    if app.fleet_sync is not None:
        await app.fleet_sync.stop()
    app.discovery.stop_all()
    if siblings is not None:
        siblings.close()
    if app.residency is not None:
        app.residency.stop()
    if app.console is not None:
        app.console.stop()
    for node in app.fleet:
        node.pool.close()
    if app.limits is not None:
        await app.limits.close()
    if app.cache is not None:
        await app.cache.store.close()
    await access_log.close()  # every access line of the finished requests is written
    if app.audit is not None:
        await app.audit.close()  # every record of the finished requests reaches its sinks
    if app.audit_engine is not None:
        await app.audit_engine.dispose()
    if app.store is not None:
        await app.store.close()
    if app.models_admin is not None:
        await app.models_admin.rollouts.store.close()
    if app.tracing is not None:
        app.tracing.shutdown()  # flushes the spans still batched
