"""A node view with room for one runner, for the routing tests that weigh one model against another."""

from __future__ import annotations

from corral.domain.fleet import LoadedModel, NodeView

GB = 1_000_000_000


def one_runner(name: str, model: str, busy: int, models: frozenset[str], parallel: int = 1) -> NodeView:
    """A node holding `model` (4 GB on disk, 5 GB resident, like every model in `models`), with `busy`
    requests in flight for it and `parallel` slots."""
    return NodeView(
        name,
        available=models,
        model_sizes=dict.fromkeys(models, 4 * GB),
        parallel=parallel,
        max_loaded=1,
        loaded=(LoadedModel(model, size=5 * GB),),
        in_flight=busy,
        in_flight_by_model={model: busy} if busy else {},
    )
