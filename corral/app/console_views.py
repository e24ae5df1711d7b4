"""What the console's fleet and models pages show, composed from the fleet for one caller: every node
with its state, load and loaded models, and the models × nodes matrix with digest drift. A user key
sees only the models it may use (on every node, loaded or available)."""

from __future__ import annotations

from typing import Any

from corral.app.fleet import Fleet, Node
from corral.app.scopes import visible
from corral.domain.record import RequestRecord

_INF = float("inf")


def node_state(node: Node) -> str:
    if node.draining:
        return "draining"
    if not node.checked:
        return "unknown"
    return "up" if node.health.up else "down"


def node_view(node: Node, record: RequestRecord) -> dict[str, Any]:
    s = node.settings
    return {
        "name": node.name,
        "url": s.url,
        "type": s.type,
        "state": node_state(node),
        "breaker": node.breaker.state.value,
        "in_flight": node.in_flight,
        "max_concurrency": s.max_concurrency,
        "parallel": s.parallel,
        "vram_bytes": None if s.vram_gb is None else int(s.vram_gb * 2**30),
        "requests_total": node.requests_total,
        "failures_total": node.failures_total,
        "version": node.version,
        "last_error": node.last_error,
        "models": sorted(name for name in node.tags if visible(record, name)),
        "loaded": [
            {
                "model": m.model,
                "size": m.size,
                "size_vram": m.size_vram,
                # Keep-alive expiry in unix seconds; None for a model kept loaded indefinitely.
                "expires_at": None if m.expires_at == _INF else m.expires_at,
            }
            for m in node.loaded
            if visible(record, m.model)
        ],
    }


def _short(digest: object) -> str:
    text = str(digest or "")
    return text.removeprefix("sha256:")[:12]


def model_matrix(fleet: Fleet, record: RequestRecord, recent: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """One row per model any node lists: per node whether it is available and loaded there, and its
    digest; `drift` when nodes hold different digests under one name (different weights answer)."""
    rows: dict[str, dict[str, Any]] = {}
    for node in fleet:
        loaded = {m.model for m in node.loaded}
        for name, entry in node.tags.items():
            if not visible(record, name):
                continue
            row = rows.setdefault(name, {"name": name, "nodes": {}, "drift": False, "recent": {}})
            row["nodes"][node.name] = {"loaded": name in loaded, "digest": _short(entry.get("digest"))}
        for name in loaded - set(node.tags):
            if visible(record, name):
                row = rows.setdefault(name, {"name": name, "nodes": {}, "drift": False, "recent": {}})
                row["nodes"][node.name] = {"loaded": True, "digest": ""}
    for name, row in rows.items():
        digests = {cell["digest"] for cell in row["nodes"].values() if cell["digest"]}
        row["drift"] = len(digests) > 1
        row["recent"] = recent.get(name, {})
    return sorted(rows.values(), key=lambda r: str(r["name"]))
