"""What a new configuration changes, and what of it needs a restart: pure, on plain settings dumps.

A hot reload (docs/routing.md, Hot reload) applies the new settings between requests. Nodes are diffed by
name: a node whose address or API changed is replaced (the new one is health-checked first, the old one
drained), any other change is made in place. Settings read only at start-up (the listener, its TLS files,
the metrics listener, the stores) cannot change in a running process: they are reported, never silently
ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# Settings read once at start-up, as dotted key prefixes. A change to any of them is reported as needing
# a restart; everything else takes effect on reload.
RESTART_ONLY: tuple[str, ...] = (
    "server.host",
    "server.port",
    "server.tls",
    "server.workers",
    "workers",
    "server.max_header_bytes",
    "server.max_header_count",
    "server.header_timeout_s",
    "server.body_timeout_s",
    "server.keepalive_timeout_s",
    "server.max_connections",
    "server.max_connections_per_client",
    "metrics.enabled",
    "metrics.listen",
    "metrics.per_key",
    "console",
    "tracing",
    "logging.level",
    "logging.format",
    "auth.enabled",
    "auth.store_url",
    "audit",
    "limits.redis_url",
    "residency",
)

# A node whose address or API changes is a different node: replaced, never edited in place.
CONNECTION_KEYS: tuple[str, ...] = ("url", "type")


@dataclass(frozen=True)
class NodeChanges:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()  # address or API changed: a new node, the old one drained
    updated: tuple[str, ...] = ()  # anything else: changed in place

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.replaced or self.updated)


@dataclass(frozen=True)
class ConfigDiff:
    nodes: NodeChanges = field(default_factory=NodeChanges)
    changed: tuple[str, ...] = ()  # dotted keys whose value changed, `backends` aside
    restart_required: tuple[str, ...] = ()  # the changed keys a running process cannot apply

    @property
    def empty(self) -> bool:
        return self.nodes.empty and not self.changed


def diff_nodes(
    old: Mapping[str, Mapping[str, object]],
    new: Mapping[str, Mapping[str, object]],
    connection_keys: Sequence[str] = CONNECTION_KEYS,
) -> NodeChanges:
    """Nodes by name (each a settings dump) before and after; order follows `new`, then `old`."""
    added = tuple(name for name in new if name not in old)
    removed = tuple(name for name in old if name not in new)
    replaced: list[str] = []
    updated: list[str] = []
    for name, after in new.items():
        before = old.get(name)
        if before is None or before == after:
            continue
        if any(before.get(key) != after.get(key) for key in connection_keys):
            replaced.append(name)
        else:
            updated.append(name)
    return NodeChanges(added, removed, tuple(replaced), tuple(updated))


def changed_keys(old: object, new: object, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ. Mappings are walked key by key; anything else (lists included)
    is compared whole."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in list(old) + [k for k in new if k not in old]:
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(path)
            else:
                out.extend(changed_keys(old[key], new[key], path))
        return out
    return [] if old == new else [prefix or "(top level)"]


def needs_restart(changed: Iterable[str], restart_only: Sequence[str] = RESTART_ONLY) -> tuple[str, ...]:
    return tuple(
        key for key in changed if any(key == prefix or key.startswith(prefix + ".") for prefix in restart_only)
    )


def _by_name(backends: object) -> dict[str, Mapping[str, object]]:
    out: dict[str, Mapping[str, object]] = {}
    for entry in backends if isinstance(backends, list) else []:
        if isinstance(entry, Mapping):
            out[str(entry.get("name"))] = entry
    return out


def diff_config(old: Mapping[str, object], new: Mapping[str, object]) -> ConfigDiff:
    """The whole settings before and after (as `Settings.model_dump(mode="json")` writes them)."""
    nodes = diff_nodes(_by_name(old.get("backends")), _by_name(new.get("backends")))
    rest_old = {k: v for k, v in old.items() if k != "backends"}
    rest_new = {k: v for k, v in new.items() if k != "backends"}
    changed = tuple(changed_keys(rest_old, rest_new))
    return ConfigDiff(nodes, changed, needs_restart(changed))
