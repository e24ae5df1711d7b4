"""Which nodes are the only home of a big model: keep small models from churning them (issue 17).

In a fleet of mixed node sizes, a model too big for the smaller nodes can run only on the bigger ones.
When a model that would fit a smaller node is loaded on one of those, it takes a runner and memory the
big model needs, and Ollama evicts the big model (or makes its next load wait for the small one's
requests to drain): the big model's traffic, which has nowhere else to go, waits for a reload. So a
load of a model onto a node bigger than the model needs, while some model in use needs a node at least
that big, costs that model's reload (`Costs.stability_loads` of its load time, as any eviction of a
model in use that cannot move elsewhere). On a node where such a model is busy or was sent within a
minute, the charge is paid in full even when the load goes into free room (model_aware.py spares it the
replica discount): that room is what the big model's next load there needs, so the small model would be
evicted by it or make it wait for its requests to drain. A node of that size the big model is not using
keeps the discount: its room is spare.

"Fits" here is an estimate of residency, not the placement rule (corral/domain/fit.py, which never
refuses a node Ollama might accept): the model's resident bytes within `fit_share` of the node's memory.
"""

from __future__ import annotations

from collections.abc import Collection


class Homes:
    """The smallest node memory each model fits, for a fleet's set of memories (cached per set)."""

    def __init__(self, fit_share: float) -> None:
        self.fit_share = fit_share
        self._smallest: dict[tuple[frozenset[int], int], int | None] = {}

    def smallest(self, memories: frozenset[int], need: int) -> int | None:
        """The smallest of `memories` (bytes) that holds `need` resident bytes; None if none does."""
        key = (memories, need)
        found = self._smallest.get(key, 0)
        if found == 0:
            fitting = [m for m in memories if need <= self.fit_share * m]
            found = self._smallest[key] = min(fitting) if fitting else None
            if len(self._smallest) > 4096:
                self._smallest.clear()
        return found


def crowds(own: int | None, memory: int, others: Collection[tuple[int | None, float]]) -> float:
    """The charge for loading a model whose smallest home is `own` onto a node of `memory` bytes: the
    largest reload cost among `others` ((smallest home, reload cost) of the models in use) that need a
    node bigger than `own` and fit this one. 0 when the model needs this node as much as they do."""
    if own is None:
        return 0.0
    charge = 0.0
    for home, cost in others:
        if home is not None and own < home <= memory and cost > charge:
            charge = cost
    return charge
