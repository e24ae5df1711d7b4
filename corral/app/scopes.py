"""What a key may see and use: its model allow-list and its node group, applied to inference and to
listings."""

from __future__ import annotations

from collections.abc import Mapping

from corral.domain.errors import Forbidden
from corral.domain.groups import matches
from corral.domain.record import RequestRecord


def check_model(record: RequestRecord, model: str) -> None:
    """403 when the request's key may not use the model."""
    principal = record.principal
    if principal is not None and not principal.allows_model(model):
        raise Forbidden(f"key '{principal.name}' may not use model '{model}'", param="model")


def visible(record: RequestRecord, model: str) -> bool:
    principal = record.principal
    return principal is None or principal.allows_model(model)


def reachable(record: RequestRecord, labels: Mapping[str, str]) -> bool:
    """Whether the request's key may use a node with these labels (its node group)."""
    principal = record.principal
    return principal is None or matches(labels, principal.nodes)
