"""What a restore must do to the fleet's models: the inventory a backup recorded against the one the
fleet has now. Pure: the CLI reads both through Corral and carries out the pulls."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# node -> model -> digest (None when the node did not report one)
Inventory = Mapping[str, Mapping[str, str | None]]


@dataclass(frozen=True, slots=True)
class Drift:
    node: str
    model: str
    backed_up: str | None
    now: str | None


@dataclass(frozen=True, slots=True)
class ModelPlan:
    pulls: tuple[tuple[str, str], ...] = ()  # (node, model) to pull, in node then model order
    present: tuple[tuple[str, str], ...] = ()  # already there with the backed-up digest
    drift: tuple[Drift, ...] = ()  # there, but with another digest: reported, not changed
    unknown_nodes: tuple[str, ...] = ()  # in the backup, not in the fleet now: nothing can be pulled there
    extra: tuple[tuple[str, str], ...] = field(default=())  # on a node now, not in the backup: left alone

    @property
    def done(self) -> bool:
        return not self.pulls


def plan_models(backup: Inventory, current: Inventory) -> ModelPlan:
    """Pull every backed-up model a known node lacks; never delete or re-pull what is there (weights are
    not in a backup: a tag pulled again may have moved, so a differing digest is only reported)."""
    pulls: list[tuple[str, str]] = []
    present: list[tuple[str, str]] = []
    drift: list[Drift] = []
    unknown: list[str] = []
    extra: list[tuple[str, str]] = []
    for node in sorted(backup):
        if node not in current:
            unknown.append(node)
            continue
        have = current[node]
        for model in sorted(backup[node]):
            if model not in have:
                pulls.append((node, model))
            elif backup[node][model] and have[model] and backup[node][model] != have[model]:
                drift.append(Drift(node, model, backup[node][model], have[model]))
            else:
                present.append((node, model))
        extra += [(node, m) for m in sorted(have) if m not in backup[node]]
    return ModelPlan(tuple(pulls), tuple(present), tuple(drift), tuple(unknown), tuple(extra))
