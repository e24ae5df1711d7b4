"""Hot reload: apply a new configuration to a running gateway without dropping or failing a request.

`reload(app, new_settings)` is the one entry point (SIGHUP, `corral serve --watch`, POST /admin/reload,
and each worker of `corral serve --workers` call it). It diffs the settings (corral.domain.config_diff),
builds a new pipeline generation on the long-lived parts (fleet, key store, limit counters, metrics),
brings the static nodes and the discovery sources to the new settings (new nodes health-checked before
they take traffic, removed ones drained), then swaps the generation in between requests. Settings that
only a restart can change keep their running values and are reported in the result and the log.
An invalid configuration never gets this far: `load_and_reload` refuses it whole and the old one runs on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

from corral.app.build import App, build
from corral.app.config_state import ConfigSource, ConfigVersion, ReloadResult
from corral.app.node_sync import STATIC
from corral.config import ConfigError, Settings
from corral.domain.config_diff import diff_config

log = logging.getLogger(__name__)


def _keep_running_values(new: dict[str, Any], old: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Put the running values of the restart-only `keys` back into `new` (dotted paths, in place)."""
    for key in keys:
        *parents, leaf = key.split(".")
        src: Any = old
        dst: Any = new
        for part in parents:
            src, dst = src.get(part, {}), dst.setdefault(part, {})
        if leaf in src:
            dst[leaf] = src[leaf]
        else:
            dst.pop(leaf, None)


def effective(old: Settings, new: Settings, restart_required: tuple[str, ...]) -> Settings:
    """`new`, with the settings a running process cannot change held at their running values."""
    if not restart_required:
        return new
    data = new.model_dump(mode="json")
    _keep_running_values(data, old.model_dump(mode="json"), restart_required)
    return Settings(**data)


async def reload(
    app: App, new_settings: Settings, trigger: str = "api", version: str | None = None, at: float | None = None
) -> ReloadResult:
    """Apply `new_settings` (already validated) to the running `app`; in-flight requests finish on the
    settings they started with. Returns what changed; never raises for a setting it cannot apply.
    `version`, `at`: the hash and time to report (a worker reports its replica's reload, as its siblings do,
    not the hash of its share of the slots)."""
    async with app.config.lock:
        old = app.settings
        before = app.config.version
        diff = diff_config(old.model_dump(mode="json"), new_settings.model_dump(mode="json"))
        if diff.empty:
            result = ReloadResult("ok", trigger, before, before.hash, at=at or time.time())
            app.config.record(result)
            log.info("configuration reloaded (%s): nothing changed", trigger)
            return result
        try:
            settings = effective(old, new_settings, diff.restart_required)
            fresh = await build(settings, shared=app)
        except (ConfigError, ValueError) as exc:
            problems = exc.problems if isinstance(exc, ConfigError) else [("(configuration)", str(exc))]
            return refused(app, trigger, problems)
        app.nodes.health_defaults = settings.health
        app.nodes.drain_s = settings.timeouts.total_s
        app.discovery.discovery_interval_s = settings.routing.discovery_interval_s
        if settings.health != old.health:
            for node in app.fleet:
                if node.settings.health is None:
                    app.fleet.update(node, node.settings, settings.health)
        nodes = await app.nodes.apply(STATIC, settings.backends)
        if app.fleet_sync is not None:
            await app.fleet_sync.rebase(settings.backends)  # the stored run-time changes stay on top
        await app.sources.configure(settings.discovery)
        app.pipeline.swap(fresh.gateway)  # from the next request on
        app.settings = settings
        app.gateway = fresh.gateway
        app.forwarder = fresh.forwarder
        app.limits = fresh.limits
        replaced = app.cache.store if app.cache is not None else None
        app.cache = fresh.cache
        if replaced is not None and (fresh.cache is None or fresh.cache.store is not replaced):
            await replaced.close()  # requests still on the old generation then miss, never fail
        result = ReloadResult(
            "ok",
            trigger,
            ConfigVersion(version, at or time.time()) if version else ConfigVersion.of(settings),
            before.hash,
            nodes,
            diff.changed,
            diff.restart_required,
            at=at or time.time(),
        )
        app.config.record(result)
        log.info(
            "configuration reloaded (%s): version %s, changed %s, backends %s",
            trigger,
            result.version.hash,
            list(diff.changed),
            result.as_json()["backends"],
        )
        if diff.restart_required:
            log.warning(
                "configuration reloaded, but these settings need a restart and keep their running values: %s",
                ", ".join(diff.restart_required),
            )
        return result


def refused(app: App, trigger: str, problems: list[tuple[str, str]], at: float | None = None) -> ReloadResult:
    running = app.config.version
    result = ReloadResult("error", trigger, running, running.hash, problems=tuple(problems), at=at or time.time())
    app.config.record(result)
    log.error("configuration reload (%s) refused, the running one is kept: %s", trigger, result.error)
    return result


async def load_and_reload(app: App, source: ConfigSource, trigger: str) -> ReloadResult:
    """Read the configuration again and apply it, or refuse it whole (the error names the key)."""
    try:
        new = await asyncio.to_thread(source.load)
    except ConfigError as exc:
        return refused(app, trigger, exc.problems)
    return await reload(app, new, trigger)


async def watch(app: App, source: ConfigSource, interval_s: float = 1.0) -> None:
    """`corral serve --watch`: reload when the file's content changes (checked every `interval_s`)."""
    path = source.path
    if path is None:
        return

    def digest() -> str | None:
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return None

    seen = await asyncio.to_thread(digest)
    while True:
        await asyncio.sleep(interval_s)
        now = await asyncio.to_thread(digest)
        if now is not None and now != seen:
            seen = now
            await load_and_reload(app, source, "watch")
