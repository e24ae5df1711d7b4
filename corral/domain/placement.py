"""The placement file: which models belong on which nodes (placement as code, `models.yaml`).

Format (YAML or JSON; the caller parses the text and hands the document here):

    models:
      llama3.2:                  # a model name, any spelling Ollama accepts (llama3.2 = llama3.2:latest)
        nodes: [gpu-a, gpu-b]    # these nodes by name ...
      qwen2.5:7b:
        labels: {gpu: a100}      # ... or every node whose labels include all of these
        keep_alive: 24h          # optional: keep it loaded this long (Ollama's keep_alive: "24h", -1, 0)

A model entry names `nodes` or `labels` (not both, not neither). Nothing else is accepted, so a typo is
an error that names the key instead of a silently ignored setting. Pure: no file reading here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from corral.domain.names import normalize

_MODEL_KEYS = frozenset({"nodes", "labels", "keep_alive"})


class PlacementError(ValueError):
    """The document is not a valid placement; the message names the offending key."""


@dataclass(frozen=True, slots=True)
class ModelPlacement:
    name: str  # as written in the file
    nodes: tuple[str, ...] | None = None
    labels: tuple[tuple[str, str], ...] | None = None
    keep_alive: str | int | float | None = None

    def matches(self, node: str, labels: Mapping[str, str]) -> bool:
        if self.nodes is not None:
            return node in self.nodes
        assert self.labels is not None
        return all(labels.get(k) == v for k, v in self.labels)


@dataclass(frozen=True, slots=True)
class Placement:
    models: Mapping[str, ModelPlacement]  # normalised name -> entry

    def get(self, model: str) -> ModelPlacement | None:
        return self.models.get(normalize(model))

    def nodes_for(self, model: str, nodes: Mapping[str, Mapping[str, str]]) -> list[str]:
        """The nodes (of `nodes`: name -> labels, in fleet order) that should hold `model`; empty when
        the file does not name the model."""
        entry = self.get(model)
        if entry is None:
            return []
        return [name for name, labels in nodes.items() if entry.matches(name, labels)]


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise PlacementError(f"{where}: expected a non-empty list of node names")
    return tuple(value)


def _labels(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not value:
        raise PlacementError(f"{where}: expected a non-empty mapping of label: value")
    out = []
    for key, item in value.items():
        if not isinstance(key, str) or isinstance(item, dict | list) or item is None:
            raise PlacementError(f"{where}.{key}: a label value must be a string")
        out.append((key, str(item)))
    return tuple(sorted(out))


def _entry(name: str, value: object) -> ModelPlacement:
    where = f"models.{name}"
    if not isinstance(value, dict):
        raise PlacementError(f"{where}: expected a mapping with `nodes` or `labels`")
    unknown = sorted(str(k) for k in value if k not in _MODEL_KEYS)
    if unknown:
        raise PlacementError(f"{where}.{unknown[0]}: unknown key (known: keep_alive, labels, nodes)")
    if ("nodes" in value) == ("labels" in value):
        raise PlacementError(f"{where}: give exactly one of `nodes` or `labels`")
    keep_alive = value.get("keep_alive")
    if keep_alive is not None and (isinstance(keep_alive, bool) or not isinstance(keep_alive, str | int | float)):
        raise PlacementError(f"{where}.keep_alive: expected a duration such as '24h' or a number of seconds")
    return ModelPlacement(
        name=name,
        nodes=_strings(value["nodes"], f"{where}.nodes") if "nodes" in value else None,
        labels=_labels(value["labels"], f"{where}.labels") if "labels" in value else None,
        keep_alive=keep_alive,
    )


def parse_placement(doc: object) -> Placement:
    """The placement a parsed document states. An empty document places nothing."""
    if doc is None:
        return Placement({})
    if not isinstance(doc, dict):
        raise PlacementError("the placement file must be a mapping with a `models` key")
    unknown = sorted(str(k) for k in doc if k != "models")
    if unknown:
        raise PlacementError(f"{unknown[0]}: unknown key (the placement file has only `models`)")
    models = doc.get("models") or {}
    if not isinstance(models, dict):
        raise PlacementError("models: expected a mapping of model name to its placement")
    out: dict[str, ModelPlacement] = {}
    for name, value in models.items():
        if not isinstance(name, str) or not normalize(name):
            raise PlacementError(f"models: {name!r} is not a model name")
        key = normalize(name)
        if key in out:
            raise PlacementError(f"models.{name}: the same model as models.{out[key].name}")
        out[key] = _entry(name, value)
    return Placement(out)
