"""Placement as code: which models belong on which nodes, and which stay warm (`models.yaml`).

The file's shape::

    models:
      llama3.2:1b: {nodes: [gpu-1, gpu-2], keep_alive: "24h"}
      nomic-embed-text: {labels: {role: embed}}

A model named in the file is on exactly the nodes it selects: pulled where it is missing, deleted
where it is not wanted; models the file does not name are left alone. `keep_alive` keeps it loaded on
its nodes with that duration (Ollama's forms: "24h", "-1", "0", seconds as a number).

`plan(placement, nodes)` is pure: desired state plus observed state in, the changes out. Applying a plan
and planning again gives no change (tests/unit/test_placement.py checks it as a property).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from corral.domain.keep_alive import json_keep_alive, keep_alive_ns, valid_keep_alive
from corral.domain.names import normalize


class PlacementError(ValueError):
    """The placement file is malformed; the message names the field."""


@dataclass(frozen=True, slots=True)
class ModelPlacement:
    model: str  # normalised name
    nodes: frozenset[str] = frozenset()
    labels: Mapping[str, str] = field(default_factory=dict)
    keep_alive: str | None = None

    def selects(self, node: str, labels: Mapping[str, str]) -> bool:
        if node in self.nodes:
            return True
        return bool(self.labels) and all(labels.get(k) == v for k, v in self.labels.items())


@dataclass(frozen=True, slots=True)
class Placement:
    models: tuple[ModelPlacement, ...] = ()

    def for_node(self, node: str, labels: Mapping[str, str]) -> list[ModelPlacement]:
        return [m for m in self.models if m.selects(node, labels)]

    def get(self, model: str) -> ModelPlacement | None:
        wanted = normalize(model)
        return next((m for m in self.models if m.model == wanted), None)

    def nodes_for(self, model: str, nodes: Mapping[str, Mapping[str, str]]) -> list[str]:
        """The nodes (of `nodes`: name -> labels, in fleet order) that should hold `model`; empty when
        the file does not name the model (the fleet's model calls act on these: `default_targets: placement`)."""
        entry = self.get(model)
        if entry is None:
            return []
        return [name for name, labels in nodes.items() if entry.selects(name, labels)]


def _str_map(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise PlacementError(f"{where}: expected a mapping of strings to strings")
    return dict(value)


def parse_placement(doc: object) -> Placement:
    """The placement from a parsed YAML document; PlacementError naming the field when it is wrong."""
    if doc is None:
        return Placement()  # an empty file: no model is placed
    if not isinstance(doc, dict) or set(doc) - {"models"}:
        extra = sorted(set(doc) - {"models"}) if isinstance(doc, dict) else []
        raise PlacementError(f"{extra[0]}: unknown key" if extra else "(file): expected a mapping with `models:`")
    models = doc.get("models") or {}
    if not isinstance(models, dict):
        raise PlacementError("models: expected a mapping of model names to their placement")
    out: dict[str, ModelPlacement] = {}
    for raw_name, spec in models.items():
        where = f"models.{raw_name}"
        name = normalize(str(raw_name))
        if not isinstance(raw_name, str) or not name:
            raise PlacementError(f"{where}: a model name must be a non-empty string")
        if name in out:
            raise PlacementError(f"{where}: the same model as another entry ({out[name].model})")
        out[name] = _model(name, spec or {}, where)
    return Placement(tuple(out[k] for k in sorted(out)))


def _model(name: str, spec: Any, where: str) -> ModelPlacement:
    if not isinstance(spec, dict):
        raise PlacementError(f"{where}: expected a mapping (nodes, labels, keep_alive)")
    unknown = sorted(set(spec) - {"nodes", "labels", "keep_alive"})
    if unknown:
        raise PlacementError(f"{where}.{unknown[0]}: unknown key (known: nodes, labels, keep_alive)")
    nodes = spec.get("nodes") or []
    if not isinstance(nodes, list) or not all(isinstance(n, str) and n for n in nodes):
        raise PlacementError(f"{where}.nodes: expected a list of node names")
    labels = _str_map(spec.get("labels") or {}, f"{where}.labels")
    if not nodes and not labels:
        raise PlacementError(f"{where}: name its nodes (`nodes: [...]`) or a label selector (`labels: {{...}}`)")
    keep_alive = None
    if spec.get("keep_alive") is not None:
        keep_alive = valid_keep_alive(spec["keep_alive"])
        if keep_alive is None:
            raise PlacementError(f"{where}.keep_alive: {spec['keep_alive']!r} is not a duration such as 24h or -1")
        if keep_alive_ns(json_keep_alive(keep_alive)) == 0:
            # keep_alive 0 unloads at once (Ollama's `ollama stop`): a model can never be warm with it.
            raise PlacementError(f"{where}.keep_alive: 0 unloads the model at once; leave keep_alive out instead")
    return ModelPlacement(name, frozenset(nodes), labels, keep_alive)


@dataclass(frozen=True, slots=True)
class NodeInventory:
    """What one node holds, as discovery last saw it."""

    name: str
    up: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    models: Mapping[str, str] = field(default_factory=dict)  # normalised name -> digest
    loaded: frozenset[str] = frozenset()


class ActionKind(StrEnum):
    PULL = "pull"
    WARM = "warm"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    node: str
    model: str
    keep_alive: str | None = None

    def describe(self) -> str:
        tail = f" with keep_alive {self.keep_alive}" if self.kind is ActionKind.WARM and self.keep_alive else ""
        return f"{self.kind.value} {self.model} on {self.node}{tail}"


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...] = ()
    skipped: tuple[str, ...] = ()  # nodes that are down: nothing is planned for them
    unknown_nodes: tuple[str, ...] = ()  # named in the file but not in the fleet

    @property
    def in_sync(self) -> bool:
        return not self.actions

    def by_node(self) -> dict[str, list[Action]]:
        out: dict[str, list[Action]] = {}
        for action in self.actions:
            out.setdefault(action.node, []).append(action)
        return out


def plan(placement: Placement, nodes: Sequence[NodeInventory]) -> Plan:
    """The changes that bring `nodes` to `placement`, grouped by node in the fleet's order; per node the
    pulls first, then the warms, then the deletes (so a node never lacks what it should serve)."""
    actions: list[Action] = []
    skipped = []
    for node in nodes:
        if not node.up:
            skipped.append(node.name)
            continue
        pulls, warms, deletes = [], [], []
        for m in placement.models:
            wanted = m.selects(node.name, node.labels)
            present = m.model in node.models
            if wanted and not present:
                pulls.append(Action(ActionKind.PULL, node.name, m.model))
            if wanted and m.keep_alive is not None and (not present or m.model not in node.loaded):
                warms.append(Action(ActionKind.WARM, node.name, m.model, m.keep_alive))
            if not wanted and present:
                deletes.append(Action(ActionKind.DELETE, node.name, m.model))
        actions += pulls + warms + deletes
    known = {n.name for n in nodes}
    unknown = sorted({n for m in placement.models for n in m.nodes} - known)
    return Plan(tuple(actions), tuple(skipped), tuple(unknown))


def applied(nodes: Sequence[NodeInventory], actions: Sequence[Action]) -> list[NodeInventory]:
    """The inventory after `actions` succeed (what the next plan will see)."""
    out = []
    for node in nodes:
        models = dict(node.models)
        loaded = set(node.loaded)
        for a in actions:
            if a.node != node.name:
                continue
            if a.kind is ActionKind.PULL:
                models[a.model] = models.get(a.model, "pulled")
            elif a.kind is ActionKind.WARM:
                loaded.add(a.model)
            else:
                models.pop(a.model, None)
                loaded.discard(a.model)
        out.append(NodeInventory(node.name, node.up, node.labels, models, frozenset(loaded)))
    return out


def drift(nodes: Sequence[NodeInventory]) -> dict[str, dict[str, str]]:
    """Models whose digest differs between nodes: name -> {node: digest}, only for such models."""
    seen: dict[str, dict[str, str]] = {}
    for node in nodes:
        for model, digest in node.models.items():
            if digest:
                seen.setdefault(model, {})[node.name] = digest
    return {m: by_node for m, by_node in seen.items() if len(set(by_node.values())) > 1}
