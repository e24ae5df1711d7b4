"""`/internal/status` for a replica of several workers (`server.workers` > 1): one view, not one worker's.

Each worker routes with its own in-flight counts, its own share of each node's slots (domain/shares.py)
and its own admission queue. The worker that answers asks its siblings for their status and adds theirs
to its own: per node, the counters, the requests in flight and the slot shares (which add up to the
node's configured cap); the waiting requests of every queue. States, models and versions are the same
in every worker (shared probes, fleet changes applied by all before they answer), so its own are kept.
The residency section comes from the one worker whose controller acts, when a sibling sends it.
"""

from __future__ import annotations

from typing import Any

_SUMMED = ("in_flight", "requests_total", "failures_total", "completion_tokens_total", "ttft_sum_s", "ttft_count")


def merge_status(own: dict[str, Any], others: list[Any]) -> dict[str, Any]:
    """`own` with each sibling's per-node counts and queue length added (siblings that did not answer are
    left out)."""
    by_name = {node["name"]: node for node in own.get("nodes", [])}
    waiting = int(own.get("queue", {}).get("waiting", 0))
    residency = own.get("residency")
    for other in others:
        if not isinstance(other, dict):
            continue
        waiting += int(other.get("queue", {}).get("waiting", 0))
        residency = other.get("residency", residency)
        for node in other.get("nodes", []):
            mine = by_name.get(node.get("name"))
            if mine is None:
                continue
            for key in _SUMMED:
                mine[key] = mine.get(key, 0) + node.get(key, 0)
            if mine.get("max_concurrency") is not None and node.get("max_concurrency") is not None:
                mine["max_concurrency"] += node["max_concurrency"]
    for node in by_name.values():
        node["ttft_sum_s"] = round(node.get("ttft_sum_s", 0.0), 6)
    merged = {**own, "queue": {**own.get("queue", {}), "waiting": waiting}}
    if residency is not None:
        merged["residency"] = residency
    return merged
