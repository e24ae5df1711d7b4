"""What the workers of one replica ask each other over their channel (app/siblings.py), so that the
replica acts as one gateway (`server.workers` > 1):

- `metrics`, `status`: each worker's own samples and status, summed by the one a client asked
  (adapters/metrics_merge.py, app/replica_status.py);
- `probe`: one worker's health check serves all (app/discovery.py);
- `fleet_sync`: an admin fleet change, stored first, is applied by every worker before it is answered;
- `rollouts_running`, `rollout_drain`: a rollout runs in one worker; the others report it as running and
  drain its node too (a drain lives in each process's memory);
- `key_known`: while the key database is down, a key any worker knew keeps working;
- `reload_seq`: which reload order a worker applied (app/worker_reload.py);
- `console`: each worker's traffic figures, added up for the console (app/console_api.py).
"""

from __future__ import annotations

import asyncio

from corral.adapters.keystore import KeyRecord, record_from_json, record_json
from corral.adapters.metrics_merge import snapshot
from corral.app.build import App
from corral.app.siblings import Siblings, WorkerContext
from corral.app.worker_reload import WorkerReloads
from corral.domain.shares import spec_share


def join_siblings(app: App, worker: WorkerContext, reloads: WorkerReloads) -> Siblings:
    discovery = app.discovery
    exposition = app.exposition
    rollouts = app.models_admin.rollouts if app.models_admin is not None else None

    async def metrics(message: dict[str, object]) -> object:
        return snapshot(exposition.registry) if exposition is not None else []

    async def probe(message: dict[str, object]) -> None:
        result = message.get("result")
        if isinstance(result, dict):
            discovery.apply_shared(str(message.get("node")), result)

    async def fleet_sync(message: dict[str, object]) -> bool:
        if app.fleet_sync is not None:
            await app.fleet_sync.sync()
        return True

    async def rollouts_running(message: dict[str, object]) -> list[str]:
        return sorted(rollouts.running_here()) if rollouts is not None else []

    async def status(message: dict[str, object]) -> object:
        body = app.views.status(asyncio.get_running_loop().time(), app.admission.waiting)
        if worker.index == 0 and app.residency is not None:  # the worker whose controller acts (app/serve.py)
            body["residency"] = app.residency.status()
        return body

    async def key_known(message: dict[str, object]) -> object:
        found, record = app.key_cache.known(str(message.get("digest"))) if app.key_cache else (False, None)
        return {"found": found, "record": record_json(record) if record is not None else None}

    async def console(message: dict[str, object]) -> object:
        return app.console.answer_sibling(message) if app.console is not None else None

    async def rollout_drain(message: dict[str, object]) -> bool:
        node = app.fleet.get(str(message.get("node")))
        draining = bool(message.get("draining"))
        if node is not None and node.draining != draining:
            node.draining = draining
            app.fleet.capacity_changed()
        return True

    siblings = Siblings(
        worker,
        {
            "metrics": metrics,
            "probe": probe,
            "fleet_sync": fleet_sync,
            "rollouts_running": rollouts_running,
            "rollout_drain": rollout_drain,
            "reload_seq": reloads.seq,
            "status": status,
            "key_known": key_known,
            "console": console,
        },
    )
    app.views.siblings_status = lambda: siblings.ask("status")
    if app.console is not None:
        app.console.siblings = siblings.ask
    if exposition is not None:
        exposition.siblings = lambda: siblings.ask("metrics")
    discovery.phase = (worker.index, worker.count)
    discovery.publish = lambda name, result: siblings.tell("probe", node=name, result=result)
    reloads.siblings = siblings
    if app.fleet_sync is not None:  # an admin fleet change answers once every worker applied it
        sync = app.fleet_sync

        async def siblings_synced() -> object:
            return await siblings.ask("fleet_sync", wait_s=max(2.0, app.settings.health.timeout_s + 2.0))

        sync.siblings = siblings_synced
        sync.localize = lambda spec: spec_share(spec, worker.index, worker.count)
    if app.key_cache is not None:

        async def key_elsewhere(digest: str) -> tuple[bool, KeyRecord | None]:
            for answer in await siblings.ask("key_known", digest=digest):
                if isinstance(answer, dict) and answer.get("found"):
                    record = answer.get("record")
                    return True, record_from_json(record) if isinstance(record, dict) else None
            return False, None

        app.key_cache.elsewhere = key_elsewhere
    if rollouts is not None:

        async def elsewhere() -> set[str]:
            return {str(m) for answer in await siblings.ask("rollouts_running") for m in answer or []}

        async def drain_siblings(node: str, draining: bool) -> object:
            return await siblings.ask("rollout_drain", node=node, draining=draining)

        async def in_flight_elsewhere(node: str) -> int:
            answers = await siblings.ask("status")
            nodes = [n for a in answers if isinstance(a, dict) for n in a.get("nodes", []) if n.get("name") == node]
            return sum(int(n.get("in_flight", 0)) for n in nodes)

        rollouts.elsewhere, rollouts.drain_siblings = elsewhere, drain_siblings
        rollouts.in_flight_elsewhere = in_flight_elsewhere
    return siblings
