"""Background health checks and model discovery: they feed the fleet state that routing reads.

Ollama nodes: `/api/version` is the health check; `/api/tags` (models on disk) and `/api/ps` (models
loaded) are read every discovery interval and after any pull/delete through Corral. OpenAI-type nodes:
`/v1/models` is both.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from corral.adapters.node_api import get_json
from corral.app.fleet import Fleet, Node
from corral.domain.errors import UpstreamError
from corral.domain.fleet import LoadedModel, NodeKind
from corral.domain.names import normalize

log = logging.getLogger(__name__)
_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(value: object) -> float:
    """RFC 3339 (with nanoseconds, as Go writes it) to unix seconds; +inf when missing or unparseable."""
    if not isinstance(value, str):
        return float("inf")
    try:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", value)).timestamp()
    except ValueError:
        return float("inf")


def loaded_from_ps(node: Node, entries: list[dict[str, Any]]) -> tuple[LoadedModel, ...]:
    previous = {m.model: m.options_key for m in node.loaded}
    out = []
    for entry in entries:
        name = node.catalog.key_of(normalize(str(entry.get("model") or entry.get("name") or "")))
        if not name:
            continue
        out.append(
            LoadedModel(
                model=name,
                options_key=previous.get(name, ""),
                size=int(entry.get("size") or 0),
                size_vram=int(entry.get("size_vram") or 0),
                expires_at=parse_time(entry.get("expires_at")),
                digest=str(entry.get("digest") or ""),
            )
        )
    return tuple(out)


def tags_from_openai(models: object) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    data = models.get("data") if isinstance(models, dict) else None
    for item in data or []:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        created = item.get("created")
        modified = (
            datetime.fromtimestamp(created).astimezone().isoformat()
            if isinstance(created, int | float)
            else "1970-01-01T00:00:00Z"
        )
        out[normalize(item["id"])] = {
            "name": item["id"],
            "model": item["id"],
            "modified_at": modified,
            "size": 0,
            "digest": "",
            "details": {
                "parent_model": "",
                "format": "",
                "family": "",
                "families": None,
                "parameter_size": "",
                "quantization_level": "",
            },
        }
    return out


class Discovery:
    def __init__(
        self,
        fleet: Fleet,
        discovery_interval_s: float,
        on_check: Callable[[str, bool, float], None] | None = None,
    ) -> None:
        self.fleet = fleet
        self.on_check = on_check
        self.discovery_interval_s = discovery_interval_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Called when a node comes up (first answer, or again after it was down), after its models are read.
        self.on_up: list[Callable[[Node], None]] = []
        self._last_discovery: dict[str, float] = {}
        # Probes across workers (app/serve.py sets these): worker `index` of `count` checks each node
        # every count x interval, offset by its index, and `publish` hands each result to the siblings.
        self.phase: tuple[int, int] = (0, 1)
        self.publish: Callable[[str, dict[str, Any]], None] | None = None

    async def check(self, node: Node, *, discover: bool) -> bool:
        """One health check (and, if asked, a discovery round) of `node`. Returns whether it answered."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await self._probe(node, discover)
        if self.on_check is not None:
            self.on_check(node.name, result["ok"], loop.time() - started)
        self._apply(node, result)
        if self.publish is not None:
            self.publish(node.name, result)
        return bool(result["ok"])

    async def _probe(self, node: Node, discover: bool) -> dict[str, Any]:
        """The node's answers, as plain data (what a sibling worker applies too)."""
        timeout = node.health_settings.timeout_s
        result: dict[str, Any] = {"ok": False, "discover": discover, "version": None, "tags": None, "ps": None}
        try:
            if node.kind is NodeKind.OPENAI:
                models = await get_json(node.pool, node.settings.base_path + "/v1/models", timeout)
                result["tags"] = tags_from_openai(models)
            else:
                version = await get_json(node.pool, node.settings.base_path + "/api/version", timeout)
                if isinstance(version, dict) and isinstance(version.get("version"), str):
                    result["version"] = version["version"]
                if discover:
                    result["tags"], result["ps"] = await self._discover_ollama(node, timeout)
            result["ok"] = True
        except UpstreamError as exc:
            result["error"] = exc.message
        return result

    def _apply(self, node: Node, result: dict[str, Any], own: bool = True) -> None:
        ok = bool(result["ok"])
        if result.get("version") is not None:
            node.version = result["version"]
        if result.get("tags") is not None:
            node.set_tags(result["tags"])
        if result.get("ps") is not None:
            node.ps = result["ps"]
            node.loaded = loaded_from_ps(node, node.ps)
        if not ok:
            node.last_error = result.get("error")
        first = not node.checked
        node.checked = True
        changed = node.health.observe(ok)
        if first and ok != node.health.up:
            node.health.force(ok)
            changed = True
        if changed:
            log.warning("node %s is now %s", node.name, "up" if node.health.up else "down")
            self.fleet.capacity_changed()
        if own and ok and node.health.up and (first or changed):
            for listener in self.on_up:  # once per replica: only the worker whose check saw it come up
                listener(node)
        if ok and result.get("discover"):
            self._last_discovery[node.name] = asyncio.get_running_loop().time()

    def apply_shared(self, name: str, result: dict[str, Any]) -> None:
        """A sibling worker's check of node `name`: counted as if this worker had made it."""
        node = self.fleet.get(name)
        if node is not None:
            self._apply(node, result, own=False)

    async def _discover_ollama(
        self, node: Node, timeout: float
    ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        base = node.settings.base_path
        tags, ps = await asyncio.gather(
            get_json(node.pool, base + "/api/tags", timeout), get_json(node.pool, base + "/api/ps", timeout)
        )
        models = tags.get("models") if isinstance(tags, dict) else None
        running = ps.get("models") if isinstance(ps, dict) else None
        return (
            {
                normalize(str(m.get("model") or m.get("name"))): m
                for m in models or []
                if isinstance(m, dict) and (m.get("model") or m.get("name"))
            },
            [m for m in running or [] if isinstance(m, dict)],
        )

    async def refresh(self, node: Node) -> None:
        """Re-read a node's models now (after a pull, delete, copy or create through Corral)."""
        try:
            await self.check(node, discover=True)
        except Exception:  # a background refresh must never take the request down with it
            log.exception("refreshing node %s failed", node.name)

    async def initial(self, timeout_s: float) -> None:
        """Check every node once, concurrently, before serving."""
        nodes = list(self.fleet)
        if not nodes:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(self.refresh(n) for n in nodes))
        except TimeoutError:
            log.warning("some nodes did not answer the first health check within %ss", timeout_s)

    def start(self, node: Node) -> None:
        self.stop(node.name)  # one loop per name: a node replaced on a reload takes over its name
        self._tasks[node.name] = asyncio.get_running_loop().create_task(self._loop(node))

    def stop(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()

    def stop_all(self) -> None:
        for name in list(self._tasks):
            self.stop(name)

    async def _loop(self, node: Node) -> None:
        loop = asyncio.get_running_loop()
        index, count = self.phase
        await asyncio.sleep(node.health_settings.interval_s * (index + 1))
        while True:
            due = loop.time() - self._last_discovery.get(node.name, 0.0) >= self.discovery_interval_s
            try:
                await self.check(node, discover=due or not node.health.up)
            except Exception:
                log.exception("health check of node %s failed unexpectedly", node.name)
            await asyncio.sleep(node.health_settings.interval_s * count)
