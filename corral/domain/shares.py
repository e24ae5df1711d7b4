"""A node's slot budget divided between the worker processes of one replica.

Each worker routes against its own in-flight counts (they live in its memory), so a cap of `total`
slots given whole to each of N workers would let the node receive N x total at once. Worker `index`
gets an equal share instead, the remainder going to the first workers, so the shares add up to `total`
exactly. A share is never below 1: a worker with no slot could never serve the node, so when a node has
fewer slots than there are workers the sum exceeds the budget by at most `count - total`, and the node
queues those requests itself (OLLAMA_NUM_PARALLEL / OLLAMA_MAX_QUEUE).
"""

from __future__ import annotations

from collections.abc import Mapping


def share(total: int, index: int, count: int) -> int:
    """Worker `index` (0-based) of `count`: its part of `total` slots (at least 1)."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"worker index {index} out of range for {count} worker(s)")
    base, extra = divmod(total, count)
    return max(1, base + (1 if index < extra else 0))


def spec_share(spec: Mapping[str, object], index: int, count: int) -> dict[str, object]:
    """A node's settings (as stored: `parallel`, `max_concurrency`) with worker `index`'s share of its
    slots: what a node added at run time gets in each worker, as a YAML node does."""
    out = dict(spec)
    parallel = out.get("parallel")
    if isinstance(parallel, int):
        out["parallel"] = share(parallel, index, count)
    cap = out.get("max_concurrency")
    if isinstance(cap, int):
        out["max_concurrency"] = share(cap, index, count)
    return out
