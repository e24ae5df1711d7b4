"""Which nodes a fleet-wide model call acts on (`models.default_targets`), and the fleet view it reads.

- `all`: every Ollama node that is up, drained ones included (a drained node takes no traffic but is
  still part of the fleet, and the next rollout would otherwise find it out of date);
- `placement`: of those, the nodes the placement file names for the model (corral.domain.placement);
- `reject`: no fan-out; the call needs X-Corral-Node (400 otherwise), as before fan-out existed.

Deleting, copying and unloading act where the model is (on disk, or loaded), whatever the policy: the
fleet view is re-read first, so a model pulled a moment ago by another client is found.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from corral.app.discovery import Discovery
from corral.app.fleet import Fleet, Node
from corral.config import ModelsSettings
from corral.domain.errors import InvalidRequest, NoHealthyNode
from corral.domain.fleet import NodeKind
from corral.domain.names import normalize
from corral.domain.placement import Placement, PlacementError, parse_placement

log = logging.getLogger(__name__)

Audit = Callable[[str, dict[str, object]], None]

# Re-reading every node's models before a delete or copy: a node slower than this keeps its last view.
REFRESH_TIMEOUT_S = 5.0


def read_placement(path: Path) -> Placement:
    """Read and check a placement file; PlacementError (naming the file and the key) when it is wrong."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PlacementError(f"{path}: {exc}") from exc
    try:
        return parse_placement(doc)
    except PlacementError as exc:
        raise PlacementError(f"{path}: {exc}") from exc


class Targets:
    def __init__(self, fleet: Fleet, discovery: Discovery, settings: ModelsSettings) -> None:
        self.fleet = fleet
        self.discovery = discovery
        self.policy = settings.default_targets
        self.path = settings.placement_file
        self._placement: Placement | None = None
        self._mtime = -1.0
        if self.policy == "placement":
            if self.path is None:
                raise PlacementError("models.default_targets is `placement` but models.placement_file is not set")
            self.placement()  # a wrong file stops the start, with its key named

    def placement(self) -> Placement:
        """The placement file, re-read when it changes (`corral models sync` edits it). A file that
        turns invalid keeps the last good placement in force, and says so in the log."""
        assert self.path is not None
        try:
            mtime = self.path.stat().st_mtime
        except OSError as exc:
            if self._placement is None:
                raise PlacementError(f"{self.path}: {exc.strerror or exc}") from exc
            return self._placement
        if mtime != self._mtime or self._placement is None:
            try:
                self._placement = read_placement(self.path)
            except PlacementError:
                if self._placement is None:
                    raise
                log.exception("placement file %s is invalid; the last valid one stays in force", self.path)
            self._mtime = mtime
        return self._placement

    def managed(self) -> list[Node]:
        """The nodes model management reaches: Ollama nodes that are up."""
        return [n for n in self.fleet if n.kind is NodeKind.OLLAMA and n.health.up]

    @staticmethod
    def labels(node: Node) -> dict[str, str]:
        labels: Any = getattr(node.settings, "labels", None)  # node labels arrive with label routing
        return dict(labels) if isinstance(labels, dict) else {}

    def for_model(self, model: str) -> list[Node]:
        """Where a pull or create of `model` goes."""
        nodes = self.managed()
        if not nodes:
            raise NoHealthyNode("no healthy node to act on", retry_after=5)
        if self.policy != "placement":
            return nodes
        wanted = set(self.placement().nodes_for(model, {n.name: self.labels(n) for n in nodes}))
        chosen = [n for n in nodes if n.name in wanted]
        if not chosen:
            raise InvalidRequest(
                f"the placement file names no healthy node for model '{model}'; add it there, or name a node "
                "in the X-Corral-Node header",
                param="model",
            )
        return chosen

    def for_blobs(self) -> list[Node]:
        """Where a blob goes: its model is not known until the create that follows, so every managed
        node (under `placement` too; the create then goes only where the model belongs)."""
        nodes = self.managed()
        if not nodes:
            raise NoHealthyNode("no healthy node to act on", retry_after=5)
        return nodes

    async def refresh(self, nodes: list[Node]) -> None:
        if not nodes:
            return
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT_S):
                await asyncio.gather(*(self.discovery.refresh(n) for n in nodes))
        except TimeoutError:
            log.warning("re-reading the fleet's models took over %ss; acting on the last view", REFRESH_TIMEOUT_S)

    async def holding(self, model: str) -> list[Node]:
        """The nodes that have `model` on disk, from a fresh view."""
        nodes = self.managed()
        await self.refresh(nodes)
        key = normalize(model)
        return [n for n in nodes if key in n.tags]

    async def loaded(self, model: str) -> list[Node]:
        """The nodes where `model` is loaded, from a fresh view."""
        nodes = self.managed()
        await self.refresh(nodes)
        key = normalize(model)
        return [n for n in nodes if any(m.model == key for m in n.loaded)]
