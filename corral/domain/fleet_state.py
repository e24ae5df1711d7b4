"""Fleet state shared by replicas: the YAML's nodes as the base, run-time overrides on top, and the
changes that bring one process's fleet to what they describe.

Pure: the adapter (`corral.adapters.fleetstore`) reads and writes the overrides; the app applies the
changes computed here to its in-memory fleet. Node settings travel as plain JSON-ready dicts (the
app converts them to and from `BackendSettings`), so that this module needs nothing but the stdlib.

Why whole-state comparison rather than a log of events: every process reads the same small table and
converges on it, whatever it missed (a restart, a poll that failed, two admins racing). The last
write to a node's row wins everywhere, in the database's own order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Spec = Mapping[str, Any]  # one node's settings, as `BackendSettings.model_dump(mode="json")` writes them


@dataclass(frozen=True, slots=True)
class NodeOverride:
    """A node's stored run-time state. `settings` is set for a node added at run time (it wins over a
    YAML node of the same name); `removed` hides the node, YAML or not, until it is added again;
    `draining` None leaves the drain state as the base has it (not draining)."""

    name: str
    settings: Spec | None = None
    removed: bool = False
    draining: bool | None = None


@dataclass(frozen=True, slots=True)
class WantedNode:
    """A node as the fleet should hold it."""

    name: str
    settings: Spec
    draining: bool = False


@dataclass(frozen=True, slots=True)
class FleetChanges:
    """What to do to a process's fleet, in this order: remove, add, replace, then set drain states."""

    remove: tuple[str, ...] = ()
    add: tuple[WantedNode, ...] = ()
    replace: tuple[WantedNode, ...] = ()  # same name, other settings: removed and added again
    drain: tuple[str, ...] = ()
    undrain: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.remove or self.add or self.replace or self.drain or self.undrain)


def wanted(base: Iterable[Spec], overrides: Iterable[NodeOverride]) -> dict[str, WantedNode]:
    """The fleet the YAML (`base`, in file order) and the stored overrides describe together.

    Base nodes keep their order; nodes added at run time follow in name order (every process then
    lists the fleet alike)."""
    by_name = {o.name: o for o in overrides}
    out: dict[str, WantedNode] = {}
    base_names: set[str] = set()
    for spec in base:
        name = str(spec["name"])
        base_names.add(name)
        node = _resolve(name, spec, by_name.get(name))
        if node is not None:
            out[name] = node
    for name in sorted(set(by_name) - base_names):
        node = _resolve(name, None, by_name[name])
        if node is not None:
            out[name] = node
    return out


def _resolve(name: str, base: Spec | None, override: NodeOverride | None) -> WantedNode | None:
    if override is None:
        return None if base is None else WantedNode(name, base)
    if override.removed:
        return None
    settings = override.settings if override.settings is not None else base
    if settings is None:
        return None  # e.g. a drain kept for a node since dropped from the YAML
    return WantedNode(name, settings, bool(override.draining))


def changes(want: Mapping[str, WantedNode], have: Mapping[str, WantedNode]) -> FleetChanges:
    """The changes that turn `have` (a process's fleet now) into `want`."""
    remove = tuple(name for name in have if name not in want)
    add = tuple(node for name, node in want.items() if name not in have)
    replace = tuple(
        node for name, node in want.items() if name in have and dict(have[name].settings) != dict(node.settings)
    )
    # A replaced node comes back fresh (not draining): set its drain state whatever it was before.
    fresh = {n.name for n in replace}
    drain: list[str] = []
    undrain: list[str] = []
    for name, node in want.items():
        if name not in have:
            continue
        was = have[name].draining and name not in fresh
        if node.draining and not was:
            drain.append(name)
        elif was and not node.draining:
            undrain.append(name)
    drain_new = tuple(node.name for node in add if node.draining)
    return FleetChanges(remove, add, replace, (*drain, *drain_new), tuple(undrain))


def applied(have: Mapping[str, WantedNode], change: FleetChanges) -> dict[str, WantedNode]:
    """`have` after `change`, as the app applies it (for tests: applied(have, changes(want, have)) == want)."""
    out = {name: node for name, node in have.items() if name not in change.remove}
    for node in change.add:
        out[node.name] = WantedNode(node.name, node.settings, False)
    for node in change.replace:
        out[node.name] = WantedNode(node.name, node.settings, False)
    for name in change.drain:
        out[name] = WantedNode(name, out[name].settings, True)
    for name in change.undrain:
        out[name] = WantedNode(name, out[name].settings, False)
    return out
