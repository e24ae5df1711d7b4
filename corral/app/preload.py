"""Preloading: when a node comes up (at start, and again after it was down, e.g. restarted), warm the
models it should keep loaded: its `backends[].preload` list and the placement file's models with a
`keep_alive` that select it. Discovery calls `on_up` on the up-transition, after it has read the node's
models, so only models the node has are warmed (a missing one is logged, never pulled here: pulling is
`corral models sync`'s decision)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from corral.app.fanout_targets import read_placement
from corral.app.fleet import Node
from corral.app.model_calls import ModelCallFailed, ModelCalls
from corral.config import ConfigError
from corral.domain.fleet import NodeKind
from corral.domain.names import normalize
from corral.domain.placement import Placement, PlacementError

log = logging.getLogger(__name__)


def load_placement(path: Path | None) -> Placement | None:
    """The placement file named by `models.placement_file`; ConfigError naming the key when it is wrong."""
    if path is None:
        return None
    try:
        return read_placement(path)
    except PlacementError as exc:
        raise ConfigError([("models.placement_file", str(exc))]) from exc


class Preloader:
    def __init__(self, calls: ModelCalls, placement: Placement | None, default_keep_alive: str | None) -> None:
        self.calls = calls
        self.placement = placement
        self.default_keep_alive = default_keep_alive
        self._tasks: set[asyncio.Task[None]] = set()

    def wanted(self, node: Node) -> dict[str, str | None]:
        """Model -> keep_alive to warm on `node` (the placement's keep_alive wins over the default)."""
        out: dict[str, str | None] = {normalize(m): self.default_keep_alive for m in node.settings.preload}
        if self.placement is not None:
            labels = dict(getattr(node.settings, "labels", None) or {})
            for m in self.placement.for_node(node.name, labels):
                if m.keep_alive is not None:
                    out[m.model] = m.keep_alive
        return out

    def on_up(self, node: Node) -> None:
        if node.kind is NodeKind.OLLAMA and self.wanted(node):
            task = asyncio.get_running_loop().create_task(self.warm(node))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def warm(self, node: Node) -> None:
        for model, keep_alive in self.wanted(node).items():
            if model not in node.tags:
                log.warning("preload: node %s does not have %s; run `corral models sync` to pull it", node.name, model)
                continue
            try:
                await self.calls.warm(node, model, keep_alive)
                log.info("preload: warmed %s on %s (keep_alive %s)", model, node.name, keep_alive or "default")
            except ModelCallFailed as exc:
                log.warning("preload: %s", exc)
